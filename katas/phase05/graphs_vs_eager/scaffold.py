"""What the lab provides for kata 05-04: the decode step, a CPU stand-in for ``torch.cuda``, the
course's numbers and the H200 recording.

- :class:`DecodeStep`: one decode step of a seeded Llama in torch (random weights, built on the
  device): token ids ``[B]`` in, logits ``[B, vocab]`` out. Every sequence attends over a fixed
  context of ``context_len`` cached tokens that the step reads and never writes, so the step is
  a pure function of its input: calling it twice on the same tokens gives the same logits.
  That is what lets a test compare a graph's replay with an eager call.
- :class:`SimulatedCuda`: the handful of ``torch.cuda`` names a graph runner and a CUDA-event
  timer use (``CUDAGraph``, ``graph``, ``graph_pool_handle``, ``Stream``, ``stream``,
  ``current_stream``, ``synchronize``, ``Event``), simulated on the CPU so that the kata grades
  your runner without a GPU. It keeps the rules that make real graphs hard: a capture records
  and does not compute, a replay reads the very tensors the capture saw, capture wants a warm-up
  on a side stream first, an event's time can only be read once it has completed. It also
  keeps a simulated device clock with a fixed cost model, so timing code has an exact answer.
- ``COURSE_L4_RUNS`` / ``COURSE_CAPTURE_SIZES``: the course's captured run (OPT-125m on an L4).
- :func:`recorded`: ``recorded_h200.json`` (next to this file), eager and graphed step times
  measured once on an NVIDIA H200 with this step by the reference, and the commands that
  measured them (``python -m reference.phase05.graphs_vs_eager --record FILE``, which runs
  :func:`main`; ``python -m katas.phase05.graphs_vs_eager.scaffold --record FILE`` does the same
  with your code).

Importing this module does not need torch: the analysis half of the kata runs without it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import platform
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    import torch
    import torch.nn.functional as F  # noqa: N812
except ImportError:  # the analysis half of the kata runs without torch
    torch = None
    F = None

RECORDING = Path(__file__).with_name("recorded_h200.json")

# The course's captured run: facebook/opt-125m on an L4 24GB, vLLM 0.22.1, 128 greedy tokens per
# prompt, `enforce_eager=True` against the default (graphs and torch.compile on).
COURSE_L4_RUNS = (
    {"batch": 1, "eager_tok_s": 980.3, "graph_tok_s": 2473.6},
    {"batch": 8, "eager_tok_s": 6912.4, "graph_tok_s": 11034.8},
    {"batch": 64, "eager_tok_s": 41560.2, "graph_tok_s": 46883.1},
)
# Its start-up log, graphs on: two progress bars of 23 captures each, then
#   "Graph capturing finished in 7 secs, took 0.41 GiB".
COURSE_CAPTURE_SIZES = 23
COURSE_CAPTURE_LOG = (
    "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|####| 23/23",
    "Capturing CUDA graphs (decode, FULL): 100%|####| 23/23",
    "Graph capturing finished in 7 secs, took 0.41 GiB",
)


def recorded() -> dict[str, Any]:
    """The H200 recording, parsed: ``runs`` holds ``{"batch", "eager_ms", "graph_ms"}`` rows."""
    return json.loads(RECORDING.read_text(encoding="utf-8"))


# -- the GraphEntry a runner keeps per capture size ---------------------------------------------


@dataclass
class GraphEntry:
    """One captured graph: everything a replay at this size needs.

    ``static_input`` and ``static_output`` are the tensors the capture saw; a replay reads the
    one and overwrites the other, in place, every time.
    """

    size: int  # the batch size the graph was captured at
    graph: Any  # a torch.cuda.CUDAGraph (or the simulator's)
    static_input: Any  # token ids [size], int64
    static_output: Any  # logits [size, vocab]


# -- the decode step ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepConfig:
    """The shape of the seeded Llama whose decode step is timed."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    context_len: int  # cached tokens every sequence attends over
    dtype: str = "bfloat16"
    seed: int = 0


# SmolLM2-135M's shape (30 layers of width 576, 9 query and 3 KV heads of 64, MLP 1536, vocabulary
# 49,152, tied embeddings), random bf16 weights. The context length sets how much GPU work each
# sequence adds to a step: the dial between launch-bound and GPU-bound.
SMOLLM2_SHAPE = StepConfig(vocab=49_152, hidden=576, layers=30, heads=9, kv_heads=3, head_dim=64,
                           intermediate=1536, context_len=256)
