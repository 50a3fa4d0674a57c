"""Spec for kata 01-05: EOS before length, EOS counted, and the status a client finally sees."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from mini_vllm import (
    EOS_TOKEN_ID,
    LLMEngine,
    Request,
    RequestStatus,
    SamplingParams,
    ToyModel,
)
from pytest_vllm_katas.invariants import assert_same_outputs

pytestmark = pytest.mark.cpu_ok

EOS = EOS_TOKEN_ID  # 256 in mini_vllm's byte tokenizer
LLAMA_EOS = 2
MINI_REASONS = {"FINISHED_STOPPED": "stop", "FINISHED_LENGTH": "length"}


def params(max_tokens: int, ignore_eos: bool = False) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=ignore_eos)


# A stream never yields more than this many tokens past the point where the request must stop:
# a run_until_stop that keeps pulling fails after a few extra tokens instead of looping forever.
EXTRA_TOKENS = 8


def _kept_going(tokens: Sequence[int], extra: int) -> AssertionError:
    return AssertionError(
        f"the stream kept going after the stop condition: did you forget to stop (or stop one "
        f"token late)? The request had to stop after {list(tokens)}, yet {extra} more token(s) "
        f"were asked for; take no token once check_stop has returned True"
    )


def scripted(tokens: Sequence[int]) -> Iterator[int]:
    """Yield ``tokens``, then refuse: every script ends where the request must stop, so asking
    for one more token means a stop was missed (or checked too late)."""
    yield from tokens
    raise _kept_going(tokens, 1)


def endless(must_stop_after: int) -> Iterator[int]:
    """Ordinary tokens (never 256 or 2): only the length cap can end this stream, after
    ``must_stop_after`` of them. A few extra are handed out so that an off-by-one shows up as a
    wrong count; then the stream fails instead of running forever."""
    tokens = list(itertools.islice(itertools.cycle([10, 20, 30, 40, 50]),
                                   must_stop_after + EXTRA_TOKENS))
    yield from tokens
    raise _kept_going(tokens[:must_stop_after], EXTRA_TOKENS + 1)


def _refuse_maybe_finish(self: Request) -> bool:
    raise AssertionError(
        "check_stop called Request.maybe_finish: write the EOS and length checks yourself"
    )


@pytest.fixture
def own_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_stop is the thing being rebuilt: calling mini_vllm's version instead is refused."""
    monkeypatch.setattr(Request, "maybe_finish", _refuse_maybe_finish)


def _running(
    outputs: Sequence[int],
    max_tokens: int,
    *,
    ignore_eos: bool = False,
    prompt: Sequence[int] = (1, 2, 3),
    eos: int = EOS,
) -> Request:
    request = Request(prompt, params(max_tokens, ignore_eos), eos_token_id=eos)
    request.status = RequestStatus.RUNNING
    for token in outputs:
        request.append_output_token(token)
    return request


def _run(impl, *args, **kwargs) -> Request:  # type: ignore[no-untyped-def]
    """``impl.run_until_stop(*args, **kwargs)``, checked to be the Request it must return."""
    request = impl.run_until_stop(*args, **kwargs)
    assert isinstance(request, Request), (
        f"run_until_stop must return the mini_vllm Request it built (the tests read its "
        f"output_token_ids and status), got {type(request).__name__}: {request!r}"
    )
    return request


# --- run_until_stop: the four ways a scripted stream can end ----------------------------------


@pytest.mark.usefixtures("own_checks")
def test_eos_stops_generation_and_counts_as_an_output(impl) -> None:
    request = _run(impl, scripted([10, 20, EOS]), EOS, params(16))
    got = (request.output_token_ids, request.status.name, impl.finish_reason(request))
    assert got == ([10, 20, EOS], "FINISHED_STOPPED", "stop"), (
        f"the stream [10, 20, EOS, ...] must stop at the EOS, which stays in the output (3 "
        f"tokens spent): expected ([10, 20, 256], 'FINISHED_STOPPED', 'stop'), got {got}"
    )


