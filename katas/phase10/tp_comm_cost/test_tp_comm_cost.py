"""Spec for kata 10-03: the all-reduce bill of tensor parallelism, priced from four numbers.

The course's model: an 8B Llama (hidden 4096, 32 layers, bf16), an 8 ms decode step, a
2,048-token prefill chunk, NVLink hops of 3 us and Ethernet round trips of 50 us. Every number
below is the closed form worked out by hand; times are modelled, never measured.

One test (torch tier) runs a real ring all-reduce over two gloo processes and checks the
learner's byte counts against the bytes the ring actually sent. It counts; it never clocks.
"""

from __future__ import annotations

import math

import pytest

from katas.phase10.tp_comm_cost.scaffold import (
    BF16_BYTES,
    DECODE_STEP_S,
    ETHERNET_10G,
    HIDDEN_8B,
    INFINIBAND,
    NUM_LAYERS_8B,
    NVLINK,
    PCIE,
    PREFILL_CHUNK_TOKENS,
    Link,
    rank_input,
    run_ring_allreduce,
)
from pytest_vllm_katas import assert_close, expect_raises

pytestmark = pytest.mark.cpu_ok

EXACT = "arithmetic"  # closed-form float arithmetic on decimal constants
DECODE = 1 * HIDDEN_8B * BF16_BYTES  # 8,192 bytes: one token's activation row
PREFILL = PREFILL_CHUNK_TOKENS * HIDDEN_8B * BF16_BYTES  # 16 MiB
TORCH_REASON = 'the real all-reduce needs torch: pip install -e ".[torch]"'


def latency_only(link: Link) -> Link:
    return Link(f"{link.name}, latency only", link.latency_s, math.inf)


def bandwidth_only(link: Link) -> Link:
    return Link(f"{link.name}, bandwidth only", 0.0, link.gbit_per_s)


# -- what gets sent --------------------------------------------------------------------------


def test_payload_is_one_activation_row_per_token(impl) -> None:
    got = impl.allreduce_payload_bytes(1, HIDDEN_8B, BF16_BYTES)
    assert got == 8192 and isinstance(got, int), (
        f"one decode token of the 8B model is one row of 4096 bf16 values: 8192 bytes (an int), "
        f"got {got!r}"
    )
    default = impl.allreduce_payload_bytes(1, HIDDEN_8B)
    assert default == 8192, f"dtype_bytes defaults to 2 (bf16): expected 8192, got {default!r}"


def test_prefill_chunk_payload_is_16_mib(impl) -> None:
    got = impl.allreduce_payload_bytes(PREFILL_CHUNK_TOKENS, HIDDEN_8B, BF16_BYTES)
    assert got == 16 * 2**20, (
        f"a 2048-token prefill chunk all-reduces 2048 rows of 4096 bf16 values: 16 MiB = "
        f"{16 * 2**20:,} bytes, got {got!r}"
    )
    small = impl.allreduce_payload_bytes(3, 5, 4)
    assert small == 60, f"3 tokens x hidden 5 x 4-byte floats = 60 bytes, got {small!r}"


@pytest.mark.parametrize(
    ("num_ranks", "payloads"),
    [(1, 0.0), (2, 1.0), (3, 4 / 3), (4, 1.5), (8, 1.75), (1000, 1.998)],
    ids=lambda v: str(v),
)
def test_ring_traffic_formula(impl, num_ranks: int, payloads: float) -> None:
    got = impl.ring_allreduce_traffic_per_rank(DECODE, num_ranks)
    assert_close(got, payloads * DECODE, cause=EXACT,
                 what=f"bytes one rank sends in a ring all-reduce of 8192 bytes over {num_ranks} "
                      f"ranks (reduce-scatter then all-gather: {payloads:g} payloads)")


def test_ring_traffic_per_rank_is_nearly_flat_in_n(impl) -> None:
    got = [impl.ring_allreduce_traffic_per_rank(1.0, n) for n in (2, 4, 8, 64, 1024)]
    assert got == sorted(got) and got[0] == 1.0 and all(t < 2.0 for t in got), (
        f"per-rank traffic grows from exactly one payload at N=2 towards (never reaching) two: "
        f"got {got} for N = 2, 4, 8, 64, 1024"
    )


# -- what one all-reduce costs ---------------------------------------------------------------


