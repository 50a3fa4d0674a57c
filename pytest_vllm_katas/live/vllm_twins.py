"""vLLM 0.32's own block pool, KV cache manager and scheduler, driven in lockstep with mini_vllm's.

Upstream twin: vLLM's ``tests/v1/core/utils.py`` (``create_scheduler``, ``create_requests``) and
``tests/v1/core/test_prefix_caching.py``: the objects are built with their public constructors,
offline and without a model executor, on the tiny Llama's config (no weights are read). A step is
``schedule()`` then ``update_from_output(ModelRunnerOutput)`` with one sampled token for every row
that reaches the end of its known tokens.

Both sides get identical requests and one token stream (a pure function of the request and the
output index, :func:`token_at`), so with identical rules they must agree on everything the
control plane decides. After every operation or step the two are compared on: the free queue's
order, every block's ref count, the prefix-cache index, every block table, the running and
waiting queues, and the step itself (rows and their token counts in order, admissions and their
prefix hits, preemptions in order, sampled rows, finishes). The first difference is returned as a
:class:`Divergence`.

The two hash functions differ (vLLM: SHA-256 of a pickle; mini_vllm: Python's tuple hash), so a
hash is compared through the token prefix it names (:class:`PrefixNames`), never by value.

The vLLM side is imported on first use: importing this module needs neither torch nor vLLM, so
``workloads()`` and the mini side work on the core install too.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from hypothesis import strategies as st

from mini_vllm import EOS_TOKEN_ID, LLMEngine, Request, SamplingParams, hash_block_tokens

# Long enough that vLLM's max_model_len caps (on scheduled tokens and in check_stop) never bite:
# mini_vllm has no such cap, and no workload here comes near it.
MAX_MODEL_LEN = 2048

# The preset that selects vLLM 0.32's rules in mini_vllm (LLMEngine(policy=...)).
VLLM_PRESET = "vllm-0.32"

# A small alphabet, so unrelated prompts and output streams still share blocks now and then.
_ALPHABET = 6


# -- workloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestSpec:
    """One request of a workload, identical on both sides.

    ``arrival`` and ``abort_at`` are step numbers (the request is added, or aborted if still
    unfinished, just before that step's ``schedule()``); ``eos_at`` is the output index whose
    token is EOS; ``stream`` picks the output stream (equal streams give equal outputs).
    """

    rid: str
    prompt: tuple[int, ...]
    max_tokens: int
    arrival: int = 0
    eos_at: int | None = None
    abort_at: int | None = None
    stream: int = 0


@dataclass(frozen=True)
class Workload:
    """Pool and scheduler knobs (vLLM's names) plus the requests."""

    block_size: int
    num_blocks: int
    max_num_seqs: int
    max_num_batched_tokens: int
    long_prefill_token_threshold: int
    enable_caching: bool
    requests: tuple[RequestSpec, ...]

    def max_steps(self) -> int:
        """A step budget no correct schedule needs: every token at most three times over."""
        tokens = sum(len(r.prompt) + r.max_tokens for r in self.requests)
        return 3 * tokens + max((r.arrival for r in self.requests), default=0) + 10


def stream_token(stream: int, index: int) -> int:
    """Token ``index`` of output stream ``stream`` (EOS aside)."""
    return 1 + (stream * 5 + index) % _ALPHABET


def token_at(spec: RequestSpec, output_index: int) -> int:
    """The token both sides sample for ``spec`` at ``output_index`` (the shared stream)."""
    if output_index == spec.eos_at:
        return EOS_TOKEN_ID
    return stream_token(spec.stream, output_index)


_tokens = st.integers(min_value=1, max_value=_ALPHABET)


@st.composite
def workloads(draw: st.DrawFn, cramped: bool = False) -> Workload:
    """Prefix families, exact duplicates, cramped and roomy pools, aborts, EOS, chunked prefill
    and staggered arrivals.

    The pool is sized last, from the largest request up: every request fits on its own (one that
    never fits livelocks both sides, which tells nothing), and small pools, where preemption and
    eviction happen, are what shrinking heads for. ``cramped``: at least three requests, arriving
    early, in a pool at most one block larger than the largest needs, so preemption is the rule.
    """
    block_size = draw(st.sampled_from([2, 4]))
    max_num_seqs = draw(st.integers(min_value=2 if cramped else 1, max_value=6))
    # vLLM refuses max_num_batched_tokens < max_num_seqs.
    max_num_batched_tokens = draw(st.integers(min_value=max_num_seqs, max_value=24))
    threshold = draw(st.one_of(st.just(0), st.integers(min_value=1, max_value=8)))
    enable_caching = draw(st.booleans())

    families = draw(st.lists(st.lists(_tokens, min_size=1, max_size=12), min_size=1, max_size=2))
    specs: list[RequestSpec] = []
    for i in range(draw(st.integers(min_value=3 if cramped else 1, max_value=6))):
        if specs and draw(st.booleans()):
            prompt = draw(st.sampled_from([s.prompt for s in specs]))  # an exact duplicate
        else:
            family = draw(st.sampled_from(families))
            shared = draw(st.integers(min_value=0, max_value=len(family)))
            prompt = tuple(family[:shared]) + tuple(draw(st.lists(_tokens, max_size=6)))
        max_tokens = draw(st.integers(min_value=1, max_value=12))
        specs.append(RequestSpec(
            rid=f"r{i}",
            prompt=prompt or (1,),
            max_tokens=max_tokens,
            arrival=draw(st.integers(min_value=0, max_value=1 if cramped else 4)),
            eos_at=draw(st.one_of(st.none(), st.integers(min_value=0, max_value=max_tokens - 1))),
            abort_at=draw(st.one_of(st.none(), st.integers(min_value=0, max_value=12))),
            stream=draw(st.integers(min_value=0, max_value=2)),
        ))
    largest = max(len(s.prompt) + s.max_tokens for s in specs)
    # Blocks beyond what the largest request needs on its own.
    spare = draw(st.sampled_from([0, 1] if cramped else [0, 0, 1, 2, 4, 8]))
    num_blocks = -(-largest // block_size) + 1 + spare
    return Workload(block_size, num_blocks, max_num_seqs, max_num_batched_tokens, threshold,
                    enable_caching, tuple(specs))


@dataclass(frozen=True)
class PoolConfig:
    """Knobs of a KV-cache-manager-level run (no scheduler)."""

    block_size: int
    num_blocks: int
    enable_caching: bool


# One op of a KV-cache-manager-level run; the runner reads indices modulo what is live, so every
# drawn list is a valid run (which keeps shrinking free).
KVOp = tuple[Any, ...]


@st.composite
def kv_runs(draw: st.DrawFn) -> tuple[PoolConfig, list[KVOp]]:
    """A pool and a sequence of allocate / grow / free / raw take and give / reset ops.

    Prompts come from one or two families (a shared prefix, then a short tail), so prefix hits,
    exact duplicates and evictions of cached blocks are common.
    """
    config = PoolConfig(
        block_size=draw(st.sampled_from([2, 4])),
        num_blocks=draw(st.integers(min_value=3, max_value=16)),
        enable_caching=draw(st.booleans()),
    )
    families = draw(st.lists(st.lists(_tokens, min_size=1, max_size=12), min_size=1, max_size=2))
    ops: list[KVOp] = []
    for _ in range(draw(st.integers(min_value=1, max_value=24))):
        kind = draw(st.sampled_from(["admit", "compute", "free", "take", "give", "reset"]))
        if kind == "admit":
            # Half the time a whole family, half the time a cut of one plus a short tail.
            family = tuple(draw(st.sampled_from(families)))
            cut = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=len(family))))
            prompt = family if cut is None else family[:cut] + tuple(
                draw(st.lists(_tokens, max_size=3)))
            ops.append((kind, prompt or (1,), draw(st.integers(min_value=1, max_value=14))))
        elif kind == "compute":
            ops.append((kind, draw(st.integers(min_value=0, max_value=7)),
                        draw(st.integers(min_value=1, max_value=8))))
        elif kind in ("free", "give"):
            which = draw(st.integers(min_value=0, max_value=7))
            ops.append((kind, which) if kind == "free" else (kind, which, draw(st.booleans())))
        elif kind == "take":
            ops.append((kind, draw(st.integers(min_value=1, max_value=4))))
        else:
            ops.append((kind,))
    return config, ops


