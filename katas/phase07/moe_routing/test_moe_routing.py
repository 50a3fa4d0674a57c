"""Spec for kata 07-01: route, expert, the per-token oracle and the grouped MoE forward.

Mixtral's shapes (8 experts, top-2) in float64. The grouped forward must equal the oracle to
1e-12, including when a token names the same expert twice (the ``np.add.at`` test) and with
SwiGLU experts. Then your router and your grouped forward drive every MoE layer of mini_vllm's
seeded tiny Mixtral through the whole engine: the tokens must equal the stock engine's.
"""

from __future__ import annotations

import numpy as np
import pytest

from mini_vllm import LLMEngine, SamplingParams
from mini_vllm.layers.fused_moe import fused_topk, swiglu_expert
from pytest_vllm_katas import assert_close, expect_raises
from pytest_vllm_katas.invariants import assert_same_outputs

pytestmark = pytest.mark.cpu_ok

T, D, H, E, K = 32, 16, 24, 8, 2  # Mixtral-shaped: 8 experts, top-2


def _expert_weights(rng: np.random.Generator, n: int = E) -> list[tuple[np.ndarray, ...]]:
    return [(rng.standard_normal((D, H)) / 4, rng.standard_normal((H, D)) / 4) for _ in range(n)]


@pytest.fixture(scope="module")
def layer() -> dict:
    rng = np.random.default_rng(7)
    return {
        "x": rng.standard_normal((T, D)),
        "W_gate": rng.standard_normal((E, D)),
        "experts": _expert_weights(rng),
        "swiglu": [(rng.standard_normal((D, 2 * H)) / 4, rng.standard_normal((H, D)) / 4)
                   for _ in range(E)],
    }


def _shape(name: str, got, want: tuple) -> np.ndarray:  # type: ignore[no-untyped-def]
    got = np.asarray(got)
    assert got.shape == want, f"{name} should have shape {want}, got {got.shape}"
    return got


def _route(impl, x, W_gate, k):  # type: ignore[no-untyped-def]
    out = impl.route(x, W_gate, k)
    assert isinstance(out, tuple) and len(out) == 2, (
        f"route returns (topk_ids, topk_weights), got {type(out).__name__}")
    ids = _shape("topk_ids", out[0], (len(x), k))
    weights = _shape("topk_weights", out[1], (len(x), k))
    assert np.issubdtype(ids.dtype, np.integer), f"topk_ids must be integers, got {ids.dtype}"
    return ids, weights


# ------------------------------------------------------------------------------------- the router


def test_route_picks_the_top_k_by_descending_logit(impl) -> None:
    # One-hot tokens make the logits the columns of W_gate: token t's logits are W_gate[:, t].
    x = np.eye(3)
    logits = np.array([[1.0, 3.0, 2.0, 0.5],      # token 0
                       [0.0, -1.0, 4.0, 4.5],     # token 1
                       [-3.0, -2.0, -1.0, -0.5]])  # token 2
    ids, _ = _route(impl, x, logits.T, 2)
    assert ids.tolist() == [[1, 2], [3, 2], [3, 2]], (
        "each row lists the 2 largest logits' experts, largest first: expected "
        f"[[1, 2], [3, 2], [3, 2]], got {ids.tolist()}")


def test_route_weights_are_the_softmax_of_the_selected_logits(impl) -> None:
    logits = np.array([[1.0, 3.0, 2.0, 0.5]])
    _, weights = _route(impl, np.eye(1), logits.T, 2)
    e = np.e
    assert_close(weights, [[e / (1 + e), 1 / (1 + e)]], cause="float64-same-order",
                 what="weights of logits [1, 3, 2, 0.5] at k=2: softmax over the selected 3 and "
                      "2 only (a softmax over all four experts gives 0.6103, 0.2245)")


def test_combine_weights_sum_to_one(impl, layer) -> None:
    ids, weights = _route(impl, layer["x"], layer["W_gate"], K)
    assert np.all(weights > 0), "combine weights are softmax probabilities: all positive"
    assert_close(weights.sum(axis=1), np.ones(T), cause="float64-same-order",
                 what="per-token sum of the top-2 weights (renormalised over the kept experts)")
    assert np.all(weights[:, 0] >= weights[:, 1]), "weights follow the ids: descending"
    want_w, want_ids = fused_topk(layer["x"] @ layer["W_gate"].T, K)
    assert ids.tolist() == want_ids.tolist(), "your top-2 differs from mini_vllm's fused_topk"
    assert_close(weights, want_w, cause="float64-same-order",
                 what="your weights against mini_vllm's softmax-topk-renormalise")


