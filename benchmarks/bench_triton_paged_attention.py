"""How fast are the reference paged-attention kernels of katas 02-04 and 04-05? (CUDA only.)

Decode attention is memory-bound: each step reads every cached K and V byte once and does ~2
FLOPs per byte. So the yardstick is bandwidth. For each (batch, context) this script times

- kata 02-04's ``paged_attention_triton`` (one program per sequence and KV head) on a paged
  cache with shuffled block tables,
- kata 04-05's ``split_kv_attention`` (the context split into partitions, merged by a second
  kernel; the split count from its ``choose_num_splits`` rule) on the same cache, and
- ``torch.nn.functional.scaled_dot_product_attention`` on the same K/V gathered densely
  beforehand (the gather is not timed: SDPA gets contiguous memory for free),

and reports each kernel's achieved bandwidth (K/V bytes read / median time) as a percentage of
a plain device-to-device copy on the same GPU (bytes read + written / median time). Timings are
medians of CUDA-event timed calls, L2 emptied before each (as ``triton.testing.do_bench``).

    python benchmarks/bench_triton_paged_attention.py                 # the table
    python benchmarks/bench_triton_paged_attention.py --graphs        # time CUDA graph replays
    python benchmarks/bench_triton_paged_attention.py --sweep         # also try 02-04 configs
    python benchmarks/bench_triton_paged_attention.py --graphs --sweep-splits  # 04-05 tuning
    python benchmarks/bench_triton_paged_attention.py --out DIR       # table.md + results.json

Eager calls include Python's launch overhead wherever it exceeds the GPU time (04-05 launches
two kernels); ``--graphs`` captures each call once and times replays: GPU time only.

L2 is emptied before every timed call. ``do_bench`` does it by *writing* a 256 MiB buffer,
which leaves the whole L2 (50 MiB on an H100/H200) holding dirty lines: the timed kernel then
pays for writing someone else's 50 MiB back to HBM while it reads (about 12 µs at 4 TB/s, a
fixed cost that dwarfs a small decode step). ``--flush read`` (the default) empties L2 by
*reading* a 256 MiB buffer instead, so the timed kernel starts on clean, cold lines; ``--flush
write`` is ``do_bench``'s way, kept to compare.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the repo

from katas.phase04.triton_split_kv_decode.scaffold import multiprocessor_count  # noqa: E402
from reference.phase02 import triton_paged_attention as ref  # noqa: E402
from reference.phase04 import triton_split_kv_decode as split  # noqa: E402

# Llama-3-8B's attention: 32 query heads sharing 8 KV heads (GQA 4:1), head_dim 128; vLLM's
# default block size.
NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 32, 8, 128, 16
BATCHES = (1, 4, 16, 64)
CONTEXTS = (1024, 4096, 16384, 32768)
GOAL_PCT_OF_COPY, GOAL_SDPA_RATIO = 60.0, 1.5  # 02-04: at batch >= 16 and context >= 4k
# 04-05 (split-KV): at batch <= 4 and context >= 4k within 1.2x of SDPA, and at >= 16k also
# >= 60% of copy bandwidth; at batch >= 16 no slower than 02-04 (5% for timing noise).
SPLIT_SDPA_RATIO, SPLIT_PCT_OF_COPY, SPLIT_NO_REGRESSION = 1.2, 60.0, 1.05


GRAPHS = False  # --graphs turns it on
FLUSH = "read"  # --flush: how L2 is emptied before each timed call ("read" or "write")
_flush_buffer: torch.Tensor | None = None


def flush_l2() -> None:
    """Empty L2 before a timed call, by reading (clean lines) or writing (dirty lines) 256 MiB."""
    global _flush_buffer
    if _flush_buffer is None:
        _flush_buffer = torch.zeros(1 << 26, dtype=torch.int32, device="cuda")
    if FLUSH == "read":
        _flush_buffer.max()  # reads every line; writes one scalar
    else:
        _flush_buffer.zero_()  # what do_bench does


def timed_median_ms(fn, warmup: int = 25, rep: int = 200) -> float:
    """``do_bench``'s loop (L2 emptied, then ``fn`` timed by CUDA events; the median over
    ``rep`` calls), with :func:`flush_l2` as the way L2 is emptied."""
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(rep)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(rep)]
    for start, end in zip(starts, ends, strict=True):
        flush_l2()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return sorted(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))[rep // 2]


def median_ms(fn, rep: int = 200) -> float:
    """Median GPU time of ``fn()``: its launches captured once in a CUDA graph, then replayed
    (L2 is emptied before every replay). A replay is one launch however many
    kernels ``fn`` runs, so the time is the GPU's, not Python's launch overhead (decode steps
    run under CUDA graphs in vLLM too). Without ``--graphs``, ``fn`` itself is called each time:
    then two Triton launches cost more host time than the GPU needs at small sizes."""
    if not GRAPHS:
        return timed_median_ms(fn, rep=rep)
    fn()  # compile and warm up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    ms = timed_median_ms(graph.replay, rep=rep)
    del graph
    return ms


def cpu_us_per_call(fn, calls: int = 300) -> float:
    """Host time per eager call, launches queued back to back (CPU-bound for small inputs)."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def copy_bandwidth() -> float:
    """Bytes read + written per second of a 2 GiB device-to-device copy."""
    src = torch.randn(1 << 29, device="cuda")  # 2 GiB of float32
    dst = torch.empty_like(src)
    # Eager: a copy captured in a CUDA graph becomes a copy-engine node (~35% slower here).
    ms = timed_median_ms(lambda: dst.copy_(src))
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

    got_split = split.split_kv_attention(*args)
    err_split = (got_split.float() - expected.float()).abs().max().item()
    assert err_split <= 1e-2, f"batch {batch} context {context}: split-KV max |Δ| = {err_split:.3g}"

    t_triton = median_ms(lambda: ref.paged_attention_triton(*args))
    t_split = median_ms(lambda: split.split_kv_attention(*args))
    t_sdpa = median_ms(sdpa)
    bw = kv_bytes / (t_triton * 1e-3)
    row = {
        "batch": batch, "context": context, "kv_mib": kv_bytes / 2**20,
        "triton_us": t_triton * 1e3, "triton_gbps": bw / 1e9, "pct_of_copy": 100 * bw / copy_bw,
        "sdpa_us": t_sdpa * 1e3, "sdpa_pct_of_copy": 100 * kv_bytes / (t_sdpa * 1e-3) / copy_bw,
        "ratio_vs_sdpa": t_triton / t_sdpa, "max_abs_err_vs_sdpa": err,
        "split_us": t_split * 1e3, "num_splits": default_splits(args),
        "split_pct_of_copy": 100 * kv_bytes / (t_split * 1e-3) / copy_bw,
        "split_ratio_vs_sdpa": t_split / t_sdpa, "split_ratio_vs_triton": t_split / t_triton,
        "split_max_abs_err_vs_sdpa": err_split,
    }
    return row