# -- comparable state ------------------------------------------------------------------------

PrefixKey = tuple[int, ...]


class PrefixNames:
    """Side-specific block hash -> the token prefix it stands for.

    Learned from every request a side has seen (hashes of finished requests stay in the cache,
    so nothing is forgotten). A hash nobody taught is named ``("?", hash)``: an index entry no
    request's prefix explains is a divergence in itself.
    """

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._names: dict[Any, PrefixKey] = {}

    def learn(self, hashes: Sequence[Any], tokens: Sequence[int]) -> None:
        bs = self.block_size
        for i, block_hash in enumerate(hashes):
            self._names.setdefault(block_hash, tuple(tokens[: (i + 1) * bs]))

    def name(self, block_hash: Any) -> Any:
        return self._names.get(block_hash, ("?", block_hash))


@dataclass(frozen=True)
class PoolState:
    """Everything observable about a block pool, in side-independent terms."""

    free_queue: tuple[int, ...]  # front (evicted first) to back
    ref_cnt: tuple[int, ...]  # blocks 1..N-1 (block 0 is the null block on both sides)
    prefix_index: dict[Any, tuple[int, ...]]  # token prefix -> ids of the blocks cached for it
    block_prefix: dict[int, Any]  # block id -> the prefix its own hash names
    tables: dict[str, tuple[int, ...]]  # request id -> block table


def pool_state(
    blocks: Sequence[Any],
    free_blocks: Iterable[Any],
    index: Iterable[tuple[Any, Any]],
    hash_of: Callable[[Any], Any],
    names: PrefixNames,
    tables: dict[str, list[int]],
) -> PoolState:
    """Assemble a :class:`PoolState` from either side's objects.

    ``index`` yields (hash, entry) where an entry is one block or a dict ``{block_id: block}``
    (vLLM's ``BlockHashToBlockMap``, and mini_vllm with duplicate caching); ``hash_of(block)`` is
    the block's own hash in the same terms as the index keys, or None.
    """
    prefix_index: dict[Any, tuple[int, ...]] = {}
    for block_hash, entry in index:
        held = entry.values() if isinstance(entry, dict) else [entry]
        prefix_index[names.name(block_hash)] = tuple(sorted(b.block_id for b in held))
    block_prefix = {b.block_id: names.name(h) for b in blocks[1:]
                    if (h := hash_of(b)) is not None}
    return PoolState(
        free_queue=tuple(b.block_id for b in free_blocks),
        ref_cnt=tuple(b.ref_cnt for b in blocks[1:]),
        prefix_index=prefix_index,
        block_prefix=block_prefix,
        tables={rid: tuple(ids) for rid, ids in tables.items() if ids},
    )


