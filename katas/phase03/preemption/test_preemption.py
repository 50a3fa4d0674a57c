"""Spec for kata 03-04: your preemption runs the engine; pressure costs steps, never tokens."""

from __future__ import annotations

from collections import deque
from types import ModuleType
from typing import NamedTuple

import pytest

from katas.phase03.preemption.scaffold import BoundedKV, scheduler_with
from mini_vllm import KVCacheManager, LLMEngine, Request, RequestStatus, SamplingParams
from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.invariants import assert_same_outputs
from pytest_vllm_katas.live import vllm_twins
from pytest_vllm_katas.live.fixtures import require_vllm

pytestmark = pytest.mark.cpu_ok

PAIR = ["abcdefgh", "ijklmnop"]  # two 8-token prompts
FOUR = [*PAIR, "qrstuvwx", "yz012345"]
CRAMPED, ROOMY, BLOCK = 5, 256, 4  # 5 blocks = the null block + 4 usable = 16 KV slots

# 8 + 8 - 1 = 15 slots and 8 + 9 - 1 = 16 slots: each request fits the pool alone, two cannot.
FITTING = [
    pytest.param(8, id="8_new_tokens-15_of_16_slots"),
    pytest.param(9, id="9_new_tokens-exactly_16_slots"),
]


# -- one preemption, by hand ----------------------------------------------------------------------
#
# A request is built as the scheduler would leave it: `computed` tokens with KV in `kv`, then
# `outputs` sampled tokens appended (so it needs KV for one more token). Caching is off so that
# every block belongs to exactly one request.


def _pool(usable_blocks: int) -> KVCacheManager:
    return KVCacheManager(num_blocks=usable_blocks + 1, block_size=BLOCK, enable_caching=False)


def _admitted(kv: KVCacheManager, name: str, prompt_len: int, computed: int | None = None,
              outputs: int = 1) -> Request:
    computed = prompt_len if computed is None else computed
    request = Request(list(range(1, prompt_len + 1)),
                      SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True),
                      request_id=name)
    assert kv.allocate_slots(request, computed) is not None, f"test setup: {name} must fit"
    request.num_computed_tokens = computed
    request.status = RequestStatus.RUNNING
    for token in range(outputs):
        request.append_output_token(100 + token)
    return request


def _waiting(name: str) -> Request:
    return Request([1, 2, 3], request_id=name)


def _slots(kv: KVCacheManager, request: Request) -> int:
    return len(kv.get_block_ids(request.request_id)) * kv.block_size


def _ids(requests: object) -> list[str] | object:
    """Request ids for a message or a comparison; anything else is returned as it is."""
    if isinstance(requests, list | tuple | deque) and all(isinstance(r, Request) for r in requests):
        return [r.request_id for r in requests]
    return requests


def _allocate(impl: ModuleType, request: Request, n: int, running: list[Request],
              waiting: deque[Request], kv: KVCacheManager) -> list[str]:
    """Call the learner's allocate_or_preempt; the bounded view stops a loop that evicts nobody."""
    victims = impl.allocate_or_preempt(request, n, running, waiting,
                                       BoundedKV(kv, max_allocations=len(running) + 1))
    got = _ids(victims)
    assert isinstance(victims, list | tuple) and isinstance(got, list), (
        f"allocate_or_preempt returns the list of requests it preempted; got {victims!r}"
    )
    return got


def test_preempt_gives_back_every_block(impl) -> None:
    kv = _pool(6)
    a = _admitted(kv, "A", 8)
    b = _admitted(kv, "B", 8)
    free_before = kv.block_pool.get_num_free_blocks()
    impl.preempt(b, deque(), kv)
    held, free = kv.get_block_ids("B"), kv.block_pool.get_num_free_blocks()
    assert held == [] and free == free_before + 2, (
        f"a preempted request gives back all its blocks: B held 2, so the pool should go from "
        f"{free_before} to {free_before + 2} free blocks with none left for B; got {free} free, "
        f"B still holds {held}"
    )
    assert len(kv.get_block_ids(a.request_id)) == 2, "preempting B must not touch A's blocks"


