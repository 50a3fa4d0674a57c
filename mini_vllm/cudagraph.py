"""CUDA-graph capture and replay, simulated in numpy: launches are counted, never timed.

Upstream twin: ``vllm/compilation/cuda_graph.py``: ``CUDAGraphWrapper`` (``__call__``'s three
branches: eager, capture, replay) and ``CUDAGraphEntry`` (``output``, ``input_addresses``), with
the per-shape dict ``concrete_cudagraph_entries``; the piecewise split is
``vllm/compilation/backends.py`` (``splitting_ops``); padding a batch up to a captured size is the
model runner's (``vllm/v1/worker/gpu_model_runner.py``, ``cudagraph_capture_sizes``).

A GPU kernel launch costs the CPU a few microseconds. Eager execution pays one launch per op on
every call; a captured graph pays for its ops once, at capture, and then one launch per replay,
however many ops it holds. :class:`LaunchCounter` is that bill: one process-wide tally (launch
overhead is a property of the process, not of one model), bumped once per eager op and once per
replay.

What was recorded is frozen, hence the two constraints :class:`GraphRunner` models:

1. **Fixed shapes.** A graph replays only the shape (and dtype) it was recorded with, so graphs
   live in a dict keyed by ``(shape, dtype)``; an unseen key captures a new one. With
   ``capture_sizes`` the batch dimension is first rounded up to the smallest captured size (the
   padded rows are zeros and are sliced off the output), so batches 5 and 7 share the graph of 8.
2. **Static buffers.** Replay reads the memory the capture read. New input is *copied into* the
   entry's ``static_input`` (``np.copyto``), never bound in its place; the entry records the
   buffer's address at capture and a replay checks it, as upstream's debug mode checks
   ``input_addresses``. The result lands in the entry's ``output`` buffer, which every replay of
   that shape overwrites and returns (upstream returns ``entry.output``).

numpy cannot record kernels, so a replay still computes the ops from the static buffer; what
is simulated is the bill, not the speed.

:class:`PiecewiseGraphRunner` splits an op list where ``is_capturable(i)`` is false (attention,
upstream): each run of capturable ops becomes its own :class:`GraphRunner`, the rest run eagerly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Op = Callable[[np.ndarray], np.ndarray]


class LaunchCounter:
    """The process-wide number of kernel launches so far (a class attribute, on purpose)."""

    n: int = 0

    @classmethod
    def reset(cls) -> None:
        cls.n = 0

    @classmethod
    def bump(cls, k: int = 1) -> None:
        cls.n += k


def _apply(ops: Sequence[Op], x: np.ndarray) -> np.ndarray:
    for op in ops:
        x = op(x)
    return x


def run_eager(ops: Sequence[Op], x: np.ndarray) -> np.ndarray:
    """Apply ``ops`` in order to ``x``, one launch per op, every call."""
    for op in ops:
        x = op(x)
        LaunchCounter.bump(1)
    return x


@dataclass
class GraphEntry:
    """One captured graph (upstream ``CUDAGraphEntry``)."""

    #: the (padded) input shape the graph was recorded for.
    shape: tuple[int, ...]
    #: the input buffer the recording reads; replays copy new input into it.
    static_input: np.ndarray
    #: the output buffer the recording writes; every replay overwrites it.
    output: np.ndarray
    num_ops: int
    #: ``static_input``'s data address at capture (upstream ``input_addresses``).
    input_address: int = 0


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def check_capture_sizes(capture_sizes: Sequence[int] | None,
                        what: str = "capture sizes") -> tuple[int, ...] | None:
    """The sizes sorted and de-duplicated (``None`` stays ``None``); ``ValueError`` naming
    ``what`` for an empty list or a size that is not a positive int."""
    if capture_sizes is None:
        return None
    sizes = list(capture_sizes)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                        for s in sizes):
        raise ValueError(f"{what} must be a non-empty list of positive ints, got "
                         f"{capture_sizes!r}")
    return tuple(sorted({int(s) for s in sizes}))


def select_capture_size(batch: int, capture_sizes: Sequence[int]) -> int | None:
    """The smallest size in ``capture_sizes`` (sorted ascending) that holds ``batch`` rows, or
    ``None`` when the batch is larger than every size (it runs eagerly)."""
    return next((s for s in capture_sizes if s >= batch), None)


class GraphRunner:
    """Capture ``ops`` once per input shape and dtype, then replay it as one launch.

    ``capture_sizes``: pad the batch dimension (axis 0) up to the smallest listed size before
    keying, and slice the padding off the output; a batch above the largest size runs eagerly.
    The ops must then treat rows independently (row ``i`` of the output depends only on row ``i``
    of the input), as a decode step's per-token layers do.

    ``num_warmups``: eager runs before the recording (upstream
    ``cudagraph_num_of_warmups``), so a capture costs ``(num_warmups + 1) * len(ops)`` launches.
    """

    def __init__(self, ops: Sequence[Op], *, capture_sizes: Sequence[int] | None = None,
                 num_warmups: int = 0) -> None:
        self.ops = list(ops)
        if not self.ops:
            raise ValueError("a graph records at least one op; got an empty op list")
        if num_warmups < 0:
            raise ValueError(f"num_warmups must be >= 0, got {num_warmups}")
        self.capture_sizes = check_capture_sizes(capture_sizes)
        self.num_warmups = num_warmups
        #: (shape, dtype) -> entry; upstream ``concrete_cudagraph_entries``.
        self.graphs: dict[tuple[tuple[int, ...], np.dtype], GraphEntry] = {}
        self.num_replays = 0
        #: zero rows added to reach a captured size, over all calls.
        self.num_padded_rows = 0
        #: calls whose batch was larger than every capture size (run eagerly, no graph).
        self.num_eager_calls = 0

    @property
    def num_captured(self) -> int:
        return len(self.graphs)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        batch = None
        if self.capture_sizes is not None:
            if x.ndim == 0:
                raise ValueError("capture sizes pad the batch dimension: the input needs one")
            batch = x.shape[0]
            size = select_capture_size(batch, self.capture_sizes)
            if size is None:  # larger than the ladder: no graph for it
                self.num_eager_calls += 1
                return run_eager(self.ops, x)
            if size > batch:
                padding = np.zeros((size - batch, *x.shape[1:]), x.dtype)
                x = np.concatenate([x, padding])
                self.num_padded_rows += size - batch
        entry = self.graphs.get((x.shape, x.dtype))
        if entry is None:
            out = self._capture(x).output
        else:
            out = self._replay(entry, x)
        return out if batch is None else out[:batch]

    def _capture(self, x: np.ndarray) -> GraphEntry:
        # Constraint 1: a new (shape, dtype) records a new graph.
        static_input = x.copy()  # memory the graph owns, never the caller's array
        for _ in range(self.num_warmups):
            run_eager(self.ops, static_input)
        output = np.array(run_eager(self.ops, static_input))  # recording: every op launches
        entry = GraphEntry(x.shape, static_input, output, len(self.ops), _address(static_input))
        self.graphs[(x.shape, x.dtype)] = entry
        return entry

    def _replay(self, entry: GraphEntry, x: np.ndarray) -> np.ndarray:
        # Constraint 2: new input goes *into* the recorded buffer.
        np.copyto(entry.static_input, x)
        if _address(entry.static_input) != entry.input_address:
            raise AssertionError(
                f"the static input of the graph for shape {entry.shape} moved from "
                f"{entry.input_address:#x} to {_address(entry.static_input):#x}: a replay reads "
                f"the captured address, so the buffer must be written in place, never rebound")
        np.copyto(entry.output, _apply(self.ops, entry.static_input))
        LaunchCounter.bump(1)  # the win: one launch for the whole recording
        self.num_replays += 1
        return entry.output


class PiecewiseGraphRunner:
    """Capture the runs of capturable ops, run the others eagerly (upstream ``PIECEWISE``).

    Consecutive ops with the same ``is_capturable(index)`` form one segment; each capturable
    segment is a :class:`GraphRunner` (one launch per replay), each other segment an op list run
    through :func:`run_eager` (one launch per op). A 3-op model split at its middle op has two
    graphs; a replayed call of a 10-op model split at op 5 costs 2 + 1 = 3 launches.
    """

    def __init__(self, ops: Sequence[Op], is_capturable: Callable[[int], bool]) -> None:
        ops = list(ops)
        #: (capturable, ops) per segment, in order.
        self.segments: list[tuple[bool, list[Op]]] = []
        for index, op in enumerate(ops):
            capturable = bool(is_capturable(index))
            if self.segments and self.segments[-1][0] == capturable:
                self.segments[-1][1].append(op)
            else:
                self.segments.append((capturable, [op]))
        self.runners: list[GraphRunner | list[Op]] = [
            GraphRunner(seg_ops) if capturable else seg_ops
            for capturable, seg_ops in self.segments
        ]

    @property
    def num_graphs(self) -> int:
        """How many capturable segments there are (graphs per input shape)."""
        return sum(isinstance(r, GraphRunner) for r in self.runners)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for runner in self.runners:
            x = runner(x) if isinstance(runner, GraphRunner) else run_eager(runner, x)
        return x