_POOL_FIELDS = {
    "free_queue": "free queue (front is evicted first)",
    "ref_cnt": "ref counts of blocks 1..N-1",
    "prefix_index": "prefix-cache index (token prefix -> cached block ids)",
    "block_prefix": "per-block hash (block id -> token prefix)",
    "tables": "block tables",
}


def _dict_difference(mini: dict[Any, Any], vllm: dict[Any, Any]) -> tuple[dict[Any, Any], ...]:
    keys = sorted({*mini, *vllm}, key=repr)
    differing = [k for k in keys if mini.get(k) != vllm.get(k)]
    return ({k: mini.get(k) for k in differing}, {k: vllm.get(k) for k in differing})


def first_pool_difference(mini: PoolState, vllm: PoolState) -> tuple[str, Any, Any] | None:
    """(what, mini value, vLLM value) of the first field that differs; dicts only their
    differing keys."""
    for name, label in _POOL_FIELDS.items():
        a, b = getattr(mini, name), getattr(vllm, name)
        if a != b:
            if isinstance(a, dict):
                a, b = _dict_difference(a, b)
            return label, a, b
    return None


@dataclass(frozen=True)
class StepRecord:
    """What one ``schedule()`` + ``update_from_output`` decided, in side-independent terms."""

    rows: tuple[tuple[str, int], ...]  # (request id, tokens scheduled), in row order
    admitted: tuple[str, ...]  # admitted from waiting this step (new or resumed), in order
    hits: tuple[tuple[str, int], ...]  # prefix-cache hit tokens of each admission
    preempted: tuple[str, ...]  # in preemption order
    sampled: tuple[str, ...]  # rows that sampled a token
    finished: tuple[tuple[str, str], ...]  # (request id, "stop" | "length")
    running: tuple[str, ...]  # after the step
    waiting: tuple[str, ...]  # after the step, front first

    def summary(self) -> str:
        parts = [" ".join(f"{rid}:{n}" for rid, n in self.rows) or "(idle)"]
        if self.hits:
            parts.append("admit " + " ".join(f"{rid}(hit {h})" for rid, h in self.hits))
        if self.preempted:
            parts.append("preempt " + " ".join(self.preempted))
        if self.finished:
            parts.append("finish " + " ".join(f"{rid}({why})" for rid, why in self.finished))
        return "; ".join(parts)


_STEP_FIELDS = {
    "rows": "rows scheduled (request id, tokens), in order",
    "admitted": "admissions, in order",
    "hits": "prefix-cache hit tokens at admission",
    "preempted": "preemptions, in order",
    "sampled": "rows that sampled",
    "finished": "finishes",
    "running": "running queue after the step",
    "waiting": "waiting queue after the step",
}


@dataclass
class Divergence:
    """Where mini_vllm and vLLM first disagree, with the steps (or ops) leading there."""

    where: str  # "step 3" or "op 5 ('free', 0)"
    what: str
    mini: Any
    vllm: Any
    trace: list[str] = field(default_factory=list)
    ours: str = "mini_vllm"  # what the mini side is called in the report ("yours" in a kata)

    def __str__(self) -> str:
        width = max(len(self.ours), len("vLLM")) + 1
        lines = [f"{self.where}: {self.what} differ", f"  {self.ours + ':':<{width}} {self.mini!r}",
                 f"  {'vLLM:':<{width}} {self.vllm!r}"]
        if self.trace:
            lines.append(f"  agreed until then ({self.ours}'s view):")
            lines.extend(f"    {line}" for line in self.trace)
        return "\n".join(lines)


# -- the vLLM side ---------------------------------------------------------------------------


@functools.cache
def vllm_api() -> SimpleNamespace:
    """vLLM's classes, imported once (a few seconds), with its start-up chatter silenced."""
    import torch
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.sampling_params import SamplingParams as VllmSamplingParams
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.block_pool import BlockPool as VllmBlockPool
    from vllm.v1.core.kv_cache_manager import KVCacheManager as VllmKVCacheManager
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.core.sched.scheduler import Scheduler as VllmScheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.request import Request as VllmRequest
    from vllm.v1.request import RequestStatus as VllmRequestStatus
    from vllm.v1.structured_output import StructuredOutputManager

    from pytest_vllm_katas.live import models

    # Per-config warnings (the CPU platform wants 32-token blocks; a refused prefix-cache reset)
    # would repeat for every workload.
    logging.getLogger("vllm").setLevel(logging.ERROR)
    hash_fn = get_hash_fn_by_name(CacheConfig().prefix_caching_hash_algo)
    init_none_hash(hash_fn)
    # The model config only names the architecture and its limits; no weight is read.
    model_config = ModelConfig(model=str(models.build_tiny_llama()), max_model_len=MAX_MODEL_LEN,
                               seed=0, skip_tokenizer_init=True)
    return SimpleNamespace(
        torch=torch, CacheConfig=CacheConfig, SchedulerConfig=SchedulerConfig,
        VllmConfig=VllmConfig, model_config=model_config, hash_fn=hash_fn,
        SamplingParams=VllmSamplingParams, Request=VllmRequest, RequestStatus=VllmRequestStatus,
        get_request_block_hasher=get_request_block_hasher, KVCacheManager=VllmKVCacheManager,
        Scheduler=VllmScheduler, StructuredOutputManager=StructuredOutputManager,
        FullAttentionSpec=FullAttentionSpec, KVCacheConfig=KVCacheConfig,
        KVCacheGroupSpec=KVCacheGroupSpec, ModelRunnerOutput=ModelRunnerOutput,
        BlockPool=VllmBlockPool,
    )


