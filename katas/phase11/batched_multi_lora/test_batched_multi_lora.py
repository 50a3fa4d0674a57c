"""Batched multi-adapter LoRA: shrink, expand, and one grouped pass over a mixed batch.

The shapes are a square projection (in = out = 16, like q_proj) so that a swapped A and B
computes wrong numbers instead of failing on shapes, and a batch of 7 rows so that no legitimate
product is 16 x 16: building ``B @ A`` shows up in the recorded shapes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_vllm_katas import assert_close, expect_raises

pytestmark = pytest.mark.cpu_ok

IN = OUT = 16
ROWS = 7


class Tracked(np.ndarray):
    """An array that records the result shape of every matmul-family product it enters."""

    log: list[tuple[int, ...]] | None

    def __new__(cls, array: np.ndarray, log: list[tuple[int, ...]]) -> Tracked:
        obj = np.asarray(array).view(cls)
        obj.log = log
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self.log = getattr(obj, "log", None)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        plain = [np.asarray(i) if isinstance(i, Tracked) else i for i in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(np.asarray(o) if isinstance(o, Tracked) else o
                                  for o in kwargs["out"])
        result = getattr(ufunc, method)(*plain, **kwargs)
        if ufunc is np.matmul and self.log is not None:
            self.log.append(np.shape(result))
        return result

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        def strip(value: Any) -> Any:
            if isinstance(value, Tracked):
                return np.asarray(value)
            if isinstance(value, (list, tuple)):
                return type(value)(strip(v) for v in value)
            return value

        result = func(*strip(args), **{k: strip(v) for k, v in kwargs.items()})
        if func in (np.dot, np.einsum, np.tensordot, np.inner, np.matmul, np.vdot) and (
                self.log is not None):
            self.log.append(np.shape(result))
        return result


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict, dict, np.ndarray]:
    """x, W, three adapters of ranks 2, 4, 3 under ids 7, 0, 3 (inserted in that order), their
    scalings, and row ids mixing them with base rows (-1), in no particular order."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((ROWS, IN))
    W = rng.standard_normal((OUT, IN)) / 4
    adapters = {aid: (rng.standard_normal((r, IN)) / 4, rng.standard_normal((OUT, r)) / 4)
                for aid, r in ((7, 2), (0, 4), (3, 3))}
    scalings = {7: 2.0, 0: 0.5, 3: 4.0}
    ids = np.array([3, -1, 0, 7, 3, -1, 0])
    return x, W, adapters, scalings, ids


def _per_row(x, W, adapters, scalings, ids) -> np.ndarray:
    """The definition, one row at a time."""
    rows = []
    for i, aid in enumerate(ids):
        y = x[i] @ W.T
        if aid != -1:
            A, B = adapters[int(aid)]
            y = y + scalings[int(aid)] * ((x[i] @ A.T) @ B.T)
        rows.append(y)
    return np.stack(rows)


def test_scaling_is_alpha_over_r(impl) -> None:
    got = [impl.lora_scaling(16, 8), impl.lora_scaling(32, 16), impl.lora_scaling(8, 16)]
    assert got == [2.0, 2.0, 0.5], (
        f"lora_scaling(alpha, r) for (16, 8), (32, 16), (8, 16) gave {got}, expected "
        f"[2.0, 2.0, 0.5]: the scaling is lora_alpha / r")
    with expect_raises(ValueError, "a rank below 1 is no adapter", match="r"):
        impl.lora_scaling(16, 0)


def test_delta_is_scaled_shrink_then_expand(impl) -> None:
    x = np.array([[1.0, 2.0]])
    A = np.array([[1.0, 1.0]])          # r = 1, in = 2: shrink x to 1 + 2 = 3
    B = np.array([[1.0], [2.0]])        # out = 2: expand 3 to [3, 6]
    got = np.asarray(impl.lora_delta(x, A, B, 0.5))
    assert got.shape == (1, 2), f"lora_delta must return [rows, out] = (1, 2), got {got.shape}"
    assert np.array_equal(got, [[1.5, 3.0]]), (
        f"x=[1, 2], A=[[1, 1]], B=[[1], [2]], scaling 0.5: shrink 3, expand [3, 6], scaled "
        f"[1.5, 3]; got {got.tolist()} (scaling dropped gives [3, 6]; A and B swapped [2.5, 2.5])")
    x, W, adapters, scalings, _ = _batch()
    A, B = adapters[0]
    assert_close(impl.lora_delta(x, A, B, 0.5), 0.5 * (x @ A.T) @ B.T,
                 cause="float64-reordered", what="lora_delta on a 7 x 16 batch, rank 4")