def test_route_ties_go_to_the_lower_expert_id(impl) -> None:
    logits = np.array([[0.0, 2.0, 1.0, 2.0, 2.0],
                       [5.0, 5.0, 5.0, 5.0, 5.0]])
    ids, weights = _route(impl, np.eye(2), logits.T, 2)
    assert ids.tolist() == [[1, 3], [0, 1]], (
        "of equal logits the lower expert id comes first and is kept: expected "
        f"[[1, 3], [0, 1]], got {ids.tolist()}")
    assert_close(weights, np.full((2, 2), 0.5), cause="float64-same-order",
                 what="two tied experts share the weight equally")


def test_route_survives_huge_logits(impl) -> None:
    logits = np.array([[1000.0, 999.0, -1000.0, 0.0]])
    ids, weights = _route(impl, np.eye(1), logits.T, 2)
    assert ids.tolist() == [[0, 1]], f"expected experts [0, 1], got {ids.tolist()}"
    assert_close(weights, [[1 / (1 + np.exp(-1.0)), 1 / (1 + np.e)]],
                 cause="float64-same-order",
                 what="weights of logits 1000 and 999 (exp(1000) overflows: shift first)")


def test_route_rejects_a_bad_k_or_shape(impl, layer) -> None:
    for k in (0, E + 1):
        with expect_raises(ValueError, f"k={k} is outside [1, E={E}]", match="k"):
            impl.route(layer["x"], layer["W_gate"], k)
    with expect_raises(ValueError, "x is (T, 16) but W_gate is (E, 15): the widths differ"):
        impl.route(layer["x"], layer["W_gate"][:, :15], K)


# ---------------------------------------------------------------------------- expert and oracle


def test_expert_mlp_is_relu_between_the_two_projections(impl) -> None:
    x = np.array([[1.0, -2.0]])
    W1 = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])   # x @ W1 = [1, -2, 0]
    W2 = np.array([[1.0, 1.0], [10.0, 10.0], [3.0, -3.0]])
    got = _shape("expert_mlp output", impl.expert_mlp(x, W1, W2), (1, 2))
    assert_close(got, [[1.0, 1.0]], cause="float64-same-order",
                 what="relu([1, -2, 0]) @ W2 (the -2 is clipped before the down-projection)")


def test_reference_is_the_weighted_sum_over_each_tokens_experts(impl) -> None:
    # Expert e multiplies by (e + 1) (identity W1, W2 scaled; x > 0 so ReLU keeps it).
    experts = [(np.eye(2), (e + 1.0) * np.eye(2)) for e in range(4)]
    x = np.array([[1.0, 2.0], [3.0, 1.0]])
    ids = np.array([[3, 0], [1, 1]])
    weights = np.array([[0.75, 0.25], [0.5, 0.5]])
    got = _shape("output", impl.moe_forward_reference(x, experts, ids, weights), (2, 2))
    want = np.array([[1.0, 2.0], [3.0, 1.0]]) * np.array([[0.75 * 4 + 0.25 * 1],
                                                           [0.5 * 2 + 0.5 * 2]])
    assert_close(got, want, cause="float64-same-order",
                 what="token 0: 0.75 * expert 3 + 0.25 * expert 0; token 1: expert 1 twice")


def test_forwards_reject_mismatched_assignments(impl, layer) -> None:
    ids, weights = fused_topk(layer["x"] @ layer["W_gate"].T, K)[::-1]
    for name in ("moe_forward_reference", "moe_forward_grouped"):
        fn = getattr(impl, name)
        with expect_raises(ValueError, f"{name}: topk_ids (T, 2) but topk_weights (T, 1)"):
            fn(layer["x"], layer["experts"], ids, weights[:, :1])
        bad = ids.copy()
        bad[0, 0] = E
        with expect_raises(ValueError, f"{name}: expert id {E} with only {E} experts"):
            fn(layer["x"], layer["experts"], bad, weights)


# ----------------------------------------------------------------------------- the permutation