def _kv_cache_config(v: SimpleNamespace, num_blocks: int, block_size: int) -> Any:
    # One full-attention group; head count and size are irrelevant without tensors.
    spec = v.FullAttentionSpec(block_size=block_size, num_kv_heads=1, head_size=1,
                               dtype=v.torch.float32)
    return v.KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[],
                           kv_cache_groups=[v.KVCacheGroupSpec(["layer"], spec)])


def build_vllm_scheduler(w: Workload, *, reserve_full_isl: bool = True) -> Any:
    """vLLM's ``Scheduler`` for ``w``, as ``create_scheduler`` builds it (chunked prefill on)."""
    v = vllm_api()
    scheduler_config = v.SchedulerConfig(
        max_num_seqs=w.max_num_seqs,
        max_num_batched_tokens=w.max_num_batched_tokens,
        max_model_len=MAX_MODEL_LEN,
        long_prefill_token_threshold=w.long_prefill_token_threshold,
        enable_chunked_prefill=True,
        scheduler_reserve_full_isl=reserve_full_isl,
        is_encoder_decoder=False,
    )
    cache_config = v.CacheConfig(block_size=w.block_size, enable_prefix_caching=w.enable_caching)
    vllm_config = v.VllmConfig(scheduler_config=scheduler_config, model_config=v.model_config,
                               cache_config=cache_config)
    # Normally set by the KV-cache sizing that runs before the scheduler exists.
    vllm_config.cache_config.num_gpu_blocks = w.num_blocks
    return v.Scheduler(
        vllm_config=vllm_config,
        kv_cache_config=_kv_cache_config(v, w.num_blocks, w.block_size),
        structured_output_manager=v.StructuredOutputManager(vllm_config),
        block_size=w.block_size,
        log_stats=False,
    )


def build_vllm_kv_cache_manager(config: PoolConfig) -> Any:
    """vLLM's ``KVCacheManager`` alone, as ``test_prefix_caching.py`` builds it."""
    v = vllm_api()
    return v.KVCacheManager(
        _kv_cache_config(v, config.num_blocks, config.block_size),
        max_model_len=MAX_MODEL_LEN,
        scheduler_block_size=config.block_size,
        hash_block_size=config.block_size,
        enable_caching=config.enable_caching,
    )


def make_vllm_request(spec: RequestSpec, block_size: int) -> Any:
    """A ``vllm.v1.request.Request`` hashing its blocks as the engine's front end sets it up."""
    v = vllm_api()
    params = v.SamplingParams(max_tokens=spec.max_tokens, temperature=0.0)
    params.update_from_generation_config({}, EOS_TOKEN_ID)  # what the processor does
    return v.Request(
        request_id=spec.rid,
        prompt_token_ids=list(spec.prompt),
        sampling_params=params,
        pooling_params=None,
        block_hasher=v.get_request_block_hasher(block_size, v.hash_fn),
    )


def _vllm_pool_state(pool: Any, names: PrefixNames, tables: dict[str, list[int]]) -> PoolState:
    # Index keys and block hashes carry a 4-byte KV-cache-group suffix; the request's
    # block_hashes (what names learn from) do not.
    return pool_state(
        pool.blocks,
        pool.free_block_queue.get_all_free_blocks(),
        ((key[:-4], entry) for key, entry in pool.cached_block_hash_to_block._cache.items()),
        lambda b: None if b.block_hash is None else b.block_hash[:-4],
        names,
        tables,
    )


def _finish_reason(status: Any) -> str:
    name = status.name
    return {"FINISHED_STOPPED": "stop", "FINISHED_LENGTH": "length",
            "FINISHED_LENGTH_CAPPED": "length", "FINISHED_ABORTED": "abort"}.get(name, name)


