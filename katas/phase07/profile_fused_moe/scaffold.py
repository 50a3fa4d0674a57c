"""Provided for kata 07-02: profile rows, the course's captured table, the recorded vLLM-CPU run,
and the live run itself (start vLLM on the seeded tiny Mixtral, profile a generate, capture what
each layer's router sees).

Nothing here imports torch or vLLM at import time: the core tier runs without them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mini_vllm.models.tiny_mixtral import VLLM_SPEC, build_tiny_mixtral, tiny_mixtral_weights

RECORDING_PATH = Path(__file__).with_name("recorded_profile.json")

#: The live run: every prompt is prefilled in the first step, then all decode together.
PROMPTS: list[list[int]] = [[72, 101, 108, 108, 111, 32, 77], [77, 111, 69]]
MAX_TOKENS = 4
TOP_K = VLLM_SPEC.num_experts_per_tok
NUM_LAYERS = VLLM_SPEC.num_hidden_layers


@dataclass(frozen=True)
class Row:
    """One row of ``prof.key_averages()``: an op name, how often it ran, and its times in
    microseconds (``self_*``: inside the op itself; ``cpu_time_total``: including its children)."""

    key: str
    count: int
    self_cpu_time_total: float = 0.0
    cpu_time_total: float = 0.0
    self_device_time_total: float = 0.0


def rows_from_key_averages(key_averages: Any) -> list[Row]:
    """``torch.profiler``'s ``prof.key_averages()`` as :class:`Row` s."""
    return [Row(e.key, int(e.count), float(e.self_cpu_time_total), float(e.cpu_time_total),
                float(getattr(e, "self_device_time_total", 0.0) or 0.0)) for e in key_averages]


#: The course's capture (small MoE, L4, vLLM 0.22.1, decode-heavy): CUDA time per kernel group,
#: as rows whose device times are the quoted percentages (per mille of one step); the rest of
#: the step (23.2%) is one "other" row.
COURSE_TABLE: list[Row] = [
    Row("fused_moe_kernel", 1, self_device_time_total=412.0),
    Row("moe_align_block_size_kernel", 1, self_device_time_total=68.0),
    Row("flash_attn_fwd", 1, self_device_time_total=185.0),
    Row("rms_norm_kernel", 1, self_device_time_total=90.0),
    Row("router_gate_gemm", 1, self_device_time_total=13.0),
    Row("other", 1, self_device_time_total=232.0),
]


@dataclass
class GateCall:
    """One forward call of one layer's router: its input hidden states ``[T, hidden]``, the
    logits it returned ``[T, E]``, and the routing vLLM's MoE then used (``topk_ids``,
    ``topk_weights``, ``[T, k]``, in vLLM's own order)."""

    layer: int
    hidden: np.ndarray
    logits: np.ndarray
    topk_ids: np.ndarray | None = None
    topk_weights: np.ndarray | None = None


@dataclass
class ProfiledRun:
    rows: list[Row]
    gate_calls: list[GateCall] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    num_layers: int = NUM_LAYERS


def load_recording() -> dict:
    """``recorded_profile.json``: one real profiled run of vLLM 0.32 (CPU) on the tiny Mixtral."""
    return json.loads(RECORDING_PATH.read_text("utf-8"))


def recorded_rows(recording: dict) -> list[Row]:
    return [Row(**row) for row in recording["rows"]]


def gate_weight(layer: int) -> np.ndarray:
    """Layer ``layer``'s router weight ``[E, hidden]`` (float32) from the checkpoint: vLLM's CPU
    backend repacks its copy after loading."""
    return tiny_mixtral_weights(VLLM_SPEC)[f"model.layers.{layer}.block_sparse_moe.gate.weight"]


