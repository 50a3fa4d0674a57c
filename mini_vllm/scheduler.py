"""Scheduler: each step, decide who runs and how many tokens each gets.

Upstream twins: ``vllm/v1/core/sched/scheduler.py: Scheduler.schedule / update_from_output /
_preempt_request`` and ``vllm/v1/core/sched/output.py: SchedulerOutput``.

There is no "prefill phase" or "decode phase": every request has ``num_tokens`` and
``num_computed_tokens``, and the scheduler hands out tokens so the second catches up with the
first. A prompt is just a large gap; a decode is a gap of one.

Per-step invariants (``pytest_vllm_katas.invariants.check_scheduler_step``):
1. an unfinished request is in exactly one of ``waiting`` / ``running``;
2. ``sum(num_scheduled_tokens) <= max_num_batched_tokens``;
3. ``len(running) <= max_num_seqs``;
4. a request samples this step iff ``num_computed_tokens + n == num_tokens``;
5. preemption frees all KV and resets ``num_computed_tokens`` to 0 (recompute, never swap).

Speculative decoding (``LLMEngine(speculative_config=...)``) rides the same path, as upstream:
a request's pending drafts (``request.spec_token_ids``) count in ``num_tokens_with_spec``, so the
usual ``num_tokens_with_spec - num_computed_tokens`` gap schedules the last sampled token plus
the drafts (a verify step); drafts only ever exist on a request whose prefill is done. Their KV
slots are reserved as *lookahead* beyond the verified tokens
(``KVCacheManager.allocate_lookahead``), and ``update_from_spec_output`` keeps the accepted
prefix and rolls ``num_computed_tokens`` back over the rejected drafts. A request without drafts
is scheduled exactly as before.

LoRA (``LLMEngine(lora_config=...)``, phase 11): the engine sets ``lora_slots`` (the adapter slot
cache, ``mini_vllm/lora/slots.py``; ``None`` without LoRA, and then nothing below happens). A
waiting request whose adapter cannot get a slot (``lora_slots.can_admit`` is false: ``max_loras``
distinct adapters are already running) is skipped, not a barrier: later requests may still be
admitted and the skipped ones keep their place at the head of the queue (upstream's
``scheduled_loras`` check). An admitted request pins its adapter until it finishes, is preempted
or aborted, so an adapter a running request uses is never evicted.

Images (``LLMEngine(mm_config=...)``, phase 13): the engine sets ``mm_encoder_cache`` (a
``mini_vllm.multimodal.EncoderCacheManager``; ``None`` otherwise, and then nothing below happens),
``mm_plan_chunk`` (the rule, ``plan_encoder_inputs`` or kata 13-03's ``plan_chunk``) and
``mm_encoder_budget``. For a request with images, each chunk the usual rules choose is passed
through the rule (:meth:`_fit_encoder_inputs`), with this step's remaining encoder budget (never
more than the encoder cache can make room for) and the request's images already cached: the
chunk may only shrink, to stop just before an image whose encoding cannot be had this step. A
running request left with 0 tokens sits the step out; a waiting one blocks admissions (as
upstream). The images to encode are listed per request in
``SchedulerOutput.scheduled_encoder_inputs``; entries the encoder cache evicted, in
``free_encoder_mm_hashes``. A request drops its reference to an image once its run is computed,
and all of them when it finishes, is preempted or aborted. ``last_num_scheduled_tokens`` and
``last_encoder_schedule`` keep the last step's plan (for traces).

Two options follow vLLM 0.32 instead of the course (``mini_vllm/config.py`` explains both):
``scheduler_reserve_full_isl`` and ``lone_request_ignores_long_prefill_threshold``. Both are off
by default.
"""

from __future__ import annotations

import numbers
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mini_vllm.request import Request, RequestStatus