def test_permute_groups_assignments_by_expert(impl) -> None:
    topk_ids = np.array([[2, 0], [2, 3], [0, 2]])
    out = impl.permute(topk_ids, 4)
    assert isinstance(out, tuple) and len(out) == 2, "permute returns (order, offsets)"
    order, offsets = _shape("order", out[0], (6,)), _shape("offsets", out[1], (5,))
    assert offsets.tolist() == [0, 2, 2, 5, 6], (
        f"expert 0 has 2 assignments, 1 none, 2 three, 3 one: offsets [0, 2, 2, 5, 6], got "
        f"{offsets.tolist()}")
    assert order.tolist() == [1, 4, 0, 2, 5, 3], (
        "flat assignments by expert, ascending within each: expert 0 -> 1, 4; expert 2 -> "
        f"0, 2, 5; expert 3 -> 3; got {order.tolist()}")


def test_assignments_are_conserved(impl, layer) -> None:
    ids, _ = fused_topk(layer["x"] @ layer["W_gate"].T, K)[::-1]
    order, offsets = (np.asarray(a) for a in impl.permute(ids, E))
    assert order.shape == (T * K,), f"T * k = {T * K} assignments, got {order.shape}"
    assert sorted(order.tolist()) == list(range(T * K)), (
        "every assignment appears exactly once: nothing dropped, nothing duplicated")
    assert np.diff(offsets).tolist() == np.bincount(ids.ravel(), minlength=E).tolist(), (
        "each expert's run is as long as the number of its assignments")
    for e in range(E):
        run = order[offsets[e]:offsets[e + 1]]
        assert np.all(ids.ravel()[run] == e), f"expert {e}'s run holds another expert's tokens"
        assert np.all(np.diff(run) > 0), (
            f"expert {e}'s run must list its assignments in ascending flat index (token order): "
            f"got {run.tolist()} (an unstable sort scrambles equal keys)")


def test_permutation_round_trips(impl, layer) -> None:
    ids, _ = fused_topk(layer["x"] @ layer["W_gate"].T, K)[::-1]
    order, _ = impl.permute(ids, E)
    order = np.asarray(order)
    rows = np.random.default_rng(3).standard_normal((T * K, 5))
    back = _shape("unpermute output", impl.unpermute(rows[order], order), rows.shape)
    assert np.array_equal(back, rows), "unpermute(rows[order], order) must give rows back"


# ------------------------------------------------------------------------- the grouped forward


def test_each_expert_runs_once_on_exactly_its_tokens(impl, layer) -> None:
    # Routed over experts 0-5 only, so experts 6 and 7 sit idle.
    ids, weights = fused_topk(layer["x"] @ layer["W_gate"][:6].T, K)[::-1]
    x = np.repeat(np.arange(T, dtype=np.float64)[:, None], D, axis=1)  # row t is all t
    calls: list[tuple[int, list[int]]] = []

    def recording_expert(rows, tag):  # type: ignore[no-untyped-def]
        calls.append((tag, [int(r) for r in rows[:, 0]]))
        return rows

    experts = [(e,) for e in range(E)]
    impl.moe_forward_grouped(x, experts, ids, weights, expert_fn=recording_expert)
    seen = [tag for tag, _ in calls]
    busy = [e for e in range(E) if np.any(ids == e)]
    assert sorted(seen) == busy, (
        f"each expert with assignments is called exactly once, idle ones never: experts "
        f"{busy} expected, calls were for {seen}")
    for tag, tokens in calls:
        want = sorted(np.nonzero(ids == tag)[0].tolist())
        assert sorted(tokens) == want, f"expert {tag} should see tokens {want}, saw {tokens}"


def test_grouped_equals_reference(impl, layer) -> None:
    ids, weights = _route(impl, layer["x"], layer["W_gate"], K)
    want = impl.moe_forward_reference(layer["x"], layer["experts"], ids, weights)
    _shape("reference output", want, (T, D))
    got = _shape("grouped output",
                 impl.moe_forward_grouped(layer["x"], layer["experts"], ids, weights), (T, D))
    assert_close(got, want, cause="float64-same-order",
                 what="grouped MoE forward against the per-token oracle")
    # And the oracle itself against a loop written here.
    loop = np.zeros((T, D))
    for t in range(T):
        for e, w in zip(ids[t], weights[t], strict=True):
            W1, W2 = layer["experts"][e]
            loop[t] += w * (np.maximum(layer["x"][t] @ W1, 0) @ W2)
    assert_close(want, loop, cause="float64-same-order", what="your oracle against a plain loop")