@pytest.mark.usefixtures("own_checks")
@pytest.mark.parametrize("max_tokens", [1, 5, 16])
def test_no_eos_hits_the_length_cap_exactly(impl, max_tokens: int) -> None:
    request = _run(impl, endless(max_tokens), EOS, params(max_tokens))
    got = (request.num_output_tokens, request.status.name, impl.finish_reason(request))
    assert got == (max_tokens, "FINISHED_LENGTH", "length"), (
        f"without an EOS the cap fires at exactly max_tokens = {max_tokens} outputs, not one "
        f"more or less: expected ({max_tokens}, 'FINISHED_LENGTH', 'length'), got {got}"
    )


@pytest.mark.usefixtures("own_checks")
def test_ignore_eos_runs_to_the_length_cap(impl) -> None:
    request = _run(impl, scripted([10, EOS, 30, EOS]), EOS, params(4, ignore_eos=True))
    got = (request.output_token_ids, request.status.name, impl.finish_reason(request))
    assert got == ([10, EOS, 30, EOS], "FINISHED_LENGTH", "length"), (
        f"ignore_eos switches off the EOS check only: the EOS tokens are ordinary outputs and "
        f"the cap of 4 still ends the run; expected ([10, 256, 30, 256], 'FINISHED_LENGTH', "
        f"'length'), got {got}"
    )


@pytest.mark.usefixtures("own_checks")
@pytest.mark.parametrize("max_tokens", [1, 3])
def test_eos_on_the_boundary_reports_stop(impl, max_tokens: int) -> None:
    tokens = [10, 20][: max_tokens - 1] + [EOS]
    request = _run(impl, scripted(tokens), EOS, params(max_tokens))
    got = (request.status.name, impl.finish_reason(request))
    assert got == ("FINISHED_STOPPED", "stop"), (
        f"the EOS is the max_tokens-th token ({tokens}, max_tokens={max_tokens}): both checks "
        f"fire, and EOS is checked first, so the answer is complete: expected "
        f"('FINISHED_STOPPED', 'stop'), got {got}"
    )


@pytest.mark.usefixtures("own_checks")
def test_a_stream_that_runs_dry_leaves_the_request_unfinished(impl) -> None:
    request = _run(impl, iter([10, 20]), EOS, params(5))
    got = (request.output_token_ids, request.status.name, impl.finish_reason(request))
    assert got == ([10, 20], "RUNNING", None), (
        f"two ordinary tokens of a 5-token budget end nothing: the request is still RUNNING "
        f"with no finish reason; expected ([10, 20], 'RUNNING', None), got {got}"
    )


@pytest.mark.usefixtures("own_checks")
def test_max_tokens_counts_outputs_not_the_prompt(impl) -> None:
    prompt = list(range(1, 11))
    request = _run(impl, endless(3), EOS, params(3), prompt_token_ids=prompt)
    got = (request.prompt_token_ids, request.num_output_tokens, request.status.name)
    assert got == (prompt, 3, "FINISHED_LENGTH"), (
        f"a 10-token prompt with max_tokens=3 generates 3 tokens (compare num_output_tokens, not "
        f"num_tokens); expected ({prompt}, 3, 'FINISHED_LENGTH'), got {got}"
    )


@pytest.mark.usefixtures("own_checks")
def test_eos_at_the_end_of_the_prompt_stops_nothing(impl) -> None:
    request = _running([], 3, prompt=(1, EOS))
    fired = impl.check_stop(request)
    assert (fired, request.status.name) == (False, "RUNNING"), (
        f"only an EOS the model *generated* ends a request; a prompt ending in 256 with no "
        f"output yet must not stop: expected (False, 'RUNNING'), got "
        f"({fired}, {request.status.name!r}) (look at output_token_ids, not all_token_ids)"
    )


