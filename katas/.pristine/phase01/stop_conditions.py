"""Kata 01-05 — how a request ends: the stop check, its order, and the finish reason."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mini_vllm import Request, RequestStatus, SamplingParams  # noqa: F401  (what you will need)


def check_stop(request: Request) -> bool:
    """Decide whether the token just appended to ``request`` ends it; set its status if so.

    Two checks, in this order — the order is part of the API:

    1. EOS: unless ``request.sampling_params.ignore_eos``, if the request has output tokens and
       the last one equals ``request.eos_token_id``, set ``RequestStatus.FINISHED_STOPPED``.
    2. Length: otherwise, if ``request.num_output_tokens >= request.sampling_params.max_tokens``,
       set ``RequestStatus.FINISHED_LENGTH``. ``max_tokens`` counts output tokens only (the
       EOS included), never the prompt.

    Return True when the request is now finished; otherwise leave it untouched and return
    False. Only the output counts: a prompt that ends with the EOS id stops nothing. Write the
    checks yourself (mini_vllm's ``Request.maybe_finish`` is what you are rebuilding).
    """
    raise NotImplementedError("check_stop: EOS (unless ignore_eos) first, then the max_tokens cap")


def finish_reason(request: Request) -> str | None:
    """The API's ``finish_reason`` for ``request``: what a client is told about how it ended.

    ``FINISHED_STOPPED`` -> ``"stop"``, ``FINISHED_LENGTH`` -> ``"length"``,
    ``FINISHED_ABORTED`` -> ``"abort"``. A request that has not finished (``WAITING``,
    ``RUNNING``, ``PREEMPTED``) has no reason yet: ``None``.
    """
    raise NotImplementedError("finish_reason: map the finished status to stop / length / abort")


def run_until_stop(
    token_stream: Iterable[int],
    eos_token_id: int,
    sampling_params: SamplingParams,
    *,
    prompt_token_ids: Sequence[int] = (0,),
) -> Request:
    """Replay the engine's update stage with scripted tokens; return the request at the end.

    Build ``Request(prompt_token_ids, sampling_params, eos_token_id=eos_token_id)`` and mark
    it ``RUNNING`` (it is being decoded). Then take tokens from ``token_stream`` one at a time:
    append each with ``request.append_output_token(token)`` and call ``check_stop``; stop at
    the first True. Never take a token after the request has finished — the stream may be
    endless. If the stream runs dry first, the request stays ``RUNNING``.
    """
    raise NotImplementedError(
        "run_until_stop: append scripted tokens one by one until check_stop fires"
    )