class VllmSchedulerSide:
    """vLLM's ``Scheduler`` fed by a scripted model runner."""

    def __init__(self, w: Workload, *, reserve_full_isl: bool = True) -> None:
        self.workload = w
        self.scheduler = build_vllm_scheduler(w, reserve_full_isl=reserve_full_isl)
        self.specs: dict[str, RequestSpec] = {}
        self.requests: dict[str, Any] = {}  # every request ever added (the scheduler forgets)
        self.names = PrefixNames(w.block_size)

    def add(self, spec: RequestSpec) -> None:
        self.specs[spec.rid] = spec
        self.requests[spec.rid] = make_vllm_request(spec, self.workload.block_size)
        self.scheduler.add_request(self.requests[spec.rid])

    def is_unfinished(self, rid: str) -> bool:
        return rid in self.requests and not self.requests[rid].is_finished()

    def has_unfinished_requests(self) -> bool:
        return any(not r.is_finished() for r in self.requests.values())

    def abort(self, rid: str) -> None:
        self.scheduler.finish_requests(rid, vllm_api().RequestStatus.FINISHED_ABORTED)

    def step(self) -> StepRecord:
        sched = self.scheduler
        running_before = [r.request_id for r in sched.running]
        out = sched.schedule()
        rows = tuple(out.num_scheduled_tokens.items())
        was_running = set(running_before)
        admitted = tuple(rid for rid, _ in rows if rid not in was_running)
        # schedule() has already advanced num_computed_tokens by the scheduled tokens.
        hits = tuple((rid, self.requests[rid].num_computed_tokens - n)
                     for rid, n in rows if rid not in was_running)
        # FCFS preempts by popping the end of `running`; the output only has a set of ids.
        preempted = tuple(rid for rid in reversed(running_before) if rid in out.preempted_req_ids)
        sampled: list[list[int]] = []
        for rid, _ in rows:
            request = self.requests[rid]
            needs = request.num_computed_tokens >= request.num_tokens
            sampled.append([token_at(self.specs[rid], request.num_output_tokens)] if needs else [])
        runner_output = vllm_api().ModelRunnerOutput(
            req_ids=[rid for rid, _ in rows],
            req_id_to_index={rid: i for i, (rid, _) in enumerate(rows)},
            sampled_token_ids=sampled,
        )
        sched.update_from_output(out, runner_output)
        return StepRecord(
            rows=rows,
            admitted=admitted,
            hits=hits,
            preempted=preempted,
            sampled=tuple(rid for (rid, _), toks in zip(rows, sampled, strict=True) if toks),
            finished=tuple((rid, _finish_reason(self.requests[rid].status))
                           for rid, _ in rows if self.requests[rid].is_finished()),
            running=tuple(r.request_id for r in sched.running),
            waiting=tuple(r.request_id for r in (*sched.kv_holding_waiting, *sched.waiting)),
        )

    def pool_state(self) -> PoolState:
        for request in self.requests.values():
            self.names.learn(request.block_hashes, request.all_token_ids)
        kv = self.scheduler.kv_cache_manager
        tables = {rid: kv.get_block_ids(rid)[0] for rid in self.scheduler.requests}
        return _vllm_pool_state(kv.block_pool, self.names, tables)


# -- the mini_vllm side ----------------------------------------------------------------------


def mini_engine(w: Workload | PoolConfig, policy: Any = VLLM_PRESET,
                **engine_kwargs: Any) -> LLMEngine:
    """mini_vllm's engine for ``w`` under ``policy`` (a preset name or a ControlPlanePolicy).

    The engine is only a constructor here: the runs drive its scheduler and KV cache manager
    directly, so no model runs. ``engine_kwargs`` reach ``LLMEngine`` (a learner's
    ``scheduler_cls`` or ``block_pool_cls``).
    """
    knobs: dict[str, Any] = dict(num_blocks=w.num_blocks, block_size=w.block_size,
                                 enable_caching=w.enable_caching, **engine_kwargs)
    if isinstance(w, Workload):
        knobs.update(max_num_seqs=w.max_num_seqs, max_num_batched_tokens=w.max_num_batched_tokens,
                     long_prefill_token_threshold=w.long_prefill_token_threshold)
    return LLMEngine(policy=policy, **knobs)


def make_mini_request(spec: RequestSpec) -> Request:
    return Request(list(spec.prompt), SamplingParams(max_tokens=spec.max_tokens, temperature=0.0),
                   request_id=spec.rid)


