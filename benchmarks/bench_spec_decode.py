"""Speculative decoding in mini_vllm on SmolLM2-135M: tokens per target forward and wall tok/s,
n-gram and draft-model speculation vs none, next to the speedup model's prediction.

Run: ``python benchmarks/bench_spec_decode.py`` (needs ``katas models fetch``). Options:
``--new-tokens 48 --k 4 --draft-layers 8 --rounds 2``.

Per prompt (a repetitive one and a non-repetitive one), single request, greedy, ``ignore_eos``:

* ``tok/fwd``: generated tokens / target forwards (``model_runner.num_steps``, prefill included);
* ``alpha``: accepted drafts / drafted tokens (``SpecDecodingStats.acceptance_rate``);
* ``c``: one draft token's cost over one target decode step, both timed here (the proposer's
  calls / the drafts they returned, over the plain run's mean decode step);
* ``model``: the speedup model ``(1 - alpha^(k+1)) / ((1 - alpha) (k c + 1))`` (lab 08-04);
* ``speedup``: measured wall tok/s over the plain engine's (best of the rounds: on a shared
  host the fastest run is the least disturbed one).

Every speculative run's tokens are checked against the plain engine's (greedy is lossless), so
a fast wrong engine cannot win. The model ignores what mini_vllm adds per cycle (the verify's
k + 1 rows cost more than one decode row in numpy, the draft model here recomputes the whole
context every proposal), so expect it above the measurement.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = {
    "repetitive": (
        "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\n"
        "def mul(a, b):\n    return a * b\n\ndef div(a, b):\n    return a / b\n\ndef"
    ),
    "non-repetitive": "Write a short story about a lighthouse keeper who finds a strange map.",
}


def predicted_speedup(alpha: float, k: int, c: float) -> float:
    tokens = k + 1 if alpha >= 1.0 else (1 - alpha ** (k + 1)) / (1 - alpha)
    return tokens / (k * c + 1)


class TimedProposer:
    """Wraps a proposer to time it and count the drafts it returns."""

    def __init__(self, proposer) -> None:
        self.proposer, self.seconds, self.num_drafts = proposer, 0.0, 0

    def __call__(self, token_ids):
        start = time.perf_counter()
        drafts = self.proposer(token_ids)
        self.seconds += time.perf_counter() - start
        self.num_drafts += len(drafts)
        return drafts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--draft-layers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from mini_vllm import LLM, LLMEngine, SamplingParams, SpeculativeConfig
    from mini_vllm.spec_decode import DraftModelProposer, NgramProposer, truncated_model
    from pytest_vllm_katas.live.models import smollm2_available, smollm2_path

    if not smollm2_available():
        sys.exit("SmolLM2 is not in the model cache: run `katas models fetch` first")
    llm = LLM(smollm2_path(), max_model_len=512)
    model, tokenizer, k = llm.model, llm.tokenizer, args.k
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0.0, ignore_eos=True)

    def make(method: str):
        if method == "none":
            return None, None
        if method == "ngram":
            inner = NgramProposer(2, 5, k, max_model_len=512)
        else:
            inner = DraftModelProposer(truncated_model(model, args.draft_layers), k,
                                       max_model_len=512)
        timed = TimedProposer(inner)
        return SpeculativeConfig(num_speculative_tokens=k, proposer=timed), timed

    def run(method: str, prompt: str):
        config, timed = make(method)
        engine = LLMEngine(model=model, tokenizer=tokenizer, max_model_len=512, num_blocks=64,
                           speculative_config=config)
        start = time.perf_counter()
        out = engine.generate([prompt], params)[0]
        wall = time.perf_counter() - start
        return out.output_token_ids, wall, engine, timed

    methods = ["none", "ngram", f"draft({args.draft_layers}/{model.num_layers} layers)"]
    rows = []
    for name, prompt in PROMPTS.items():
        walls: dict[str, list[float]] = {m: [] for m in methods}
        info: dict[str, tuple] = {}
        for _ in range(args.rounds):
            for method in methods:
                kind = method.split("(")[0]
                tokens, wall, engine, timed = run(kind, prompt)
                walls[method].append(wall)
                info[method] = (tokens, engine, timed)
        base_tokens, base_engine, _ = info["none"]
        base_wall = min(walls["none"])
        # The plain run's mean decode step: (wall - one prefill) / decode steps, the prefill
        # costed as one step (prompts are short).
        step = base_wall / base_engine.model_runner.num_steps
        for method in methods:
            tokens, engine, timed = info[method]
            assert tokens == base_tokens, f"{method} changed the greedy tokens on {name!r}"
            wall = min(walls[method])
            fwd = engine.model_runner.num_steps
            stats = engine.spec_decoding_stats
            if stats is None:
                alpha = c = model_pred = float("nan")
            else:
                alpha = stats.acceptance_rate
                c = (timed.seconds / max(timed.num_drafts, 1)) / step
                model_pred = predicted_speedup(alpha, k, c)
            rows.append((name, method, len(tokens) / fwd, fwd, len(tokens) / wall, alpha, c,
                         model_pred, base_wall / wall))

    header = ("prompt", "method", "tok/fwd", "fwds", "tok/s", "alpha", "c", "model", "speedup")
    print(f"SmolLM2-135M float32, numpy, k={k}, {args.new_tokens} new tokens, greedy, "
          f"best of {args.rounds} rounds")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, method, tpf, fwd, tps, alpha, c, pred, speed in rows:
        cells = [name, method, f"{tpf:.2f}", str(fwd), f"{tps:.1f}",
                 "-" if alpha != alpha else f"{alpha:.2f}", "-" if c != c else f"{c:.3f}",
                 "-" if pred != pred else f"{pred:.2f}x", f"{speed:.2f}x"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