def test_preempt_rewinds_the_counter_but_keeps_the_outputs(impl) -> None:
    kv = _pool(6)
    victim = _admitted(kv, "V", 8, outputs=3)
    outputs = list(victim.output_token_ids)
    impl.preempt(victim, deque(), kv)
    assert victim.num_computed_tokens == 0, (
        f"recompute preemption drops the KV, so no token is computed any more: "
        f"num_computed_tokens must be 0, got {victim.num_computed_tokens}"
    )
    assert victim.output_token_ids == outputs, (
        f"the tokens already sampled are kept (the re-admitted request prefills prompt + "
        f"outputs and continues): expected {outputs}, got {victim.output_token_ids}"
    )


def test_preempt_marks_and_counts_the_eviction(impl) -> None:
    kv = _pool(6)
    victim = _admitted(kv, "V", 8)
    victim.num_preemptions = 2
    impl.preempt(victim, deque(), kv)
    assert (victim.status, victim.num_preemptions) == (RequestStatus.PREEMPTED, 3), (
        f"a preempted request has status PREEMPTED and one more preemption on its count (2 -> "
        f"3); got status {victim.status.name}, num_preemptions {victim.num_preemptions}"
    )


def test_the_victim_goes_to_the_front_of_the_line(impl) -> None:
    kv = _pool(6)
    victim = _admitted(kv, "V", 8)
    waiting = deque([_waiting("W1"), _waiting("W2")])
    impl.preempt(victim, waiting, kv)
    assert _ids(waiting) == ["V", "W1", "W2"], (
        f"the victim was admitted before anyone still waiting, so it is re-admitted first: "
        f"waiting should be ['V', 'W1', 'W2'], got {_ids(waiting)}"
    )


# -- allocate, or evict until it fits -------------------------------------------------------------


def test_a_request_that_fits_evicts_nobody(impl) -> None:
    kv = _pool(5)  # A 2 + B 1 + C 1 blocks, one spare
    a, b, c = _admitted(kv, "A", 8), _admitted(kv, "B", 4), _admitted(kv, "C", 4)
    running, waiting = [a, b, c], deque([_waiting("W")])
    victims = _allocate(impl, a, 1, running, waiting, kv)
    assert victims == [] and _ids(running) == ["A", "B", "C"] and _ids(waiting) == ["W"], (
        f"A's 9th token needs a third block and one is free: nobody is evicted. Got victims "
        f"{victims}, running {_ids(running)}, waiting {_ids(waiting)}"
    )
    assert _slots(kv, a) >= 9, f"A must now hold slots for 9 tokens, holds {_slots(kv, a)}"


def test_the_victim_is_the_last_admission(impl) -> None:
    kv = _pool(4)  # A 2 + B 1 + C 1 blocks: full
    a, b, c = _admitted(kv, "A", 8), _admitted(kv, "B", 4), _admitted(kv, "C", 4)
    running, waiting = [a, b, c], deque([_waiting("W")])
    victims = _allocate(impl, a, 1, running, waiting, kv)
    assert victims == ["C"], (
        f"the pool is full and A needs one block: evict the most recent admission, C (the end "
        f"of running), whose block is enough; got victims {victims}"
    )
    assert _ids(running) == ["A", "B"] and _ids(waiting) == ["C", "W"], (
        f"C leaves running and waits first in line: expected running ['A', 'B'] and waiting "
        f"['C', 'W'], got {_ids(running)} and {_ids(waiting)}"
    )
    assert _slots(kv, a) >= 9 and kv.get_block_ids("C") == [], (
        f"after the eviction A holds its new block and C holds none: A has {_slots(kv, a)} "
        f"slots (needs 9), C holds blocks {kv.get_block_ids('C')}"
    )


def test_evictions_continue_until_the_request_fits(impl) -> None:
    kv = _pool(3)  # A 1 (4 of its 12 prompt tokens computed) + B 1 + C 1 blocks: full
    a = _admitted(kv, "A", 12, computed=4, outputs=0)
    b, c = _admitted(kv, "B", 4), _admitted(kv, "C", 4)
    running, waiting = [a, b, c], deque([_waiting("W")])
    victims = _allocate(impl, a, 8, running, waiting, kv)
    assert victims == ["C", "B"], (
        f"A's next chunk of 8 tokens needs two more blocks; C's one block is not enough, so B "
        f"goes too, latest admission first: expected victims ['C', 'B'], got {victims}"
    )
    assert _ids(running) == ["A"] and _ids(waiting) == ["B", "C", "W"], (
        f"each victim goes to the front of waiting, so the earlier admission ends up first: "
        f"expected running ['A'], waiting ['B', 'C', 'W']; got {_ids(running)}, "
        f"{_ids(waiting)}"
    )
    assert _slots(kv, a) >= 12, f"A must hold slots for 12 tokens, holds {_slots(kv, a)}"


