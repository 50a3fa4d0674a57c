"""Kata 05-04 — CUDA graphs against eager on a real decode step.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase05/graphs_vs_eager``.

Three parts:

1. ``CudaGraphRunner``: lab 05-01's capture/replay design on ``torch.cuda``'s real graph API.
2. ``median_ms`` / ``measure_ratio``: timing on the device clock, with CUDA events.
3. The arithmetic that reads measured numbers: ``graph_speedups``, ``fades_with_batch``,
   ``capture_count``, ``capture_plan``, ``launch_overhead_ms``, ``amdahl_ratio``.

Everything that touches the device takes ``cuda``: the ``torch.cuda`` module by default (when
``cuda`` is None), or the scaffold's ``SimulatedCuda``, which has the same names and runs on the
CPU. Use only what both offer: ``cuda.CUDAGraph()``, ``cuda.graph(g, pool=...)``,
``cuda.graph_pool_handle()``, ``cuda.Stream()``, ``cuda.stream(s)``, ``cuda.current_stream()``
(and a stream's ``wait_stream``), ``cuda.synchronize()``, and ``cuda.Event(enable_timing=True)``
with ``record()``, ``synchronize()`` and ``elapsed_time(end)``. Part 3 needs no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from katas.phase05.graphs_vs_eager.scaffold import GraphEntry  # noqa: F401 - yours to use

try:
    import torch  # noqa: F401
except ImportError:  # the analysis part of this kata runs without torch
    torch = None


# -- part 1: the runner ---------------------------------------------------------------------------


class CudaGraphRunner:
    """Run a decode ``step`` through one CUDA graph per capture size.

    ``step`` maps token ids ``[B]`` (int64, on the device) to logits ``[B, vocab]``; the
    scaffold's ``DecodeStep`` is one. ``capture_sizes`` are the batch sizes that get a graph
    (positive and distinct, any order: ``ValueError`` otherwise). ``enforce_eager=True`` is
    vLLM's knob of that name: never capture, always run ``step`` eagerly. ``cuda`` is
    ``torch.cuda`` when None.

    Attribute ``graphs``: ``{size: GraphEntry}`` (``GraphEntry`` from the scaffold), one entry
    per size captured so far, empty at first. A size is captured the first time a batch needs
    it, and only then.

    Calling the runner with ``tokens`` of batch ``B``:

    - ``padded_size(B)`` is None (no capture size is large enough, or eager is enforced): the
      result is ``step(tokens)``, run eagerly; nothing is captured.
    - otherwise, with ``S = padded_size(B)``: the graph of size ``S`` (captured now if it does
      not exist yet) is replayed on these tokens, and the first ``B`` rows of its output are
      returned. The result is the caller's to keep: later calls never change it.

    Rules of a capture (the real API's, which the simulator enforces): the step runs at size
    ``S`` on a side stream (``cuda.Stream()``) at least once before the capture; the capture
    records and does not compute; a replay reads the exact tensor the capture saw, so new
    tokens have to be copied into it.

    Errors: ``ValueError`` for tokens that are not a non-empty 1-D tensor.
    """

    def __init__(self, step: Callable[[Any], Any], capture_sizes: Sequence[int], *,
                 enforce_eager: bool = False, cuda: Any = None) -> None:
        raise NotImplementedError("CudaGraphRunner: keep the step, the sizes and an empty "
                                  "graphs dict")

    def padded_size(self, batch: int) -> int | None:
        """The capture size a batch of ``batch`` runs at: the smallest capture size
        ``>= batch``; None when there is none or eager is enforced. ``ValueError`` for
        ``batch < 1``. Sizes ``[1, 8, 64]``: 1 -> 1, 5 -> 8, 64 -> 64, 65 -> None."""
        raise NotImplementedError("padded_size: the capture size a batch is padded up to")

    def __call__(self, tokens: Any) -> Any:
        """Logits ``[B, vocab]`` for ``tokens`` ``[B]``, equal to ``step(tokens)`` (to the
        rounding of the dtype), through a graph when one fits."""
        raise NotImplementedError("CudaGraphRunner.__call__: copy the tokens in, replay, "
                                  "return the rows")


# -- part 2: timing -----------------------------------------------------------------------------


def median_ms(fn: Callable[[], Any], *, iters: int = 50, warmup: int = 5,
              cuda: Any = None) -> float:
    """The median device time of one call of ``fn``, in milliseconds.

    Calls ``fn`` ``warmup`` times untimed, then ``iters`` times, each call timed on the
    device's clock with a pair of CUDA events (``cuda.Event(enable_timing=True)``); an
    event's time can be read only after the device has reached it. The median, not the mean:
    one stalled call must not move the answer. ``ValueError`` for ``iters < 1`` or
    ``warmup < 0``.
    """
    raise NotImplementedError("median_ms: time each call with CUDA events, take the median")


def measure_ratio(eager: Callable[[], Any], graphed: Callable[[], Any], *, iters: int = 50,
                  warmup: int = 5, cuda: Any = None) -> float:
    """How many times faster ``graphed`` runs than ``eager``: above 1 when graphs win.

    Both are timed with ``median_ms`` (same ``iters``, ``warmup`` and ``cuda``).
    """
    raise NotImplementedError("measure_ratio: eager's median time against the graph's")


# -- part 3: reading the numbers -------------------------------------------------------------


def graph_speedups(runs: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """The speedup of graphs over eager at each batch size: ``{batch: ratio}``.

    Each row has ``"batch"`` and either step times (``"eager_ms"``, ``"graph_ms"``: the H200
    recording) or throughputs (``"eager_tok_s"``, ``"graph_tok_s"``: the course's L4 run).
    Either way the ratio is above 1 when graphs are faster. The course's batch 1:
    980.3 tok/s eager, 2473.6 with graphs: about 2.52.

    ``ValueError`` for a batch that appears twice, a row with neither pair, or a time or
    throughput that is not positive.
    """
    raise NotImplementedError("graph_speedups: the graphs-over-eager ratio per batch size")


def fades_with_batch(speedups: Mapping[int, float]) -> bool:
    """Whether measured speedups have the course's shape: graphs win at every batch size
    (every ratio strictly above 1) and win less at the largest batch than at the smallest.

    Sizes may come in any order; the ratios in between need not fall step by step (one
    noisy middle point does not break the shape). ``ValueError`` for fewer than two sizes.
    """
    raise NotImplementedError("fades_with_batch: all above 1, and the largest batch below the "
                              "smallest")


def capture_count(num_sizes: int, cudagraph_mode: str) -> int:
    """How many graphs vLLM captures at start-up: ``num_sizes`` per routine that captures.

    ``cudagraph_mode`` is one of lab 05-03's strings: ``"NONE"``, ``"PIECEWISE"``, ``"FULL"``,
    ``"FULL_DECODE_ONLY"`` (FULL for decode batches, NONE for mixed ones) or
    ``"FULL_AND_PIECEWISE"`` (FULL for decode, PIECEWISE for mixed). The course's log shows
    two passes of 23 for the default mode. ``ValueError`` for an unknown mode or a negative
    ``num_sizes``.
    """
    raise NotImplementedError("capture_count: capture sizes times the routines that capture")


def capture_plan(compilation_config: Any) -> tuple[list[int], str]:
    """What a resolved vLLM ``CompilationConfig`` will capture: ``(sizes, mode)``.

    ``sizes``: its ``cudagraph_capture_sizes`` in increasing order (an empty list when there
    are none). ``mode``: the name of its ``cudagraph_mode`` (a ``CUDAGraphMode`` member), e.g.
    ``"FULL_AND_PIECEWISE"``. On vLLM's CPU platform: ``([], "NONE")``.
    """
    raise NotImplementedError("capture_plan: read the capture sizes and the mode's name")


def launch_overhead_ms(num_kernels: int, us_per_launch: float) -> float:
    """The CPU time, in milliseconds, of launching ``num_kernels`` kernels one by one at
    ``us_per_launch`` microseconds each. The course: 300 kernels at 5 us. ``ValueError``
    when either is negative."""
    raise NotImplementedError("launch_overhead_ms: the launch bill of one eager step")


def amdahl_ratio(launch_ms: float, gpu_ms: float) -> float:
    """The eager-over-graph ratio when a graph removes the whole launch bill.

    The model is the course's: an eager step costs its launches plus its GPU work, one after
    the other; a graphed step costs the GPU work alone. The course's 1.5 ms of launches over
    1.5 ms of GPU work give 2.0, and the ratio is never below 1. ``ValueError`` for
    ``gpu_ms <= 0`` or ``launch_ms < 0``.
    """
    raise NotImplementedError("amdahl_ratio: what removing the launches can buy at most")