def test_delta_never_materializes_b_at_a(impl) -> None:
    x, _, adapters, _, _ = _batch()
    log: list[tuple[int, ...]] = []
    A, B = adapters[0]
    impl.lora_delta(x, Tracked(A, log), Tracked(B, log), 0.5)
    full = [s for s in log if s in ((OUT, IN), (IN, OUT))]
    assert log, "lora_delta computed no matmul with A or B (do not np.asarray them away)"
    assert not full, (
        f"lora_delta built a {full[0]} matrix: that is B @ A, the out x in update LoRA exists "
        f"to avoid. Shrink first (x @ A.T, [rows, r]), then expand ([rows, out]); products seen: "
        f"{log}")


def test_delta_is_genuinely_rank_r(impl) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, IN))
    _, _, adapters, _, _ = _batch()
    A, B = adapters[0]  # rank 4
    delta = np.asarray(impl.lora_delta(x, A, B, 0.5))
    assert delta.shape == (40, OUT), f"expected a (40, {OUT}) delta, got {delta.shape}"
    rank = int(np.linalg.matrix_rank(delta))
    assert rank == 4, f"a rank-4 adapter's delta over 40 rows has rank {rank}, expected 4"


def test_apply_single_is_base_plus_delta(impl) -> None:
    x, W, adapters, _, _ = _batch()
    A, B = adapters[3]
    assert_close(impl.apply_single(x, W, A, B, 4.0), x @ W.T + 4.0 * (x @ A.T) @ B.T,
                 cause="float64-reordered", what="apply_single")


def test_batched_equals_per_request_loop(impl) -> None:
    x, W, adapters, scalings, ids = _batch()
    got = np.asarray(impl.apply_batched(x, W, adapters, ids, scalings))
    assert got.shape == (ROWS, OUT), f"apply_batched must return ({ROWS}, {OUT}), got {got.shape}"
    expected = _per_row(x, W, adapters, scalings, ids)
    for i, aid in enumerate(ids):
        assert_close(got[i], expected[i], cause="float64-same-order",
                     what=f"row {i} (adapter {aid}; batch ids {ids.tolist()}, adapters keyed "
                          f"{list(adapters)})")


def test_base_rows_are_pure_base(impl) -> None:
    x, W, adapters, scalings, ids = _batch()
    got = np.asarray(impl.apply_batched(x, W, adapters, ids, scalings))
    base = ids == -1
    assert_close(got[base], (x @ W.T)[base], cause="float64-same-order",
                 what="rows with adapter id -1 (base only, even though adapter 0 exists)")
    everyone_base = np.full(ROWS, -1)
    assert_close(impl.apply_batched(x, W, adapters, everyone_base, scalings), x @ W.T,
                 cause="float64-same-order", what="an all-base batch")


def test_one_shared_base_matmul(impl) -> None:
    x, W, adapters, scalings, ids = _batch()
    log: list[tuple[int, ...]] = []
    impl.apply_batched(x, Tracked(W, log), adapters, ids, scalings)
    assert log == [(ROWS, OUT)], (
        f"W must be read by exactly one product over all {ROWS} rows (the base matmul shared "
        f"by every tenant); the products that read it had shapes {log} (use W as given: the "
        f"test counts the products it enters)")