def default_splits(args) -> int:
    """The split count 04-05's launcher picks for these inputs (its documented rule)."""
    query, key_cache, _, block_tables, _ = args
    return split.choose_num_splits(query.shape[0], key_cache.shape[2],
                                   block_tables.shape[1] * key_cache.shape[1],
                                   multiprocessor_count(query.device))


def split_goal(r: dict) -> str:
    """04-05's goal mark for one row: '' where the goal says nothing."""
    if r["batch"] <= 4 and r["context"] >= 4096:
        ok = r["split_ratio_vs_sdpa"] <= SPLIT_SDPA_RATIO and (
            r["context"] < 16384 or r["split_pct_of_copy"] >= SPLIT_PCT_OF_COPY)
    elif r["batch"] >= 16:
        ok = r["split_ratio_vs_triton"] <= SPLIT_NO_REGRESSION
    else:
        return ""
    return " ✓" if ok else " ✗"


def sweep_splits(copy_bw: float) -> list[dict]:
    """04-05: every split count under every stage-1 config, the one-pass configs at large
    batches, and the host time of an eager call; prints the best per size."""
    rows = []
    small = make_inputs(1, 4096)
    q4 = small[0].unsqueeze(2)
    k_dense, v_dense = dense_for_sdpa(small[1], small[3]), dense_for_sdpa(small[2], small[3])
    for name, fn in (
        ("02-04 paged_attention_triton", lambda: ref.paged_attention_triton(*small)),
        ("04-05 split_kv_attention, 1 split", lambda: split.split_kv_attention(*small,
                                                                              num_splits=1)),
        ("04-05 split_kv_attention, 16 splits", lambda: split.split_kv_attention(*small,
                                                                                num_splits=16)),
        ("04-05 split_kv_attention, rule", lambda: split.split_kv_attention(*small)),
        ("SDPA", lambda: F.scaled_dot_product_attention(q4, k_dense, v_dense, enable_gqa=True)),
    ):
        us = cpu_us_per_call(fn)
        rows.append({"kind": "cpu", "what": name, "us_per_call": us})
        print(f"  host time per eager call (batch 1, 4096): {name}: {us:.1f} us", flush=True)

    configs = ((32, 2, 3), (32, 4, 3), (64, 4, 2), (64, 4, 3), (64, 8, 3), (128, 4, 3),
               (128, 8, 2), (128, 8, 3))
    cells = ((1, 4096), (1, 16384), (1, 32768), (4, 4096), (4, 16384), (4, 32768),
             (16, 1024), (16, 4096), (16, 32768), (64, 1024))
    saved = split._SPLIT_CONFIG, split._ONE_PASS_CONFIG
    for batch, context in cells:
        args = make_inputs(batch, context)
        kv_bytes = 2 * batch * context * NUM_KV_HEADS * HEAD_DIM * 2
        chosen = default_splits(args)
        counts = sorted({1, 2, 4, 8, 12, 16, 24, 33, 48, 64, 96, 128, chosen})
        found = []
        for n, config in itertools.product(counts, configs):
            if n > context // BLOCK_SIZE or (n == 1 and config != configs[0]):
                continue
            split._SPLIT_CONFIG = config
            ms = median_ms(lambda n=n, a=args: split.split_kv_attention(*a, num_splits=n),
                           rep=100)
            found.append({"kind": "splits", "batch": batch, "context": context,
                          "num_splits": n, "rule": n == chosen,
                          "config": list(config) if n > 1 else list(split._ONE_PASS_CONFIG),
                          "us": ms * 1e3, "pct_of_copy": 100 * kv_bytes / (ms * 1e-3) / copy_bw})
        split._SPLIT_CONFIG = saved[0]
        if batch >= 16:
            for config in ((128, 8, 3), (128, 4, 3), (64, 4, 3), (64, 8, 4), (128, 8, 4)):
                split._ONE_PASS_CONFIG = config
                ms = median_ms(lambda a=args: split.split_kv_attention(*a, num_splits=1),
                               rep=100)
                found.append({"kind": "one_pass", "batch": batch, "context": context,
                              "num_splits": 1, "config": list(config), "us": ms * 1e3,
                              "pct_of_copy": 100 * kv_bytes / (ms * 1e-3) / copy_bw})
            split._ONE_PASS_CONFIG = saved[1]
        rows += found
        best = sorted(found, key=lambda r: r["us"])
        by_count = {}
        for r in best:
            by_count.setdefault(r["num_splits"], r)
        print(f"  b={batch} ctx={context} (rule {chosen}): best "
              + ", ".join(f"{r['num_splits']}x{'/'.join(map(str, r['config']))}:{r['us']:.1f}us"
                          for r in best[:3])
              + "; per count " + " ".join(f"{n}:{r['us']:.1f}" for n, r in sorted(
                  by_count.items())), flush=True)
        torch.cuda.empty_cache()
    return rows


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
        f"{NUM_KV_HEADS} KV heads, head_dim {HEAD_DIM}, block_size {BLOCK_SIZE} | "
        + ("CUDA graph replays" if GRAPHS else "eager calls") + f" | L2 emptied by {FLUSH}",
        "",
        "| batch | context | K/V MiB | Triton µs | Triton GB/s | % of copy | SDPA µs "
        "| SDPA % of copy | Triton / SDPA | split-KV µs | splits | split-KV % of copy "
        "| split-KV / SDPA | split-KV / Triton |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        goal = r["batch"] >= 16 and r["context"] >= 4096
        ok = r["pct_of_copy"] >= GOAL_PCT_OF_COPY and r["ratio_vs_sdpa"] <= GOAL_SDPA_RATIO
        mark = (" ✓" if ok else " ✗") if goal else ""
        lines.append(
            f"| {r['batch']} | {r['context']} | {r['kv_mib']:.0f} | {r['triton_us']:.1f} | "
            f"{r['triton_gbps']:.0f} | {r['pct_of_copy']:.1f}{mark} | {r['sdpa_us']:.1f} | "
            f"{r['sdpa_pct_of_copy']:.1f} | {r['ratio_vs_sdpa']:.2f} | {r['split_us']:.1f} | "
            f"{r['num_splits']} | {r['split_pct_of_copy']:.1f} | {r['split_ratio_vs_sdpa']:.2f} | "
            f"{r['split_ratio_vs_triton']:.2f}{split_goal(r)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also time 02-04 kernel configs")
    parser.add_argument("--sweep-splits", action="store_true",
                        help="also time 04-05 split counts and stage-1 configs")
    parser.add_argument("--graphs", action="store_true",
                        help="time CUDA graph replays (GPU time), not eager calls")
    parser.add_argument("--flush", choices=("read", "write"), default="read",
                        help="empty L2 before each timed call by reading (default) or writing")
    parser.add_argument("--out", type=Path, help="folder for table.md and results.json")
    opts = parser.parse_args()
    global GRAPHS, FLUSH
    GRAPHS, FLUSH = opts.graphs, opts.flush
    if not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU")
    copy_bw = copy_bandwidth()
    print(f"copy bandwidth: {copy_bw / 1e9:.0f} GB/s", flush=True)
    results: dict = {"copy_gbps": copy_bw / 1e9, "device": torch.cuda.get_device_name(),
                     "timing": "CUDA graph replay" if GRAPHS else "eager calls",
                     "l2_flush": FLUSH}
    if opts.sweep:
        results["sweep"] = sweep(copy_bw)
    if opts.sweep_splits:
        results["sweep_splits"] = sweep_splits(copy_bw)
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