# The context length of the GPU timing test and of the recording: long enough that batch 64
# carries real GPU work (on an H200: ~3x at batch 64 against ~8x at batch 1), short enough that
# batch 1 stays launch-bound. Its K/V for 64 sequences take 12 GB of GPU memory.
GPU_CONTEXT_LEN = 8192
CONTEXT_CHUNK = 256
# A toy of the same structure for the CPU, in float32.
TINY_STEP = StepConfig(vocab=257, hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16,
                       intermediate=128, context_len=8, dtype="float32")

# Roughly the kernels one eager bf16 step launches per layer, counted on its torch ops: two
# RMSNorms of 9, QKV, two rotary embeddings of 5, attention over the cache and the new token
# (about 12), the output projection and residual add, then the gated MLP (5 with its add). Plus
# the embedding lookup, the final norm and the output head. The simulator bills this count; the
# profiler counted 1,451 CUDA kernels per step at a context of 256 on the H200 (1,571 at 8,192,
# where attention runs in 32 chunks).
_OPS_PER_NORM = 9
_OPS_PER_LAYER = 2 * _OPS_PER_NORM + 1 + 2 * 5 + 12 + 2 + 5


def _need_torch() -> None:
    if torch is None:
        raise ImportError('this part of kata 05-04 needs torch: pip install -e ".[torch]"')