def start_mixtral(model_dir: str | Path) -> Any:
    """The seeded tiny Mixtral (``VLLM_SPEC``) on vLLM-CPU: in-process, eager, float32, no
    tokenizer (prompts are token ids), prefix caching off."""
    from pytest_vllm_katas.live.fixtures import environment, guard_llvmlite

    build_tiny_mixtral(VLLM_SPEC, model_dir)
    guard_llvmlite()
    with environment(VLLM_CPU_KVCACHE_SPACE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0"):
        from vllm import LLM

        return LLM(model=str(model_dir), max_model_len=256, enforce_eager=True,
                   skip_tokenizer_init=True, dtype="float32", max_num_seqs=4, seed=0,
                   enable_prefix_caching=False)


def _moe_layers(llm: Any) -> list[Any]:
    core = llm.llm_engine.engine_core.engine_core
    model = core.model_executor.driver_worker.worker.model_runner.model
    return [layer.block_sparse_moe for layer in model.model.layers]


def profile_generate(llm: Any, prompts: Sequence[Sequence[int]] = PROMPTS,
                     max_tokens: int = MAX_TOKENS) -> ProfiledRun:
    """Warm up, then one greedy ``generate`` under ``torch.profiler`` (CPU activity), with a
    forward hook on every layer's ``block_sparse_moe.gate`` and a tap on its router."""
    import torch
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True,
                            detokenize=False)
    batch = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
    llm.generate(batch, params, use_tqdm=False)                      # warm up first

    calls: list[GateCall] = []
    handles, restore = [], []
    for index, moe in enumerate(_moe_layers(llm)):
        def hook(module, args, output, index=index):  # type: ignore[no-untyped-def]
            logits = output[0] if isinstance(output, tuple) else output
            calls.append(GateCall(index, args[0].detach().float().numpy().copy(),
                                  logits.detach().float().numpy().copy()))

        handles.append(moe.gate.register_forward_hook(hook))
        router = getattr(moe.experts, "router", None)
        if router is not None and hasattr(router, "select_experts"):
            original = router.select_experts

            def tap(*args, original=original, index=index, **kwargs):  # type: ignore[no-untyped-def]
                weights, ids = original(*args, **kwargs)
                call = next(c for c in reversed(calls) if c.layer == index)
                call.topk_weights = weights.detach().float().numpy().copy()
                call.topk_ids = ids.detach().numpy().astype(np.int64)
                return weights, ids

            router.select_experts = tap
            restore.append(router)
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            outs = llm.generate(batch, params, use_tqdm=False)
    finally:
        for h in handles:
            h.remove()
        for router in restore:
            del router.select_experts                                # back to the class's
    return ProfiledRun(rows=rows_from_key_averages(prof.key_averages()), gate_calls=calls,
                       tokens=[list(o.outputs[0].token_ids) for o in outs],
                       num_layers=len(_moe_layers(llm)))


def record(model_dir: str | Path, out: Path = RECORDING_PATH) -> None:
    """Write ``recorded_profile.json`` from one live run (maintainers: ``python -c "from
    katas.phase07.profile_fused_moe.scaffold import record; record('<tmp dir>')"``)."""
    import vllm

    llm = start_mixtral(model_dir)
    run = profile_generate(llm)
    prefill = [c for c in run.gate_calls if len(c.hidden) == sum(map(len, PROMPTS))]
    recording = {
        "vllm_version": vllm.__version__,
        "num_layers": run.num_layers,
        "prompts": PROMPTS,
        "max_tokens": MAX_TOKENS,
        "tokens": run.tokens,
        "rows": [vars(r) for r in sorted(run.rows, key=lambda r: -r.self_cpu_time_total)],
        "routing": [{"layer": c.layer,
                     "logits": np.round(c.logits.astype(np.float64), 6).tolist(),
                     "topk_ids": c.topk_ids.tolist(),
                     "topk_weights": np.round(c.topk_weights.astype(np.float64), 7).tolist()}
                    for c in prefill],
    }
    out.write_text(json.dumps(recording, indent=1) + "\n", "utf-8")