def test_allreduce_time_is_bandwidth_plus_latency(impl) -> None:
    # 10 GbE, two ranks, one decode payload: 8192 B at 1.25 GB/s = 6.5536 us; 2 hops x 50 us.
    both = impl.allreduce_time_s(DECODE, 2, ETHERNET_10G)
    lat = impl.allreduce_time_s(DECODE, 2, latency_only(ETHERNET_10G))
    bw = impl.allreduce_time_s(DECODE, 2, bandwidth_only(ETHERNET_10G))
    assert_close(lat, 100e-6, cause=EXACT,
                 what="latency term (10 GbE, 2 ranks: 2 hops x 50 us = 100 us), in seconds")
    assert_close(bw, 6.5536e-6, cause=EXACT,
                 what="bandwidth term (8192 bytes each way over 10 gigaBITS/s = 1.25e9 bytes/s: "
                      "6.5536 us), in seconds")
    assert_close(both, 106.5536e-6, cause=EXACT,
                 what="one decode all-reduce over 10 GbE at TP=2 (100 us + 6.5536 us), in seconds")


def test_latency_is_paid_once_per_hop_in_both_phases(impl) -> None:
    # Eight ranks: 7 hops of reduce-scatter, 7 of all-gather.
    got = impl.allreduce_time_s(DECODE, 8, latency_only(NVLINK))
    assert_close(got, 14 * 3e-6, cause=EXACT,
                 what="latency term at TP=8 on NVLink: 2 (N - 1) = 14 sequential hops x 3 us")


def test_one_rank_costs_nothing(impl) -> None:
    got = impl.allreduce_time_s(PREFILL, 1, NVLINK)
    assert got == 0.0, f"with one rank there is nothing to reduce and no hop: 0 s, got {got!r}"


# -- how often: 64 a step --------------------------------------------------------------------


def test_64_allreduces_per_step(impl) -> None:
    one_us = Link("1 us per hop", 1e-6, math.inf)  # each all-reduce at TP=2 costs 2 us
    got = impl.tp_comm_time_per_step(DECODE, 2, one_us)
    assert_close(got, 64 * 2e-6, cause=EXACT,
                 what="a 32-layer step: 2 all-reduces per layer (attention out-proj, MLP "
                      "down-proj) = 64, each 2 us here; seconds")
    layer = impl.tp_comm_time_per_step(DECODE, 2, one_us, num_layers=1)
    assert_close(layer, 2 * 2e-6, cause=EXACT, what="one layer: two all-reduces of 2 us")


def test_decode_step_comm_on_nvlink_is_noise(impl) -> None:
    comm = impl.tp_comm_time_per_step(DECODE, 2, NVLINK, NUM_LAYERS_8B)
    # 64 x (2 x 3 us + 8192 B / 300 GB/s)
    assert_close(comm, 64 * (6e-6 + 8192 / 300e9), cause=EXACT,
                 what="64 decode all-reduces over NVLink at TP=2 (about 0.386 ms), in seconds")
    assert comm < 1e-3, f"NVLink decode comm should stay under 1 ms, got {comm * 1e3:.3f} ms"
    fraction = impl.comm_fraction(comm, DECODE_STEP_S)
    assert_close(fraction, comm / (DECODE_STEP_S + comm), cause=EXACT,
                 what="NVLink comm as a share of the whole step (8 ms compute + comm)")
    assert fraction < 0.10, f"on NVLink TP is nearly free: < 10% of the step, got {fraction:.1%}"


def test_decode_step_comm_on_ethernet_is_fatal(impl) -> None:
    latency = impl.tp_comm_time_per_step(DECODE, 2, latency_only(ETHERNET_10G))
    assert_close(latency, 6.4e-3, cause=EXACT,
                 what="latency alone over 10 GbE: 64 all-reduces x 2 hops x 50 us = 6.4 ms")
    comm = impl.tp_comm_time_per_step(DECODE, 2, ETHERNET_10G)
    assert_close(comm, 64 * 106.5536e-6, cause=EXACT,
                 what="64 decode all-reduces over 10 GbE at TP=2 (6.819 ms), in seconds")
    fraction = impl.comm_fraction(comm, DECODE_STEP_S)
    assert_close(fraction, comm / (DECODE_STEP_S + comm), cause=EXACT,
                 what="10 GbE comm as a share of the whole step (8 ms compute + comm)")
    assert fraction > 0.40, f"over 10 GbE TP is fatal: > 40% of the step, got {fraction:.1%}"


def test_comm_fraction_is_a_share_of_the_whole_step(impl) -> None:
    got = impl.comm_fraction(2.0, 6.0)
    assert_close(got, 0.25, cause=EXACT,
                 what="2 s of comm after 6 s of compute is 2 / (6 + 2) = 25% of the step "
                      "(not 2 / 6: the step is compute plus comm)")
    assert impl.comm_fraction(0.0, 8e-3) == 0.0, "no communication is 0% of the step"


