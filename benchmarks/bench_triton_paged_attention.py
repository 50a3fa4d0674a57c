"""How fast is the reference paged-attention kernel of kata 02-04? (CUDA only.)

Decode attention is memory-bound: each step reads every cached K and V byte once and does ~2
FLOPs per byte. So the yardstick is bandwidth. For each (batch, context) this script times

- the reference ``paged_attention_triton`` on a paged cache with shuffled block tables, and
- ``torch.nn.functional.scaled_dot_product_attention`` on the same K/V gathered densely
  beforehand (the gather is not timed: SDPA gets contiguous memory for free),

and reports the kernel's achieved bandwidth (K/V bytes read / median time) as a percentage of a
plain device-to-device copy on the same GPU (bytes read + written / median time). Timings are
``triton.testing.do_bench`` medians; it flushes L2 before every repetition.

    python benchmarks/bench_triton_paged_attention.py              # the table
    python benchmarks/bench_triton_paged_attention.py --sweep      # also try kernel configs
    python benchmarks/bench_triton_paged_attention.py --out DIR    # write table.md + results.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the repo

from reference.phase02 import triton_paged_attention as ref  # noqa: E402

# Llama-3-8B's attention: 32 query heads sharing 8 KV heads (GQA 4:1), head_dim 128; vLLM's
# default block size.
NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 32, 8, 128, 16
BATCHES = (1, 4, 16, 64)
CONTEXTS = (1024, 4096, 16384, 32768)
GOAL_PCT_OF_COPY, GOAL_SDPA_RATIO = 60.0, 1.5  # at batch >= 16 and context >= 4k


def median_ms(fn) -> float:
    return do_bench(fn, warmup=25, rep=200, return_mode="median")


def copy_bandwidth() -> float:
    """Bytes read + written per second of a 2 GiB device-to-device copy."""
    src = torch.randn(1 << 29, device="cuda")  # 2 GiB of float32
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)


def make_inputs(batch: int, context: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A full paged batch on the GPU: every sequence ``context`` tokens, blocks shuffled."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    blocks_per_seq = context // BLOCK_SIZE
    num_blocks = batch * blocks_per_seq
    shape = (num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    key_cache = torch.randn(shape, device="cuda", dtype=torch.float16, generator=gen)
    value_cache = torch.randn(shape, device="cuda", dtype=torch.float16, generator=gen)
    perm = torch.randperm(num_blocks, device="cuda", generator=gen)
    block_tables = perm.view(batch, blocks_per_seq).to(torch.int32)
    seq_lens = torch.full((batch,), context, device="cuda", dtype=torch.int32)
    query = torch.randn(batch, NUM_HEADS, HEAD_DIM, device="cuda", dtype=torch.float16,
                        generator=gen)
    return query, key_cache, value_cache, block_tables, seq_lens


def dense_for_sdpa(key_cache: torch.Tensor, block_tables: torch.Tensor) -> torch.Tensor:
    """Gather the paged cache into SDPA's contiguous ``[batch, kv_heads, context, head_dim]``."""
    batch = block_tables.shape[0]
    paged = key_cache[block_tables.long()]  # [batch, blocks, block_size, kv_heads, dim]
    return paged.reshape(batch, -1, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2).contiguous()