class DecodeStep:
    """One decode step of a seeded Llama: token ids ``[B]`` (int64) to logits ``[B, vocab]``.

    Row ``i`` is sequence ``i`` of the batch: it attends over its own ``context_len`` cached
    tokens (cache row ``i``, random and fixed) plus the new token, at position ``context_len``.
    ``1 <= B <= max_batch``. Rows are independent: a sequence's logits do not depend on the
    other rows of the batch (up to the rounding of a differently sized matrix product).
    """

    def __init__(self, config: StepConfig, *, device: str = "cpu", max_batch: int = 64) -> None:
        _need_torch()
        self.config = config
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.dtype = getattr(torch, config.dtype)
        self.kernels_per_step = config.layers * _OPS_PER_LAYER + 1 + _OPS_PER_NORM + 1
        self.on_call: Callable[[DecodeStep, Any, Any], Any] | None = None  # SimulatedCuda's hook
        c = config
        gen = torch.Generator(device=self.device).manual_seed(c.seed)

        def randn(*shape: int, std: float = 1.0) -> Any:
            out = torch.randn(*shape, generator=gen, device=self.device, dtype=torch.float32)
            return (out * std).to(self.dtype)

        qkv = (c.heads + 2 * c.kv_heads) * c.head_dim
        self.embed = randn(c.vocab, c.hidden)
        self.wqkv = randn(c.layers, c.hidden, qkv, std=c.hidden ** -0.5)
        width = c.heads * c.head_dim
        self.wo = randn(c.layers, width, c.hidden, std=width ** -0.5)
        self.wgate_up = randn(c.layers, c.hidden, 2 * c.intermediate, std=c.hidden ** -0.5)
        self.wdown = randn(c.layers, c.intermediate, c.hidden, std=c.intermediate ** -0.5)
        ones = torch.ones(c.layers, c.hidden, device=self.device, dtype=self.dtype)
        self.attn_norm, self.mlp_norm = ones, ones.clone()
        self.final_norm = torch.ones(c.hidden, device=self.device, dtype=self.dtype)
        # [layers, max_batch, kv_heads, context, head_dim]: one contiguous context per sequence.
        cache = (c.layers, max_batch, c.kv_heads, c.context_len, c.head_dim)
        self.k_cache, self.v_cache = randn(*cache), randn(*cache)
        # Rotary angles of the new token, at position context_len.
        inv_freq = 10_000.0 ** (-torch.arange(0, c.head_dim, 2, dtype=torch.float32) / c.head_dim)
        angles = float(c.context_len) * torch.cat([inv_freq, inv_freq])
        self.cos = angles.cos().to(device=self.device, dtype=self.dtype)
        self.sin = angles.sin().to(device=self.device, dtype=self.dtype)
        self.scale = c.head_dim ** -0.5
        # Attention over the context runs in chunks of at most CONTEXT_CHUNK tokens, one matrix
        # product per (sequence, KV head, chunk), as split-KV decode kernels do: a long context
        # then keeps the GPU busy even at batch 1.
        self.chunk = min(c.context_len, CONTEXT_CHUNK)
        if c.context_len % self.chunk:
            raise ValueError(f"context_len {c.context_len} must be a multiple of {self.chunk}")

    def __call__(self, tokens: Any) -> Any:
        out = self.forward(tokens)
        if self.on_call is not None:
            out = self.on_call(self, tokens, out)
        return out

    def _norm(self, x: Any, weight: Any) -> Any:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + 1e-5)).to(self.dtype) * weight

    def _rope(self, x: Any) -> Any:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * self.cos + rotated * self.sin

    def forward(self, tokens: Any) -> Any:
        """The step's computation alone (what a graph records); ``__call__`` is what you call."""
        c = self.config
        batch = tokens.shape[0]
        group = c.heads // c.kv_heads
        x = F.embedding(tokens, self.embed)
        for layer in range(c.layers):
            h = self._norm(x, self.attn_norm[layer])
            q, k, v = (h @ self.wqkv[layer]).split(
                [c.heads * c.head_dim, c.kv_heads * c.head_dim, c.kv_heads * c.head_dim], dim=-1)
            q = self._rope(q.reshape(batch, c.kv_heads, group, c.head_dim))
            k = self._rope(k.reshape(batch, c.kv_heads, 1, c.head_dim))
            v = v.reshape(batch, c.kv_heads, 1, c.head_dim)
            split = (batch, c.kv_heads, c.context_len // self.chunk, self.chunk, c.head_dim)
            k_ctx = self.k_cache[layer, :batch].view(split)  # [B, kv, chunks, chunk, d]
            v_ctx = self.v_cache[layer, :batch].view(split)
            s_ctx = q.unsqueeze(2) @ k_ctx.transpose(-1, -2)  # [B, kv, chunks, group, chunk]
            s_ctx = s_ctx.transpose(2, 3).reshape(batch, c.kv_heads, group, c.context_len)
            scores = torch.cat([s_ctx, (q * k).sum(-1, keepdim=True)], dim=-1)
            probs = torch.softmax(scores.float() * self.scale, dim=-1).to(self.dtype)
            p_ctx = probs[..., : c.context_len].reshape(
                batch, c.kv_heads, group, split[2], self.chunk).transpose(2, 3)
            attn = (p_ctx @ v_ctx).sum(2) + probs[..., c.context_len:] * v
            x = x + attn.reshape(batch, c.heads * c.head_dim) @ self.wo[layer]
            h = self._norm(x, self.mlp_norm[layer])
            gate, up = (h @ self.wgate_up[layer]).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ self.wdown[layer]
        return self._norm(x, self.final_norm) @ self.embed.T


def random_tokens(batch: int, vocab: int, *, seed: int = 0, device: str = "cpu") -> Any:
    """``batch`` token ids in ``[0, vocab)``, int64, on ``device`` (drawn on the CPU, seeded)."""
    _need_torch()
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch,), generator=gen, dtype=torch.int64).to(device)


# -- the CPU stand-in for torch.cuda ------------------------------------------------------------


class _SimStream:
    def __init__(self, sim: SimulatedCuda, name: str) -> None:
        self._sim, self.name = sim, name

    def wait_stream(self, stream: _SimStream) -> None:  # one in-order clock: nothing to wait for
        pass

    def wait_event(self, event: _SimEvent) -> None:
        pass

    def synchronize(self) -> None:
        self._sim.synchronize()

    def __repr__(self) -> str:
        return f"<simulated stream {self.name}>"


