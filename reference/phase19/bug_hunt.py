"""Reference solution for lab 19-01 bug_hunt: a regression test, a fix and a scope page per bug."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from katas.phase19.bug_hunt.scaffold import (
    Edit,
    ScriptedSampler,
    browse_dir,
    run_until_idle,
    source_digest,
)

_EOS = 256


def _outputs(engine: Any, max_steps: int = 100) -> dict[str, tuple[int, ...]]:
    finished, _ = run_until_idle(engine, max_steps)
    return {r.request_id: tuple(r.output_token_ids) for r in finished}


def _line_of(bug: str, file: str, snippet: str) -> int:
    """The 1-based line where ``snippet`` starts in the buggy copy's ``file`` (found by reading
    the code, as a person would with grep)."""
    text = (browse_dir(bug) / file).read_text(encoding="utf-8")
    index = text.index(snippet)
    return text.count("\n", 0, index) + 1


def _page(issue: str, cause: str, fix: str, tests: str, blast: str, out: str,
          questions: str) -> str:
    return (f"Issue: {issue}  Reproduced at: mini_vllm {source_digest()}\n\n"
            f"Cause (file:line): {cause}\n\n"
            f"Fix sketch: {fix}\n\n"
            f"Test plan: {tests}\n\n"
            f"Blast radius: {blast}\n\n"
            f"Out of scope: {out}\n\n"
            f"Open questions for maintainers:\n{questions}\n")


# -- 01: a whole prompt found in the prefix cache ----------------------------------------------


def regression_full_prefix_hit(vllm: ModuleType) -> None:
    engine = vllm.LLMEngine(num_blocks=32, block_size=4)
    params = vllm.SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    engine.add_request("abcdefgh", params, request_id="first")  # exactly two full blocks
    first = _outputs(engine, 20)
    engine.add_request("abcdefgh", params, request_id="again")
    again = _outputs(engine, 20)
    assert again.get("again") == first["first"], (
        f"the same whole-block prompt sent again should give the same tokens, got {again}")


def fix_full_prefix_hit() -> list[Edit]:
    # Both halves: the cap, so that a hit never covers the whole prompt, and the scheduler's own
    # guard, so that a KV manager without the cap (mini_vllm's tests plug one in) still gets the
    # last token recomputed instead of a request that never runs.
    return [Edit("kv_cache.py", "max_hit_blocks = request.num_tokens // self.block_size",
                 "max_hit_blocks = (request.num_tokens - 1) // self.block_size"),
            Edit("scheduler.py", "            num_new = request.num_tokens - num_cached\n",
                 "            num_new = request.num_tokens - num_cached\n"
                 "            if num_new == 0:\n"
                 "                # Whole prompt cached: still recompute the last token, which "
                 "produces the logits.\n"
                 "                # Unreachable with the num_tokens - 1 hit cap; kept for KV "
                 "managers without it.\n"
                 "                request.num_computed_tokens = num_cached = "
                 "request.num_tokens - 1\n"
                 "                num_new = 1\n")]


def scope_full_prefix_hit() -> str:
    bug = "01_full_prefix_hit"
    line = _line_of(bug, "kv_cache.py", "max_hit_blocks = ")
    return _page(
        "#01 — resending a prompt of exactly N full blocks never finishes",
        f"mini_vllm/kv_cache.py:{line} — get_computed_blocks lets the hit cover all "
        "num_tokens, so a fully cached prompt has 0 tokens left to compute; the scheduler then "
        "schedules nothing for it and it waits forever.",
        "cap the hit at num_tokens - 1 tokens: the last prompt token is always recomputed, "
        "since its forward pass produces the logits of the first new token; and restore the "
        "scheduler's guard that recomputes it when a KV manager without the cap reports a "
        "whole-prompt hit.",
        "regression: a two-block prompt sent twice on a block_size=4 engine finishes within a "
        "bounded number of steps with the same tokens; mini_vllm's kv_cache and scheduler tests.",
        "every prefix-cached request (hit lengths drop by one block when the prompt is a whole "
        "number of blocks); parallel sampling (children hit the first child's blocks).",
        "the eviction policy; which KV managers may report a whole-prompt hit.",
        "- Should the scheduler also refuse a KV manager that returns a full hit?",
    )


# -- 02: a prefix-hit block shared without a reference -----------------------------------------


def regression_preempt_double_free(vllm: ModuleType) -> None:
    params = vllm.SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    results = []
    for num_blocks in (6, 64):  # 6: the second request is preempted; 64: nobody is
        engine = vllm.LLMEngine(num_blocks=num_blocks, block_size=4, max_num_seqs=4)
        engine.add_request("abcdefgh", params, request_id="a")
        engine.add_request("abcdefgh", params, request_id="b")  # hits a's two blocks
        finished, _ = run_until_idle(engine, 100)
        results.append({r.request_id: tuple(r.output_token_ids) for r in finished})
        assert engine.kv_cache_manager.get_usage() == 0.0, "blocks still held after the run"
        if num_blocks == 6:
            assert any(r.num_preemptions for r in finished), "the tight pool must preempt"
    tight, roomy = results
    assert tight == roomy, f"preemption changed the outputs: {tight} vs {roomy}"


def fix_preempt_double_free() -> list[Edit]:
    removal = "                self.free_queue.remove(block)\n"
    return [Edit("block_pool.py", removal + "                block.ref_cnt += 1\n",
                 removal + "            block.ref_cnt += 1\n")]


def scope_preempt_double_free() -> str:
    bug = "02_preempt_double_free"
    line = _line_of(bug, "block_pool.py", "                block.ref_cnt += 1")
    return _page(
        "#02 — KVCacheError / double free after preempting a request that hit the prefix cache",
        f"mini_vllm/block_pool.py:{line} — BlockPool.touch takes a reference only when it "
        "revives a free block; a hit on a block another running request holds shares it "
        "without one, so the first free drops it to 0 while the other still reads it.",
        "take one reference per hit in touch, whatever the block's count was.",
        "regression: two identical prompts on a pool tight enough to preempt one of them, and "
        "on a roomy pool: same tokens, usage back to 0; the block pool invariant checks.",
        "every shared prefix (parallel sampling, beam search, repeated system prompts).",
        "preemption policy; swapping instead of recompute.",
        "- none",
    )


# -- 03: a block hash that forgets its parent --------------------------------------------------


def regression_hash_ignores_parent(vllm: ModuleType) -> None:
    # The third prompt's first block is the first prompt's, its second the second prompt's.
    prompts = ["xxxxzz", "yyyyzz", "xxxxyyyyzz"]
    params = vllm.SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    results = []
    for caching in (True, False):
        engine = vllm.LLMEngine(num_blocks=32, block_size=4, enable_caching=caching)
        outs = {}
        for i, prompt in enumerate(prompts):
            engine.add_request(prompt, params, request_id=f"p{i}")
            outs.update(_outputs(engine, 20))
        results.append(outs)
    assert results[0] == results[1], (
        f"prefix caching changed the outputs: {results[0]} vs {results[1]}")


def fix_hash_ignores_parent() -> list[Edit]:
    return [Edit("block_pool.py", "parent = _ROOT_PARENT_HASH\n",
                 "parent = _ROOT_PARENT_HASH if parent_hash is None else parent_hash\n")]


def scope_hash_ignores_parent() -> str:
    bug = "03_hash_ignores_parent"
    line = _line_of(bug, "block_pool.py", "parent = _ROOT_PARENT_HASH\n")
    return _page(
        "#03 — KVCacheError when a prompt repeats a block another prompt started with",
        f"mini_vllm/block_pool.py:{line} — hash_block_tokens always chains onto the root "
        "instead of the parent's hash, so equal tokens at different positions share a hash "
        "and a block computed at positions 0-3 is reused at positions 4-7.",
        "chain onto parent_hash (the root only for the first block).",
        "regression: 'xxxxzz', 'yyyyzz' then 'xxxxyyyyzz' give the same tokens with caching "
        "on and off; "
        "a unit check that equal tokens under different parents hash differently.",
        "every prefix-cache lookup; LoRA and image extra keys ride the same hash.",
        "the hash function itself (Python hash vs SHA-256).",
        "1. Should the hash also cover the block size?",
    )


# -- 04: running requests that do not pay from the token budget --------------------------------


def regression_budget_skips_decodes(vllm: ModuleType) -> None:
    budget = 8
    engine = vllm.LLMEngine(num_blocks=64, block_size=4, max_num_batched_tokens=budget)
    params = vllm.SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    engine.add_request("hi", params, request_id="a")
    engine.add_request("ok", params, request_id="b")
    engine.step()  # a and b are decoding from now on
    engine.add_request("a much longer prompt than that", params, request_id="c")
    _, plans = run_until_idle(engine, 50)
    for step, plan in enumerate(plans):
        total = sum(plan.values())
        assert total <= budget, (
            f"step {step} scheduled {total} tokens {plan}, over max_num_batched_tokens={budget}")


def fix_budget_skips_decodes() -> list[Edit]:
    return [Edit("scheduler.py",
                 "            self._commit_encoder_inputs(request, n, out)\n"
                 "            req_index += 1\n",
                 "            self._commit_encoder_inputs(request, n, out)\n"
                 "            token_budget -= n\n"
                 "            req_index += 1\n")]


def scope_budget_skips_decodes() -> str:
    bug = "04_budget_skips_decodes"
    text = (browse_dir(bug) / "scheduler.py").read_text(encoding="utf-8")
    start = text.index("def _schedule_running")
    snippet = "            self._commit_encoder_inputs(request, n, out)\n"
    line = text.count("\n", 0, text.index(snippet, start)) + 2
    return _page(
        "#04 — a step schedules more tokens than max_num_batched_tokens",
        f"mini_vllm/scheduler.py:{line} — _schedule_running never takes the running requests' "
        "tokens out of token_budget, so admissions get the whole budget again.",
        "subtract each scheduled running request's n from token_budget.",
        "regression: two decodes plus a long prompt on max_num_batched_tokens=8: every step "
        "at most 8 tokens; the scheduler invariant checks.",
        "step size and latency for every mixed prefill/decode batch; chunked prefill.",
        "long_prefill_token_threshold; speculative drafts' budget.",
        "- none",
    )


# -- 05: length checked before stop -------------------------------------------------------------


def regression_stop_after_length(vllm: ModuleType) -> None:
    engine = vllm.LLMEngine(num_blocks=32, block_size=4, sampler=ScriptedSampler([_EOS]))
    params = vllm.SamplingParams(max_tokens=1, temperature=0.0)
    (out,) = engine.generate(["hello"], params)
    assert out.finish_reason == "stop", (
        f"EOS as the max_tokens-th token must finish with 'stop', got {out.finish_reason!r}")


def fix_stop_after_length() -> list[Edit]:
    return [Edit(
        "request.py",
        "        if self.num_output_tokens >= params.max_tokens:\n"
        "            self.status = RequestStatus.FINISHED_LENGTH\n"
        "        elif (\n"
        "            not params.ignore_eos\n"
        "            and self.output_token_ids\n"
        "            and self.output_token_ids[-1] == self.eos_token_id\n"
        "        ):\n"
        "            self.status = RequestStatus.FINISHED_STOPPED\n",
        "        if (\n"
        "            not params.ignore_eos\n"
        "            and self.output_token_ids\n"
        "            and self.output_token_ids[-1] == self.eos_token_id\n"
        "        ):\n"
        "            self.status = RequestStatus.FINISHED_STOPPED\n"
        "        elif self.num_output_tokens >= params.max_tokens:\n"
        "            self.status = RequestStatus.FINISHED_LENGTH\n")]


def scope_stop_after_length() -> str:
    bug = "05_stop_after_length"
    line = _line_of(bug, "request.py", "        if self.num_output_tokens >= params.max_tokens:")
    return _page(
        "#05 — finish_reason is 'length' although the model emitted EOS",
        f"mini_vllm/request.py:{line} — Request.maybe_finish tests the length limit before "
        "EOS, so an EOS that is also the max_tokens-th token reports 'length'.",
        "test EOS (unless ignore_eos) first, then the length.",
        "regression: a sampler that emits EOS first, max_tokens=1: finish_reason 'stop'; "
        "ignore_eos still runs to the length.",
        "finish_reason in every API response; clients that retry on 'length'.",
        "stop strings; min_tokens.",
        "- none",
    )


# -- 06: text decoded token by token ------------------------------------------------------------


def regression_detok_splits_utf8(vllm: ModuleType) -> None:
    text = "é→"
    engine = vllm.LLMEngine(num_blocks=32, block_size=4,
                            sampler=ScriptedSampler([*text.encode("utf-8"), _EOS]))
    (out,) = engine.generate(["say"], vllm.SamplingParams(max_tokens=16, temperature=0.0))
    assert out.text == text, f"the output bytes spell {text!r}, but text is {out.text!r}"


def fix_detok_splits_utf8() -> list[Edit]:
    return [Edit("engine.py",
                 'text="".join(self.tokenizer.decode([t]) for t in request.output_token_ids),',
                 "text=self.tokenizer.decode(request.output_token_ids),")]


def scope_detok_splits_utf8() -> str:
    bug = "06_detok_splits_utf8"
    line = _line_of(bug, "engine.py", 'text="".join(self.tokenizer.decode([t])')
    return _page(
        "#06 — accented and CJK output comes back as replacement characters",
        f"mini_vllm/engine.py:{line} — _to_output decodes each token on its own and joins the "
        "pieces; a character whose UTF-8 bytes span two tokens decodes as two U+FFFD.",
        "decode the whole output token list at once.",
        "regression: a sampler that emits the bytes of 'é→' then EOS: text is 'é→'.",
        "every non-ASCII output; any streaming path that decodes per token.",
        "a streaming detokenizer (kata 16-03).",
        "- none",
    )


# -- 07: an aborted request keeps its blocks ----------------------------------------------------


def regression_abort_leaks_blocks(vllm: ModuleType) -> None:
    engine = vllm.LLMEngine(num_blocks=32, block_size=4)
    params = vllm.SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
    engine.add_request("first prompt", params, request_id="keep")
    engine.add_request("second one", params, request_id="drop")
    engine.step()  # both running, both hold blocks
    engine.abort_request("drop")
    run_until_idle(engine, 20)
    usage = engine.kv_cache_manager.get_usage()
    assert usage == 0.0, f"after every request finished or was aborted, KV usage is {usage}"


def fix_abort_leaks_blocks() -> list[Edit]:
    return [Edit("scheduler.py",
                 "            self.waiting.remove(request)\n"
                 "        request.status = RequestStatus.FINISHED_ABORTED\n",
                 "            self.waiting.remove(request)\n"
                 "        self.kv.free(request)\n"
                 "        request.status = RequestStatus.FINISHED_ABORTED\n")]


def scope_abort_leaks_blocks() -> str:
    bug = "07_abort_leaks_blocks"
    text = (browse_dir(bug) / "scheduler.py").read_text(encoding="utf-8")
    start = text.index("def abort_request")
    snippet = "            self.waiting.remove(request)\n"
    line = text.count("\n", 0, text.index(snippet, start)) + 2
    return _page(
        "#07 — KV usage never returns to 0 after clients disconnect",
        f"mini_vllm/scheduler.py:{line} — Scheduler.abort_request takes the request out of "
        "running/waiting but never frees its KV blocks.",
        "free the request's blocks in abort_request, whichever queue it was in.",
        "regression: abort one of two running requests, finish the other: usage 0.0.",
        "every cancelled stream; a long-running server slowly runs out of blocks.",
        "parent (n > 1) aborts beyond what the scheduler does per child.",
        "- none",
    )