def test_a_token_naming_an_expert_twice_counts_twice(impl, layer) -> None:
    # route() never repeats an expert, so the duplicate is built by hand: token 0 -> expert 3
    # in both slots, token 5 -> expert 3 too; expert 3's block holds token 0 twice.
    ids, weights = fused_topk(layer["x"] @ layer["W_gate"].T, K)[::-1]
    ids, weights = ids.copy(), weights.copy()
    ids[0], weights[0] = [3, 3], [0.7, 0.3]
    ids[5, 0] = 3
    want = impl.moe_forward_reference(layer["x"], layer["experts"], ids, weights)
    got = _shape("grouped output",
                 impl.moe_forward_grouped(layer["x"], layer["experts"], ids, weights), (T, D))
    assert_close(got, want, cause="float64-same-order",
                 what="with token 0 routed to expert 3 twice: both contributions must add "
                      "(fancy-indexed += keeps only one; np.add.at keeps both)")


def test_grouped_equals_reference_with_swiglu_experts(impl, layer) -> None:
    # ReLU experts are positively homogeneous (expert(w x) == w expert(x)), so a weight applied
    # before the expert goes unnoticed with them; SwiGLU (Mixtral's experts) is not.
    ids, weights = fused_topk(layer["x"] @ layer["W_gate"].T, K)[::-1]
    want = np.zeros((T, D))
    for t in range(T):
        for e, w in zip(ids[t], weights[t], strict=True):
            want[t] += w * swiglu_expert(layer["x"][t:t + 1], *layer["swiglu"][e])[0]
    for name in ("moe_forward_reference", "moe_forward_grouped"):
        got = getattr(impl, name)(layer["x"], layer["swiglu"], ids, weights,
                                  expert_fn=swiglu_expert)
        assert_close(_shape(f"{name} output", got, (T, D)), want, cause="float64-same-order",
                     what=f"{name} with SwiGLU experts (weight each expert's output, not its "
                          f"input)")


# -------------------------------------------------------------------- driving mini_vllm's Mixtral


PREFIX = "You are a helpful assistant. "
PROMPTS = [PREFIX + q for q in ("Why?", "What is MoE?", "Hi")] + ["S" * 30, "hello world"]


@pytest.fixture(scope="module")
def tiny_mixtral():  # type: ignore[no-untyped-def]
    """mini_vllm's seeded tiny Mixtral (8 experts, top-2, 2 layers) in float64."""
    from mini_vllm.models.loader import load_model
    from mini_vllm.models.tiny_mixtral import build_tiny_mixtral

    return load_model(build_tiny_mixtral(), dtype=np.float64)


def _generate(model, route=None, moe_forward=None):  # type: ignore[no-untyped-def]
    """Prefix caching on, chunked prefill and a cramped pool that preempts: the engine's
    counters, and every request's tokens."""
    model.set_moe_impl(route=route, moe_forward=moe_forward)
    try:
        engine = LLMEngine(model=model, block_size=4, num_blocks=20, max_num_seqs=3,
                           long_prefill_token_threshold=6, max_num_batched_tokens=10)
        outs = engine.generate(PROMPTS, SamplingParams(max_tokens=10, temperature=0.0,
                                                       ignore_eos=True))
    finally:
        model.set_moe_impl()
    return [o.output_token_ids for o in outs], sum(o.num_preemptions for o in outs)


def test_your_moe_drives_the_engine(impl, tiny_mixtral) -> None:
    calls = {"route": 0, "forward": 0}

    def route(x, W_gate, k):  # type: ignore[no-untyped-def]
        calls["route"] += 1
        return impl.route(x, W_gate, k)

    def moe_forward(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["forward"] += 1
        return impl.moe_forward_grouped(*args, **kwargs)

    yours, _ = _generate(tiny_mixtral, route, moe_forward)
    stock, preemptions = _generate(tiny_mixtral)
    assert calls["route"] > 0 and calls["route"] == calls["forward"], (
        f"every MoE layer of every step should call your route and your grouped forward once: "
        f"{calls}")
    assert preemptions > 0, "workload check: the cramped pool should have forced preemption"
    assert_same_outputs(stock, yours, labels=("stock MoE", "your router + grouped MoE"))