class _SimEvent:
    def __init__(self, sim: SimulatedCuda, enable_timing: bool) -> None:
        self._sim, self.enable_timing = sim, enable_timing
        self.time_us: float | None = None
        self._seq = -1

    def record(self, stream: _SimStream | None = None) -> None:
        self._sim._refuse_while_capturing("Event.record")
        self._sim._seq += 1
        self.time_us, self._seq = self._sim.clock_us, self._sim._seq

    def query(self) -> bool:
        return self.time_us is not None and self._seq <= self._sim._completed

    def synchronize(self) -> None:
        self._sim._refuse_while_capturing("Event.synchronize")
        self._sim._completed = max(self._sim._completed, self._seq)

    def wait(self, stream: _SimStream | None = None) -> None:
        pass

    def elapsed_time(self, end: _SimEvent) -> float:
        """Milliseconds from this event to ``end``; both must be recorded and completed."""
        if not (self.enable_timing and end.enable_timing):
            raise RuntimeError("elapsed_time needs events made with Event(enable_timing=True)")
        if self.time_us is None or end.time_us is None:
            raise RuntimeError("elapsed_time: both events must be recorded first")
        if not (self.query() and end.query()):
            raise RuntimeError(
                "CUDA error: device not ready. elapsed_time read an event the device has not "
                "reached yet: synchronize (the device, or the end event) before reading it")
        return (end.time_us - self.time_us) / 1000.0


class _SimGraph:
    def __init__(self, sim: SimulatedCuda) -> None:
        self._sim = sim
        self.captured = False
        self.size: int | None = None
        self.calls: list[tuple[DecodeStep, Any, Any]] = []  # (step, input seen, output written)

    def replay(self) -> None:
        if not self.captured:
            raise RuntimeError("CUDAGraph.replay: this graph was never captured")
        self._sim._replay(self)


