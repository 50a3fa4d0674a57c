"""Reference for kata 05-04: CUDA graphs against eager on a real decode step.

Three parts: a capture/replay runner on ``torch.cuda``'s graph API (lab 05-01's design on the
real thing), a CUDA-event timer, and the arithmetic that reads measured numbers (the course's
L4 capture, the H200 recording, vLLM's capture log).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from katas.phase05.graphs_vs_eager.scaffold import GraphEntry

try:
    import torch
except ImportError:  # the analysis part of this kata runs without torch
    torch = None

# How many eager runs warm a batch size up (on a side stream) before it is captured.
WARMUP_CALLS = 2

# Lab 05-03's composite modes: (decode routine, mixed routine).
ROUTINES = {"FULL_DECODE_ONLY": ("FULL", "NONE"), "FULL_AND_PIECEWISE": ("FULL", "PIECEWISE")}
SIMPLE_MODES = ("NONE", "PIECEWISE", "FULL")


def _default_cuda(cuda: Any) -> Any:
    if cuda is not None:
        return cuda
    if torch is None:
        raise ImportError('CUDA graphs need torch: pip install -e ".[torch]"')
    return torch.cuda


# -- part 1: the runner ---------------------------------------------------------------------------


class CudaGraphRunner:
    """Run ``step`` through one CUDA graph per capture size, eagerly where no graph fits."""

    def __init__(self, step: Callable[[Any], Any], capture_sizes: Sequence[int], *,
                 enforce_eager: bool = False, cuda: Any = None) -> None:
        sizes = list(capture_sizes)
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
            raise ValueError(f"capture_sizes must be positive ints, got {sizes}")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"capture_sizes has duplicates: {sizes}")
        self.step = step
        self.capture_sizes = sorted(sizes)
        self.enforce_eager = enforce_eager
        self.cuda = _default_cuda(cuda)
        self.graphs: dict[int, GraphEntry] = {}
        self._pool: Any = None

    def padded_size(self, batch: int) -> int | None:
        if batch < 1:
            raise ValueError(f"a batch holds at least one sequence, got {batch}")
        if self.enforce_eager:
            return None
        return next((s for s in self.capture_sizes if s >= batch), None)

    def __call__(self, tokens: Any) -> Any:
        if tokens.dim() != 1 or tokens.shape[0] < 1:
            raise ValueError(f"tokens must be a non-empty 1-D tensor of ids, got shape "
                             f"{tuple(tokens.shape)}")
        batch = int(tokens.shape[0])
        size = self.padded_size(batch)
        if size is None:
            return self.step(tokens)
        entry = self.graphs.get(size)
        if entry is None:
            entry = self._capture(size, tokens)
        entry.static_input[:batch].copy_(tokens)
        entry.graph.replay()
        return entry.static_output[:batch].clone()

    def _capture(self, size: int, like: Any) -> GraphEntry:
        cuda = self.cuda
        static_input = like.new_zeros(size)
        # Warm up on a side stream: lazy initialisation must not end up inside the graph.
        side = cuda.Stream()
        side.wait_stream(cuda.current_stream())
        with cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self.step(static_input)
        cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = cuda.graph_pool_handle()  # one memory pool shared by every size
        graph = cuda.CUDAGraph()
        with cuda.graph(graph, pool=self._pool):
            static_output = self.step(static_input)
        entry = GraphEntry(size=size, graph=graph, static_input=static_input,
                           static_output=static_output)
        self.graphs[size] = entry
        return entry


# -- part 2: timing on the device clock ------------------------------------------------------


def median_ms(fn: Callable[[], Any], *, iters: int = 50, warmup: int = 5,
              cuda: Any = None) -> float:
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    cuda = _default_cuda(cuda)
    for _ in range(warmup):
        fn()
    pairs = []
    for _ in range(iters):
        start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
    cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in pairs)


def measure_ratio(eager: Callable[[], Any], graphed: Callable[[], Any], *, iters: int = 50,
                  warmup: int = 5, cuda: Any = None) -> float:
    eager_ms = median_ms(eager, iters=iters, warmup=warmup, cuda=cuda)
    graph_ms = median_ms(graphed, iters=iters, warmup=warmup, cuda=cuda)
    return eager_ms / graph_ms


# -- part 3: reading the numbers -------------------------------------------------------------


def graph_speedups(runs: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    speedups: dict[int, float] = {}
    for row in runs:
        batch = row["batch"]
        if batch in speedups:
            raise ValueError(f"batch {batch} appears twice in the runs")
        if "eager_ms" in row and "graph_ms" in row:
            eager, graph, per_step = row["eager_ms"], row["graph_ms"], True
        elif "eager_tok_s" in row and "graph_tok_s" in row:
            eager, graph, per_step = row["eager_tok_s"], row["graph_tok_s"], False
        else:
            raise ValueError(f"row {row} has neither eager_ms/graph_ms nor eager_tok_s/graph_tok_s")
        if eager <= 0 or graph <= 0:
            raise ValueError(f"row {row}: times and throughputs must be positive")
        # A time shrinks when graphs help; a throughput grows.
        speedups[batch] = eager / graph if per_step else graph / eager
    return speedups


def fades_with_batch(speedups: Mapping[int, float]) -> bool:
    if len(speedups) < 2:
        raise ValueError(f"a fade needs at least two batch sizes, got {dict(speedups)}")
    smallest, largest = min(speedups), max(speedups)
    return all(r > 1.0 for r in speedups.values()) and speedups[largest] < speedups[smallest]


def _routines(mode: str) -> tuple[str, str]:
    if mode in ROUTINES:
        return ROUTINES[mode]
    if mode in SIMPLE_MODES:
        return (mode, mode)
    raise ValueError(f"unknown cudagraph mode {mode!r}; known: "
                     f"{', '.join(SIMPLE_MODES + tuple(ROUTINES))}")


def capture_count(num_sizes: int, cudagraph_mode: str) -> int:
    if num_sizes < 0:
        raise ValueError(f"num_sizes cannot be negative, got {num_sizes}")
    passes = {m for m in _routines(cudagraph_mode) if m != "NONE"}
    return num_sizes * len(passes)


def capture_plan(compilation_config: Any) -> tuple[list[int], str]:
    sizes = compilation_config.cudagraph_capture_sizes or []
    mode = compilation_config.cudagraph_mode
    name = "NONE" if mode is None else mode.name
    return sorted(sizes), name


def launch_overhead_ms(num_kernels: int, us_per_launch: float) -> float:
    if num_kernels < 0 or us_per_launch < 0:
        raise ValueError(f"kernel count and launch cost cannot be negative, got {num_kernels} "
                         f"and {us_per_launch}")
    return num_kernels * us_per_launch / 1000.0


def amdahl_ratio(launch_ms: float, gpu_ms: float) -> float:
    if gpu_ms <= 0 or launch_ms < 0:
        raise ValueError(f"need gpu_ms > 0 and launch_ms >= 0, got {gpu_ms} and {launch_ms}")
    return (launch_ms + gpu_ms) / gpu_ms


if __name__ == "__main__":  # on a GPU: python -m reference.phase05.graphs_vs_eager --record FILE
    import sys

    from katas.phase05.graphs_vs_eager.scaffold import main

    main(sys.argv[1:], impl=sys.modules[__name__],
         command="python -m reference.phase05.graphs_vs_eager")