def launch(config: dict, query, key_cache, value_cache, block_tables, seq_lens) -> torch.Tensor:
    """The reference kernel under an explicit config (the reference launcher fixes its own)."""
    out = torch.empty_like(query)
    hpp = config["heads_per_program"]
    grid = (NUM_HEADS // hpp, query.shape[0])
    ref.paged_attention_kernel[grid](
        out, query, key_cache, value_cache, block_tables, seq_lens, HEAD_DIM**-0.5,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        key_cache.stride(0), key_cache.stride(1), key_cache.stride(2), block_tables.stride(0),
        QUERIES_PER_KV=NUM_HEADS // NUM_KV_HEADS, HEADS_PER_PROGRAM=hpp, BLOCK_SIZE=BLOCK_SIZE,
        HEAD_DIM=HEAD_DIM, TILE_BLOCKS=config["tile_tokens"] // BLOCK_SIZE,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
    return out


def measure(batch: int, context: int, copy_bw: float) -> dict:
    args = make_inputs(batch, context)
    query, key_cache, value_cache, block_tables, _ = args
    kv_bytes = 2 * batch * context * NUM_KV_HEADS * HEAD_DIM * key_cache.element_size()

    k_dense = dense_for_sdpa(key_cache, block_tables)
    v_dense = dense_for_sdpa(value_cache, block_tables)
    q4 = query.unsqueeze(2)  # [batch, heads, 1, dim]

    def sdpa() -> torch.Tensor:
        return F.scaled_dot_product_attention(q4, k_dense, v_dense, enable_gqa=True)

    expected = sdpa().squeeze(2)
    got = ref.paged_attention_triton(*args)
    err = (got.float() - expected.float()).abs().max().item()
    assert err <= 1e-2, f"batch {batch} context {context}: max |Δ| vs SDPA = {err:.3g}"

    t_triton = median_ms(lambda: ref.paged_attention_triton(*args))
    t_sdpa = median_ms(sdpa)
    bw = kv_bytes / (t_triton * 1e-3)
    row = {
        "batch": batch, "context": context, "kv_mib": kv_bytes / 2**20,
        "triton_us": t_triton * 1e3, "triton_gbps": bw / 1e9, "pct_of_copy": 100 * bw / copy_bw,
        "sdpa_us": t_sdpa * 1e3, "sdpa_pct_of_copy": 100 * kv_bytes / (t_sdpa * 1e-3) / copy_bw,
        "ratio_vs_sdpa": t_triton / t_sdpa, "max_abs_err_vs_sdpa": err,
    }
    return row


def sweep(copy_bw: float) -> list[dict]:
    """Try kernel configs at the sizes the goal is about; best first per size."""
    configs = [
        dict(zip(("heads_per_program", "tile_tokens", "num_warps", "num_stages"), c, strict=True))
        for c in itertools.product((1, 4), (32, 64, 128), (4, 8), (2, 3, 4))
    ]
    rows = []
    for batch, context in ((16, 4096), (16, 32768), (64, 4096), (4, 16384)):
        args = make_inputs(batch, context)
        kv_bytes = 2 * batch * context * NUM_KV_HEADS * HEAD_DIM * 2
        expected = ref.paged_attention_triton(*args)
        for config in configs:
            try:
                err = (launch(config, *args).float() - expected.float()).abs().max().item()
                ms = median_ms(lambda c=config, a=args: launch(c, *a))
            except Exception as exc:  # e.g. out of shared memory for a deep pipeline
                print(f"  skip {config}: {type(exc).__name__}: {str(exc)[:80]}", flush=True)
                continue
            rows.append({"batch": batch, "context": context, **config, "us": ms * 1e3,
                         "pct_of_copy": 100 * kv_bytes / (ms * 1e-3) / copy_bw, "err": err})
        best = sorted((r for r in rows if (r["batch"], r["context"]) == (batch, context)),
                      key=lambda r: r["us"])[:5]
        for r in best:
            print(f"  sweep b={batch} ctx={context}: hpp={r['heads_per_program']} "
                  f"tile={r['tile_tokens']} warps={r['num_warps']} stages={r['num_stages']} "
                  f"{r['us']:.1f} us {r['pct_of_copy']:.1f}% err={r['err']:.1e}", flush=True)
    return rows


def table(rows: list[dict], copy_bw: float) -> str:
    lines = [
        f"{torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__}"
        f" | copy {copy_bw / 1e9:.0f} GB/s (read + write) | fp16, {NUM_HEADS} heads / "
        f"{NUM_KV_HEADS} KV heads, head_dim {HEAD_DIM}, block_size {BLOCK_SIZE}",
        "",
        "| batch | context | K/V MiB | Triton µs | Triton GB/s | % of copy | SDPA µs "
        "| SDPA % of copy | Triton / SDPA |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        goal = r["batch"] >= 16 and r["context"] >= 4096
        ok = r["pct_of_copy"] >= GOAL_PCT_OF_COPY and r["ratio_vs_sdpa"] <= GOAL_SDPA_RATIO
        mark = (" ✓" if ok else " ✗") if goal else ""
        lines.append(
            f"| {r['batch']} | {r['context']} | {r['kv_mib']:.0f} | {r['triton_us']:.1f} | "
            f"{r['triton_gbps']:.0f} | {r['pct_of_copy']:.1f}{mark} | {r['sdpa_us']:.1f} | "
            f"{r['sdpa_pct_of_copy']:.1f} | {r['ratio_vs_sdpa']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also time kernel configs")
    parser.add_argument("--out", type=Path, help="folder for table.md and results.json")
    opts = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU")
    copy_bw = copy_bandwidth()
    print(f"copy bandwidth: {copy_bw / 1e9:.0f} GB/s", flush=True)
    results: dict = {"copy_gbps": copy_bw / 1e9, "device": torch.cuda.get_device_name()}
    if opts.sweep:
        results["sweep"] = sweep(copy_bw)
    results["rows"] = []
    for b, c in itertools.product(BATCHES, CONTEXTS):
        results["rows"].append(measure(b, c, copy_bw))
        torch.cuda.empty_cache()  # the largest sizes hold ~20 GB while they run
    text = table(results["rows"], copy_bw)
    print(text)
    if opts.out:
        opts.out.mkdir(parents=True, exist_ok=True)
        (opts.out / "table.md").write_text(text + "\n")
        (opts.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