@pytest.mark.usefixtures("own_checks")
def test_the_requests_own_eos_id_is_the_stop_token(impl) -> None:
    llama = _run(impl, scripted([5, LLAMA_EOS]), LLAMA_EOS, params(8))
    assert (llama.output_token_ids, llama.status.name) == ([5, LLAMA_EOS], "FINISHED_STOPPED"), (
        f"with eos_token_id=2 (Llama's) the stream [5, 2, ...] stops at the 2; got "
        f"({llama.output_token_ids}, {llama.status.name})"
    )
    plain = _run(impl, scripted([EOS, 3]), LLAMA_EOS, params(2))
    assert (plain.output_token_ids, plain.status.name) == ([EOS, 3], "FINISHED_LENGTH"), (
        f"with eos_token_id=2, token 256 is an ordinary token: [256, 3] runs to the cap of 2; "
        f"got ({plain.output_token_ids}, {plain.status.name})"
    )


# --- check_stop on its own ----------------------------------------------------------------------


@pytest.mark.usefixtures("own_checks")
@pytest.mark.parametrize(
    ("outputs", "max_tokens", "ignore_eos", "expected"),
    [
        pytest.param([], 3, False, (False, "RUNNING"), id="no_output_yet"),
        pytest.param([10], 3, False, (False, "RUNNING"), id="ordinary_token_below_cap"),
        pytest.param([10, EOS], 3, False, (True, "FINISHED_STOPPED"), id="eos_below_cap"),
        pytest.param([10, EOS], 3, True, (False, "RUNNING"), id="ignored_eos_below_cap"),
        pytest.param([10, 20, 30], 3, False, (True, "FINISHED_LENGTH"), id="ordinary_token_at_cap"),
        pytest.param([10, 20, EOS], 3, False, (True, "FINISHED_STOPPED"), id="eos_at_cap"),
        pytest.param([10, 20, EOS], 3, True, (True, "FINISHED_LENGTH"), id="ignored_eos_at_cap"),
        pytest.param([EOS, 20], 3, False, (False, "RUNNING"), id="eos_earlier_not_last"),
    ],
)
def test_check_stop_decides_and_sets_the_status(
    impl, outputs: list[int], max_tokens: int, ignore_eos: bool, expected: tuple[bool, str]
) -> None:
    request = _running(outputs, max_tokens, ignore_eos=ignore_eos)
    fired = impl.check_stop(request)
    got = (fired, request.status.name)
    assert got == expected, (
        f"outputs {outputs}, max_tokens={max_tokens}, ignore_eos={ignore_eos}: check_stop "
        f"should return and set {expected}, got {got}"
    )


# --- finish_reason ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        pytest.param(RequestStatus.WAITING, None, id="waiting-none"),
        pytest.param(RequestStatus.RUNNING, None, id="running-none"),
        pytest.param(RequestStatus.PREEMPTED, None, id="preempted-none"),
        pytest.param(RequestStatus.FINISHED_STOPPED, "stop", id="stopped-stop"),
        pytest.param(RequestStatus.FINISHED_LENGTH, "length", id="length-length"),
        pytest.param(RequestStatus.FINISHED_ABORTED, "abort", id="aborted-abort"),
    ],
)
def test_finish_reason_maps_every_status(impl, status: RequestStatus, reason: str | None) -> None:
    request = Request([1, 2, 3], params(4))
    request.status = status
    got = impl.finish_reason(request)
    assert got == reason, (
        f"a {status.name} request's finish_reason is {reason!r} (unfinished requests have none "
        f"until their final chunk); got {got!r}"
    )


def test_engine_reports_length_with_ignore_eos(impl) -> None:
    prompts = ["hello", "goodbye", "hello world"]
    sampling = [params(m, ignore_eos=True) for m in (3, 5, 1)]
    engine = LLMEngine()
    ids = [engine.add_request(prompt, sp) for prompt, sp in zip(prompts, sampling, strict=True)]
    finished: dict[str, Request] = {}
    while engine.has_unfinished_requests():
        finished.update((r.request_id, r) for r in engine.step())
    reasons = [impl.finish_reason(finished[rid]) for rid in ids]
    reported = [o.finish_reason for o in LLMEngine().generate(prompts, sampling)]
    assert reasons == reported == ["length"] * 3, (
        f"every ignore_eos run ends at its cap, and your mapping must agree with the engine's "
        f"RequestOutput.finish_reason ({reported}); got {reasons}"
    )