def _mini_hashes(tokens: Sequence[int], block_size: int) -> list[int]:
    hashes: list[int] = []
    for i in range(len(tokens) // block_size):
        parent = hashes[-1] if hashes else None
        hashes.append(hash_block_tokens(parent, tokens[i * block_size : (i + 1) * block_size]))
    return hashes


def _mini_index(pool: Any) -> Iterable[tuple[Any, dict[int, Any]]]:
    # The block a lookup returns per hash, plus the twins the vllm-0.32 preset registers beside
    # it (``cache_duplicate_blocks``), merged into upstream's one {block_id: block} per hash.
    twins = getattr(pool, "duplicate_cached_blocks", {})
    for block_hash, block in pool.cached_block_hash_to_block.items():
        yield block_hash, {block.block_id: block, **twins.get(block_hash, {})}


def _mini_pool_state(pool: Any, names: PrefixNames, tables: dict[str, list[int]]) -> PoolState:
    return pool_state(
        pool.blocks,
        pool.free_queue.get_all_free_blocks(),
        _mini_index(pool),
        lambda b: b.block_hash,
        names,
        tables,
    )


class MiniSchedulerSide:
    """mini_vllm's ``Scheduler``, stepped exactly as ``engine_step`` does, minus the model."""

    def __init__(self, w: Workload, policy: Any = VLLM_PRESET, **engine_kwargs: Any) -> None:
        self.workload = w
        engine = mini_engine(w, policy, **engine_kwargs)
        self.scheduler = engine.scheduler
        self.kv = engine.kv_cache_manager
        self.specs: dict[str, RequestSpec] = {}
        self.requests: dict[str, Request] = {}
        self.names = PrefixNames(w.block_size)

    def add(self, spec: RequestSpec) -> None:
        self.specs[spec.rid] = spec
        self.requests[spec.rid] = make_mini_request(spec)
        self.scheduler.add_request(self.requests[spec.rid])

    def is_unfinished(self, rid: str) -> bool:
        return rid in self.requests and not self.requests[rid].is_finished

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    def abort(self, rid: str) -> None:
        self.scheduler.abort_request(rid)

    def step(self) -> StepRecord:
        sched = self.scheduler
        out = sched.schedule()
        rows = tuple((r.request_id, out.num_scheduled_tokens[r.request_id])
                     for r in out.scheduled_requests)
        # Not advanced yet: mini_vllm moves num_computed_tokens in update_from_output.
        hits = tuple((rid, self.requests[rid].num_computed_tokens)
                     for rid in out.scheduled_new_req_ids)
        sampled = {r.request_id: token_at(self.specs[r.request_id], r.num_output_tokens)
                   for r in out.scheduled_requests
                   if sched.needs_sample(r, out.num_scheduled_tokens[r.request_id])}
        finished = sched.update_from_output(out, sampled)
        return StepRecord(
            rows=rows,
            admitted=tuple(out.scheduled_new_req_ids),
            hits=hits,
            preempted=tuple(out.preempted_req_ids),
            sampled=tuple(rid for rid, _ in rows if rid in sampled),
            finished=tuple((r.request_id, _finish_reason(r.status)) for r in finished),
            running=tuple(r.request_id for r in sched.running),
            waiting=tuple(r.request_id for r in sched.waiting),
        )

    def pool_state(self) -> PoolState:
        for request in self.requests.values():
            tokens = request.all_token_ids
            self.names.learn(_mini_hashes(tokens, self.workload.block_size), tokens)
        tables = {rid: self.kv.get_block_ids(rid) for rid in self.requests}
        return _mini_pool_state(self.kv.block_pool, self.names, tables)


# -- whole-scheduler runs --------------------------------------------------------------------


def run_scheduler_workload(w: Workload, policy: Any = VLLM_PRESET, *,
                           reserve_full_isl: bool = True, ours: str = "mini_vllm",
                           **engine_kwargs: Any) -> Divergence | None:
    """Run ``w`` on both schedulers step by step; the first divergence, or None.

    ``reserve_full_isl`` is vLLM's ``SchedulerConfig.scheduler_reserve_full_isl`` (its default
    is True), the one rule of the four that upstream can switch off too. ``engine_kwargs`` go to
    mini_vllm's ``LLMEngine``: a kata passes the learner's ``scheduler_cls`` here, and names its
    side ``ours`` in the report.
    """
    mini = MiniSchedulerSide(w, policy, **engine_kwargs)
    vllm = VllmSchedulerSide(w, reserve_full_isl=reserve_full_isl)
    divergence = _lockstep(w, mini, vllm)
    if divergence is not None:
        divergence.ours = ours
    return divergence


def mini_steps(w: Workload, policy: Any = VLLM_PRESET, **engine_kwargs: Any) -> list[StepRecord]:
    """mini_vllm's side of ``w`` alone (no vLLM needed): every step's record, until done."""
    mini = MiniSchedulerSide(w, policy, **engine_kwargs)
    records: list[StepRecord] = []
    last_arrival = max(r.arrival for r in w.requests)
    for step in range(w.max_steps()):
        for spec in w.requests:
            if spec.arrival == step:
                mini.add(spec)
            if spec.abort_at == step and mini.is_unfinished(spec.rid):
                mini.abort(spec.rid)
        if step > last_arrival and not mini.has_unfinished_requests():
            break
        records.append(mini.step())
    return records


def assert_scheduler_agrees_with_vllm(strategy: st.SearchStrategy[Workload],
                                      scheduler_cls: type, *, what: str,
                                      prepare: Callable[[Workload], Workload] | None = None,
                                      max_examples: int = 80) -> None:
    """A kata's live check: hypothesis-drawn workloads through mini_vllm (policy "vllm-0.32")
    running the learner's ``scheduler_cls``, and through vLLM's own ``Scheduler``, step by step.
    Fails with the shrunk, minimal divergence; ``what`` names the learner's side in the message,
    ``prepare`` fits each workload to what the learner's part covers. Fixed seeds, no database:
    every run checks the same workloads."""
    from hypothesis import HealthCheck, given, settings

    vllm_api()  # the slow import, once, before any example

    @settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
              report_multiple_bugs=False, suppress_health_check=[HealthCheck.too_slow])
    @given(strategy)
    def agrees(w: Workload) -> None:
        if prepare is not None:
            w = prepare(w)
        divergence = run_scheduler_workload(w, scheduler_cls=scheduler_cls, ours="yours")
        assert divergence is None, (
            f"{what}, with policy 'vllm-0.32', departs from vLLM 0.32's Scheduler:\n{divergence}"
        )

    agrees()


def _lockstep(w: Workload, mini: MiniSchedulerSide,
              vllm: VllmSchedulerSide) -> Divergence | None:
    """Arrivals, aborts, then one step on each side; pools compared before and after."""
    trace: list[str] = []

    def compare_pools(where: str) -> Divergence | None:
        difference = first_pool_difference(mini.pool_state(), vllm.pool_state())
        return None if difference is None else Divergence(where, *difference, trace=trace)

    last_arrival = max(r.arrival for r in w.requests)
    for step in range(w.max_steps()):
        for spec in w.requests:
            if spec.arrival == step:
                mini.add(spec)
                vllm.add(spec)
        for spec in w.requests:
            if spec.abort_at == step and mini.is_unfinished(spec.rid):
                if not vllm.is_unfinished(spec.rid):  # cannot happen without an earlier report
                    return Divergence(f"step {step}", f"{spec.rid} unfinished", True, False, trace)
                mini.abort(spec.rid)
                vllm.abort(spec.rid)
                trace.append(f"before step {step}: abort {spec.rid}")
        if (divergence := compare_pools(f"before step {step}")) is not None:
            return divergence
        if step > last_arrival and not (mini.has_unfinished_requests()
                                        or vllm.has_unfinished_requests()):
            return None
        ours, theirs = mini.step(), vllm.step()
        for name, label in _STEP_FIELDS.items():
            if getattr(ours, name) != getattr(theirs, name):
                return Divergence(f"step {step}", label, getattr(ours, name),
                                  getattr(theirs, name), trace)
        trace.append(f"step {step}: {ours.summary()}")
        if (divergence := compare_pools(f"after step {step}")) is not None:
            return divergence
    return None  # both still busy after the budget, in agreement: a shared livelock