def test_interconnects_rank_by_decode_bill(impl) -> None:
    links = [NVLINK, INFINIBAND, PCIE, ETHERNET_10G]
    bills = [impl.tp_comm_time_per_step(DECODE, 2, link) for link in links]
    assert bills == sorted(bills), (
        f"for 8 KB decode payloads the bill follows the hop latency (3, 5, 10, 50 us): "
        f"{dict(zip([link.name for link in links], bills, strict=True))}"
    )


# -- the regime split ------------------------------------------------------------------------


def _levers(impl, payload: float, link: Link) -> tuple[float, float]:
    base = impl.allreduce_time_s(payload, 2, link)
    half_latency = Link(link.name, link.latency_s / 2, link.gbit_per_s)
    double_bw = Link(link.name, link.latency_s, link.gbit_per_s * 2)
    return (base - impl.allreduce_time_s(payload, 2, half_latency),
            base - impl.allreduce_time_s(payload, 2, double_bw))


@pytest.mark.parametrize("link", [NVLINK, ETHERNET_10G], ids=["nvlink", "ethernet_10g"])
def test_latency_dominates_small_payloads(impl, link: Link) -> None:
    from_latency, from_bandwidth = _levers(impl, DECODE, link)
    assert from_latency > from_bandwidth > 0, (
        f"for an 8 KB decode payload on {link.name}, halving the latency must save more than "
        f"doubling the bandwidth: saved {from_latency:.3g} s vs {from_bandwidth:.3g} s"
    )


@pytest.mark.parametrize("link", [NVLINK, ETHERNET_10G], ids=["nvlink", "ethernet_10g"])
def test_prefill_payloads_shift_the_balance_to_bandwidth(impl, link: Link) -> None:
    from_latency, from_bandwidth = _levers(impl, PREFILL, link)
    assert from_bandwidth > from_latency > 0, (
        f"for a 16 MiB prefill payload on {link.name}, doubling the bandwidth must save more "
        f"than halving the latency: saved {from_bandwidth:.3g} s vs {from_latency:.3g} s"
    )


@pytest.mark.parametrize("payload", [DECODE, PREFILL], ids=["decode", "prefill"])
def test_more_ranks_more_overhead(impl, payload: int) -> None:
    bills = {n: impl.tp_comm_time_per_step(payload, n, NVLINK) for n in (2, 4, 8)}
    assert bills[2] < bills[4] < bills[8], (
        f"more ranks, more hops and more traffic per rank: comm must grow TP=2 < 4 < 8, got "
        f"{bills}"
    )


# -- bad input -------------------------------------------------------------------------------


def test_bad_sizes_raise(impl) -> None:
    with expect_raises(ValueError, "a ring needs at least one rank"):
        impl.ring_allreduce_traffic_per_rank(DECODE, 0)
    with expect_raises(ValueError, "an all-reduce over zero ranks has no time"):
        impl.allreduce_time_s(DECODE, 0, NVLINK)
    with expect_raises(ValueError, "a negative token count has no payload"):
        impl.allreduce_payload_bytes(-1, HIDDEN_8B)
    with expect_raises(ValueError, "a fraction of a step with no compute is undefined"):
        impl.comm_fraction(1e-3, 0.0)


# -- a real ring all-reduce (torch tier) -----------------------------------------------------


def test_a_real_ring_allreduce_sends_what_the_model_counts(impl) -> None:
    pytest.importorskip("torch", reason=TORCH_REASON)
    rows, hidden, elem = 3, 8, 4  # float32
    payload = impl.allreduce_payload_bytes(rows, hidden, elem)
    traffic = impl.ring_allreduce_traffic_per_rank(payload, 2)
    hops = impl.allreduce_time_s(payload, 2, Link("1 s per hop", 1.0, math.inf))

    numel = rows * hidden
    reports = run_ring_allreduce(world_size=2, numel=numel)
    expected_sum = [x + y for x, y in zip(rank_input(0, numel), rank_input(1, numel), strict=True)]
    for rep in reports:
        assert payload == rep.numel * rep.element_size, (
            f"rank {rep.rank} all-reduced {rep.numel} float32 values = "
            f"{rep.numel * rep.element_size} bytes; allreduce_payload_bytes({rows}, {hidden}, "
            f"{elem}) said {payload!r}"
        )
        assert traffic == rep.ring_bytes_sent, (
            f"rank {rep.rank} of a 2-rank ring sent {rep.ring_bytes_sent} bytes; "
            f"ring_allreduce_traffic_per_rank({payload}, 2) said {traffic!r}"
        )
        assert hops == rep.ring_sends, (
            f"rank {rep.rank} made {rep.ring_sends} sequential sends; allreduce_time_s with a "
            f"1-second hop and infinite bandwidth said {hops!r} s"
        )
        assert rep.gloo_result == expected_sum and rep.ring_result == expected_sum, (
            f"rank {rep.rank}: both all-reduces must leave the element-wise sum of the inputs"
        )