@dataclass
class SimulatedCuda:
    """A CPU stand-in for the parts of ``torch.cuda`` that graph capture and event timing use.

    Build the step on the CPU, ``attach`` it, and pass this object where the code under test
    takes ``cuda`` (``torch.cuda`` on a GPU). The rules it enforces are those of real graphs:

    - A capture (``with sim.graph(g): out = step(x)``) records the call and does **not** compute:
      ``out`` comes back filled with NaN. ``g.replay()`` recomputes every recorded call from the
      very tensor it saw (``x``) into the very tensor it returned (``out``), in place.
    - Capturing a step at batch size ``B`` needs the step to have run eagerly at that size on a
      side stream first (``with sim.stream(sim.Stream()): step(x)``): real captures record
      lazy initialisation (cuBLAS workspaces, allocator growth) into the graph otherwise.
    - Nothing may synchronize or record events while a capture is open.
    - ``Event.elapsed_time`` works only on events made with ``enable_timing=True``, recorded,
      and completed: completion comes with ``synchronize()`` (the device's, a stream's, or the
      end event's).

    The device clock (``clock_us``) advances with a fixed cost model: an eager step of ``n``
    kernels at batch ``B`` costs ``n * max(launch_us, k(B))``, a replay ``max(launch_us,
    n * k(B))``, where ``k(B) = kernel_us + kernel_us_per_row * B`` is one kernel's device time.
    Every ``hiccup_every``-th billed call (0: never) also costs ``hiccup_us`` more, like a
    process the scheduler put to sleep for a moment.
    """

    launch_us: float = 5.0
    kernel_us: float = 1.0
    kernel_us_per_row: float = 0.25
    hiccup_every: int = 0
    hiccup_us: float = 0.0
    clock_us: float = 0.0
    captures: list[int] = field(default_factory=list)  # batch sizes captured, in order
    replays: int = 0
    eager_calls: int = 0

    def __post_init__(self) -> None:
        self._default = _SimStream(self, "default")
        self._current = self._default
        self._capturing: _SimGraph | None = None
        self._warm: set[tuple[int, int]] = set()
        self._seq = -1
        self._completed = -1
        self._billed = 0

    # -- the torch.cuda names -----------------------------------------------------------------

    def is_available(self) -> bool:
        return True

    def CUDAGraph(self) -> _SimGraph:  # noqa: N802 - torch.cuda's name
        return _SimGraph(self)

    def graph_pool_handle(self) -> tuple[str, int]:
        return ("simulated-pool", id(self))

    @contextmanager
    def graph(self, cuda_graph: _SimGraph, pool: Any = None, stream: Any = None,
              capture_error_mode: str = "global") -> Iterator[None]:
        if self._capturing is not None:
            raise RuntimeError("a graph capture is already open; captures do not nest")
        if cuda_graph.captured:
            raise RuntimeError("this CUDAGraph was captured already; make a new one")
        self.synchronize()
        previous, self._current = self._current, _SimStream(self, "capture")
        self._capturing = cuda_graph
        try:
            yield
        finally:
            self._capturing, self._current = None, previous
        cuda_graph.captured = True

    def Stream(self, device: Any = None, priority: int = 0) -> _SimStream:  # noqa: N802
        return _SimStream(self, f"side-{id(self)}-{self._seq}")

    @contextmanager
    def stream(self, stream: _SimStream | None) -> Iterator[None]:
        if stream is None:
            yield
            return
        previous, self._current = self._current, stream
        try:
            yield
        finally:
            self._current = previous

    def current_stream(self, device: Any = None) -> _SimStream:
        return self._current

    def default_stream(self, device: Any = None) -> _SimStream:
        return self._default

    def synchronize(self, device: Any = None) -> None:
        self._refuse_while_capturing("synchronize")
        self._completed = self._seq

    def Event(self, enable_timing: bool = False, blocking: bool = False,  # noqa: N802
              interprocess: bool = False) -> _SimEvent:
        return _SimEvent(self, enable_timing)

    # -- the simulation ----------------------------------------------------------------------

    def attach(self, step: DecodeStep) -> DecodeStep:
        """Route ``step``'s calls through this simulator; returns the step."""
        step.on_call = self._on_call
        return step

    def step_cost_us(self, step: DecodeStep, batch: int, *, graphed: bool) -> float:
        """The device time one call of ``step`` at ``batch`` costs (no hiccup)."""
        n = step.kernels_per_step
        kernel = self.kernel_us + self.kernel_us_per_row * batch
        return max(self.launch_us, n * kernel) if graphed else n * max(self.launch_us, kernel)

    def replay_of(self, step: DecodeStep, tokens: Any) -> Callable[[], Any]:
        """A callable billed like one replay of ``step`` on ``tokens`` (for timing tests)."""

        def replay() -> Any:
            self._bill(step, tokens.shape[0], graphed=True)
            return step.forward(tokens)

        return replay

    def _refuse_while_capturing(self, what: str) -> None:
        if self._capturing is not None:
            raise RuntimeError(f"CUDA error: operation not permitted when stream is capturing "
                               f"({what} inside a graph capture)")

    def _bill(self, step: DecodeStep, batch: int, *, graphed: bool) -> None:
        self._billed += 1
        self.clock_us += self.step_cost_us(step, batch, graphed=graphed)
        if self.hiccup_every and self._billed % self.hiccup_every == 0:
            self.clock_us += self.hiccup_us

    def _on_call(self, step: DecodeStep, tokens: Any, out: Any) -> Any:
        batch = int(tokens.shape[0])
        graph = self._capturing
        if graph is None:
            self.eager_calls += 1
            if self._current is not self._default:
                self._warm.add((id(step), batch))
            self._bill(step, batch, graphed=False)
            return out
        if (id(step), batch) not in self._warm:
            raise RuntimeError(
                f"graph capture of a step that never ran at batch {batch} on a side stream: "
                f"warm it up at the capture size first (with cuda.stream(cuda.Stream()): ...)")
        graph.calls.append((step, tokens, out))
        graph.size = batch
        self.captures.append(batch)
        self.clock_us += step.kernels_per_step * self.launch_us  # the host walks every launch
        return out.fill_(math.nan)  # recorded, not computed

    def _replay(self, graph: _SimGraph) -> None:
        self.replays += 1
        for step, tokens, out in graph.calls:
            out.copy_(step.forward(tokens))
            self._bill(step, int(tokens.shape[0]), graphed=True)


# -- recording on a GPU ---------------------------------------------------------------------------

MINE = "katas.phase05.graphs_vs_eager.graphs_vs_eager"
RECORD_BATCHES = (1, 8, 64)
RECORD_CAPTURE_SIZES = (1, 8, 64)


def _count_kernels(step: DecodeStep, tokens: Any) -> int | None:
    """CUDA kernels one eager step launches, from the profiler (None where it cannot tell)."""
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step(tokens)
            torch.cuda.synchronize()
        return sum(1 for e in prof.events() if e.device_type.name == "CUDA")
    except Exception:  # noqa: BLE001 - an optional figure
        return None