def test_bad_ids_are_refused(impl) -> None:
    x, W, adapters, scalings, ids = _batch()
    bad = ids.copy()
    bad[2] = 5
    with expect_raises(ValueError, "adapter 5 is not loaded: refuse rather than serve it base",
                       match="5"):
        impl.apply_batched(x, W, adapters, bad, scalings)
    with expect_raises(ValueError, "one id per row", match="adapter_ids"):
        impl.apply_batched(x, W, adapters, ids[:-1], scalings)


# -- the engine -------------------------------------------------------------------------------


def _drive(model, base_dir, specs, prompts, which, params, lora_linear=None, max_rank=8):
    from mini_vllm import LLMEngine
    from mini_vllm.lora import LoRAConfig, LoRARequest
    from mini_vllm.lora.tiny_adapters import build_tiny_adapter

    loras = [LoRARequest(f"tenant-{i}", i + 1, str(build_tiny_adapter(base_dir, spec)))
             for i, spec in enumerate(specs)]
    config = LoRAConfig(max_loras=len(specs), max_lora_rank=max_rank, lora_linear=lora_linear)
    engine = LLMEngine(model=model, lora_config=config, enable_caching=False,
                       max_model_len=getattr(model, "max_model_len", None) and 64)
    requests = [None if w is None else loras[w] for w in which]
    return [o.output_token_ids for o in engine.generate(prompts, params, lora_request=requests)]


def _check_drive(impl, model, base_dir, specs, prompts, which, params) -> None:
    calls = []

    def learner(*args):
        calls.append(1)
        return impl.apply_batched(*args)

    mixed = _drive(model, base_dir, specs, prompts, which, params, learner)
    assert calls, "the engine never called your apply_batched"
    for i, (prompt, w) in enumerate(zip(prompts, which, strict=True)):
        alone = _drive(model, base_dir, specs, [prompt], [w], params)[0]
        assert mixed[i] == alone, (
            f"request {i} ({'base' if w is None else f'adapter {w + 1}'}) got {mixed[i]} from "
            f"the mixed batch on your apply_batched, but {alone} alone on mini_vllm's")
    base = _drive(model, base_dir, specs, prompts, [None] * len(prompts), params)
    changed = [mixed[i] != base[i] for i, w in enumerate(which) if w is not None]
    assert all(changed), "every adapter should change its request's tokens (fixture check)"


def test_your_lora_drives_the_engine(impl, tiny_llama) -> None:
    """The tiny Llama in float64: two adapters (rank 8 on every projection; rank 4 on q and v)
    and base rows in one batch; your apply_batched computes every targeted projection."""
    from mini_vllm import SamplingParams
    from mini_vllm.lora.tiny_adapters import AdapterSpec
    from mini_vllm.models.tiny_llama import build_tiny_llama

    specs = [AdapterSpec(seed=1), AdapterSpec(seed=2, r=4, lora_alpha=8,
                                              target_modules=("q_proj", "v_proj"))]
    prompts = ["Hello there, my friend", "The quick brown fox", "Once upon a time",
               "The quick brown fox", "Hello there, my friend"]
    params = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
    _check_drive(impl, tiny_llama, build_tiny_llama(), specs, prompts, [0, 1, None, 0, 1], params)


def test_your_lora_drives_smollm2(impl) -> None:
    """SmolLM2-135M (float32), two seeded adapters on every projection and a base row, 2 tokens."""
    from pytest_vllm_katas.live.models import (
        smollm2_available,
        smollm2_missing_reason,
        smollm2_path,
    )

    one = np.ones((1, 1))
    impl.apply_batched(one, one, {}, [-1], {})  # your code first: a stub fails before any skip
    if not smollm2_available():
        pytest.skip(smollm2_missing_reason())
    from mini_vllm import SamplingParams
    from mini_vllm.lora.tiny_adapters import AdapterSpec
    from mini_vllm.models.loader import load_model

    model = load_model(smollm2_path(), dtype=np.float32)
    specs = [AdapterSpec(seed=1, b_std=0.05), AdapterSpec(seed=2, b_std=0.05)]
    prompts = ["Machine learning is", "The capital of France is", "Water boils at"]
    params = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    _check_drive(impl, model, smollm2_path(), specs, prompts, [0, 1, None], params)
