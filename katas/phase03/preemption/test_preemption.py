"""Spec for kata 03-04: memory pressure costs steps, never tokens — and it really happens."""

from __future__ import annotations

import pytest

from pytest_vllm_katas.invariants import assert_same_outputs

pytestmark = pytest.mark.cpu_ok

PAIR = ["abcdefgh", "ijklmnop"]  # two 8-token prompts
FOUR = [*PAIR, "qrstuvwx", "yz012345"]
CRAMPED, ROOMY, BLOCK = 5, 256, 4  # 5 blocks = the null block + 4 usable = 16 KV slots

# 8 + 8 - 1 = 15 slots and 8 + 9 - 1 = 16 slots: each request fits the pool alone, two cannot.
FITTING = [
    pytest.param(8, id="8_new_tokens-15_of_16_slots"),
    pytest.param(9, id="9_new_tokens-exactly_16_slots"),
]


@pytest.mark.parametrize("max_tokens", FITTING)
def test_cramped_pool_matches_roomy_pool(impl, max_tokens: int) -> None:
    cramped = impl.run(PAIR, CRAMPED, BLOCK, max_tokens)
    roomy = impl.run(PAIR, ROOMY, BLOCK, max_tokens)
    lengths = [len(o) for o in cramped.outputs]
    assert lengths == [max_tokens, max_tokens], (
        f"every request must run to its full max_tokens={max_tokens} (greedy, ignore_eos) even "
        f"in the cramped pool; got output lengths {lengths}"
    )
    assert_same_outputs(roomy.outputs, cramped.outputs, labels=("roomy", "cramped"))


@pytest.mark.parametrize("max_tokens", FITTING)
def test_preemption_actually_happens_under_pressure(impl, max_tokens: int) -> None:
    cramped = impl.run(PAIR, CRAMPED, BLOCK, max_tokens)
    roomy = impl.run(PAIR, ROOMY, BLOCK, max_tokens)
    assert cramped.preempted, (
        "two 8-token prompts fill the 4 usable blocks at admission, so the first decode that "
        "needs a third block must preempt; no preempted_req_ids were recorded (is the probe "
        "collecting every step's out.preempted_req_ids?)"
    )
    assert roomy.preempted == [], f"256 blocks never run dry, yet recorded {roomy.preempted}"


def test_the_victim_is_the_most_recent_admission(impl) -> None:
    result = impl.run(PAIR, CRAMPED, BLOCK, 8)
    first, second = result.request_ids
    assert result.preempted == [second], (
        f"FCFS evicts the last admission ({second}), once; the first ({first}) then runs to the "
        f"end and its freed blocks let the victim back in. Recorded evictions: {result.preempted}"
    )


@pytest.mark.parametrize(
    ("max_tokens", "roomy_steps", "cramped_steps"),
    [pytest.param(8, 8, 15, id="8_new_tokens"), pytest.param(9, 9, 17, id="9_new_tokens")],
)
def test_preemption_costs_steps_never_tokens(
    impl, max_tokens: int, roomy_steps: int, cramped_steps: int
) -> None:
    cramped = impl.run(PAIR, CRAMPED, BLOCK, max_tokens)
    roomy = impl.run(PAIR, ROOMY, BLOCK, max_tokens)
    assert (roomy.num_steps, cramped.num_steps) == (roomy_steps, cramped_steps), (
        f"roomy: both requests decode side by side, {max_tokens} steps. Cramped: step 1 prefills "
        f"both, the survivor then runs alone to its end, and the victim re-prefills (sampling its "
        f"next token in that same step) and finishes: {cramped_steps} steps. Got roomy "
        f"{roomy.num_steps}, cramped {cramped.num_steps}"
    )


@pytest.mark.parametrize(
    "max_tokens",
    [
        pytest.param(20, id="the_course_setup-27_slots"),
        pytest.param(10, id="one_slot_too_many-17_slots"),
    ],
)
def test_a_request_that_can_never_fit_is_refused(impl, max_tokens: int) -> None:
    with pytest.raises(ValueError):
        impl.run(PAIR, CRAMPED, BLOCK, max_tokens)


def test_every_pool_size_gives_the_same_tokens(impl) -> None:
    roomy = impl.run(FOUR, ROOMY, BLOCK, 8)
    victims: dict[int, list[int]] = {}
    for num_blocks in range(5, 18):
        result = impl.run(FOUR, num_blocks, BLOCK, 8)
        assert_same_outputs(roomy.outputs, result.outputs, labels=("roomy", f"{num_blocks} blocks"))
        strangers = set(result.preempted) - set(result.request_ids)
        assert not strangers, f"recorded evictions of requests not in this run: {strangers}"
        victims[num_blocks] = [result.request_ids.index(rid) for rid in result.preempted]
    assert victims[16] and not victims[17], (
        f"four requests needing 4 blocks each all fit at once from 1 + 16 = 17 blocks, and not "
        f"before; victims (by prompt index) per pool size: {victims}"
    )
    assert victims[6] == [1, 2, 3], (
        f"in 6 blocks, requests 1, 2 and 3 are each evicted once, in that order; got {victims[6]}"
    )
    assert roomy.num_steps == 8 and roomy.preempted == []


def test_a_request_can_be_evicted_more_than_once(impl) -> None:
    # 6 usable blocks of 2 slots; three short requests needing 4 blocks each by the end.
    prompts = ["ccc", "be", "eh"]
    result = impl.run(prompts, 7, 2, 6)
    roomy = impl.run(prompts, ROOMY, 2, 6)
    first, second, third = result.request_ids
    assert result.preempted == [third, second, third], (
        f"expected evictions [{third}, {second}, {third}]: the latest admission goes first, is "
        f"re-admitted, and goes again. Record every step's preempted_req_ids, repeats included; "
        f"got {result.preempted}"
    )
    assert_same_outputs(roomy.outputs, result.outputs, labels=("roomy", "evicted twice"))


def test_requests_ignore_eos_and_run_to_max_tokens(impl) -> None:
    # Greedy "hello" samples EOS (256) as its 7th token; the experiment needs exact lengths.
    (output,) = impl.run(["hello"], ROOMY, BLOCK, 8).outputs
    assert len(output) == 8 and output[6] == 256, (
        f"with ignore_eos=True the request runs through its EOS to all 8 tokens; got {output}"
    )