def test_the_last_admission_evicts_itself_not_its_elders(impl) -> None:
    kv = _pool(4)  # A 2 + B 2 blocks: full
    a, b = _admitted(kv, "A", 8), _admitted(kv, "B", 8)
    running, waiting = [a, b], deque()
    victims = _allocate(impl, b, 1, running, waiting, kv)
    assert victims == ["B"], (
        f"B needs a block and is itself the most recent admission: it is the victim, and A, "
        f"admitted earlier (and already scheduled this step), is left alone; got victims "
        f"{victims}"
    )
    assert _ids(running) == ["A"] and len(kv.get_block_ids("A")) == 2, (
        f"A keeps its place and its 2 blocks; got running {_ids(running)}, A's blocks "
        f"{kv.get_block_ids('A')}"
    )
    assert kv.get_block_ids("B") == [] and _ids(waiting) == ["B"], (
        f"B gave up for this step: no blocks, first in line; got blocks "
        f"{kv.get_block_ids('B')}, waiting {_ids(waiting)}"
    )


def test_eviction_stops_once_the_requester_is_the_victim(impl) -> None:
    kv = _pool(3)  # A 1 + B 1 (4 of its 12 prompt tokens computed) + C 1 blocks: full
    a = _admitted(kv, "A", 4)
    b = _admitted(kv, "B", 12, computed=4, outputs=0)
    c = _admitted(kv, "C", 4)
    running, waiting = [a, b, c], deque()
    victims = _allocate(impl, b, 8, running, waiting, kv)
    assert victims == ["C", "B"], (
        f"B needs two more blocks: evicting C frees one, the next latest admission is B itself, "
        f"and there it stops; expected victims ['C', 'B'], got {victims}"
    )
    assert kv.get_block_ids("B") == [] and _ids(waiting) == ["B", "C"], (
        f"a requester that evicted itself holds no blocks and does not retry this step; got B's "
        f"blocks {kv.get_block_ids('B')}, waiting {_ids(waiting)}"
    )
    assert _ids(running) == ["A"] and len(kv.get_block_ids("A")) == 1, (
        f"A, ahead of B, is never a victim; got running {_ids(running)}, A's blocks "
        f"{kv.get_block_ids('A')}"
    )


# -- the whole engine on your preemption ----------------------------------------------------------


class Trace(NamedTuple):
    outputs: dict[str, list[int]]
    preemptions: dict[str, int]  # request id -> num_preemptions when it finished
    events: list[list[str]]  # per step: that step's preempted_req_ids


MAX_TEST_STEPS = 200  # every workload here finishes in under 40 steps


def _trace(prompts: list[str], num_blocks: int, block_size: int, max_tokens: int,
           scheduler_cls: type | None = None, **engine_kwargs: int) -> Trace:
    engine = LLMEngine(num_blocks=num_blocks, block_size=block_size,
                       scheduler_cls=scheduler_cls, **engine_kwargs)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    for i, prompt in enumerate(prompts):
        engine.add_request(prompt, params, request_id=f"r{i}")
    events: list[list[str]] = []
    schedule = engine.scheduler.schedule

    def probe():  # noqa: ANN202
        out = schedule()
        events.append(list(out.preempted_req_ids))
        return out

    engine.scheduler.schedule = probe
    outputs, preemptions = {}, {}
    for _ in range(MAX_TEST_STEPS):
        if not engine.has_unfinished_requests():
            break
        for request in engine.step():
            outputs[request.request_id] = list(request.output_token_ids)
            preemptions[request.request_id] = request.num_preemptions
    else:
        pytest.fail(f"the engine did not finish {len(prompts)} requests in {MAX_TEST_STEPS} "
                    f"steps; evictions so far, per step: {events}")
    return Trace(outputs, preemptions, events)


