"""Kata 01-05 — how a request ends: the stop check, its order, and the finish reason."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mini_vllm import Request, RequestStatus, SamplingParams  # noqa: F401  (what you will need)


def check_stop(request: Request) -> bool:
    """Decide whether the token just appended to ``request`` ends it; set its status if so.

    The rules (upstream ``check_stop``'s two main ones):

    - **EOS**: the request's last *output* token is ``request.eos_token_id`` and
      ``request.sampling_params.ignore_eos`` is off -> ``RequestStatus.FINISHED_STOPPED``.
      A prompt that ends with the EOS id stops nothing; an EOS earlier in the output is history.
    - **Length**: the request holds ``sampling_params.max_tokens`` output tokens (the EOS
      counts as one; the prompt never does) -> ``RequestStatus.FINISHED_LENGTH``.
    - **Both at once** (an EOS that is exactly the ``max_tokens``-th token): the answer is
      complete, so it is ``FINISHED_STOPPED``. Which one wins is part of the API.

    Returns True when the request is now finished; otherwise returns False and leaves the
    request untouched. Example: outputs ``[10, 20, 256]`` with ``max_tokens=3`` -> True,
    ``FINISHED_STOPPED``; the same with ``ignore_eos`` -> True, ``FINISHED_LENGTH``.
    Write the rules yourself: mini_vllm's ``Request.maybe_finish`` is what you are rebuilding,
    and the tests refuse a ``check_stop`` that calls it.
    """
    raise NotImplementedError("check_stop: decide whether the token just appended ends the request")


def finish_reason(request: Request) -> str | None:
    """The API's ``finish_reason`` for ``request``: what a client is told about how it ended.

    ``FINISHED_STOPPED`` -> ``"stop"``, ``FINISHED_LENGTH`` -> ``"length"``,
    ``FINISHED_ABORTED`` -> ``"abort"``. A request that has not finished (``WAITING``,
    ``RUNNING``, ``PREEMPTED``) has no reason yet: ``None``.
    """
    raise NotImplementedError("finish_reason: the reason a client is told for this status")


def run_until_stop(
    token_stream: Iterable[int],
    eos_token_id: int,
    sampling_params: SamplingParams,
    *,
    prompt_token_ids: Sequence[int] = (0,),
) -> Request:
    """Replay the engine's update stage with scripted tokens; return the request at the end.

    Returns a fresh ``Request(prompt_token_ids, sampling_params, eos_token_id=eos_token_id)``
    that is being decoded (``RUNNING``) and has received tokens from ``token_stream`` as
    outputs, one at a time and in order, each judged by ``check_stop`` as it arrives.

    - The request ends exactly where ``check_stop`` says so: ``[10, 20, 256, ...]`` with EOS
      256 ends as ``[10, 20, 256]``, ``FINISHED_STOPPED``.
    - No token is taken from the stream after that: the stream may be endless, and a token
      pulled past the stop is a token streamed to a user who was already told "done".
    - A stream that runs dry first leaves the request ``RUNNING`` with what it got.
    """
    raise NotImplementedError(
        "run_until_stop: feed scripted tokens to a running request until it stops"
    )