@dataclass
class SchedulerOutput:
    """One step's plan. ``scheduled_requests`` is in row order: logits row i is request i.

    Rows are the running requests (in admission order) followed by this step's admissions.
    """

    num_scheduled_tokens: dict[str, int] = field(default_factory=dict)
    scheduled_requests: list[Request] = field(default_factory=list)
    preempted_req_ids: list[str] = field(default_factory=list)
    #: ids admitted from ``waiting`` this step (new or resumed after preemption).
    scheduled_new_req_ids: list[str] = field(default_factory=list)
    #: images to encode this step, per request id (phase 13; empty without images).
    scheduled_encoder_inputs: dict[str, list[str]] = field(default_factory=dict)
    #: encoder outputs the encoder cache evicted: the runner drops them (phase 13).
    free_encoder_mm_hashes: list[str] = field(default_factory=list)

    @property
    def total_num_scheduled_tokens(self) -> int:
        return sum(self.num_scheduled_tokens.values())

    @property
    def is_empty(self) -> bool:
        return not self.num_scheduled_tokens


class SchedulerContractError(AssertionError):
    """A scheduler handed the engine a step it cannot execute: a bug in the scheduler, not input.

    An ``AssertionError`` on purpose: it is a broken invariant of (usually) a learner's scheduler,
    so pytest reports it as a failed check, and code that catches ``ValueError`` to refuse a bad
    request never swallows it.
    """


def check_scheduler_output(output: SchedulerOutput, running: Iterable[Request]) -> None:
    """Refuse a ``SchedulerOutput`` the engine cannot execute, naming the request at fault.

    Runs where the engine consumes the plan (``engine_step``), before any row is read. Without it
    an over-scheduled request surfaces as an ``IndexError`` deep in the step, ``n = 0`` silently
    reads the wrong token, and an id outside ``running`` fails in ``list.remove``.
    """
    live = {id(r) for r in running}
    rows: set[str] = set()
    for request in output.scheduled_requests:
        rid = request.request_id
        if id(request) not in live:
            raise SchedulerContractError(
                f"the scheduler scheduled request {rid!r}, which is not in `running` "
                f"(status {request.status.name}): only running requests can be scheduled"
            )
        if rid in rows:
            raise SchedulerContractError(
                f"the scheduler scheduled request {rid!r} twice in one step: one row per request"
            )
        rows.add(rid)
        if rid not in output.num_scheduled_tokens:
            raise SchedulerContractError(
                f"the scheduler scheduled request {rid!r} but num_scheduled_tokens has no entry "
                f"for it"
            )
        n = output.num_scheduled_tokens[rid]
        # Drafts (speculative decoding) may be scheduled too; without any this is num_tokens.
        limit = getattr(request, "num_tokens_with_spec", request.num_tokens)
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
            raise SchedulerContractError(
                f"the scheduler scheduled n={n!r} tokens for request {rid!r}: a scheduled request "
                f"needs an int n >= 1 (leave an idle request out of the step instead)"
            )
        if request.num_computed_tokens + n > limit:
            raise SchedulerContractError(
                f"the scheduler scheduled more tokens than the request has: request {rid!r} has "
                f"num_computed_tokens={request.num_computed_tokens}, n={n} scheduled, "
                f"num_tokens={limit} (at most "
                f"{limit - request.num_computed_tokens} can be scheduled)"
            )
    unknown = [rid for rid in output.num_scheduled_tokens if rid not in rows]
    if unknown:
        raise SchedulerContractError(
            f"the scheduler scheduled unknown request ids {unknown}: every key of "
            f"num_scheduled_tokens must be a request in scheduled_requests"
        )