ENGINE_WORKLOADS = [
    pytest.param(PAIR, 5, 4, 8, {}, id="pair-5_blocks-one_eviction"),
    pytest.param(PAIR, 5, 4, 9, {}, id="pair-5_blocks-exactly_full"),
    pytest.param(FOUR, 6, 4, 8, {}, id="four-6_blocks-three_evictions"),
    pytest.param(FOUR, 9, 4, 8, {}, id="four-9_blocks"),
    pytest.param(["ccc", "be", "eh"], 7, 2, 6, {}, id="evicted_twice"),
    pytest.param(["a" * 16, "bc", "de", "fg"], 6, 4, 3, dict(long_prefill_token_threshold=8),
                 id="chunked_prefill-two_victims_in_one_step"),
    pytest.param(["a" * 12, "bc", "de", "fg"], 6, 4, 4, dict(long_prefill_token_threshold=4),
                 id="chunked_prefill-requester_evicts_another_then_itself"),
]


@pytest.mark.parametrize(("prompts", "num_blocks", "block_size", "max_tokens", "engine_kwargs"),
                         ENGINE_WORKLOADS)
def test_your_preemption_runs_the_engine_exactly_like_stock(
    impl, prompts: list[str], num_blocks: int, block_size: int, max_tokens: int,
    engine_kwargs: dict[str, int],
) -> None:
    mine = _trace(prompts, num_blocks, block_size, max_tokens,
                  scheduler_with(impl.allocate_or_preempt), **engine_kwargs)
    stock = _trace(prompts, num_blocks, block_size, max_tokens, **engine_kwargs)
    assert any(stock.events), "test setup: this workload must preempt in the stock engine"
    for step, (want, got) in enumerate(zip(stock.events, mine.events, strict=False), 1):
        assert got == want, (
            f"step {step}: mini_vllm's scheduler preempts {want} here, yours preempted {got}. "
            f"All steps, stock: {stock.events}; yours: {mine.events}"
        )
    assert len(mine.events) == len(stock.events), (
        f"the stock engine finishes in {len(stock.events)} steps, yours took "
        f"{len(mine.events)}; evictions per step, stock: {stock.events}, yours: {mine.events}"
    )
    assert_same_outputs(stock.outputs, mine.outputs, labels=("stock engine", "your preemption"))
    assert mine.preemptions == stock.preemptions, (
        f"num_preemptions per request: stock {stock.preemptions}, yours {mine.preemptions}"
    )


@pytest.mark.live
def test_your_preemption_agrees_with_vllms_scheduler(impl) -> None:
    # Random cramped workloads (at least three early requests, a pool at most one block above
    # the largest request's need; prefix families, duplicates, EOS, aborts, chunked prefill)
    # through mini_vllm running on your preemption with policy "vllm-0.32", and through vLLM
    # 0.32's own Scheduler: preemptions in order, rows, admissions, queues, ref counts and block
    # tables compared every step.
    require_vllm()  # skips, with the install command, where vLLM cannot run
    vllm_twins.assert_scheduler_agrees_with_vllm(
        vllm_twins.workloads(cramped=True), scheduler_with(impl.allocate_or_preempt),
        what="mini_vllm on your preemption")


# -- the experiment: a cramped pool against a roomy one -------------------------------------------


def _run(impl: ModuleType, prompts: list[str], num_blocks: int, block_size: int,
         max_tokens: int):  # noqa: ANN202
    result = impl.run(prompts, num_blocks, block_size, max_tokens)
    fields = ("request_ids", "outputs", "preempted", "num_steps")
    missing = [f for f in fields if not hasattr(result, f)]
    assert not missing, f"run returns a PreemptionRun{fields}; got {result!r}"
    assert len(result.request_ids) == len(result.outputs) == len(prompts), (
        f"one request id and one output per prompt ({len(prompts)}), in prompt order; got "
        f"{len(result.request_ids)} ids and {len(result.outputs)} outputs"
    )
    return result


@pytest.mark.parametrize("max_tokens", FITTING)
def test_cramped_pool_matches_roomy_pool(impl, max_tokens: int) -> None:
    cramped = _run(impl, PAIR, CRAMPED, BLOCK, max_tokens)
    roomy = _run(impl, PAIR, ROOMY, BLOCK, max_tokens)
    lengths = [len(o) for o in cramped.outputs]
    assert lengths == [max_tokens, max_tokens], (
        f"every request must run to its full max_tokens={max_tokens} (greedy, ignore_eos) even "
        f"in the cramped pool; got output lengths {lengths}"
    )
    assert_same_outputs(roomy.outputs, cramped.outputs, labels=("roomy", "cramped"))


