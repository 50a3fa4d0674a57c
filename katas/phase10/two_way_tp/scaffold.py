"""What kata 10-02 provides: a Llama's shape and weights in torch, its non-parallel pieces (RMSNorm,
RoPE, causal GQA attention, a contiguous KV cache), and the launcher that runs your code as real
tensor-parallel ranks: one process per rank, ``torch.distributed`` between them (gloo on CPU,
NCCL on CUDA GPUs), greedy decoding in lockstep.

Weights use Hugging Face's names and layout: a projection is ``[out_features, in_features]`` and
``y = x @ W.T``. So a *column-parallel* layer (q/k/v, gate/up) is cut along dim 0 and a
*row-parallel* layer (o_proj, down_proj) along dim 1.

The launcher never trusts the code it runs: every rank counts the collectives it makes by
wrapping ``torch.distributed.all_reduce`` before your module is executed, and a rank that raises
sends its traceback home instead of leaving its peer blocked in a collective. A run that does not
finish within its time limit is killed and reported as a hang.

Importing this module does not import torch; every function that needs it imports it inside.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TORCH_REASON = 'this kata runs torch.distributed: pip install -e ".[torch]"'
RECORDING = Path(__file__).with_name("course_2xl4_capture.json")


# ------------------------------------------------------------------------------ the model's shape


@dataclass(frozen=True)
class LlamaShape:
    """The numbers that size a Llama (Hugging Face's ``config.json``, renamed)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> LlamaShape:
        heads = int(config["num_attention_heads"])
        theta = (config.get("rope_parameters") or {}).get("rope_theta",
                                                           config.get("rope_theta", 10000.0))
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
        )


#: Llama-3-8B's widths with 4 layers instead of 32: realistic all-reduce payloads (one row of
#: 4096 per token) and GEMM shapes, ~2.6 B parameters in bf16. For the 2-GPU benchmark.
LLAMA3_8B_WIDTH_4_LAYERS = LlamaShape(vocab_size=128256, hidden_size=4096,
                                      intermediate_size=14336, num_layers=4, num_heads=32,
                                      num_kv_heads=8, head_dim=128, rope_theta=500000.0)


def weight_names(shape: LlamaShape) -> list[str]:
    """Every tensor name of a Llama checkpoint with untied embeddings, in a fixed order."""
    names = ["model.embed_tokens.weight"]
    for i in range(shape.num_layers):
        p = f"model.layers.{i}."
        names += [p + n for n in (
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
            "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
            "mlp.down_proj.weight", "input_layernorm.weight",
            "post_attention_layernorm.weight")]
    return names + ["model.norm.weight", "lm_head.weight"]


def weight_shapes(shape: LlamaShape) -> dict[str, tuple[int, ...]]:
    """Name -> ``[out, in]`` (or ``[hidden]`` for a norm) of every unsharded weight."""
    h, q, kv, f = (shape.hidden_size, shape.num_heads * shape.head_dim,
                   shape.num_kv_heads * shape.head_dim, shape.intermediate_size)
    by_suffix = {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
                 "gate_proj": (f, h), "up_proj": (f, h), "down_proj": (h, f)}
    out: dict[str, tuple[int, ...]] = {}
    for name in weight_names(shape):
        module = name.split(".")[-2]
        if module in ("embed_tokens", "lm_head"):
            out[name] = (shape.vocab_size, h)
        elif module.endswith("norm"):
            out[name] = (h,)
        else:
            out[name] = by_suffix[module]
    return out


def load_checkpoint(model_dir: str | Path, dtype: Any = None) -> tuple[LlamaShape, dict[str, Any]]:
    """``(shape, {name: tensor})`` from a Llama directory (``config.json`` + safetensors).

    ``dtype`` defaults to ``torch.float64``; tied embeddings get an explicit ``lm_head.weight``.
    """
    import torch
    from safetensors.numpy import load_file

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    weights: dict[str, Any] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        for name, array in load_file(str(path)).items():
            weights[name] = torch.from_numpy(array).to(dtype or torch.float64)
    if "lm_head.weight" not in weights:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    return LlamaShape.from_hf(config), weights