# -- bare block pools ------------------------------------------------------------------------
# For a kata that rebuilds the pool itself: the caller hands in each block's hash (any bytes),
# as vLLM's KVCacheManager would from the request's block hashes.


def build_vllm_block_pool(num_blocks: int) -> Any:
    """vLLM's ``BlockPool`` with prefix caching on (the hashes are given, so one token each)."""
    return vllm_api().BlockPool(num_gpu_blocks=num_blocks, enable_caching=True, hash_block_size=1)


def vllm_cache_blocks(pool: Any, blocks: Sequence[Any], hashes: Sequence[bytes]) -> None:
    """Register ``blocks`` (not yet hashed) under ``hashes`` in KV cache group 0."""
    request = SimpleNamespace(block_hashes=list(hashes))  # all cache_full_blocks reads of it
    pool.cache_full_blocks(request, list(blocks), 0, len(blocks), 1, 0)


def vllm_cached_block(pool: Any, block_hash: bytes) -> Any | None:
    """The block indexed under ``block_hash`` in group 0 (the first, if several), or None."""
    hit = pool.get_cached_block(block_hash, [0])
    return None if hit is None else hit[0]


def vllm_block_hash(block: Any) -> bytes | None:
    """A block's own hash without the 4-byte KV-cache-group suffix vLLM stores with it."""
    return None if block.block_hash is None else bytes(block.block_hash[:-4])


# -- KV-cache-manager runs -------------------------------------------------------------------


