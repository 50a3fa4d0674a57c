"""What the lab provides for kata 08-02: the counters' type, the workload, and mini_vllm's run.

``SpecCounters`` holds the four numbers vLLM keeps about speculation (the Prometheus counters
``vllm:spec_decode_num_drafts``, ``..._num_draft_tokens``, ``..._num_accepted_tokens`` and the
per-position vector ``..._num_accepted_tokens_per_pos``). ``mini_vllm_spec_run`` runs the same
prompts through mini_vllm's speculation (n-gram or a draft model) on the same checkpoint, for the
comparison; ``write_truncated_checkpoint`` makes the draft model: the target's first layers.
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


def write_truncated_checkpoint(model_dir: str | Path, target: str | Path,
                               num_layers: int) -> Path:
    """Write a copy of the Llama checkpoint at ``model_dir`` that keeps only its first
    ``num_layers`` layers (embedding, final norm and LM head as they are) to ``target``: a
    draft model vLLM can load, the same network as mini_vllm's ``truncated_model``."""
    import json
    import shutil

    from safetensors.numpy import save_file

    from mini_vllm.models.loader import iterate_weights

    source, target = Path(model_dir), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    kept = {}
    for name, tensor in iterate_weights(source):
        parts = name.split(".")
        if parts[:2] == ["model", "layers"] and int(parts[2]) >= num_layers:
            continue
        kept[name] = tensor
    save_file(kept, str(target / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text("utf-8"))
    config["num_hidden_layers"] = num_layers
    (target / "config.json").write_text(json.dumps(config, indent=2), "utf-8")
    for extra in source.iterdir():  # tokenizer and generation files, as they are
        if extra.is_file() and extra.suffix != ".safetensors" and extra.name != "config.json":
            shutil.copy2(extra, target / extra.name)
    return target


def mini_vllm_spec_run(model_dir: str | Path, spec: dict | None = None,
                       prompts: list[str] = PROMPTS, max_tokens: int = MAX_TOKENS,
                       ) -> SpecDecodeRun:
    """The same greedy workload on mini_vllm (float32 numpy), speculating as ``spec`` says
    (``NGRAM`` by default; ``{"method": "draft_model", "num_speculative_tokens": k,
    "draft_num_layers": n}`` drafts with the target's first ``n`` layers)."""
    import numpy as np

    from mini_vllm import LLMEngine, SamplingParams, SpeculativeConfig
    from mini_vllm.models.loader import load_model
    from mini_vllm.tokenizer import ByteTokenizer

    class _Tokenizer(ByteTokenizer):  # the checkpoint's vocabulary (512) is wider than bytes
        def decode(self, token_ids):  # noqa: ANN001, ANN202
            return super().decode([t for t in token_ids if t < 256])

    cfg = dict(spec or NGRAM)
    model = load_model(model_dir, np.float32)
    if cfg["method"] == "ngram":
        config = SpeculativeConfig(
            method="ngram", num_speculative_tokens=cfg["num_speculative_tokens"],
            prompt_lookup_min=cfg["prompt_lookup_min"],
            prompt_lookup_max=cfg["prompt_lookup_max"])
    else:
        config = SpeculativeConfig(
            method="draft_model", num_speculative_tokens=cfg["num_speculative_tokens"],
            draft_model=model, draft_num_layers=cfg["draft_num_layers"])
    engine = LLMEngine(model=model, tokenizer=_Tokenizer(), speculative_config=config)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    outs = engine.generate(prompts, params)
    s = engine.spec_decoding_stats
    counters = SpecCounters(s.num_spec_tokens, s.num_drafts, s.num_draft_tokens,
                            s.num_accepted_tokens, list(s.num_accepted_tokens_per_pos))
    return SpecDecodeRun(counters, [list(o.output_token_ids) for o in outs])
