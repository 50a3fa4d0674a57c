"""Control-plane policy: which upstream rules the block pool and the scheduler follow.

mini_vllm follows the rules the course teaches (vLLM v0.22.1). vLLM 0.32 changed four of them;
each is an option here, so the engine can run either way and be compared with either vLLM:

``free_unhashed_blocks_first`` (``BlockPool``)
    A freed block with no hash holds nothing a later request can hit, so vLLM 0.32 puts it at the
    *front* of the free queue (reused first); blocks with a hash still join the back (LRU).
    Upstream: ``vllm/v1/core/block_pool.py: BlockPool.free_blocks`` (``blocks_to_evict_first``
    through ``FreeKVCacheBlockQueue.prepend_n``). Course: every freed block joins the back.
``cache_duplicate_blocks`` (``BlockPool``)
    Two blocks computed with identical content both register under their hash, so one survives
    when the other is evicted: a lookup returns the earliest registered still cached, and an
    eviction removes only the evicted block. Upstream: ``block_pool.py: BlockHashToBlockMap``
    (hash -> ``{block_id: block}``). Course: only the first block registers; a twin stays
    unhashed.
``scheduler_reserve_full_isl`` (``Scheduler``; upstream ``SchedulerConfig`` field, default True)
    A waiting request is admitted only if blocks for *all* its known tokens (prompt, plus the
    outputs of a preempted one) fit now, prefix hits counted as in any allocation, not just for
    its first chunk; so a chunked prompt is not admitted and then preempted a step later.
    Nothing is held back for the later chunks. Upstream: ``sched/scheduler.py`` passes
    ``full_sequence_must_fit`` to ``KVCacheManager.allocate_slots``; upstream's ``watermark``
    (spare blocks kept at admission) defaults to 0 and is not modelled. Course: the first chunk
    must fit.
``lone_request_ignores_long_prefill_threshold`` (``Scheduler``)
    ``long_prefill_token_threshold`` keeps a long prompt from starving others; with a single
    request (running + waiting) at the start of a step there is nobody to starve, so vLLM 0.32
    skips the cap for that step. Upstream: ``Scheduler.schedule`` (``num_eligible_reqs > 1``).
    Course: the cap always applies.

Presets: ``"course"`` (all off, the default: every lab number is pinned to it) and
``"vllm-0.32"`` (all on). Select one with ``LLMEngine(policy="vllm-0.32")``, or pass a
``ControlPlanePolicy`` to set options one by one, e.g.
``LLMEngine(policy=ControlPlanePolicy(scheduler_reserve_full_isl=True))``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ControlPlanePolicy:
    """The four rules where vLLM 0.32 departs from the course; all off is the course."""

    free_unhashed_blocks_first: bool = False
    cache_duplicate_blocks: bool = False
    scheduler_reserve_full_isl: bool = False
    lone_request_ignores_long_prefill_threshold: bool = False

    def block_pool_options(self) -> dict[str, bool]:
        """The block-pool options that differ from the course, as ``BlockPool`` keywords.

        Empty under the course, so a learner's pool (kata 02-01), whose constructor knows only
        ``num_blocks`` and ``enable_caching``, is still built the way it always was.
        """
        return self._changed("free_unhashed_blocks_first", "cache_duplicate_blocks")

    def scheduler_options(self) -> dict[str, bool]:
        """The scheduler options that differ from the course, as ``Scheduler`` keywords."""
        return self._changed("scheduler_reserve_full_isl",
                             "lone_request_ignores_long_prefill_threshold")

    def _changed(self, *names: str) -> dict[str, bool]:
        return {name: True for name in names if getattr(self, name)}


PRESETS: dict[str, ControlPlanePolicy] = {
    "course": ControlPlanePolicy(),
    "vllm-0.32": ControlPlanePolicy(**{name: True for name in asdict(ControlPlanePolicy())}),
}


def get_policy(policy: str | ControlPlanePolicy) -> ControlPlanePolicy:
    """A preset by name, or the given ``ControlPlanePolicy`` itself; ``ValueError`` otherwise."""
    if isinstance(policy, ControlPlanePolicy):
        return policy
    if isinstance(policy, str) and policy in PRESETS:
        return PRESETS[policy]
    raise ValueError(
        f"policy must be one of {sorted(PRESETS)} or a ControlPlanePolicy, got {policy!r}"
    )


# -- random generators (phase 09) ------------------------------------------------------------

#: How a sampled request gets its random numbers: ``LLMEngine(generators=...)``.
GENERATOR_MODES = ("per_call", "per_request")


def get_generator_mode(mode: str) -> str:
    """``mode`` itself if it is one of :data:`GENERATOR_MODES`; ``ValueError`` otherwise.

    ``"per_call"`` (the default; every lab number of phases 00-03 is pinned to it): the sampler
    builds ``np.random.default_rng(params.seed)`` on every call, so a seeded request reuses its
    first uniform number at every step, and an unseeded one draws fresh OS entropy.

    ``"per_request"`` (upstream's rule, in v0.22.1 as in 0.32): a seeded request at temperature
    > 0 owns one ``np.random.Generator``, made from its seed when the engine accepts it, advanced
    by each draw, kept while the request is preempted, and dropped when it finishes; unseeded
    requests draw from the engine's generator (``default_rng(seed)``, the engine's ``seed``).
    See ``mini_vllm/sample/generators.py``.

    The ``"vllm-0.32"`` policy preset does not switch this on: per-request generators are not one
    of the rules 0.32 changed (v0.22.1 has them too); the course simplified them away. Choose the
    two independently.
    """
    if isinstance(mode, str) and mode in GENERATOR_MODES:
        return mode
    raise ValueError(f"generators must be one of {GENERATOR_MODES}, got {mode!r}")


# -- speculative decoding (phase 08) ---------------------------------------------------------

_SPEC_METHODS = ("ngram", "draft_model")


@dataclass
class SpeculativeConfig:
    """Speculative decoding, opt-in: ``LLMEngine(speculative_config=SpeculativeConfig(...))``.

    Upstream twin: ``vllm/config/speculative.py: SpeculativeConfig`` (a subset of its fields).

    ``method``: ``"ngram"`` (prompt lookup, no model: ``mini_vllm.spec_decode.NgramProposer``)
    or ``"draft_model"`` (a small model proposes greedily: ``DraftModelProposer``).
    ``num_speculative_tokens``: k, the most drafts one verify step checks (>= 1).
    ``prompt_lookup_min`` / ``prompt_lookup_max``: the n-gram sizes tried (ngram only). As
    upstream, when one is left ``None`` it takes the other's value, and both ``None`` means 5.
    ``draft_model``: the drafting network (``"draft_model"`` only): a model with the real
    models' interface (``forward(input_ids, positions, kv_caches, metadata)`` +
    ``compute_logits``), e.g. another tiny Llama. ``None``: the target model itself, cut to
    ``draft_num_layers`` layers (its first layers, final norm and LM head).
    ``draft_num_layers``: keep only this many leading layers of the draft model (``None``: all).
    ``proposer``: inject any callable ``propose(token_ids) -> list[int]`` instead of the built-in
    proposer for ``method`` (kata 08-01 plugs the learner's n-gram function in here). It gets a
    request's verified tokens (prompt + outputs) and may return up to k ids; more are cut to k.
    ``rejection_sampler``: inject the verifier instead of the stock
    :class:`~mini_vllm.spec_decode.RejectionSampler` (``None``), a callable with its interface
    ``(draft_token_ids, target_logits, params, draft_probs=None, rng=None) -> list[int]``
    (kata 08-03 plugs the learner's rejection rule in here). It gets one request's k drafts,
    its ``k + 1`` target logit rows and sampling params, and the request's generator; it must
    return the accepted drafts plus one token.

    Bad values raise ``ValueError`` here, before any engine is built.
    """

    method: str = "ngram"
    num_speculative_tokens: int = 3
    prompt_lookup_min: int | None = None
    prompt_lookup_max: int | None = None
    draft_model: object | None = None
    draft_num_layers: int | None = None
    proposer: object | None = None
    rejection_sampler: object | None = None

    def __post_init__(self) -> None:
        if self.method not in _SPEC_METHODS:
            raise ValueError(f"method must be one of {_SPEC_METHODS}, got {self.method!r}")
        k = self.num_speculative_tokens
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"num_speculative_tokens must be an int >= 1, got {k!r}")
        lo, hi = self.prompt_lookup_min, self.prompt_lookup_max
        if lo is None and hi is None:
            lo = hi = 5
        elif lo is None:
            lo = hi
        elif hi is None:
            hi = lo
        for name, value in (("prompt_lookup_min", lo), ("prompt_lookup_max", hi)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if lo > hi:
            raise ValueError(f"prompt_lookup_min={lo} must be <= prompt_lookup_max={hi}")
        self.prompt_lookup_min, self.prompt_lookup_max = lo, hi
        n = self.draft_num_layers
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"draft_num_layers must be an int >= 1 or None, got {n!r}")
        if self.proposer is not None and not callable(self.proposer):
            raise ValueError(f"proposer must be a callable propose(token_ids) -> list[int], "
                             f"got {self.proposer!r}")
        if self.rejection_sampler is not None and not callable(self.rejection_sampler):
            raise ValueError(f"rejection_sampler must be a callable (draft_token_ids, "
                             f"target_logits, params, draft_probs=None, rng=None) -> list[int], "
                             f"got {self.rejection_sampler!r}")