class Scheduler:
    def __init__(
        self,
        kv_cache_manager: Any,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 2048,
        long_prefill_token_threshold: int = 0,
        scheduler_reserve_full_isl: bool = False,
        lone_request_ignores_long_prefill_threshold: bool = False,
    ) -> None:
        """``scheduler_reserve_full_isl``: admit a waiting request only if its whole input (all
        its known tokens, after prefix hits) fits in free blocks now, not just its first chunk
        (upstream's ``SchedulerConfig`` field of that name, True there by default).
        ``lone_request_ignores_long_prefill_threshold``: in a step that starts with one request
        in all (running + waiting), ``long_prefill_token_threshold`` is not applied (vLLM 0.32's
        ``Scheduler.schedule``).
        """
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {max_num_batched_tokens}")
        if long_prefill_token_threshold < 0:
            raise ValueError("long_prefill_token_threshold must be >= 0 (0 disables it)")
        self.kv = kv_cache_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.long_prefill_token_threshold = long_prefill_token_threshold
        self.scheduler_reserve_full_isl = scheduler_reserve_full_isl
        self.lone_request_ignores_long_prefill_threshold = (
            lone_request_ignores_long_prefill_threshold)
        self.waiting: deque[Request] = deque()
        # The stop rule, replaceable (LLMEngine(check_stop=...)); None: Request.maybe_finish.
        self.check_stop: Callable[[Request], bool] | None = None
        # Admission order matters: FCFS preemption takes the *last* one (least progress lost).
        self.running: list[Request] = []
        #: The adapter slot cache when the engine serves LoRA (see the module docstring).
        self.lora_slots: Any = None
        #: Images (see the module docstring): the encoder cache, the rule, the per-step budget.
        self.mm_encoder_cache: Any = None
        self.mm_plan_chunk: Callable[..., Any] | None = None
        self.mm_encoder_budget = 0
        self._mm_budget_left = 0
        self._mm_plans: dict[str, list[str]] = {}
        self.last_num_scheduled_tokens: dict[str, int] = {}
        self.last_encoder_schedule: dict[str, list[str]] = {}

    # -- queue management ---------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        """Queue ``request``; ``ValueError`` if an unfinished request already has its id.

        Every per-request table (``num_scheduled_tokens``, the KV manager's block tables) is keyed
        by id, so two live requests sharing one would corrupt each other and crash a later step.
        Upstream refuses it the same way (``OutputProcessor.add_request``); once the earlier
        request finished or was aborted, its id is free again.
        """
        if self._find(request.request_id) is not None:
            raise ValueError(
                f"request_id must be unique among unfinished requests, got {request.request_id!r} "
                f"(already waiting or running; reuse an id only after that request finishes)"
            )
        request.status = RequestStatus.WAITING
        self.waiting.append(request)

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def get_num_unfinished_requests(self) -> int:
        return len(self.waiting) + len(self.running)

    def _find(self, request_id: str) -> Request | None:
        # A scan, not an index: the queues themselves are the truth (a learner's schedule() moves
        # requests between them directly), and it runs once per add, not per step.
        for request in (*self.running, *self.waiting):
            if request.request_id == request_id:
                return request
        return None

    def find_request(self, request_id: str) -> Request:
        request = self._find(request_id)
        if request is None:
            raise ValueError(
                f"unknown request id {request_id!r} (never added, or already finished)"
            )
        return request

    def abort_request(self, request_id: str) -> Request:
        """Drop an unfinished request and free its KV; everyone else carries on."""
        request = self.find_request(request_id)
        if request in self.running:
            self.running.remove(request)
            self._release_lora(request)
            self._free_encoder_inputs(request, everything=True)
        else:
            self.waiting.remove(request)
        self.kv.free(request)
        request.status = RequestStatus.FINISHED_ABORTED
        return request

    # -- the step -----------------------------------------------------------------------------

    def _step_threshold(self) -> int:
        """This step's long-prefill cap. A lone request has nobody to starve (vLLM 0.32 counts
        running + waiting once, before the step) — with the option on, it gets no cap."""
        if self.lone_request_ignores_long_prefill_threshold and (
                len(self.running) + len(self.waiting) <= 1):
            return 0
        return self.long_prefill_token_threshold

    @staticmethod
    def _clamp_new_tokens(num_new_tokens: int, token_budget: int, threshold: int) -> int:
        if 0 < threshold < num_new_tokens:
            num_new_tokens = threshold
        return max(min(num_new_tokens, token_budget), 0)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        self._mm_budget_left = self.mm_encoder_budget  # the encoder budget is per step
        self._mm_plans.clear()
        threshold = self._step_threshold()
        token_budget = self._schedule_running(out, self.max_num_batched_tokens, threshold)
        # Admissions, but not in a step that preempted: they would just be preempted back.
        if not out.preempted_req_ids:
            self._admit_waiting(out, token_budget, threshold)
        if self.mm_encoder_cache is not None:
            out.free_encoder_mm_hashes = self.mm_encoder_cache.get_freed_mm_hashes()
        self.last_num_scheduled_tokens = dict(out.num_scheduled_tokens)
        self.last_encoder_schedule = {rid: list(h) for rid, h in
                                      out.scheduled_encoder_inputs.items()}
        return out

    # -- images (phase 13) ----------------------------------------------------------------------

    def _fit_encoder_inputs(self, request: Request, n: int) -> int:
        """``n`` shrunk by the scheduling rule so every image position of the chunk has its
        encoding; the images to encode are kept until :meth:`_commit_encoder_inputs`."""
        features = getattr(request, "mm_features", None)
        if self.mm_encoder_cache is None or not features or n == 0:
            return n
        cache = self.mm_encoder_cache
        start, stop = request.num_computed_tokens, request.num_computed_tokens + n
        cached = {f.mm_hash for f in features if f.mm_hash in cache.cached}
        # Cached entries nobody references that this chunk will read leave the freeable pool
        # when referenced: their room is not the rule's to spend (upstream checks them first).
        pinned = sum(cache.freeable.get(h, 0) for h in {
            f.mm_hash for f in features if f.mm_position.overlaps(start, stop)})
        budget = max(min(self._mm_budget_left, cache.num_freeable_slots - pinned), 0)
        n, to_encode = self.mm_plan_chunk(request.num_computed_tokens, n, features, budget,
                                          cached)
        self._mm_plans[request.request_id] = list(to_encode)
        return n

    def _commit_encoder_inputs(self, request: Request, n: int, out: SchedulerOutput) -> None:
        """The request is scheduled for ``n`` tokens: reference the cached images its chunk
        reads, allocate the ones it encodes, debit the step's encoder budget."""
        to_encode = self._mm_plans.pop(request.request_id, None)
        if to_encode is None:
            return
        cache = self.mm_encoder_cache
        rid = request.request_id
        start, stop = request.num_computed_tokens, request.num_computed_tokens + n
        sizes = {f.mm_hash: f.length for f in request.mm_features}
        for f in request.mm_features:
            if f.mm_position.overlaps(start, stop) and f.mm_hash not in to_encode:
                cache.check_and_update_cache(rid, f.mm_hash)
        for mm_hash in to_encode:
            if mm_hash in cache.cached or mm_hash not in sizes:
                raise SchedulerContractError(
                    f"the encoder scheduling rule encoded {mm_hash[:12]} for request {rid!r}, "
                    f"which is {'already cached' if mm_hash in sizes else 'not one of its images'}")
            if not cache.can_allocate(sizes[mm_hash]):
                raise SchedulerContractError(
                    f"the encoder scheduling rule encoded {to_encode} for request {rid!r}, more "
                    f"than the encoder budget / cache space it was given")
            cache.allocate(rid, mm_hash, sizes[mm_hash])
            self._mm_budget_left -= sizes[mm_hash]
        if self._mm_budget_left < 0:
            raise SchedulerContractError(f"the encoder scheduling rule overspent the encoder "
                                         f"budget for request {rid!r}")
        if to_encode:
            out.scheduled_encoder_inputs[rid] = list(to_encode)

    def _free_encoder_inputs(self, request: Request, everything: bool = False) -> None:
        """Drop the request's references to images whose runs are computed (or all of them)."""
        features = getattr(request, "mm_features", None)
        if self.mm_encoder_cache is None or not features:
            return
        for f in features:
            if everything or f.mm_position.end <= request.num_computed_tokens:
                self.mm_encoder_cache.free_encoder_input(request.request_id, f.mm_hash)

    def _schedule_running(self, out: SchedulerOutput, token_budget: int, threshold: int) -> int:
        """Phase A — running requests first: they hold KV already, and a user is watching their
        stream. Starving a decode to admit a prompt is what causes latency spikes. Returns the
        budget left."""
        req_index = 0
        while req_index < len(self.running) and token_budget > 0:
            request = self.running[req_index]
            n = self._clamp_new_tokens(
                request.num_tokens_with_spec - request.num_computed_tokens, token_budget,
                threshold
            )
            n = self._fit_encoder_inputs(request, n)  # images (phase 13); else unchanged
            if n == 0:  # nothing left to compute, or an image that must wait (phase 13)
                req_index += 1
                continue
            # Drafts among the n (speculative decoding; 0 otherwise): the tail past num_tokens.
            num_drafts = max(request.num_computed_tokens + n - request.num_tokens, 0)
            victims = self._allocate_or_preempt(request, n - num_drafts, req_index)
            if victims:
                out.preempted_req_ids.extend(victim.request_id for victim in victims)
                if any(victim is request for victim in victims):
                    break  # the requester preempted itself; nobody behind it can fit either
            if request.spec_token_ids:
                # Schedule only the drafts that fit the budget and whose slots can be reserved.
                # A draft never preempts anybody: when the pool is short, the request decodes
                # one token this step (upstream would preempt).
                if not self.kv.allocate_lookahead(request, request.num_computed_tokens + n):
                    n -= num_drafts
                    num_drafts = 0
                del request.spec_token_ids[num_drafts:]
            out.scheduled_requests.append(request)
            out.num_scheduled_tokens[request.request_id] = n
            self._commit_encoder_inputs(request, n, out)
            token_budget -= n
            req_index += 1
        return token_budget

    def _allocate_or_preempt(self, request: Request, num_new_tokens: int,
                             req_index: int) -> list[Request]:
        """Slots for ``num_new_tokens`` more of a running ``request``, preempting until they fit;
        the requests preempted, in order (``request`` itself last, if it had to go)."""
        victims: list[Request] = []
        while self.kv.allocate_slots(request, num_new_tokens) is None:
            # Out of blocks: preempt the most recently admitted request (LIFO). It is always at
            # or after req_index, so nobody already scheduled this step is a victim.
            victim = self.running.pop()
            self._preempt(victim)
            victims.append(victim)
            if victim is request:
                break
        return victims

    def _admit_waiting(self, out: SchedulerOutput, token_budget: int, threshold: int) -> None:
        """Phase B — admit waiting requests, FCFS, while budget, seats and memory last.

        Memory means the first chunk's blocks, or with ``scheduler_reserve_full_isl`` the whole
        input's. With LoRA, a request whose adapter cannot get a slot is skipped (deferred), and
        the skipped ones go back to the head of the queue in their order."""
        skipped: list[Request] = []
        while self.waiting and token_budget > 0 and len(self.running) < self.max_num_seqs:
            request = self.waiting[0]
            lora_request = getattr(request, "lora_request", None)
            if lora_request is not None and not self.lora_slots.can_admit(
                    lora_request.lora_int_id):
                skipped.append(self.waiting.popleft())  # max_loras adapters already running
                continue
            hits, num_cached = self.kv.get_computed_blocks(request)
            request.num_computed_tokens = num_cached  # the allocation accounting trusts this
            num_new = request.num_tokens - num_cached
            if num_new == 0:
                # Whole prompt cached: still recompute the last token, which produces the logits.
                # Unreachable with the num_tokens - 1 hit cap; kept for KV managers without it.
                request.num_computed_tokens = num_cached = request.num_tokens - 1
                num_new = 1
            n = self._clamp_new_tokens(num_new, token_budget, threshold)
            n = self._fit_encoder_inputs(request, n)  # images (phase 13); else unchanged
            if n == 0:  # an image that cannot be encoded this step blocks admissions
                request.num_computed_tokens = 0
                self._mm_plans.pop(request.request_id, None)
                break
            if self.scheduler_reserve_full_isl:
                blocks = self.kv.allocate_slots(request, n, hits, full_sequence_must_fit=True)
            else:  # the course's three-argument call, which a learner's KV manager implements
                blocks = self.kv.allocate_slots(request, n, hits)
            if blocks is None:
                request.num_computed_tokens = 0  # not admitted: adopt nothing
                self._mm_plans.pop(request.request_id, None)
                break  # head-of-line blocking by design: no skipping to a smaller waiter
            self.waiting.popleft()
            if lora_request is not None:
                self.lora_slots.pin(lora_request.lora_int_id)
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            out.scheduled_requests.append(request)
            out.scheduled_new_req_ids.append(request.request_id)
            out.num_scheduled_tokens[request.request_id] = n
            self._commit_encoder_inputs(request, n, out)
            token_budget -= n
        self.waiting.extendleft(reversed(skipped))

    def _release_lora(self, request: Request) -> None:
        """A request leaves ``running``: its adapter pin goes (LoRA only)."""
        lora_request = getattr(request, "lora_request", None)
        if lora_request is not None and self.lora_slots is not None:
            self.lora_slots.unpin(lora_request.lora_int_id)

    def _preempt(self, request: Request) -> None:
        """Recompute-style preemption: drop the KV, keep the tokens, go to the front of the line.

        The outputs so far stay, so on re-admission the request re-prefills prompt + outputs and
        its next sample sees the same (last token, position) — the continuation is unchanged.
        """
        self.kv.free(request)
        self._release_lora(request)
        self._free_encoder_inputs(request, everything=True)
        request.num_computed_tokens = 0
        request.spec_token_ids = []  # re-prefilled from scratch: drafts come after that
        request.num_preemptions += 1
        request.status = RequestStatus.PREEMPTED
        self.waiting.appendleft(request)

    @staticmethod
    def needs_sample(request: Request, num_scheduled: int) -> bool:
        """A step samples for a request only when it computes the request's last known token."""
        return request.num_computed_tokens + num_scheduled == request.num_tokens

    def update_from_output(self, output: SchedulerOutput, sampled: dict[str, int]) -> list[Request]:
        """Advance counters, append sampled tokens, reap finished requests (freeing their KV).

        Must be called every step, sampled or not: mid-prefill chunks advance
        ``num_computed_tokens`` without producing a token.
        """
        finished: list[Request] = []
        for request in output.scheduled_requests:
            n = output.num_scheduled_tokens[request.request_id]
            wants_token = self.needs_sample(request, n)
            has_token = request.request_id in sampled
            if wants_token != has_token:
                raise ValueError(
                    f"{request.request_id}: a token must be sampled exactly when "
                    f"num_computed_tokens + n == num_tokens ({request.num_computed_tokens} + {n} "
                    f"vs {request.num_tokens}); got sampled={has_token}"
                )
            request.num_computed_tokens += n
            self._free_encoder_inputs(request)  # images whose runs are now computed (phase 13)
            if has_token:
                request.append_output_token(sampled[request.request_id])
                stopped = (request.maybe_finish() if self.check_stop is None
                           else self.check_stop(request))
                if stopped:
                    finished.append(request)
        for request in finished:
            self.running.remove(request)
            self.kv.free(request)
            self._release_lora(request)
            self._free_encoder_inputs(request, everything=True)
        return finished

    def update_from_spec_output(self, output: SchedulerOutput,
                                sampled: dict[str, list[int]]) -> list[Request]:
        """``update_from_output`` for a speculative step: ``sampled[rid]`` is the rejection
        sampler's list (accepted drafts + one token) for each request that reached its last
        token, drafts included.

        The drafts scheduled for a request are its ``spec_token_ids`` (trimmed by ``schedule``);
        those rejected are un-computed (``num_computed_tokens`` rolled back; their slots are
        simply overwritten later, their blocks stay allocated, as upstream). Tokens are appended
        one by one with the stop check after each, so nothing past an EOS or ``max_tokens`` is
        kept. Drafts are cleared: the engine proposes fresh ones after this.
        """
        finished: list[Request] = []
        for request in output.scheduled_requests:
            rid = request.request_id
            n = output.num_scheduled_tokens[rid]
            num_drafts = len(request.spec_token_ids)
            wants_tokens = request.num_computed_tokens + n - num_drafts == request.num_tokens
            tokens = sampled.get(rid)
            if wants_tokens != (tokens is not None) or (
                    tokens is not None and not 1 <= len(tokens) <= num_drafts + 1):
                raise ValueError(
                    f"{rid}: expected {'1..' + str(num_drafts + 1) if wants_tokens else 'no'} "
                    f"sampled tokens, got {tokens!r}"
                )
            request.num_computed_tokens += n
            request.spec_token_ids = []
            if tokens is None:
                continue
            request.num_computed_tokens -= num_drafts + 1 - len(tokens)  # the rejected drafts
            for token in tokens:
                request.append_output_token(token)
                stopped = (request.maybe_finish() if self.check_stop is None
                           else self.check_stop(request))
                if stopped:
                    finished.append(request)
                    break
            # Tokens dropped after a stop were never anyone's context: un-compute them too.
            request.num_computed_tokens = min(request.num_computed_tokens,
                                              request.num_tokens - 1)
        for request in finished:
            self.running.remove(request)
            self.kv.free(request)
            self._release_lora(request)
            self._free_encoder_inputs(request, everything=True)
        return finished
