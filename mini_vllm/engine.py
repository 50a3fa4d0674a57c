"""LLMEngine: add requests, pump ``step()``, get finished requests back.

Upstream twins: ``vllm/v1/engine/llm_engine.py: LLMEngine`` (``add_request``, ``step``) and
``vllm/v1/engine/core.py: EngineCore.step`` (schedule -> execute -> sample -> update). The
detokenizer / output processor is folded into ``generate``.

Constructor knobs and defaults (all keyword-only)::

    LLMEngine(num_blocks=4096, block_size=16, enable_caching=True,
              max_num_seqs=256, max_num_batched_tokens=2048, long_prefill_token_threshold=0,
              seed=0, policy="course", generators="per_call", ...injection points below...)

``policy`` picks the control-plane rules (``mini_vllm/config.py``): ``"course"`` (the default,
vLLM v0.22.1's rules, which every lab number is pinned to), ``"vllm-0.32"`` (the four rules vLLM
0.32 changed), or a ``ControlPlanePolicy`` with options set one by one. Only the options that
differ from the course reach the parts below, as extra keywords (the pool's and the scheduler's
constructors; ``allocate_slots(..., full_sequence_must_fit=True)`` at admission): a learner's
part that lacks them works as before under the course, and raises ``TypeError`` under a policy
that needs them.

``generators`` picks where a sampled request's random numbers come from (``mini_vllm/config.py:
get_generator_mode``): ``"per_call"`` (the default, which phases 00-03 pin numbers on: the stock
``Sampler`` builds ``default_rng(params.seed)`` on every call) or ``"per_request"`` (upstream's
rule: a seeded request at temperature > 0 owns one generator, made when ``add_request`` accepts
it, advanced by each of its draws, kept through preemption, dropped when it finishes or is
aborted; unseeded requests draw from the engine's generator ``default_rng(seed)``). The state is
``request_generators`` (``mini_vllm/sample/generators.py``); the sampler is wrapped so that its
``sample`` gets ``generator=``, so it must accept that keyword. Under ``"per_request"`` with
speculative decoding the rejection sampler draws from the same generator. The policy presets do
not imply it.

Injection points — how a kata runs the whole engine on a learner's part. Each replaces one organ;
the rest of the engine is unchanged, so the result can be compared token for token with a stock
engine:

* ``block_pool_cls``: called as ``block_pool_cls(num_blocks=..., enable_caching=...)`` (kata
  02-01's ``BlockPool``).
* ``kv_cache_manager_cls``: called as ``kv_cache_manager_cls(num_blocks=..., block_size=...,
  enable_caching=..., block_pool_cls=...)``.
* ``scheduler_cls``: called as ``scheduler_cls(kv_cache_manager, max_num_seqs=...,
  max_num_batched_tokens=..., long_prefill_token_threshold=...)``; subclass ``Scheduler`` and
  override ``schedule`` to drive the engine with a learner's scheduling step.
* ``sampler``: an object with ``sample(logits, params) -> int``, or a bare function with that
  signature (kata 00-03's ``sample``). A ``sample`` that also accepts a ``request`` keyword gets
  the request too (the stock ``Sampler`` does: penalties, bad words and min_tokens need its
  tokens); see :func:`sample_request`.
* ``model``: the network. Default ``ToyModel(seed)``, or anything with the toy's
  ``forward(last_tokens, positions) -> logits``; or a real model over the paged KV cache
  (``mini_vllm.models``: ``forward(input_ids, positions, kv_caches, attn_metadata)`` +
  ``compute_logits``). Either way it runs behind the :class:`ModelRunner`, which builds the
  slot mapping and block tables and checks that every slot a request reads holds its token.
* ``attn_backend``: the attention every layer of a real model calls, with
  ``mini_vllm.attention.paged_attention``'s signature (the default); ``per_head_backend`` there
  builds one from a kata's single-request, single-head attention (phase 04).
* ``cudagraph_capture_sizes``: off (``None``) by default. With a real model, a step in which
  every request computes one token runs on the batch padded up to the smallest listed size, as
  upstream pads a decode batch to a captured CUDA graph's size; the padded rows' logits are never
  computed, so the tokens do not change (see :class:`ModelRunner`, phase 05).
* ``step_fn``: ``step_fn(scheduler, model, sampler) -> list[Request]`` replaces the body of
  ``step()`` (kata 01-03's ``engine_step``); it gets the model itself and keeps the course's
  ``forward(last_tokens, positions)`` contract. Default: :func:`engine_step` on the runner.
* ``tokenizer``: ``encode`` / ``decode`` / ``eos_token_id`` (default the byte tokenizer;
  ``mini_vllm.LLM`` passes the checkpoint's). ``max_model_len`` caps prompt + output (default:
  the model's ``max_model_len`` if it has one); a request that cannot fit is refused.
* ``check_stop``: ``check_stop(request) -> bool`` decides, after each appended token, whether the
  request is finished (and sets its status); the default is ``Request.maybe_finish`` (kata
  01-05's ``check_stop``; upstream ``vllm/v1/core/sched/utils.py: check_stop``).

Speculative decoding, opt-in (phase 08): ``speculative_config=SpeculativeConfig(...)``
(``mini_vllm/config.py``; default ``None``, and then nothing below happens). Each step then runs
:meth:`LLMEngine._spec_step` instead of :func:`engine_step`: schedule (a request's drafts ride in
``num_tokens_with_spec``, their KV slots reserved as lookahead) -> one forward that verifies every
draft (``ModelRunner.execute_model_spec``: k + 1 logits rows per request) -> the
:class:`~mini_vllm.spec_decode.RejectionSampler` (or ``SpeculativeConfig.rejection_sampler``) keeps
the accepted prefix + one token (a request with no drafts samples with ``sampler`` as usual) ->
``update_from_spec_output`` appends them and rolls back the rejected drafts' ``num_computed_tokens``
-> the proposer drafts up to k tokens for every running request whose prefill is done (never more
than ``max_tokens`` leaves room for). Greedy output is token-identical to the engine without it;
with temperature, each token has the target's distribution. ``spec_decoding_stats`` counts drafts
and acceptances; ``model_runner.num_steps`` counts target forwards. ``step_fn`` cannot be combined
with it.

Parallel sampling (phase 09): ``SamplingParams(n=4)`` makes ``add_request`` queue four child
requests (``mini_vllm/parallel_sampling.py``: ids ``"0_<id>"`` .. ``"3_<id>"``, a seeded parent
seeds child i with ``seed + i``) and return the parent's id; ``parent_requests[id]`` lists the
children. They are ordinary requests to the scheduler: the first one admitted prefills the
prompt, the others hit its full blocks through prefix caching. ``generate`` returns a
:class:`~mini_vllm.parallel_sampling.ParallelRequestOutput` (``outputs``: the n children's
``RequestOutput`` s, in index order) for such a prompt, and the flat ``RequestOutput`` as before
for ``n == 1``. Beam search runs outside the engine, as upstream: ``mini_vllm/beam_search.py``
sends every live beam as a one-token request (``LLM.beam_search``).

Multi-LoRA, opt-in (phase 11): ``lora_config=LoRAConfig(max_loras=..., max_lora_rank=...)``
(``mini_vllm/lora``; default ``None``, and then nothing below happens). ``add_request(...,
lora_request=LoRARequest(name, id, path))`` and ``generate(..., lora_request=...)`` (one for all
prompts, or a list with ``None`` for base rows) run a request with a peft adapter, loaded and
checked when the request is added. The scheduler admits a request only if its adapter can get
one of the ``max_loras`` slots (else it waits, without blocking the requests behind it); a
running request pins its adapter, so it is never evicted under it. The runner activates each
step's adapters in the slot cache and every targeted projection of the model adds each row's
delta (``mini_vllm/lora/punica.py``). Prefix caching keys blocks on the adapter id too, so no
block is shared across adapters. Injection points: ``LoRAConfig.slot_cache_cls`` (kata 11-04's
``AdapterSlotCache``) and ``LoRAConfig.lora_linear`` (kata 11-01's ``apply_batched``). It needs a
real model (``mini_vllm.models``) and cannot be combined with ``speculative_config`` or
``step_fn``; ``engine.lora_manager`` and ``engine.lora_slots`` expose its state.

Structured outputs, opt-in per request (phase 12): ``add_request(..., structured_output=matcher)``
and ``generate(..., structured_outputs=matcher | [matcher or None, ...])`` constrain a request
with a grammar matcher (``mini_vllm/structured_output.py: GrammarMatcher``; a regex one is
``mini_vllm/grammar.py: RegexMatcher``). Before the request samples, :func:`sample_request` sets
the logits of every token the matcher does not allow to ``-inf``; after, it calls
``accept_token`` with the sampled token. A matcher that allows nothing is a dead end:
``RuntimeError`` naming the request. Unconstrained requests never touch any of it, so their
tokens are those of an engine without it. Not combined with ``speculative_config``, ``step_fn``
or ``n > 1`` (refused at ``add_request``).

Images, opt-in (phase 13): ``mm_config=MultiModalConfig(...)`` (``mini_vllm/multimodal``;
default ``None``, and then nothing below happens) and ``add_mm_request(prompt, params,
images=[bytes, ...])``: each ``image_token_id`` marker of the prompt becomes its fake image's run
of placeholder tokens (``MultiModalConfig.expand_prompt``, kata 13-01's), and the request is an
ordinary one to the engine (KV blocks, token budget, chunking, preemption). Each step the
scheduler fits every chunk to the encoder budget and cache (``MultiModalConfig.plan_chunk``, kata
13-03's: an image is encoded whole before any of its positions is computed), the runner encodes
the scheduled images (``FakeImageEncoder``, seeded by content) and the model takes their rows in
place of the placeholders' embeddings. Prefix caching keys a block on the hashes of the images
its positions hold. It needs a real model and cannot be combined with ``speculative_config`` or
``step_fn``.

Bad input raises ``ValueError`` from ``add_request`` before the engine is touched, so every other
in-flight request keeps being served; ``generate`` vets all of its prompts before queuing any.
A scheduler whose output the engine cannot execute raises ``SchedulerContractError`` from
``step`` (see :func:`mini_vllm.scheduler.check_scheduler_output`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mini_vllm.attention import AttentionBackend
from mini_vllm.config import (
    ControlPlanePolicy,
    SpeculativeConfig,
    get_generator_mode,
    get_policy,
)
from mini_vllm.kv_cache import KVCacheManager, cdiv
from mini_vllm.lora.models import LoRAConfig, LoRAModelManager, make_slot_cache
from mini_vllm.lora.request import LoRARequest
from mini_vllm.model import ToyModel
from mini_vllm.model_runner import ModelRunner
from mini_vllm.multimodal import (
    EncoderCacheManager,
    FakeImageEncoder,
    MultiModalConfig,
    process_prompt,
)
from mini_vllm.parallel_sampling import ParallelRequestOutput, ParentRequest
from mini_vllm.request import (
    Request,
    RequestStatus,
    SamplingParams,
    check_prompt_token_ids,
    check_sampling_params,
    next_request_id,
)
from mini_vllm.sample.generators import GeneratorSampler, RequestGenerators
from mini_vllm.sampler import Sampler, apply_token_mask
from mini_vllm.scheduler import Scheduler, check_scheduler_output
from mini_vllm.spec_decode import (
    DraftModelProposer,
    NgramProposer,
    RejectionSampler,
    SpecDecodingStats,
    truncated_model,
)
from mini_vllm.structured_output import (
    allowed_mask,
    check_matcher,
    normalize_structured_outputs,
)
from mini_vllm.tokenizer import ByteTokenizer

_PROMPT_FORMS = "a non-empty str or a non-empty sequence of int token ids"

_FINISH_REASONS = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH: "length",
    RequestStatus.FINISHED_ABORTED: "abort",
}


@dataclass(frozen=True)
class RequestOutput:
    """What ``generate`` returns per prompt (flat; upstream nests it under ``outputs[0]``)."""

    request_id: str
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    text: str
    finish_reason: str | None
    num_preemptions: int


class _FunctionSampler:
    """Adapts a bare ``sample(logits, params) -> int`` function to the Sampler interface."""

    def __init__(self, fn: Callable[[Any, Any], int]) -> None:
        self._fn = fn

    def sample(self, logits: Any, params: Any) -> int:
        return int(self._fn(logits, params))


def _takes_request(sampler: Any) -> bool:
    """Whether ``sampler.sample`` accepts a ``request`` keyword (or ``**kwargs``)."""
    try:
        parameters = inspect.signature(sampler.sample).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    return any(p.name == "request" or p.kind is p.VAR_KEYWORD for p in parameters)


def sample_request(sampler: Any, logits: Any, request: Request) -> int:
    """``sampler.sample(logits, params)``, plus ``request=request`` when the sampler takes it.

    The phase 09 knobs (penalties, bad words, min_tokens) read the request's tokens; a sampler
    with the original 2-argument ``sample`` (kata 00-03's, a spy) is called exactly as before.
    A request with a structured-output matcher (phase 12) samples from its masked row, and the
    matcher accepts the token drawn.
    """
    matcher = getattr(request, "structured_output", None)
    if matcher is not None:
        mask = allowed_mask(matcher, len(logits), request.request_id)
        logits = apply_token_mask(logits, mask)
    if _takes_request(sampler):
        token = sampler.sample(logits, request.sampling_params, request=request)
    else:
        token = sampler.sample(logits, request.sampling_params)
    if matcher is not None:
        matcher.accept_token(int(token))
    return token


def engine_step(scheduler: Any, model: Any, sampler: Any) -> list[Request]:
    """One engine iteration: schedule -> execute -> sample -> update. Returns finished requests.

    ``model`` is a :class:`ModelRunner` (the engine's default step) or, for a hand-wired step, a
    bare toy-interface model. Each scheduled request contributes one logits row, at its last
    scheduled token (position ``num_computed_tokens + n - 1``). Only rows that reach the end of
    the known tokens sample.
    """
    output = scheduler.schedule()
    # The boundary between the (possibly learner-written) scheduler and the engine: a plan that
    # cannot be executed is blamed on the scheduler here, not found as an IndexError below.
    check_scheduler_output(output, scheduler.running)
    if not output.scheduled_requests:
        return []
    if hasattr(model, "execute_model"):
        logits = model.execute_model(output)
    else:
        positions = [r.num_computed_tokens + output.num_scheduled_tokens[r.request_id] - 1
                     for r in output.scheduled_requests]
        last_tokens = [r.all_token_ids[p] for r, p in zip(output.scheduled_requests, positions,
                                                            strict=True)]
        logits = model.forward(last_tokens, positions)
    sampled: dict[str, int] = {}
    for row, request in enumerate(output.scheduled_requests):
        n = output.num_scheduled_tokens[request.request_id]
        if Scheduler.needs_sample(request, n):
            sampled[request.request_id] = sample_request(sampler, logits[row], request)
    return scheduler.update_from_output(output, sampled)


class LLMEngine:
    def __init__(
        self,
        *,
        num_blocks: int = 4096,
        block_size: int = 16,
        enable_caching: bool = True,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 2048,
        long_prefill_token_threshold: int = 0,
        seed: int = 0,
        block_pool_cls: Callable[..., Any] | None = None,
        kv_cache_manager_cls: Callable[..., Any] | None = None,
        scheduler_cls: Callable[..., Any] | None = None,
        sampler: Any | None = None,
        model: Any | None = None,
        step_fn: Callable[[Any, Any, Any], list[Request]] | None = None,
        check_stop: Callable[[Request], bool] | None = None,
        tokenizer: Any | None = None,
        max_model_len: int | None = None,
        policy: str | ControlPlanePolicy = "course",
        attn_backend: AttentionBackend | None = None,
        cudagraph_capture_sizes: Sequence[int] | None = None,
        speculative_config: SpeculativeConfig | None = None,
        generators: str = "per_call",
        lora_config: LoRAConfig | None = None,
        mm_config: MultiModalConfig | None = None,
    ) -> None:
        self.policy = get_policy(policy)
        self.generator_mode = get_generator_mode(generators)
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.tokenizer = tokenizer if tokenizer is not None else ByteTokenizer()
        self.model = model if model is not None else ToyModel(seed=seed)
        # Token ids a request may hold: the model's vocabulary (the toy's is the byte tokenizer's).
        self.vocab_size = int(getattr(self.model, "vocab_size", self.tokenizer.vocab_size))
        # Longest sequence (prompt + output) a request may reach; a real model's positions stop
        # at its max_position_embeddings. None: only the KV pool limits it (the toy).
        self.max_model_len = max_model_len if max_model_len is not None else getattr(
            self.model, "max_model_len", None)
        if sampler is None:
            sampler = Sampler()
        elif not hasattr(sampler, "sample"):
            sampler = _FunctionSampler(sampler)
        #: Per-request generators (``generators="per_request"``), else ``None``.
        self.request_generators: RequestGenerators | None = None
        if self.generator_mode == "per_request":
            self.request_generators = RequestGenerators(seed)
            sampler = GeneratorSampler(sampler, self.request_generators)
        self.sampler = sampler
        kv_factory = kv_cache_manager_cls or KVCacheManager
        self.kv_cache_manager = kv_factory(
            num_blocks=num_blocks,
            block_size=block_size,
            enable_caching=enable_caching,
            block_pool_cls=block_pool_cls,
            **self.policy.block_pool_options(),
        )
        self.scheduler = (scheduler_cls or Scheduler)(
            self.kv_cache_manager,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            long_prefill_token_threshold=long_prefill_token_threshold,
            **self.policy.scheduler_options(),
        )
        if check_stop is not None:
            self.scheduler.check_stop = check_stop
        self.model_runner = ModelRunner(self.model, self.kv_cache_manager,
                                        num_blocks=num_blocks, block_size=block_size,
                                        attn_backend=attn_backend,
                                        cudagraph_capture_sizes=cudagraph_capture_sizes)
        # A hand-wired step (kata 01-03) keeps the course's contract: it gets the model itself
        # and calls forward(last_tokens, positions). The stock step goes through the runner.
        self._step_fn = step_fn
        self.num_steps = 0
        #: Parents of ``n > 1`` requests by id (see :meth:`add_request`); ``generate`` drops the
        #: ones it gathered.
        self.parent_requests: dict[str, ParentRequest] = {}
        self.speculative_config = speculative_config
        self.spec_decoding_stats: SpecDecodingStats | None = None
        if speculative_config is not None:
            self._init_spec_decode(speculative_config, seed)
        #: Multi-LoRA state (``lora_config``); ``None`` without it.
        self.lora_config = lora_config
        self.lora_manager: LoRAModelManager | None = None
        self.lora_slots: Any = None
        if lora_config is not None:
            self._init_lora(lora_config)
        #: The fake-image pipeline's knobs (``mm_config``, phase 13); ``None`` without it.
        self.mm_config: MultiModalConfig | None = None
        if mm_config is not None:
            self._init_multimodal(mm_config, max_num_batched_tokens)

    def _init_multimodal(self, config: MultiModalConfig, max_num_batched_tokens: int) -> None:
        """Images (phase 13): the encoder cache and rule in the scheduler, the encoder in the
        runner (see the module docstring)."""
        if not isinstance(config, MultiModalConfig):
            raise ValueError(f"mm_config must be a MultiModalConfig or None, got {config!r}")
        if not hasattr(self.model, "compute_logits") or not hasattr(self.model, "hidden_size"):
            raise ValueError("images replace a real model's input embeddings (mini_vllm.models), "
                             "not the toy model's")
        if self.speculative_config is not None or self._step_fn is not None:
            raise ValueError("mm_config cannot be combined with speculative_config or step_fn")
        if not 0 <= config.image_token_id < self.vocab_size:
            raise ValueError(f"image_token_id must be a token id in [0, {self.vocab_size}), got "
                             f"{config.image_token_id!r}")
        budget = (max_num_batched_tokens if config.encoder_budget is None
                  else config.encoder_budget)
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"encoder_budget must be an int >= 1, got {budget!r}")
        size = budget if config.encoder_cache_size is None else config.encoder_cache_size
        self.mm_config = config
        self.scheduler.mm_encoder_cache = EncoderCacheManager(size)
        self.scheduler.mm_plan_chunk = config.plan_chunk
        self.scheduler.mm_encoder_budget = budget
        self.model_runner.mm_encoder = FakeImageEncoder(self.model.hidden_size, self.model.dtype)

    def add_mm_request(self, prompt: str | Sequence[int], sampling_params: SamplingParams | None,
                       images: Sequence[bytes], request_id: str | None = None) -> str:
        """``add_request`` for a prompt with images (needs ``mm_config``): each
        ``image_token_id`` marker becomes its image's run of placeholder tokens
        (``len(image) // 64 + 1`` of them), the request carries ``mm_features`` (hash, run,
        bytes), and is queued like any other. ``ValueError`` for markers and images differing in
        number, or an image longer than the encoder budget or cache (it could never run)."""
        config = self.mm_config
        if config is None:
            raise ValueError("images need an engine built with mm_config=MultiModalConfig(...)")
        if isinstance(prompt, str):
            prompt = self.tokenizer.encode(prompt)
        if isinstance(images, (bytes, bytearray)):
            images = [images]
        token_ids, features = process_prompt(list(prompt), list(images), config.image_token_id,
                                             config.expand_prompt)
        cache = self.scheduler.mm_encoder_cache
        limit = min(self.scheduler.mm_encoder_budget, cache.cache_size)
        for f in features:
            if f.length > limit:
                raise ValueError(f"an image of {f.length} tokens exceeds the encoder budget / "
                                 f"cache ({limit} tokens): it could never be encoded")
        n = getattr(sampling_params, "n", 1)
        if isinstance(n, int) and n > 1:
            raise ValueError(f"images cannot be combined with n > 1 (got n={n})")
        rid = self.add_request(token_ids, sampling_params, request_id=request_id)
        self.scheduler.find_request(rid).mm_features = features  # queued, not yet scheduled
        return rid

    def _init_lora(self, config: LoRAConfig) -> None:
        if not isinstance(config, LoRAConfig):
            raise ValueError(f"lora_config must be a LoRAConfig or None, got {config!r}")
        if not hasattr(self.model, "compute_logits") or not hasattr(self.model, "model"):
            raise ValueError("LoRA adapts a real model's projections (mini_vllm.models), not the "
                             "toy model")
        if self.speculative_config is not None or self._step_fn is not None:
            raise ValueError("lora_config cannot be combined with speculative_config or step_fn")
        self.lora_slots = make_slot_cache(config)
        self.scheduler.lora_slots = self.lora_slots
        self.lora_manager = LoRAModelManager(self.model, config, self.lora_slots)
        self.model_runner.lora_manager = self.lora_manager

    def _vet_structured_output(self, matcher: object, params: SamplingParams) -> Any:
        """The matcher a new request names, checked (``ValueError`` otherwise)."""
        matcher = check_matcher(matcher, "structured_output")
        if matcher is None:
            return None
        if self.speculative_config is not None or self._step_fn is not None:
            raise ValueError("structured_output needs the engine's own step: it cannot be "
                             "combined with speculative_config or step_fn")
        if params.n > 1:
            raise ValueError("structured_output holds one request's grammar state: it cannot "
                             f"be combined with n > 1 (got n={params.n})")
        return matcher

    def _vet_lora(self, lora_request: object) -> LoRARequest | None:
        """The adapter a new request names, loaded and checked (``ValueError`` otherwise)."""
        if lora_request is None:
            return None
        if self.lora_manager is None:
            raise ValueError("lora_request needs an engine built with lora_config=LoRAConfig(...)")
        self.lora_manager.add_adapter(lora_request)  # type: ignore[arg-type]
        return lora_request  # type: ignore[return-value]

    def _init_spec_decode(self, config: SpeculativeConfig, seed: int) -> None:
        if not isinstance(config, SpeculativeConfig):
            raise ValueError(f"speculative_config must be a SpeculativeConfig or None, "
                             f"got {config!r}")
        if self._step_fn is not None:
            raise ValueError("speculative_config runs its own step; it cannot be combined with "
                             "step_fn")
        k = config.num_speculative_tokens
        if config.proposer is not None:
            self.proposer = config.proposer
        elif config.method == "ngram":
            self.proposer = NgramProposer(config.prompt_lookup_min, config.prompt_lookup_max, k,
                                          self.max_model_len)
        else:
            draft = config.draft_model if config.draft_model is not None else self.model
            if not hasattr(draft, "compute_logits"):
                raise ValueError("method 'draft_model' needs a real draft model (or a real "
                                 "target model to truncate), not the toy model")
            if config.draft_num_layers is not None:
                draft = truncated_model(draft, config.draft_num_layers)
            self.proposer = DraftModelProposer(draft, k, block_size=self.block_size,
                                               max_model_len=self.max_model_len)
        self.rejection_sampler = (config.rejection_sampler if config.rejection_sampler is not None
                                  else RejectionSampler())
        self.spec_decoding_stats = SpecDecodingStats(num_spec_tokens=k)
        self._spec_rng = np.random.default_rng(seed)

    # -- requests -------------------------------------------------------------------------------

    def add_request(
        self,
        prompt: str | Sequence[int],
        sampling_params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        lora_request: LoRARequest | None = None,
        structured_output: Any = None,
    ) -> str:
        """Validate, enqueue, return the request id.

        ``lora_request`` runs the request with that adapter (needs ``lora_config``); ``None``:
        the base model. ``structured_output``: a fresh ``GrammarMatcher`` that constrains this
        request's tokens (phase 12); ``None``: unconstrained.

        By default the id is drawn for you (``'req-<n>'``, process-global). An explicit
        ``request_id`` (upstream makes the caller pass one) must not belong to an unfinished
        request. Any refusal is a ``ValueError`` raised before anything is queued.

        With ``sampling_params.n > 1`` the returned id is the parent's: ``n`` child requests are
        queued in index order (``parent_requests[id].child_request_ids``), and ``step`` returns
        the children as they finish.
        """
        token_ids, params = self._vet(prompt, sampling_params)
        lora_request = self._vet_lora(lora_request)
        structured_output = self._vet_structured_output(structured_output, params)
        if params.n > 1:
            return self._add_parent_request(token_ids, params, request_id, lora_request)
        # Request re-checks what it is given (it is also built directly, by katas and benchmarks);
        # on vetted input that is one cheap pass over the prompt.
        request = Request(
            token_ids, params, request_id=request_id, eos_token_id=self.tokenizer.eos_token_id,
            vocab_size=self.vocab_size, lora_request=lora_request,
            structured_output=structured_output,
        )
        self.scheduler.add_request(request)  # refuses an id that is still in flight
        if self.request_generators is not None:
            self.request_generators.add(request.request_id, params)
        return request.request_id

    def _add_parent_request(self, token_ids: list[int], params: SamplingParams,
                            request_id: str | None,
                            lora_request: LoRARequest | None = None) -> str:
        if request_id is not None and (not isinstance(request_id, str) or not request_id):
            raise ValueError(f"request_id must be a non-empty str or None, got {request_id!r}")
        parent_id = request_id if request_id is not None else next_request_id()
        if parent_id in self.parent_requests:
            raise ValueError(f"request_id must be unique among unfinished requests, got "
                             f"{parent_id!r} (a parallel-sampling request still has it)")
        parent = ParentRequest(parent_id, params)
        children = [
            Request(token_ids, child_params, request_id=child_id,
                    eos_token_id=self.tokenizer.eos_token_id, vocab_size=self.vocab_size,
                    lora_request=lora_request)
            for child_id, child_params in (parent.get_child_info(i) for i in range(parent.n))
        ]
        added: list[Request] = []
        try:
            for child in children:
                self.scheduler.add_request(child)
                added.append(child)
        except Exception:
            for child in added:  # all or nothing
                self.scheduler.abort_request(child.request_id)
            raise
        self.parent_requests[parent_id] = parent
        if self.request_generators is not None:
            for child in children:
                self.request_generators.add(child.request_id, child.sampling_params)
        return parent_id

    def _vet(self, prompt: object, sampling_params: object) -> tuple[list[int], SamplingParams]:
        """Every check a new request must pass that needs no id, with no side effect.

        Returns the prompt's token ids and the parameters to use. ``generate`` runs it over a
        whole batch before queuing any of it.
        """
        params = check_sampling_params(sampling_params)
        if self.speculative_config is not None and params.logits_processing_knobs():
            # The rejection sampler verifies drafts against the plain (temperature, top-k,
            # top-p) distribution; upstream applies these knobs to the drafts too.
            raise ValueError(
                f"speculative decoding does not apply {', '.join(params.logits_processing_knobs())}"
                f" yet: run this request on an engine without speculative_config"
            )
        if isinstance(prompt, str) and prompt:
            token_ids = self.tokenizer.encode(prompt)  # always valid ids of this tokenizer
        else:  # token ids, or something that is neither (the empty str included)
            token_ids = check_prompt_token_ids(prompt, "prompt", _PROMPT_FORMS,
                                               vocab_size=self.vocab_size)
        if self.max_model_len is not None:
            limit = self.max_model_len
            if len(token_ids) >= limit:
                raise ValueError(
                    f"the prompt is {len(token_ids)} tokens long, but max_model_len is {limit}: "
                    f"it must be shorter, to leave room for at least one generated token"
                )
            if len(token_ids) + params.max_tokens > limit:
                raise ValueError(
                    f"prompt ({len(token_ids)} tokens) + max_tokens ({params.max_tokens}) = "
                    f"{len(token_ids) + params.max_tokens} exceeds max_model_len ({limit}): "
                    f"lower max_tokens to at most {limit - len(token_ids)}"
                )
        # The last sampled token is never fed back, so a full run needs P + max_tokens - 1 KV
        # slots. A request that cannot fit even alone would preempt itself forever.
        needed = len(token_ids) + params.max_tokens - 1
        usable = (self.num_blocks - 1) * self.block_size
        if needed > usable:
            raise ValueError(
                f"request needs {needed} KV slots ({cdiv(needed, self.block_size)} blocks of "
                f"{self.block_size}) but the pool only ever has {usable} "
                f"({self.num_blocks - 1} usable blocks): shorten the prompt or max_tokens"
            )
        return token_ids, params

    def get_request(self, request_id: str) -> Request:
        """An unfinished request by id; ``ValueError`` for unknown or finished ids."""
        return self.scheduler.find_request(request_id)

    def abort_request(self, request_id: str) -> Request | list[Request]:
        """Abort an unfinished request; for a parent id, every unfinished child (returned)."""
        parent = self.parent_requests.pop(request_id, None)
        if parent is None:
            aborted = self.scheduler.abort_request(request_id)
            self._drop_generators([aborted])
            return aborted
        children = [self.scheduler.abort_request(cid) for cid in parent.child_request_ids
                    if self.scheduler._find(cid) is not None]
        self._drop_generators(children)
        return children

    def _drop_generators(self, requests: Iterable[Request]) -> None:
        """Finished requests give their generators back (ids are recycled)."""
        if self.request_generators is not None:
            for request in requests:
                self.request_generators.finish(request.request_id)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    # -- the loop -------------------------------------------------------------------------------

    def step(self) -> list[Request]:
        if self.speculative_config is not None:
            finished = self._spec_step()
        elif self._step_fn is None:
            finished = engine_step(self.scheduler, self.model_runner, self.sampler)
        else:
            finished = self._step_fn(self.scheduler, self.model, self.sampler)
        self.num_steps += 1
        self._drop_generators(finished)
        return finished

    def _spec_step(self) -> list[Request]:
        """One speculative iteration: schedule -> verify -> rejection-sample -> update ->
        propose (see the module docstring)."""
        scheduler = self.scheduler
        output = scheduler.schedule()
        check_scheduler_output(output, scheduler.running)
        if not output.scheduled_requests:
            return []
        logits_per_request = self.model_runner.execute_model_spec(output)
        stats = self.spec_decoding_stats
        sampled: dict[str, list[int]] = {}
        for request, logits in zip(output.scheduled_requests, logits_per_request, strict=True):
            drafts = request.spec_token_ids
            n = output.num_scheduled_tokens[request.request_id]
            if request.num_computed_tokens + n - len(drafts) != request.num_tokens:
                continue  # a prefill chunk that does not reach the end: no token yet
            params = request.sampling_params
            if not drafts:
                sampled[request.request_id] = [sample_request(self.sampler, logits[-1], request)]
                continue
            rng = (self.request_generators.get(request.request_id, params)
                   if self.request_generators is not None else None)
            if rng is None:
                rng = (self._spec_rng if params.seed is None
                       else np.random.default_rng([params.seed, request.num_tokens]))
            tokens = self.rejection_sampler(drafts, logits, params, rng=rng)
            stats.observe_draft(len(drafts), len(tokens) - 1)
            sampled[request.request_id] = tokens
        finished = scheduler.update_from_spec_output(output, sampled)
        for request in scheduler.running:
            if request.num_computed_tokens == request.num_tokens - 1 and not (
                    request.spec_token_ids):
                request.spec_token_ids = self._propose(request)
        return finished

    def _propose(self, request: Request) -> list[int]:
        """Drafts for ``request``'s next step: at most k, and never more than its remaining
        ``max_tokens`` can use (the verify emits one token more than it accepts)."""
        k = min(self.speculative_config.num_speculative_tokens,
                request.sampling_params.max_tokens - request.num_output_tokens - 1)
        if k <= 0:
            return []
        drafts = list(self.proposer(list(request.all_token_ids)))[:k]
        for i, token in enumerate(drafts):
            if not isinstance(token, (int, np.integer)) or isinstance(token, bool) or not (
                    0 <= token < self.vocab_size):
                raise ValueError(f"the proposer returned draft[{i}]={token!r} for request "
                                 f"{request.request_id!r}: drafts must be int token ids in "
                                 f"[0, {self.vocab_size})")
        return [int(t) for t in drafts]

    def generate(
        self,
        prompts: Sequence[str | Sequence[int]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        lora_request: LoRARequest | Sequence[LoRARequest | None] | None = None,
        structured_outputs: Any = None,
    ) -> list[RequestOutput | ParallelRequestOutput]:
        """Run prompts to completion; one result per prompt, in prompt order: a
        ``RequestOutput``, or a ``ParallelRequestOutput`` for a prompt sampled ``n > 1`` times.

        ``sampling_params`` is one object for all prompts or a list with one per prompt. Requests
        added earlier with ``add_request`` keep being served while this runs. ``lora_request``
        (needs ``lora_config``): one adapter for every prompt, or a list with one per prompt
        (``None`` for the base model), as upstream's ``LLM.generate``. ``structured_outputs``
        (phase 12): ``None``, one ``GrammarMatcher`` (a single prompt only: it holds one
        request's state), or a list with a fresh matcher or ``None`` per prompt.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        elif not isinstance(prompts, Iterable):
            raise ValueError(f"prompts must be a str or a list of prompts, got {prompts!r}")
        prompts = list(prompts)
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            params_list = [sampling_params] * len(prompts)
        elif isinstance(sampling_params, Sequence) and not isinstance(sampling_params, str):
            params_list = list(sampling_params)
            if len(params_list) != len(prompts):
                raise ValueError(
                    f"got {len(params_list)} sampling params for {len(prompts)} prompts"
                )
        else:
            raise ValueError(
                f"sampling_params must be a SamplingParams, a list with one per prompt, or None, "
                f"got {sampling_params!r}"
            )
        if lora_request is None or isinstance(lora_request, LoRARequest):
            lora_list: list[Any] = [lora_request] * len(prompts)
        elif isinstance(lora_request, Sequence) and not isinstance(lora_request, str):
            lora_list = list(lora_request)
            if len(lora_list) != len(prompts):
                raise ValueError(f"got {len(lora_list)} lora requests for {len(prompts)} prompts")
        else:
            raise ValueError(f"lora_request must be a LoRARequest, a list with one per prompt, "
                             f"or None, got {lora_request!r}")
        matchers = normalize_structured_outputs(structured_outputs, len(prompts))
        # All or nothing: vet every prompt before queuing any, so a bad third prompt does not
        # leave the first two running with no caller waiting for them.
        for index, lora in enumerate(lora_list):
            try:
                self._vet_lora(lora)
            except ValueError as exc:
                raise ValueError(f"lora_request[{index}]: {exc}") from exc
        token_lists: list[list[int]] = []
        for index, (prompt, sp) in enumerate(zip(prompts, params_list, strict=True)):
            try:
                token_lists.append(self._vet(prompt, sp)[0])
            except ValueError as exc:
                raise ValueError(f"prompts[{index}]: {exc}") from exc
        for index, (matcher, sp) in enumerate(zip(matchers, params_list, strict=True)):
            try:
                self._vet_structured_output(matcher, check_sampling_params(sp))
            except ValueError as exc:
                raise ValueError(f"structured_outputs[{index}]: {exc}") from exc
        ids: list[str] = []
        try:
            for token_ids, sp, lora, matcher in zip(token_lists, params_list, lora_list, matchers,
                                                    strict=True):
                ids.append(self.add_request(token_ids, sp, lora_request=lora,
                                            structured_output=matcher))
        except Exception:
            # Only what needs the id can still fail here (an id drawn for us already taken by an
            # explicit request_id). Undo, as upstream's LLM._validate_and_add_requests does.
            for rid in ids:
                self.abort_request(rid)
            raise
        parents = {rid: self.parent_requests[rid] for rid in ids if rid in self.parent_requests}
        pending = set()
        for rid in ids:
            pending.update(parents[rid].child_request_ids if rid in parents else [rid])
        done: dict[str, Request] = {}
        while pending:
            if not self.has_unfinished_requests():
                raise RuntimeError(f"requests {sorted(pending)} vanished without finishing")
            for request in self.step():
                if request.request_id in pending:
                    pending.discard(request.request_id)
                    done[request.request_id] = request
        results: list[RequestOutput | ParallelRequestOutput] = []
        for rid, token_ids in zip(ids, token_lists, strict=True):
            if rid not in parents:
                results.append(self._to_output(done[rid]))
                continue
            parent = self.parent_requests.pop(rid)
            for child_id in parent.child_request_ids:
                parent.add_output(child_id, self._to_output(done[child_id]))
            results.append(parent.get_output(token_ids))
        return results

    def _to_output(self, request: Request) -> RequestOutput:
        return RequestOutput(
            request_id=request.request_id,
            prompt_token_ids=list(request.prompt_token_ids),
            output_token_ids=list(request.output_token_ids),
            text=self.tokenizer.decode(request.output_token_ids),
            finish_reason=_FINISH_REASONS.get(request.status),
            num_preemptions=request.num_preemptions,
        )