def test_an_aborted_request_reports_abort(impl) -> None:
    engine = LLMEngine()
    request = engine.abort_request(engine.add_request("hello", params(4)))
    got = impl.finish_reason(request)
    assert got == "abort", f"LLMEngine.abort_request ends a request FINISHED_ABORTED: got {got!r}"


# --- your stop check drives the engine ----------------------------------------------------------


class EosProneModel:
    """ToyModel, except that greedy decoding picks EOS at every position p with p % 5 == 3."""

    def __init__(self) -> None:
        self.inner = ToyModel(seed=0)

    def forward(self, last_tokens: Sequence[int], positions: Sequence[int]) -> np.ndarray:
        logits = self.inner.forward(last_tokens, positions)
        logits[np.asarray(positions) % 5 == 3, EOS] = 100.0
        return logits


# (prompt, sampling params, finish reason): an EOS mid-run, an EOS exactly at the cap, the cap
# one token before that EOS, an ignored EOS, a seeded non-greedy run, an EOS as first token.
ENGINE_CASES = [
    ("hello", params(5), "stop"),  # outputs come from positions 4..8: EOS is the 5th, at the cap
    ("hello", params(4), "length"),
    ("goodbye", params(6, ignore_eos=True), "length"),
    ("hello world", params(8), "stop"),
    ("abc", SamplingParams(max_tokens=9, temperature=0.7, seed=1), "stop"),
    ("S" * 9, params(3), "stop"),
]


MAX_ENGINE_STEPS = 60  # the longest case needs 9 steps


def _run_engine(engine: LLMEngine) -> list[Request]:
    """Every ENGINE_CASES request added to ``engine``, stepped to completion (at most
    MAX_ENGINE_STEPS steps: a stop check that never fires must fail, not run forever)."""
    requests = [
        engine.get_request(engine.add_request(prompt, sp)) for prompt, sp, _ in ENGINE_CASES
    ]
    for _ in range(MAX_ENGINE_STEPS):
        if not engine.has_unfinished_requests():
            return requests
        engine.step()
    stuck = [(i, r.num_output_tokens, r.status.name) for i, r in enumerate(requests)
             if r in engine.scheduler.running or r in engine.scheduler.waiting]
    raise AssertionError(
        f"the engine still had requests after {MAX_ENGINE_STEPS} steps (prompt #, outputs, "
        f"status): {stuck}; check_stop must return True when it finishes a request (the engine "
        f"reaps a request only then)"
    )


def test_your_stop_check_drives_the_engine(impl, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _run_engine(LLMEngine(model=EosProneModel()))
    # The engine's own stop check is swapped for yours through its injection point; the stock
    # rule is refused meanwhile, so yours cannot simply delegate to it.
    with monkeypatch.context() as patch:
        patch.setattr(Request, "maybe_finish", _refuse_maybe_finish)
        got = _run_engine(LLMEngine(model=EosProneModel(), check_stop=impl.check_stop))

    assert_same_outputs(
        [r.output_token_ids for r in expected],
        [r.output_token_ids for r in got],
        labels=("engine", "yours"),
    )
    statuses = [r.status.name for r in got]
    assert statuses == [r.status.name for r in expected], (
        f"final statuses should be {[r.status.name for r in expected]}, got {statuses}"
    )
    # The run really exercised every path: EOS stops, caps, a tie at the cap, an ignored EOS.
    assert [MINI_REASONS[s] for s in statuses] == [r for _, _, r in ENGINE_CASES], (
        f"unexpected engine statuses {statuses}"
    )
    assert (len(got[0].output_token_ids), got[0].output_token_ids[-1]) == (5, EOS), (
        f"prompt #0 should end on an EOS that is also its 5th (= max_tokens) token, got "
        f"{got[0].output_token_ids}"
    )
    assert EOS in got[2].output_token_ids[:-1], (
        f"prompt #2 ignores EOS: an EOS must appear mid-output, got {got[2].output_token_ids}"
    )
