"""What the lab provides for kata 08-02: the counters' type, the workload, and mini_vllm's run.

``SpecCounters`` holds the four numbers vLLM keeps about speculation (the Prometheus counters
``vllm:spec_decode_num_drafts``, ``..._num_draft_tokens``, ``..._num_accepted_tokens`` and the
per-position vector ``..._num_accepted_tokens_per_pos``). ``mini_vllm_ngram_run`` runs the same
prompts through mini_vllm's n-gram speculation on the same checkpoint, for the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: The live workload: two repetitive prompts (n-gram lookup finds matches) and one that is not.
PROMPTS = [
    "the cat sat on the mat. the cat sat on the mat. the cat sat on the",
    "abcabcabcabcabcabc",
    "Zq7#kP!w2",
]
MAX_TOKENS = 48
#: vLLM's speculative_config for the live n-gram engine (mini_vllm: the same k and n-gram sizes).
NGRAM = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2,
         "prompt_lookup_max": 4}


@dataclass(frozen=True)
class SpecCounters:
    """Speculation counts over some span of work (one run, or an engine's lifetime).

    ``num_drafts``: verify steps of a request that carried at least one draft token.
    ``num_draft_tokens``: draft tokens proposed in those steps (at most k each).
    ``num_accepted_tokens``: draft tokens the target kept (the bonus/correction token is not one).
    ``accepted_per_pos``: entry ``i`` counts the drafts whose first ``i + 1`` tokens were kept.
    """

    num_spec_tokens: int
    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_pos: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SpecDecodeRun:
    """What one ``generate`` call did: the counters' change and each request's output ids."""

    counters: SpecCounters
    output_token_ids: list[list[int]]  # per request, in prompt order


def mini_vllm_ngram_run(model_dir: str | Path, prompts: list[str] = PROMPTS,
                        max_tokens: int = MAX_TOKENS, ngram: dict | None = None,
                        ) -> SpecDecodeRun:
    """The same greedy workload on mini_vllm (float32 numpy) with its n-gram proposer."""
    import numpy as np

    from mini_vllm import LLMEngine, SamplingParams, SpeculativeConfig
    from mini_vllm.models.loader import load_model
    from mini_vllm.tokenizer import ByteTokenizer

    class _Tokenizer(ByteTokenizer):  # the checkpoint's vocabulary (512) is wider than bytes
        def decode(self, token_ids):  # noqa: ANN001, ANN202
            return super().decode([t for t in token_ids if t < 256])

    cfg = dict(ngram or NGRAM)
    engine = LLMEngine(
        model=load_model(model_dir, np.float32), tokenizer=_Tokenizer(),
        speculative_config=SpeculativeConfig(
            method=cfg["method"], num_speculative_tokens=cfg["num_speculative_tokens"],
            prompt_lookup_min=cfg["prompt_lookup_min"],
            prompt_lookup_max=cfg["prompt_lookup_max"]))
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    outs = engine.generate(prompts, params)
    s = engine.spec_decoding_stats
    counters = SpecCounters(s.num_spec_tokens, s.num_drafts, s.num_draft_tokens,
                            s.num_accepted_tokens, list(s.num_accepted_tokens_per_pos))
    return SpecDecodeRun(counters, [list(o.output_token_ids) for o in outs])
