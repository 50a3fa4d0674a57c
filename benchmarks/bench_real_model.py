"""SmolLM2-135M decode and prefill: mini_vllm (numpy, float32, paged KV) vs Hugging Face
transformers (torch CPU, float32), side by side in one process, same prompts, same threads.

Run: ``python benchmarks/bench_real_model.py`` (needs ``katas models fetch`` and the torch extra,
``pip install -e ".[torch]"``). Options: ``--batches 1 8 32 --prompt-len 64 --new-tokens 32
--rounds 3``; ``--unset-openblas-env`` re-runs itself with ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` removed (some machines set them for old OpenBLAS builds; they can slow a
current numpy), so both settings can be reported.

Method: each round runs mini_vllm then transformers on the same greedy batch; the figures are
medians over rounds and the ratio is of medians (the host's speed drifts, interleaving cancels
most of it). Prefill: one step computing every prompt token of the batch. Decode: the remaining
``new_tokens - 1`` steps. Greedy tokens are compared, so a fast wrong engine cannot win.

Roofline: a decode step at batch 1 reads every weight of the network once (the LM head
included, the embedding table only a row), so ``read bandwidth / weight bytes`` bounds batch-1
decode. Bandwidth is measured here the way decode reads weights: a threaded matrix-vector
product over a matrix far larger than the caches.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
TEXT = (
    "The history of computing is a story of people who found ways to make machines do more "
    "with less. Early computers filled rooms and used vacuum tubes; later, transistors and "
    "integrated circuits shrank them onto desks and into pockets. Language models are the "
    "newest chapter: they read a prompt, keep what they computed for every earlier token in a "
    "key-value cache, and produce one token per step. Serving them well is mostly about memory. "
)


def make_prompts(tokenizer, batch: int, prompt_len: int) -> list[list[int]]:
    """``batch`` different prompts of exactly ``prompt_len`` tokens (shifted windows of TEXT)."""
    ids = tokenizer.encode(TEXT * 8)
    return [ids[i * 7 : i * 7 + prompt_len] for i in range(batch)]


def run_mini(llm, prompts: list[list[int]], new_tokens: int):  # type: ignore[no-untyped-def]
    from mini_vllm import SamplingParams

    engine = llm.engine
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    ids = [engine.add_request(p, params) for p in prompts]
    t0 = time.perf_counter()
    engine.step()  # the whole batch's prompts: the budget holds them all
    t1 = time.perf_counter()
    done = {}
    while engine.has_unfinished_requests():
        done.update({r.request_id: r.output_token_ids for r in engine.step()})
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, [done[i] for i in ids]


def run_hf(model, prompts: list[list[int]], new_tokens: int):  # type: ignore[no-untyped-def]
    import torch

    with torch.inference_mode():
        input_ids = torch.tensor(prompts)
        t0 = time.perf_counter()
        out = model(input_ids=input_ids, use_cache=True)
        t1 = time.perf_counter()
        past = out.past_key_values
        token = out.logits[:, -1].argmax(-1)
        tokens = [token]
        for _ in range(new_tokens - 1):
            out = model(input_ids=token[:, None], past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1].argmax(-1)
            tokens.append(token)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, torch.stack(tokens, 1).tolist()


def weight_bytes_read_per_decode_step(model) -> int:  # type: ignore[no-untyped-def]
    """Every parameter once, except the embedding table (a decode step gathers one row); the LM
    head is read whole, tied or not."""
    total = sum(p.nbytes for name, p in model.named_parameters() if "embed_tokens" not in name)
    return total + model.lm_head.nbytes


def read_bandwidth(gib: float = 0.5, repeats: int = 5) -> float:
    """Bytes per second a threaded float32 matrix-vector product streams from memory (best of)."""
    import numpy as np

    rows = 8192
    matrix = np.ones((rows, int(gib * (1 << 30)) // 4 // rows), np.float32)
    vector = np.ones(matrix.shape[1], np.float32)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        matrix @ vector
        best = min(best, time.perf_counter() - t0)
    return matrix.nbytes / best


def describe_blas() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
                     f"threads={i.get('num_threads')}" for i in threadpool_info())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--unset-openblas-env", action="store_true")
    args = parser.parse_args()
    if args.unset_openblas_env and any(k in os.environ for k in OPENBLAS_ENV):
        env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_ENV}
        argv = [a for a in sys.argv if a != "--unset-openblas-env"]
        return subprocess.call([sys.executable, *argv], env=env)

    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from mini_vllm import LLM
    from pytest_vllm_katas.live.models import (
        smollm2_available,
        smollm2_missing_reason,
        smollm2_path,
    )

    if not smollm2_available():
        print(smollm2_missing_reason(), file=sys.stderr)
        return 1
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    path = smollm2_path()
    max_batch = max(args.batches)
    llm = LLM(path, dtype="float32", enable_caching=False, max_num_seqs=max_batch,
              max_num_batched_tokens=max(2048, max_batch * args.prompt_len))
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    print("OpenBLAS env: " + ", ".join(f"{k}={os.environ.get(k, '(unset)')}"
                                        for k in OPENBLAS_ENV))
    print(f"BLAS: {describe_blas()}; torch threads {torch.get_num_threads()}; numpy "
          f"{np.__version__}, torch {torch.__version__}")
    weight_bytes = weight_bytes_read_per_decode_step(llm.model)
    bandwidth = read_bandwidth()
    roofline = bandwidth / weight_bytes
    print(f"weights read per decode step {weight_bytes / 1e6:.0f} MB; read bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s -> batch-1 decode roofline {roofline:.1f} tok/s")
    print(f"{'batch':>5} {'mini decode':>12} {'hf decode':>10} {'ratio':>6} "
          f"{'mini prefill':>13} {'hf prefill':>11} {'ratio':>6}  tokens")
    for batch in args.batches:
        prompts = make_prompts(llm.tokenizer, batch, args.prompt_len)
        mini_d, hf_d, mini_p, hf_p = [], [], [], []
        same = True
        for _ in range(args.rounds):
            p, d, mine = run_mini(llm, prompts, args.new_tokens)
            mini_p.append(batch * args.prompt_len / p)
            mini_d.append(batch * (args.new_tokens - 1) / d)
            p, d, theirs = run_hf(hf, prompts, args.new_tokens)
            hf_p.append(batch * args.prompt_len / p)
            hf_d.append(batch * (args.new_tokens - 1) / d)
            same = same and mine == theirs
        md, hd = statistics.median(mini_d), statistics.median(hf_d)
        mp, hp = statistics.median(mini_p), statistics.median(hf_p)
        print(f"{batch:>5} {md:>10.1f}/s {hd:>8.1f}/s {md / hd:>5.2f}x {mp:>11.0f}/s "
              f"{hp:>9.0f}/s {mp / hp:>5.2f}x  {'equal' if same else 'DIFFER'}")
        if batch == 1:
            print(f"      mini_vllm batch-1 decode = {md / roofline:.0%} of the roofline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