def seeded_weights(shape: LlamaShape, seed: int = 0, *, dtype: Any = None,
                   device: Any = "cpu", std: float = 0.02) -> dict[str, Any]:
    """A random Llama of ``shape`` drawn from ``torch.Generator(device).manual_seed(seed)``, in
    ``weight_names`` order (norms are ones): every rank that asks gets the same bits."""
    import torch

    dtype = dtype or torch.float64
    gen = torch.Generator(device=device).manual_seed(seed)
    out: dict[str, Any] = {}
    for name, dims in weight_shapes(shape).items():
        if len(dims) == 1:
            out[name] = torch.ones(dims, dtype=dtype, device=device)
        else:
            w = torch.empty(dims, dtype=torch.float32, device=device)
            out[name] = w.normal_(0.0, std, generator=gen).to(dtype)
    return out


# ------------------------------------------------------------------ the pieces that do not shard


def rms_norm(x: Any, weight: Any, eps: float) -> Any:
    """``x / rms(x) * weight`` over the last dimension (the whole hidden row: a norm never
    shards, which is why it must see a reduced row)."""
    import torch

    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def apply_rope(x: Any, positions: Any, theta: float) -> Any:
    """Rotate ``x`` (``[tokens, heads, head_dim]``) by its positions, rotate-half style (as
    Hugging Face's Llama and mini_vllm): the same for every head, so it commutes with a split
    of the heads."""
    import torch

    head_dim = x.shape[-1]
    half = head_dim // 2
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64,
                                            device=x.device) / head_dim)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    cos = torch.cos(angles).to(x.dtype)[:, None, :]
    sin = torch.sin(angles).to(x.dtype)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attend(q: Any, keys: Any, values: Any, positions: Any) -> Any:
    """Causal grouped-query attention for one sequence.

    ``q`` is ``[tokens, q_heads, head_dim]`` at ``positions``; ``keys`` / ``values`` are the
    cache rows ``[context, kv_heads, head_dim]`` (row ``p`` holds position ``p``). Query head
    ``h`` reads KV head ``h // (q_heads // kv_heads)``, and the token at position ``p`` sees rows
    ``0 .. p``. Returns ``[tokens, q_heads * head_dim]``.
    """
    import torch

    tokens, q_heads, head_dim = q.shape
    kv_heads = keys.shape[1]
    if q_heads % kv_heads:
        raise ValueError(f"attend: {q_heads} query heads do not split into {kv_heads} KV groups")
    group = q_heads // kv_heads
    k = keys.repeat_interleave(group, dim=1)  # [context, q_heads, head_dim]
    v = values.repeat_interleave(group, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(head_dim)
    context = torch.arange(keys.shape[0], device=q.device)
    future = context[None, :] > positions[:, None]  # [tokens, context]
    scores = scores.masked_fill(future[None], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.einsum("hts,shd->thd", weights, v).reshape(tokens, q_heads * head_dim)


@dataclass
class KVCache:
    """One sequence's contiguous K/V for one rank: per layer ``[max_len, kv_heads, head_dim]``,
    row ``p`` holding position ``p``. A rank allocates it for *its* KV heads only."""

    keys: list[Any]
    values: list[Any]

    @classmethod
    def allocate(cls, num_layers: int, max_len: int, num_kv_heads: int, head_dim: int, *,
                 dtype: Any = None, device: Any = "cpu") -> KVCache:
        import torch

        def one() -> Any:
            return torch.zeros(max_len, num_kv_heads, head_dim, dtype=dtype or torch.float64,
                               device=device)

        return cls([one() for _ in range(num_layers)], [one() for _ in range(num_layers)])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


# --------------------------------------------------------------------------- the collectives log


@dataclass
class CollectiveLog:
    """What one rank sent through ``torch.distributed.all_reduce``: one shape per call."""

    all_reduce_shapes: list[tuple[int, ...]] = field(default_factory=list)
    other_ops: list[str] = field(default_factory=list)  # ReduceOp other than SUM, by name


_ACTIVE_LOGS: list[CollectiveLog] = []


def _install_counting_all_reduce() -> None:
    """Replace ``torch.distributed.all_reduce`` (once per process) by a wrapper that logs each
    call into the innermost :func:`counting_collectives` block, then performs it."""
    import torch.distributed as dist

    if getattr(dist.all_reduce, "_katas_counting", False):
        return
    real = dist.all_reduce

    def all_reduce(tensor: Any, op: Any = dist.ReduceOp.SUM, group: Any = None,
                   async_op: bool = False) -> Any:
        if _ACTIVE_LOGS:
            _ACTIVE_LOGS[-1].all_reduce_shapes.append(tuple(tensor.shape))
            if op != dist.ReduceOp.SUM:
                _ACTIVE_LOGS[-1].other_ops.append(str(op))
        return real(tensor, op=op, group=group, async_op=async_op)

    all_reduce._katas_counting = True  # type: ignore[attr-defined]
    dist.all_reduce = all_reduce


@contextmanager
def counting_collectives() -> Iterator[CollectiveLog]:
    """Log every ``torch.distributed.all_reduce`` made inside the block (still performed)."""
    _install_counting_all_reduce()
    log = CollectiveLog()
    _ACTIVE_LOGS.append(log)
    try:
        yield log
    finally:
        _ACTIVE_LOGS.remove(log)


# -------------------------------------------------------------------------------- the decoding


@dataclass
class Decoded:
    """Greedy continuations of every prompt, plus each prompt's last prefill logits row."""

    tokens: list[list[int]]
    prefill_logits: list[list[float]]
    forward_calls: int = 0
    tokens_per_call: list[int] = field(default_factory=list)


def greedy_decode(forward: Callable[[Any, Any, KVCache], Any],
                  new_cache: Callable[[int], KVCache], prompts: Sequence[Sequence[int]],
                  max_tokens: int, *, device: Any = "cpu") -> Decoded:
    """Prefill each prompt in one call, then decode ``max_tokens - 1`` single tokens, taking
    the argmax of the last logits row every time (EOS is not special here).

    ``forward(input_ids, positions, cache)`` returns ``[tokens, vocab]`` logits;
    ``new_cache(max_len)`` gives an empty cache for one sequence. Prompts run one after the
    other, so every rank makes the same calls in the same order (lockstep).
    """
    import torch

    out = Decoded(tokens=[], prefill_logits=[])
    for prompt in prompts:
        cache = new_cache(len(prompt) + max_tokens)
        ids = torch.tensor(list(prompt), dtype=torch.long, device=device)
        positions = torch.arange(len(prompt), device=device)
        generated: list[int] = []
        for step in range(max_tokens):
            logits = forward(ids, positions, cache)
            out.forward_calls += 1
            out.tokens_per_call.append(int(ids.shape[0]))
            if tuple(logits.shape) != (ids.shape[0], logits.shape[-1]) or logits.ndim != 2:
                raise ValueError(f"the forward must return [tokens, vocab] logits for "
                                 f"{ids.shape[0]} tokens; got shape {tuple(logits.shape)}")
            if step == 0:
                out.prefill_logits.append(logits[-1].double().cpu().tolist())
            token = int(torch.argmax(logits[-1]))
            generated.append(token)
            next_pos = int(positions[-1]) + 1
            ids = torch.tensor([token], dtype=torch.long, device=device)
            positions = torch.tensor([next_pos], device=device)
        out.tokens.append(generated)
    return out


# ---------------------------------------------------------------------------- the ranks, for real


@dataclass(frozen=True)
class TPJob:
    """Everything a rank needs, picklable: the code under test travels as source text."""

    module_name: str
    module_file: str
    module_source: str
    world_size: int
    prompts: tuple[tuple[int, ...], ...]
    max_tokens: int
    model_dir: str | None = None  # a checkpoint directory, or
    seeded: LlamaShape | None = None  # a seeded random Llama of this shape
    seed: int = 0
    dtype: str = "float64"
    device: str = "cpu"  # "cpu" (gloo) or "cuda" (NCCL, device cuda:rank)
    timeout_s: float = 90.0


@dataclass
class RankResult:
    """What one rank reports: its tokens and logits, its collectives, its memory."""

    rank: int
    tokens: list[list[int]]
    prefill_logits: list[list[float]]
    forward_calls: int
    tokens_per_call: list[int]
    all_reduce_shapes: list[tuple[int, ...]]
    other_ops: list[str]
    shard_shapes: dict[str, tuple[int, ...]]
    shard_bytes: int
    kv_bytes_per_position: int
    backend: str
    seconds: float


class RankFailed(RuntimeError):
    """A rank raised; ``kind`` is the exception's class name, the message its traceback."""

    def __init__(self, rank: int, kind: str, message: str, where: str) -> None:
        super().__init__(f"rank {rank}: {kind}: {message}\n{where}")
        self.rank, self.kind, self.detail = rank, kind, message


def free_port() -> int:
    """A TCP port nobody listens on now (for the rendezvous on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def module_source(module: Any) -> tuple[str, str]:
    """``(filename, text)`` of a loaded module, whether it came from a file or from text."""
    import linecache

    filename = module.__file__
    lines = linecache.getlines(filename)
    return filename, "".join(lines) if lines else Path(filename).read_text(encoding="utf-8")


def run_ranks(module: Any, *, world_size: int, prompts: Sequence[Sequence[int]],
              max_tokens: int, model_dir: str | Path | None = None,
              seeded: LlamaShape | None = None, seed: int = 0, dtype: str = "float64",
              device: str = "cpu", timeout_s: float = 90.0) -> list[RankResult]:
    """Run ``module``'s tensor-parallel decode on ``world_size`` real processes; one result per
    rank, in rank order. A rank's exception is raised here (``NotImplementedError`` as itself,
    anything else as :class:`RankFailed`); a run past ``timeout_s`` raises ``TimeoutError``."""
    import multiprocessing as mp

    filename, source = module_source(module)
    job = TPJob(module.__name__, filename, source, world_size,
                tuple(tuple(int(t) for t in p) for p in prompts), max_tokens,
                str(model_dir) if model_dir is not None else None, seeded, seed, dtype, device,
                timeout_s)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(rank, port, job, queue), daemon=True)
             for rank in range(world_size)]
    for p in procs:
        p.start()
    results: dict[int, RankResult] = {}
    failure: tuple | None = None
    deadline = time.monotonic() + timeout_s
    try:
        while len(results) < world_size and failure is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                kind, payload = queue.get(timeout=min(left, 1.0))
            except Exception:  # queue.Empty: check that nobody died silently
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    failure = (procs.index(dead[0]), "ProcessExit",
                               f"exited with code {dead[0].exitcode}", "")
                continue
            if kind == "ok":
                results[payload.rank] = payload
            else:
                failure = payload
    finally:
        for p in procs:
            p.join(timeout=5 if failure is None and len(results) == world_size else 0.5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        queue.close()
    if failure is not None:
        rank, kind, message, where = failure
        if kind == "NotImplementedError":
            raise NotImplementedError(message)
        raise RankFailed(rank, kind, message, where)
    if len(results) < world_size:
        missing = sorted(set(range(world_size)) - set(results))
        raise TimeoutError(
            f"ranks {missing} did not finish within {timeout_s:g} s: a rank waiting in an "
            f"all-reduce its peer never makes (the ranks must make the same collectives in "
            f"the same order) hangs")
    return [results[r] for r in range(world_size)]


def _rank_main(rank: int, port: int, job: TPJob, queue: Any) -> None:
    """One rank: join the group, load and shard, decode, report; never leave a peer hanging."""
    try:
        queue.put(("ok", _rank_work(rank, port, job)))
    except BaseException as exc:  # noqa: BLE001 - everything goes home, then the rank exits
        queue.put(("error", (rank, type(exc).__name__, str(exc),
                             "".join(traceback.format_exc(limit=-6)))))
    finally:
        try:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:  # noqa: BLE001
            pass


def _rank_work(rank: int, port: int, job: TPJob) -> RankResult:
    import datetime

    import torch
    import torch.distributed as dist

    from pytest_vllm_katas.variants import compile_module

    torch.set_num_threads(1)  # two ranks on two cores: one thread each
    cuda = job.device == "cuda"
    device = torch.device(f"cuda:{rank}") if cuda else torch.device("cpu")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(device)
    if job.world_size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group(backend, rank=rank, world_size=job.world_size,
                                timeout=datetime.timedelta(seconds=job.timeout_s))
    dtype = getattr(torch, job.dtype)
    # Executed after the wrap, so even `from torch.distributed import all_reduce` is seen.
    _install_counting_all_reduce()
    impl = compile_module(job.module_name, job.module_file, job.module_source)
    if job.model_dir is not None:
        shape, weights = load_checkpoint(job.model_dir, dtype)
    else:
        shape = job.seeded
        weights = seeded_weights(shape, job.seed, dtype=dtype, device=device)
    result = decode_as_rank(impl, rank, job.world_size, shape, weights, job.prompts,
                            job.max_tokens, device=device)
    result.backend = backend if job.world_size > 1 else "none"
    return result


def decode_as_rank(impl: Any, rank: int, world_size: int, shape: LlamaShape,
                   weights: Mapping[str, Any], prompts: Sequence[Sequence[int]],
                   max_tokens: int, *, device: Any = "cpu") -> RankResult:
    """Rank ``rank`` of ``world_size``: shard with ``impl.shard_weights``, then decode greedily
    through ``impl.rank_forward``, counting every all-reduce. With ``world_size`` 1 this runs
    in the calling process (no process group needed); otherwise the group must exist."""
    import torch

    with counting_collectives() as log:
        shard = impl.shard_weights(weights, shape, rank, world_size)
        shard = {name: t.to(device) for name, t in shard.items()}
        _, kv_heads = impl.heads_per_rank(shape, world_size)
        dtype = next(iter(shard.values())).dtype

        def new_cache(max_len: int) -> KVCache:
            return KVCache.allocate(shape.num_layers, max_len, kv_heads, shape.head_dim,
                                    dtype=dtype, device=device)

        def forward(ids: Any, positions: Any, cache: KVCache) -> Any:
            return impl.rank_forward(shard, shape, ids, positions, cache, world_size)

        start = time.perf_counter()
        with torch.no_grad():
            decoded = greedy_decode(forward, new_cache, prompts, max_tokens, device=device)
        if str(device).startswith("cuda"):
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return RankResult(
        rank=rank, tokens=decoded.tokens, prefill_logits=decoded.prefill_logits,
        forward_calls=decoded.forward_calls, tokens_per_call=decoded.tokens_per_call,
        all_reduce_shapes=log.all_reduce_shapes, other_ops=log.other_ops,
        shard_shapes={n: tuple(t.shape) for n, t in shard.items()},
        shard_bytes=sum(t.numel() * t.element_size() for t in shard.values()),
        kv_bytes_per_position=new_cache(1).nbytes, backend="none", seconds=seconds)


def recorded() -> dict[str, Any]:
    """The course's captured 2×L4 run (opt-1.3b), as recorded next to this file."""
    return json.loads(RECORDING.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------ reading vLLM


def engine_weight_bytes(worker: Any) -> int:
    """Weight bytes one vLLM worker holds (run it with ``llm.collective_rpc``).

    On CPU vLLM repacks a linear layer's weight for its kernels after loading and leaves an
    empty ``weight`` behind, so the parameters alone would under-count. A parallel layer still
    says what its rank holds (``input_size_per_partition`` x ``output_size_per_partition``);
    every other parameter (norms) is counted as it is.
    """
    total = 0
    for module in worker.model_runner.model.modules():
        params = list(module.parameters(recurse=False))
        if not params:
            continue
        size = params[0].element_size()
        if hasattr(module, "input_size_per_partition"):
            total += module.input_size_per_partition * module.output_size_per_partition * size
            total += sum(p.numel() * p.element_size() for n, p in module.named_parameters(
                recurse=False) if n != "weight")  # a bias, when there is one
        else:
            total += sum(p.numel() * p.element_size() for p in params)
    return total