class _KVSide:
    """One side of a KV-cache-manager run: requests admitted, grown and freed by hand."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.names = PrefixNames(block_size)
        self.requests: dict[str, Any] = {}  # every request ever made
        self.taken: list[list[Any]] = []  # raw get_new_blocks handles, not owned by a request

    def take(self, n: int) -> list[int]:
        blocks = self.pool.get_new_blocks(n)
        self.taken.append(blocks)
        return [b.block_id for b in blocks]

    def give(self, index: int, reverse: bool) -> None:
        blocks = self.taken.pop(index)
        self.pool.free_blocks(list(reversed(blocks)) if reverse else blocks)

    def num_free(self) -> int:
        return self.pool.get_num_free_blocks()

    def progress(self, rid: str) -> tuple[int, int]:
        request = self.requests[rid]
        return request.num_computed_tokens, request.num_tokens

    def free(self, rid: str) -> None:
        self.kv.free(self.requests[rid])


class MiniKVSide(_KVSide):
    def __init__(self, config: PoolConfig, policy: Any = VLLM_PRESET) -> None:
        super().__init__(config.block_size)
        self.kv = mini_engine(config, policy).kv_cache_manager
        self.pool = self.kv.block_pool

    def admit(self, spec: RequestSpec, chunk: int) -> tuple[int, list[int], list[int] | None]:
        request = self.requests[spec.rid] = make_mini_request(spec)
        hits, num_hit = self.kv.get_computed_blocks(request)
        request.num_computed_tokens = num_hit  # allocate_slots' admission contract
        n = min(chunk, request.num_tokens - num_hit)
        new = self.kv.allocate_slots(request, n, hits)
        request.num_computed_tokens = 0 if new is None else num_hit + n
        return num_hit, [b.block_id for b in hits], None if new is None else [
            b.block_id for b in new]

    def grow(self, rid: str, n: int) -> list[int] | None:
        request = self.requests[rid]
        new = self.kv.allocate_slots(request, n)
        if new is not None:
            request.num_computed_tokens += n
        return None if new is None else [b.block_id for b in new]

    def append(self, rid: str, token: int) -> None:
        self.requests[rid].append_output_token(token)

    def reset(self) -> Any:
        return self.pool.reset_prefix_cache()

    def pool_state(self, live: Iterable[str]) -> PoolState:
        for request in self.requests.values():
            tokens = request.all_token_ids
            self.names.learn(_mini_hashes(tokens, self.block_size), tokens)
        tables = {rid: self.kv.get_block_ids(rid) for rid in live}
        tables.update({f"take{i}": [b.block_id for b in t] for i, t in enumerate(self.taken)})
        return _mini_pool_state(self.pool, self.names, tables)


class VllmKVSide(_KVSide):
    def __init__(self, config: PoolConfig) -> None:
        super().__init__(config.block_size)
        self.kv = build_vllm_kv_cache_manager(config)
        self.pool = self.kv.block_pool

    def admit(self, spec: RequestSpec, chunk: int) -> tuple[int, list[int], list[int] | None]:
        request = self.requests[spec.rid] = make_vllm_request(spec, self.block_size)
        hits, num_hit, _ = self.kv.get_computed_blocks(request)
        n = min(chunk, request.num_tokens - num_hit)
        new = self.kv.allocate_slots(request, n, num_new_computed_tokens=num_hit,
                                     new_computed_blocks=hits)
        if new is not None:
            request.num_computed_tokens = num_hit + n  # what the scheduler does after admission
        return num_hit, [b.block_id for b in hits.blocks[0]], None if new is None else (
            new.get_block_ids()[0])

    def grow(self, rid: str, n: int) -> list[int] | None:
        request = self.requests[rid]
        new = self.kv.allocate_slots(request, n)
        if new is not None:
            request.num_computed_tokens += n
        return None if new is None else new.get_block_ids()[0]

    def append(self, rid: str, token: int) -> None:
        self.requests[rid].append_output_token_ids(token)

    def reset(self) -> Any:
        return self.kv.reset_prefix_cache()

    def pool_state(self, live: Iterable[str]) -> PoolState:
        for request in self.requests.values():
            self.names.learn(request.block_hashes, request.all_token_ids)
        tables = {rid: self.kv.get_block_ids(rid)[0] for rid in live}
        tables.update({f"take{i}": [b.block_id for b in t] for i, t in enumerate(self.taken)})
        return _vllm_pool_state(self.pool, self.names, tables)


def run_kv_ops(config: PoolConfig, ops: Sequence[KVOp],
               policy: Any = VLLM_PRESET) -> Divergence | None:
    """Apply ``ops`` to both KV cache managers (and their block pools); the first divergence.

    ``admit`` looks up the prefix cache and allocates the first ``chunk`` tokens past the hit;
    ``compute`` allocates the next ``k`` prompt tokens of a live request, or, once its prompt is
    computed, appends one output token and allocates its slot; ``free`` frees a request;
    ``take`` / ``give`` get and return raw blocks (owned by no request, so eviction and queue
    order are exercised directly); ``reset`` is ``reset_prefix_cache``.
    """
    mini, vllm = MiniKVSide(config, policy), VllmKVSide(config)
    live: list[str] = []
    trace: list[str] = []
    for index, op in enumerate(ops):
        where = f"op {index} {op!r}"
        outcome = _apply_kv_op(f"a{index}", op, mini, vllm, live)
        if isinstance(outcome, tuple):  # (what, mini's answer, vLLM's answer)
            return Divergence(where, *outcome, trace=trace)
        if outcome:
            trace.append(f"{where}: {outcome}")
        difference = first_pool_difference(mini.pool_state(live), vllm.pool_state(live))
        if difference is not None:
            return Divergence(where, *difference, trace=trace)
    return None


def _apply_kv_op(new_rid: str, op: KVOp, mini: MiniKVSide, vllm: VllmKVSide,
                 live: list[str]) -> str | tuple[str, Any, Any]:
    """Apply one op to both sides: what happened, or (what, mini's, vLLM's) where they differ.

    An op with nothing to act on (no live request, no raw handle, too few free blocks) is a
    no-op on both sides.
    """
    kind = op[0]
    if kind == "admit":
        spec = RequestSpec(rid=new_rid, prompt=op[1], max_tokens=64)
        ours, theirs = mini.admit(spec, op[2]), vllm.admit(spec, op[2])
        if ours != theirs:
            return "(hit tokens, hit block ids, new block ids or None)", ours, theirs
        if ours[2] is not None:
            live.append(spec.rid)
        return f"{new_rid} hit {ours[0]} {ours[1]}, new {ours[2]}"
    if kind == "free" and live:
        rid = live.pop(op[1] % len(live))
        mini.free(rid)
        vllm.free(rid)
        return f"free {rid}"
    if kind == "compute" and live:
        rid = live[op[1] % len(live)]
        if mini.progress(rid) != vllm.progress(rid):
            return f"{rid} (computed, total) tokens", mini.progress(rid), vllm.progress(rid)
        computed, total = mini.progress(rid)
        n = min(op[2], total - computed)
        if n == 0:  # prompt done: decode one token
            token = stream_token(0, total)
            mini.append(rid, token)
            vllm.append(rid, token)
            n = 1
        ours, theirs = mini.grow(rid, n), vllm.grow(rid, n)
        if ours != theirs:
            return f"new blocks for {n} more tokens of {rid}", ours, theirs
        return f"{rid} +{n} -> new {ours}"
    if kind == "take":
        if mini.num_free() != vllm.num_free():
            return "free block count", mini.num_free(), vllm.num_free()
        if op[1] > mini.num_free():
            return ""
        ours, theirs = mini.take(op[1]), vllm.take(op[1])
        if ours != theirs:
            return "raw blocks taken", ours, theirs
        return f"took {ours}"
    if kind == "give" and mini.taken:
        which = op[1] % len(mini.taken)
        mini.give(which, op[2])
        vllm.give(which, op[2])
        return f"gave back take{which}"
    if kind == "reset":
        ours, theirs = mini.reset(), vllm.reset()
        if ours != theirs:
            return "reset_prefix_cache() result", ours, theirs
        return f"reset -> {ours}"
    return ""


def policy_variants() -> dict[str, Any]:
    """The vLLM 0.32 preset with one rule at a time switched back to the course's."""
    from mini_vllm.config import PRESETS

    preset, course = PRESETS[VLLM_PRESET], PRESETS["course"]
    return {f.name: dataclasses.replace(preset, **{f.name: getattr(course, f.name)})
            for f in dataclasses.fields(preset)
            if getattr(preset, f.name) != getattr(course, f.name)}
