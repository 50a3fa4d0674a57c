"""Reference for kata 01-05 — the stop check, the finish reason, and a scripted update stage."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mini_vllm import Request, RequestStatus, SamplingParams

_FINISH_REASONS = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH: "length",
    RequestStatus.FINISHED_ABORTED: "abort",
}


def check_stop(request: Request) -> bool:
    """Decide whether the token just appended to ``request`` ends it; set its status if so."""
    params = request.sampling_params
    outputs = request.output_token_ids
    # EOS first: when the EOS lands exactly on the max_tokens-th token the answer is complete,
    # and "stop" says so; "length" would tell the client it was cut off.
    if not params.ignore_eos and outputs and outputs[-1] == request.eos_token_id:
        request.status = RequestStatus.FINISHED_STOPPED
        return True
    # max_tokens bounds the output (EOS included); the prompt has its own limit upstream.
    if request.num_output_tokens >= params.max_tokens:
        request.status = RequestStatus.FINISHED_LENGTH
        return True
    return False


def finish_reason(request: Request) -> str | None:
    """The API's ``finish_reason`` for ``request``: what a client is told about how it ended."""
    # Unfinished (WAITING, RUNNING, PREEMPTED) has no reason yet: a stream carries one only on
    # its final chunk.
    return _FINISH_REASONS.get(request.status)


def run_until_stop(
    token_stream: Iterable[int],
    eos_token_id: int,
    sampling_params: SamplingParams,
    *,
    prompt_token_ids: Sequence[int] = (0,),
) -> Request:
    """Replay the engine's update stage with scripted tokens; return the request at the end."""
    request = Request(prompt_token_ids, sampling_params, eos_token_id=eos_token_id)
    request.status = RequestStatus.RUNNING
    for token in token_stream:  # lazily: the loop ends before asking for a token past the stop
        request.append_output_token(token)
        if check_stop(request):
            break
    return request