@pytest.mark.parametrize("max_tokens", FITTING)
def test_preemption_actually_happens_under_pressure(impl, max_tokens: int) -> None:
    cramped = _run(impl, PAIR, CRAMPED, BLOCK, max_tokens)
    roomy = _run(impl, PAIR, ROOMY, BLOCK, max_tokens)
    assert cramped.preempted, (
        "two 8-token prompts fill the 4 usable blocks at admission, so the first decode that "
        "needs a third block must preempt; no preempted_req_ids were recorded (is every step's "
        "SchedulerOutput.preempted_req_ids collected?)"
    )
    assert roomy.preempted == [], f"256 blocks never run dry, yet recorded {roomy.preempted}"


def test_the_victim_is_the_most_recent_admission(impl) -> None:
    result = _run(impl, PAIR, CRAMPED, BLOCK, 8)
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
    cramped = _run(impl, PAIR, CRAMPED, BLOCK, max_tokens)
    roomy = _run(impl, PAIR, ROOMY, BLOCK, max_tokens)
    assert (roomy.num_steps, cramped.num_steps) == (roomy_steps, cramped_steps), (
        f"roomy: both requests decode side by side, {max_tokens} steps. Cramped: step 1 prefills "
        f"both, the survivor then runs alone to its end, and the victim re-prefills (sampling its "
        f"next token in that same step) and finishes: {cramped_steps} steps. Got roomy "
        f"{roomy.num_steps}, cramped {cramped.num_steps}"
    )


@pytest.mark.parametrize(
    ("max_tokens", "slots"),
    [
        pytest.param(20, 27, id="the_course_setup-27_slots"),
        pytest.param(10, 17, id="one_slot_too_many-17_slots"),
    ],
)
def test_a_request_that_can_never_fit_is_refused(impl, max_tokens: int, slots: int) -> None:
    with expect_raises(
        ValueError,
        f"an 8-token prompt with max_tokens={max_tokens} needs 8 + {max_tokens} - 1 = {slots} KV "
        f"slots alone, more than the pool's 16: add_request refuses it, and run must let that "
        f"error through (retrying would evict it forever)",
    ):
        impl.run(PAIR, CRAMPED, BLOCK, max_tokens)


def test_every_pool_size_gives_the_same_tokens(impl) -> None:
    roomy = _run(impl, FOUR, ROOMY, BLOCK, 8)
    assert roomy.num_steps == 8 and roomy.preempted == [], (
        f"four requests in 256 blocks decode side by side: 8 steps, no eviction; got "
        f"{roomy.num_steps} steps, evictions {roomy.preempted}"
    )
    victims: dict[int, list[int]] = {}
    for num_blocks in range(5, 18):
        result = _run(impl, FOUR, num_blocks, BLOCK, 8)
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


def test_a_request_can_be_evicted_more_than_once(impl) -> None:
    # 6 usable blocks of 2 slots; three short requests needing 4 blocks each by the end.
    prompts = ["ccc", "be", "eh"]
    result = _run(impl, prompts, 7, 2, 6)
    roomy = _run(impl, prompts, ROOMY, 2, 6)
    first, second, third = result.request_ids
    assert result.preempted == [third, second, third], (
        f"expected evictions [{third}, {second}, {third}]: the latest admission goes first, is "
        f"re-admitted, and goes again. Record every step's preempted_req_ids, repeats included; "
        f"got {result.preempted}"
    )
    assert_same_outputs(roomy.outputs, result.outputs, labels=("roomy", "evicted twice"))


def test_requests_ignore_eos_and_run_to_max_tokens(impl) -> None:
    # Greedy "hello" samples EOS (256) as its 7th token; the experiment needs exact lengths.
    (output,) = _run(impl, ["hello"], ROOMY, BLOCK, 8).outputs
    assert len(output) == 8 and output[6] == 256, (
        f"with ignore_eos=True the request runs through its EOS to all 8 tokens; got {output}"
    )