def measure(impl: Any, config: StepConfig, *, batches: tuple[int, ...] = RECORD_BATCHES,
            iters: int = 50, warmup: int = 5, device: str = "cuda",
            cuda: Any = None) -> dict[str, Any]:
    """Eager and graphed step times of ``config`` at each batch, with ``impl``'s runner and timer.

    ``impl`` is a module with the kata's API (``CudaGraphRunner``, ``median_ms``). Also notes
    whether each graphed result was bitwise equal to the eager one. ``device="cpu"`` with a
    ``SimulatedCuda`` is a dry run of the recipe.
    """
    cuda = torch.cuda if cuda is None else cuda
    step = DecodeStep(config, device=device, max_batch=max(batches))
    if isinstance(cuda, SimulatedCuda):
        cuda.attach(step)
    runner = impl.CudaGraphRunner(step, RECORD_CAPTURE_SIZES, cuda=cuda)
    rows = []
    for batch in batches:
        tokens = random_tokens(batch, config.vocab, seed=batch, device=device)
        eager_out, graph_out = step(tokens), runner(tokens)
        eager_ms = impl.median_ms(lambda t=tokens: step(t), iters=iters, warmup=warmup, cuda=cuda)
        graph_ms = impl.median_ms(lambda t=tokens: runner(t), iters=iters, warmup=warmup,
                                  cuda=cuda)
        rows.append({
            "batch": batch, "eager_ms": round(eager_ms, 5), "graph_ms": round(graph_ms, 5),
            "ratio": round(eager_ms / graph_ms, 3),
            "bitwise_equal": bool(torch.equal(eager_out, graph_out)),
            "max_abs_diff": float((eager_out.float() - graph_out.float()).abs().max()),
        })
    return {"step": asdict(config), "iters": iters, "warmup": warmup, "runs": rows}


def main(argv: list[str] | None = None, *, impl: Any = None,
         command: str = "python -m katas.phase05.graphs_vs_eager.scaffold") -> None:
    """Record eager vs graphed step times on this machine's GPU into a JSON file.

    ``impl`` is the module whose ``CudaGraphRunner`` and ``median_ms`` are used: your
    ``graphs_vs_eager.py`` unless another module is given (the kata's recording was made by the
    reference, started as ``python -m <reference module> --record FILE``).
    """
    parser = argparse.ArgumentParser(description="Record eager vs CUDA-graph step times on a GPU.")
    parser.add_argument("--record", required=True, help="the JSON file to write")
    parser.add_argument("--context", type=int, default=GPU_CONTEXT_LEN,
                        help="context length of the timed step (default: the kata's GPU setting)")
    parser.add_argument("--sweep", type=int, nargs="*", default=[],
                        help="more context lengths to measure, kept under 'sweep'")
    parser.add_argument("--iters", type=int, default=50)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    _need_torch()
    if not torch.cuda.is_available():
        raise SystemExit("recording needs a CUDA GPU")
    impl = impl if impl is not None else importlib.import_module(MINE)
    config = StepConfig(**{**asdict(SMOLLM2_SHAPE), "context_len": args.context})
    # The sweep first and the profiler last: a profiler run can slow later eager launches.
    sweep = [measure(impl, StepConfig(**{**asdict(config), "context_len": c}), iters=args.iters)
             for c in args.sweep]
    torch.cuda.empty_cache()
    main_run = measure(impl, config, iters=args.iters)
    step = DecodeStep(config, device="cuda", max_batch=1)
    kernels = _count_kernels(step, random_tokens(1, config.vocab, device="cuda"))
    result: dict[str, Any] = {
        "command": " ".join([command, *argv]),
        "machine": {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "python": platform.python_version()},
        "impl": getattr(getattr(impl, "__spec__", None), "name", impl.__name__),
        "kernels_per_eager_step": kernels,
        **main_run,
        "sweep": sweep,
    }
    Path(args.record).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for section in [result, *result["sweep"]]:
        ratios = ", ".join(f"batch {r['batch']}: {r['eager_ms']:.3f} / {r['graph_ms']:.3f} ms = "
                           f"{r['ratio']:.2f}x" for r in section["runs"])
        print(f"context {section['step']['context_len']}: {ratios}")


if __name__ == "__main__":
    main()
