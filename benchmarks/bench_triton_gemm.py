"""Kata 07-03's tiled GEMM in Triton against its traffic model and torch.matmul (CUDA).

For three tile shapes and for ``torch.matmul`` (cuBLAS), at decode (M = 1 and 8) and prefill
(M = 2048) with N = K = 4096, and at SmolLM2-135M's MLP up-projection (K = 576 -> N = 1536),
this script

- checks the reference kernel (``reference/phase07/triton_tiled_gemm.py``) against
  ``torch.matmul`` and its counted load bytes against the model, exactly;
- times the uncounted kernel and ``torch.matmul``: each call captured once in a CUDA graph and
  replayed, L2 emptied (by reading a 256 MiB buffer) before every replay, the median of 200;
- prints a markdown table: tile, M, N, K, modelled and counted bytes (loads + the write of C),
  time, achieved GB/s (counted bytes / time) and TFLOP/s, the tile-model intensity and where an
  H200 roofline puts it, and the same for the compulsory traffic (each operand read once, C
  written once: what cuBLAS's bytes are counted as).

Roofline: 989 dense fp16 TFLOP/s, 4.3 TB/s (a measured device-to-device copy): ridge 230
FLOP/byte. A row whose counted GB/s exceeds the copy bandwidth read part of its strips from L2:
the tile model counts every strip a tile loads as global-memory traffic, and so does the
counter.

    python benchmarks/bench_triton_gemm.py                    # the table, on a CUDA GPU
    python benchmarks/bench_triton_gemm.py --out DIR          # also DIR/table.md + results.json
    python benchmarks/bench_triton_gemm.py --eager            # time eager calls, not graphs
    python benchmarks/bench_triton_gemm.py --interpret --tiny # CPU: Triton interpreter, tiny
                                                              # shapes (checks the plumbing;
                                                              # its times mean nothing)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere in the repo

PEAK_FLOPS, COPY_BW = 989e12, 4.3e12  # H200: dense fp16 tensor cores; measured copy
# (block_m, block_n, block_k, num_warps, num_stages)
TILES = [(64, 64, 32, 4, 3), (128, 128, 32, 8, 3), (128, 256, 64, 8, 3)]
TINY_TILES = [(16, 16, 16, 4, 1), (32, 16, 32, 4, 1), (16, 32, 16, 4, 1)]
SHAPES = [  # (label, M, N, K)
    ("decode", 1, 4096, 4096),
    ("decode", 8, 4096, 4096),
    ("prefill", 2048, 4096, 4096),
    ("SmolLM2 up_proj, decode", 1, 1536, 576),
    ("SmolLM2 up_proj, decode", 8, 1536, 576),
    ("SmolLM2 up_proj, prefill", 2048, 1536, 576),
]
TINY_SHAPES = [("decode", 1, 40, 48), ("decode", 8, 33, 40), ("prefill", 37, 23, 19)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write table.md and results.json here")
    parser.add_argument("--eager", action="store_true", help="time eager calls (host launch "
                        "overhead included) instead of CUDA graph replays")
    parser.add_argument("--interpret", action="store_true",
                        help="run the kernel under the Triton interpreter on the CPU")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and tiles")
    parser.add_argument("--rep", type=int, default=200, help="timed repetitions per cell")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    import torch

    from reference.phase07 import tiled_gemm as model
    from reference.phase07 import triton_tiled_gemm as ref

    cuda = torch.cuda.is_available() and not args.interpret
    if not cuda and not args.interpret:
        sys.exit("no CUDA GPU: run with --interpret --tiny to check the script on the CPU")
    device = "cuda" if cuda else "cpu"
    tiles = TINY_TILES if args.tiny else TILES
    shapes = TINY_SHAPES if args.tiny else SHAPES
    rep = 3 if args.interpret else args.rep

    flush_buffer = torch.zeros(1 << 26, dtype=torch.int32, device=device) if cuda else None

    def median_ms(fn) -> float:
        """Median time of ``fn()`` in ms: CUDA events around a graph replay (or an eager call),
        L2 emptied by a read of 256 MiB before each; on the CPU, wall time."""
        if not cuda:
            fn()
            times = []
            for _ in range(rep):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1e3)
            return sorted(times)[len(times) // 2]
        call = fn
        graph = None
        if not args.eager:
            fn()  # compile and warm up outside the capture
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            call = graph.replay
        for _ in range(10):
            call()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(rep)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(rep)]
        for start, end in zip(starts, ends, strict=True):
            flush_buffer.max()  # reads every line: L2 holds clean, useless lines afterwards
            start.record()
            call()
            end.record()
        torch.cuda.synchronize()
        del graph
        return sorted(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))[rep // 2]

    def place(intensity: float) -> str:
        return model.roofline_side(intensity, PEAK_FLOPS, COPY_BW)

    rows = []
    for label, M, N, K in shapes:
        gen = torch.Generator().manual_seed(M + N + K)
        a = (torch.randn(M, K, generator=gen) / K**0.5).half().to(device)
        b = torch.randn(K, N, generator=gen).half().to(device)
        flops = 2 * M * N * K
        expected = (a.float() @ b.float()).half()
        compulsory = model.traffic_bytes(M, N, K, M, N)  # one tile = each operand read once
        ai_compulsory = flops / compulsory

        for bm, bn, bk, warps, stages in tiles:
            c, counted_loads = ref.counted_matmul(a, b, bm, bn, bk, num_warps=warps,
                                                  num_stages=stages)
            modelled_loads = ref.modelled_load_bytes(M, N, K, bm, bn)
            err = (c.float() - expected.float()).abs().max().item()
            assert err <= 1e-2, f"{M}x{N}x{K} tile {bm}x{bn}x{bk}: max |Δ| = {err:.3g}"
            assert counted_loads == modelled_loads, (
                f"{M}x{N}x{K} tile {bm}x{bn}x{bk}: counted {counted_loads:,} bytes loaded, "
                f"modelled {modelled_loads:,}"
            )
            modelled = model.traffic_bytes(M, N, K, bm, bn)
            assert modelled == modelled_loads + 2 * M * N
            counted = counted_loads + 2 * M * N  # + the write of C, which is not counted
            ms = median_ms(lambda a=a, b=b, t=(bm, bn, bk), w=warps, s=stages:
                           ref.tiled_matmul(a, b, *t, num_warps=w, num_stages=s))
            ai = model.arithmetic_intensity(M, N, K, bm, bn)
            rows.append({
                "kernel": "triton", "tile": f"{bm}x{bn}x{bk}", "shape": label, "M": M, "N": N,
                "K": K, "modelled_bytes": modelled, "counted_bytes": counted, "us": ms * 1e3,
                "gbps": counted / (ms * 1e-3) / 1e9, "tflops": flops / (ms * 1e-3) / 1e12,
                "ai_model": ai, "side_model": place(ai), "ai_compulsory": ai_compulsory,
                "side_compulsory": place(ai_compulsory), "max_abs_err": err,
                "num_warps": warps, "num_stages": stages,
            })
            print(f"  {label} {M}x{N}x{K} tile {bm}x{bn}x{bk}: {ms * 1e3:.1f} us", flush=True)

        got = torch.matmul(a, b)
        err = (got.float() - expected.float()).abs().max().item()
        ms = median_ms(lambda a=a, b=b: torch.matmul(a, b))
        rows.append({
            "kernel": "torch.matmul", "tile": "cuBLAS" if cuda else "cpu", "shape": label,
            "M": M, "N": N, "K": K, "modelled_bytes": compulsory, "counted_bytes": None,
            "us": ms * 1e3, "gbps": compulsory / (ms * 1e-3) / 1e9,
            "tflops": flops / (ms * 1e-3) / 1e12, "ai_model": ai_compulsory,
            "side_model": place(ai_compulsory), "ai_compulsory": ai_compulsory,
            "side_compulsory": place(ai_compulsory), "max_abs_err": err,
        })
        print(f"  {label} {M}x{N}x{K} torch.matmul: {ms * 1e3:.1f} us", flush=True)

    setup = environment(torch, cuda, args)
    table = render(rows, setup)
    print()
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(table + "\n")
        (args.out / "results.json").write_text(json.dumps({"setup": setup, "rows": rows},
                                                          indent=2) + "\n")
        print(f"\nwrote {args.out / 'table.md'} and {args.out / 'results.json'}")


def environment(torch, cuda: bool, args: argparse.Namespace) -> dict:
    import triton

    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter)",
        "torch": torch.__version__, "triton": triton.__version__,
        "timing": ("eager calls" if args.eager else "CUDA graph replays") + ", L2 emptied "
        "before each" if cuda else "wall clock under the interpreter (meaningless)",
        "peak_tflops": PEAK_FLOPS / 1e12, "copy_gbps": COPY_BW / 1e9,
        "ridge_flop_per_byte": PEAK_FLOPS / COPY_BW,
    }


def render(rows: list[dict], setup: dict) -> str:
    head = (
        f"Setup: {setup['device']} | torch {setup['torch']} | triton {setup['triton']} | "
        f"{setup['timing']} | roofline {setup['peak_tflops']:.0f} "
        f"TFLOP/s, {setup['copy_gbps']:.0f} GB/s, ridge {setup['ridge_flop_per_byte']:.0f} "
        "FLOP/B\n\n"
        "Bytes are loads + the write of C. Triton rows: modelled = kata tiled_gemm's "
        "traffic_bytes, counted = the kernel's atomic counter + the write. torch.matmul rows: "
        "the compulsory bytes (each operand once). GB/s = those bytes / time.\n"
    )
    lines = [
        "| kernel | tile | shape | M | N | K | modelled bytes | counted bytes | µs | GB/s | "
        "TFLOP/s | FLOP/B (tiles) | side | FLOP/B (once) | side |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        counted = "—" if r["counted_bytes"] is None else f"{r['counted_bytes']:,}"
        lines.append(
            f"| {r['kernel']} | {r['tile']} | {r['shape']} | {r['M']} | {r['N']} | {r['K']} | "
            f"{r['modelled_bytes']:,} | {counted} | {r['us']:.1f} | {r['gbps']:.0f} | "
            f"{r['tflops']:.1f} | {r['ai_model']:.1f} | {r['side_model']} | "
            f"{r['ai_compulsory']:.1f} | {r['side_compulsory']} |"
        )
    return head + "\n" + "\n".join(lines)


if __name__ == "__main__":
    main()
