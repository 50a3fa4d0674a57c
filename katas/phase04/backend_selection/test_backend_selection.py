"""Kata 04-02: the backend selection matrix, graded on the course's table and on vLLM itself.

Most tests run anywhere: the course's matrix, the resolution order, the errors, and the purity
of the selection. The ``live`` tests hold your selector to vLLM 0.32 on this CPU: its CPU
platform's choice, its CUDA platform's ranking and checks (computed without a GPU), and one
real engine's chosen backend. Without vLLM they skip, naming the install command.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
import types
from contextlib import contextmanager

import pytest

from katas.phase04.backend_selection.scaffold import A100, B200, CPU, H100, L4, T4, Platform
from pytest_vllm_katas import expect_raises
from pytest_vllm_katas.live.fixtures import EngineConfig, LiveEngines, require_vllm

pytestmark = pytest.mark.gpu_opt

MLA_HEAD = 576  # DeepSeek's latent cache: kv_lora_rank 512 + rope 64
WINDOW = 4096  # a sliding window, in tokens


def _norm(name: str) -> str:
    """Backend names compared loosely: case and separators drift between releases."""
    return re.sub(r"[^A-Z0-9]", "", str(name).upper())


# ----------------------------------------------------------------------- the course's matrix


@pytest.mark.parametrize(
    ("platform", "dtype", "head_size", "is_mla", "override", "expected"),
    [
        (A100, "bfloat16", 128, False, None, "FLASH_ATTN"),
        (L4, "bfloat16", 128, False, None, "FLASH_ATTN"),
        (H100, "bfloat16", 128, False, None, "FLASH_ATTN"),
        (H100, "bfloat16", MLA_HEAD, True, None, "FLASHMLA"),
        (B200, "bfloat16", MLA_HEAD, True, None, "FLASHMLA"),
        (A100, "bfloat16", 128, False, "TRITON_ATTN", "TRITON_ATTN"),
        (H100, "float16", 128, False, "FLASHINFER", "FLASHINFER"),
        (H100, "bfloat16", 100, False, None, "TRITON_ATTN"),
        (CPU, "float32", 128, False, None, "CPU_ATTN"),
    ],
    ids=["a100_bf16-flash_attn", "l4_bf16-flash_attn", "h100_bf16-flash_attn_fa3",
         "mla_h100-flashmla", "mla_b200-flashmla", "override-wins", "override_lower_rank-wins",
         "head_size_100-triton_fallback", "cpu_fp32-cpu_backend"],
)
def test_the_course_matrix(impl, platform: Platform, dtype: str, head_size: int, is_mla: bool,
                           override: str | None, expected: str) -> None:
    got = impl.select_backend(platform, dtype, head_size, is_mla, None, override)
    assert got == expected, (
        f"{platform}, {dtype}, head size {head_size}, MLA={is_mla}, override={override}: the "
        f"course's matrix says {expected}, you picked {got}"
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [(None, "FLASH_ATTN"), ("FLASHINFER", "FLASHINFER"), ("TRITON_ATTN", "TRITON_ATTN")],
    ids=["default", "override_flashinfer", "override_triton"],
)
def test_the_course_capture_on_an_l4(impl, override: str | None, expected: str) -> None:
    got = impl.select_backend(L4, "bfloat16", 64, False, None, override)
    assert got == expected, (
        f"the course's L4 capture (OPT-125m: bf16, head size 64) logged {expected} with "
        f"override={override}; you picked {got}"
    )


# ----------------------------------------------------------------------- the default chain


@pytest.mark.parametrize(
    ("platform", "is_mla", "expected"),
    [
        (A100, False, ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN"]),
        (L4, False, ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN"]),
        (H100, False, ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN"]),
        (T4, False, ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN"]),
        (B200, False, ["FLASHINFER", "FLASH_ATTN", "TRITON_ATTN"]),
        (H100, True, ["FLASHMLA", "TRITON_MLA"]),
        (A100, True, ["FLASHMLA", "TRITON_MLA"]),
        (CPU, False, ["CPU_ATTN"]),
        (CPU, True, ["CPU_MLA"]),
    ],
    ids=["a100", "l4", "h100", "t4", "b200-flashinfer_first", "h100_mla", "a100_mla", "cpu",
         "cpu_mla"],
)
def test_the_default_chain_ranks_the_platform_candidates(impl, platform: Platform, is_mla: bool,
                                                          expected: list[str]) -> None:
    got = impl.default_chain(platform, is_mla)
    assert list(got) == expected, (
        f"the default chain on {platform} (MLA={is_mla}) ranks {expected}, most preferred first "
        f"and ending in the fallback; got {got}"
    )


def test_blackwell_prefers_flashinfer_until_a_head_size_rules_it_out(impl) -> None:
    got = impl.select_backend(B200, "bfloat16", 128)
    assert got == "FLASHINFER", f"on sm100 vLLM ranks FlashInfer first; got {got}"
    got = impl.select_backend(B200, "bfloat16", 80)
    assert got == "FLASH_ATTN", (
        f"FlashInfer has no kernel for head size 80, so the next in B200's chain, FLASH_ATTN, "
        f"wins; got {got}"
    )


# ----------------------------------------------------------------------- the capability filter


@pytest.mark.parametrize("platform", [A100, H100, B200], ids=["a100", "h100", "b200"])
def test_float32_on_cuda_falls_to_triton(impl, platform: Platform) -> None:
    got = impl.select_backend(platform, "float32", 128)
    assert got == "TRITON_ATTN", (
        f"FlashAttention and FlashInfer only run fp16/bf16; on {platform} a float32 model "
        f"falls through to TRITON_ATTN, got {got}"
    )


@pytest.mark.parametrize("head_size", [100, 36, 264], ids=["100", "36", "264"])
def test_an_unsupported_head_size_falls_back_to_triton(impl, head_size: int) -> None:
    got = impl.select_backend(H100, "bfloat16", head_size)
    assert got == "TRITON_ATTN", (
        f"head size {head_size} is outside FlashAttention (multiples of 8 up to 256) and "
        f"FlashInfer (64/128/256/512): the Triton fallback takes it; got {got}"
    )


def test_a_gpu_older_than_flash_attention_gets_triton(impl) -> None:
    got = impl.select_backend(T4, "float16", 128)
    assert got == "TRITON_ATTN", (
        f"a T4 (sm75) is below FlashAttention's and FlashInfer's sm80 floor: TRITON_ATTN, got {got}"
    )


@pytest.mark.parametrize(
    ("platform", "dtype", "expected"),
    [(A100, "bfloat16", "FLASH_ATTN"), (H100, "bfloat16", "FLASH_ATTN"),
     (B200, "bfloat16", "FLASHINFER"), (H100, "float32", "TRITON_ATTN"),
     (CPU, "float32", "CPU_ATTN")],
    ids=["a100", "h100", "b200", "h100_fp32", "cpu"],
)
def test_a_sliding_window_never_picks_a_backend_by_itself(impl, platform: Platform, dtype: str,
                                                          expected: str) -> None:
    without = impl.select_backend(platform, dtype, 128)
    with_window = impl.select_backend(platform, dtype, 128, False, WINDOW)
    assert (without, with_window) == (expected, expected), (
        f"a sliding window is a mask feature that {expected} implements: on {platform} in "
        f"{dtype} the pick must be {expected} with and without it; got {without} without, "
        f"{with_window} with a {WINDOW}-token window"
    )


def test_a_sliding_window_filters_out_backends_without_it(impl) -> None:
    reasons = impl.unsupported_reasons("FLASHMLA", H100, "bfloat16", MLA_HEAD, True, WINDOW)
    assert len(reasons) == 1 and "sliding" in reasons[0].lower(), (
        f"FlashMLA can run this MLA config except for its sliding window: expected one reason "
        f"naming the sliding window, got {reasons}"
    )
    with expect_raises(ValueError, "no MLA backend in the table implements a sliding window, "
                       "so nothing survives the filter", match="(?i)sliding"):
        impl.select_backend(H100, "bfloat16", MLA_HEAD, True, WINDOW)


# ----------------------------------------------------------------------- MLA and the override


def test_mla_only_ever_gets_an_mla_backend(impl) -> None:
    got = impl.select_backend(A100, "bfloat16", MLA_HEAD, True)
    assert got == "TRITON_MLA", (
        f"an MLA model's latent cache needs an MLA kernel; FlashMLA needs Hopper or Blackwell, "
        f"so on an A100 the Triton MLA fallback runs it, got {got}"
    )
    got = impl.select_backend(CPU, "bfloat16", MLA_HEAD, True)
    assert got == "CPU_MLA", f"an MLA model on the CPU runs CPU_MLA, got {got}"


def test_the_override_beats_mla(impl) -> None:
    got = impl.select_backend(H100, "bfloat16", MLA_HEAD, True, None, "TRITON_MLA")
    assert got == "TRITON_MLA", (
        f"the override is checked before MLA picks its family: TRITON_MLA asked for on an MLA "
        f"model must run, not FLASHMLA; got {got}"
    )


def test_override_names_are_case_insensitive(impl) -> None:
    got = impl.select_backend(H100, "bfloat16", 128, False, None, "triton_attn")
    assert got == "TRITON_ATTN", (
        f"vLLM accepts backend names in any case and answers in its own spelling; 'triton_attn' "
        f"must give 'TRITON_ATTN', got {got!r}"
    )


@pytest.mark.parametrize(
    ("platform", "dtype", "head_size", "is_mla", "override", "match"),
    [
        (H100, "bfloat16", 128, False, "FLASHMLA", "MLA"),
        (H100, "bfloat16", 512, False, "FLASHMLA", "MLA"),
        (H100, "bfloat16", MLA_HEAD, True, "FLASH_ATTN", "MLA"),
        (A100, "float32", 128, False, "FLASH_ATTN", "dtype"),
        (T4, "float16", 128, False, "FLASH_ATTN", "capability"),
        (H100, "bfloat16", 128, False, "CPU_ATTN", "cpu"),
    ],
    ids=["flashmla_on_a_standard_model", "flashmla_on_a_standard_model_head_512",
         "flash_attn_on_mla", "flash_attn_fp32", "flash_attn_on_t4", "cpu_backend_on_cuda"],
)
def test_a_cuda_override_it_cannot_honour_is_refused(impl, platform: Platform, dtype: str,
                                                     head_size: int, is_mla: bool, override: str,
                                                     match: str) -> None:
    with expect_raises(ValueError, f"{override} cannot run this configuration on {platform}; "
                       f"vLLM's CUDA platform refuses rather than silently picking another "
                       f"backend, and names the reason ({match})", match=f"(?i){match}"):
        impl.select_backend(platform, dtype, head_size, is_mla, None, override)


@pytest.mark.parametrize(
    ("is_mla", "head_size", "override", "expected"),
    [(False, 64, "FLASH_ATTN", "CPU_ATTN"), (True, MLA_HEAD, "FLASHMLA", "CPU_MLA"),
     (False, 64, "CPU_MLA", "CPU_ATTN"), (False, 64, "CPU_ATTN", "CPU_ATTN")],
    ids=["flash_attn-ignored", "flashmla_on_mla-ignored", "cpu_mla_on_standard-ignored",
         "cpu_attn-honoured"],
)
def test_the_cpu_ignores_an_override_it_cannot_honour(impl, is_mla: bool, head_size: int,
                                                      override: str, expected: str) -> None:
    got = impl.select_backend(CPU, "bfloat16", head_size, is_mla, None, override)
    assert got == expected, (
        f"vLLM 0.32's CPU platform logs 'Cannot use {override} backend on CPU' and runs its own "
        f"kernel: expected {expected}, got {got}"
    )


@pytest.mark.parametrize("platform", [H100, CPU], ids=["cuda", "cpu"])
def test_an_unknown_override_is_an_error_everywhere(impl, platform: Platform) -> None:
    with expect_raises(ValueError, "'FLASH' names no backend; vLLM rejects it and lists the "
                       "valid ones", match="FLASH_ATTN"):
        impl.select_backend(platform, "bfloat16", 128, False, None, "FLASH")


# ----------------------------------------------------------------------- reasons and errors


def test_unsupported_reasons_names_every_gap(impl) -> None:
    ok = impl.unsupported_reasons("FLASH_ATTN", H100, "bfloat16", 128)
    assert ok == [], f"FLASH_ATTN runs bf16 head size 128 on an H100: expected [], got {ok}"
    reasons = impl.unsupported_reasons("FLASH_ATTN", T4, "float32", 100, True, WINDOW)
    text = " | ".join(reasons).lower()
    missing = [w for w in ("capability", "dtype", "head", "mla") if w not in text]
    assert len(reasons) == 4 and not missing, (
        "FLASH_ATTN on a T4 for a float32, head-size-100 MLA model fails four checks "
        "(capability, dtype, head size, MLA; it does implement a sliding window): expected one "
        f"reason for each, got {reasons}" + (f" (nothing says {missing})" if missing else "")
    )
    layout = impl.unsupported_reasons("FLASHMLA", H100, "bfloat16", 512)
    assert len(layout) == 1 and "mla" in layout[0].lower(), (
        f"FlashMLA runs bf16 head size 512 on an H100, but only over an MLA latent cache: a "
        f"standard model fails exactly the MLA check; got {layout}"
    )
    wrong_platform = impl.unsupported_reasons("CPU_ATTN", A100, "bfloat16", 128)
    assert len(wrong_platform) == 1 and "cpu" in wrong_platform[0].lower(), (
        f"CPU_ATTN on a GPU fails exactly one check, the platform; got {wrong_platform}"
    )


def test_nothing_left_after_the_filter_is_a_clear_error(impl) -> None:
    with expect_raises(ValueError, "vLLM's CPU kernels have no head size 16 (the CPU backend "
                       "refuses head_dim=16), and there is no Triton on the CPU",
                       match="16"):
        impl.select_backend(CPU, "bfloat16", 16)
    with expect_raises(ValueError, "neither MLA kernel runs float32 on CUDA", match="(?i)dtype"):
        impl.select_backend(H100, "float32", MLA_HEAD, True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dtype": "float64"}, "dtype"),
        ({"dtype": "bf16"}, "dtype"),
        ({"head_size": 0}, "head_size"),
        ({"head_size": -64}, "head_size"),
        ({"sliding_window": 0}, "sliding_window"),
        ({"override": "NOT_A_BACKEND"}, "NOT_A_BACKEND"),
    ],
    ids=["float64", "short_dtype", "head_size_0", "head_size_negative", "window_0",
         "unknown_override"],
)
def test_bad_inputs_raise_a_value_error_naming_them(impl, kwargs: dict, match: str) -> None:
    args = {"platform": H100, "dtype": "bfloat16", "head_size": 128, "is_mla": False,
            "sliding_window": None, "override": None} | kwargs
    with expect_raises(ValueError, f"{kwargs} is not a valid input", match=match):
        impl.select_backend(**args)


def test_unsupported_reasons_rejects_an_unknown_backend(impl) -> None:
    with expect_raises(ValueError, "XFORMERS is not in the table", match="XFORMERS"):
        impl.unsupported_reasons("XFORMERS", H100, "bfloat16", 128)


# ----------------------------------------------------------------------- purity


CASES = [  # (platform, dtype, head size, MLA, sliding window, override) -> backend
    ((H100, "bfloat16", 128, False, None, None), "FLASH_ATTN"),
    ((H100, "float32", 128, False, None, None), "TRITON_ATTN"),
    ((B200, "bfloat16", 80, False, None, None), "FLASH_ATTN"),
    ((B200, "bfloat16", 128, False, None, None), "FLASHINFER"),
    ((H100, "bfloat16", MLA_HEAD, True, None, None), "FLASHMLA"),
    ((A100, "bfloat16", 128, False, None, "TRITON_ATTN"), "TRITON_ATTN"),
    ((A100, "bfloat16", 128, False, None, None), "FLASH_ATTN"),
    ((CPU, "float32", 128, False, WINDOW, None), "CPU_ATTN"),
    ((T4, "float16", 128, False, None, None), "TRITON_ATTN"),
]


def test_selection_is_a_pure_function(impl) -> None:
    chains_before = {p: list(impl.default_chain(p)) for p in (A100, H100, B200, CPU)}
    for order in ("forward", "reverse", "forward again"):
        cases = CASES[::-1] if order == "reverse" else CASES
        for args, expected in cases:
            got = impl.select_backend(*args)
            assert got == expected, (
                f"{order} pass, select_backend{args[0], *args[1:]}: expected {expected}, got "
                f"{got}. The same inputs must give the same backend whatever was asked before: "
                "vLLM selects once at start-up, but the selection itself keeps no state"
            )
    chains_after = {p: list(impl.default_chain(p)) for p in (A100, H100, B200, CPU)}
    assert chains_after == chains_before, (
        f"selecting must not change the default chains: before {chains_before}, after "
        f"{chains_after}"
    )


def test_your_prediction_for_this_machine(impl, reference_impl, device: str) -> None:
    """``device`` is ``cpu``, plus ``cuda`` where a GPU is present: predict its backend."""
    impl.select_backend(CPU, "bfloat16", 128)
    if device == "cpu":
        platform = CPU
    else:
        torch = pytest.importorskip("torch", reason="reading the GPU's capability needs torch")
        platform = Platform("cuda", tuple(torch.cuda.get_device_capability()))
    got = impl.select_backend(platform, "bfloat16", 128)
    want = reference_impl.select_backend(platform, "bfloat16", 128)
    assert got == want, f"on this machine ({platform}) a bf16 head-128 model runs {want}, got {got}"


# ----------------------------------------------------------------------- live: vLLM 0.32 on CPU

TINY = EngineConfig(model="tiny", kv_cache_gib=1, max_model_len=1024)  # the shared live engine


def _selector_config(dtype: str, head_size: int, is_mla: bool = False,
                     sliding_window: int | None = None):
    """vLLM's ``AttentionSelectorConfig`` for one of our configurations."""
    import torch
    from vllm.v1.attention.selector import AttentionSelectorConfig

    return AttentionSelectorConfig(head_size=head_size, dtype=getattr(torch, dtype),
                                   kv_cache_dtype="auto", block_size=None, use_mla=is_mla,
                                   has_sliding_window=sliding_window is not None)


def _vllm_cuda():
    """vLLM's CUDA platform module, imported on a machine without CUDA.

    ``vllm/platforms/cuda.py`` imports the compiled CUDA ops (``vllm._C_stable_libtorch``) at its
    top; the CPU build does not ship them. The ranking and the checks used here are plain Python
    and call none of those ops, so an empty placeholder stands in during the import and is
    removed right after.
    """
    require_vllm()
    name = "vllm._C_stable_libtorch"
    placeholder = None
    if name not in sys.modules and importlib.util.find_spec(name) is None:
        placeholder = sys.modules[name] = types.ModuleType(name)
    try:
        from vllm.platforms import cuda
    finally:
        if placeholder is not None and sys.modules.get(name) is placeholder:
            del sys.modules[name]
    return cuda


def _vllm_ranking(capability: tuple[int, int], is_mla: bool) -> list[str]:
    """vLLM's candidate ranking for a GPU it is not running on: every backend it considers,
    usable here or not, in priority order."""
    cuda = _vllm_cuda()
    from vllm.platforms.interface import DeviceCapability

    head = MLA_HEAD if is_mla else 128
    valid, invalid = cuda.CudaPlatform.get_valid_backends(
        DeviceCapability(*capability), _selector_config("bfloat16", head, is_mla))
    priority = {c.backend.name: c.priority for c in valid}
    priority.update({backend.name: rank for backend, (rank, _) in invalid.items()})
    return sorted(priority, key=priority.__getitem__)


def _cpu_platform():
    require_vllm()
    from vllm.platforms import current_platform

    assert current_platform.device_type == "cpu", (
        f"expected vLLM's CPU platform, got {current_platform}"
    )
    return current_platform


def _backend_name(qualname: str) -> str:
    from vllm.utils.import_utils import resolve_obj_by_qualname

    return resolve_obj_by_qualname(qualname).get_name()


@contextmanager
def _log_lines(logger_name: str):
    """The messages ``logger_name`` emits inside the block, at INFO and above."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    log = logging.getLogger(logger_name)
    handler, old_level = Collect(logging.INFO), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


@pytest.mark.live
@pytest.mark.parametrize(
    ("dtype", "head_size", "is_mla"),
    [("bfloat16", 64, False), ("float32", 128, False), ("bfloat16", MLA_HEAD, True)],
    ids=["bf16", "fp32", "mla"],
)
def test_vllm_cpu_platform_picks_what_you_pick(impl, dtype: str, head_size: int,
                                               is_mla: bool) -> None:
    yours = impl.select_backend(CPU, dtype, head_size, is_mla)
    platform = _cpu_platform()
    theirs = _backend_name(platform.get_attn_backend_cls(
        None, attn_selector_config=_selector_config(dtype, head_size, is_mla)))
    if theirs == "AMX_MLA":  # a CPU with AMX tiles runs DeepSeek's AMX kernel instead
        theirs = "CPU_MLA"
    assert _norm(yours) == _norm(theirs), (
        f"vLLM's CPU platform picks {theirs} for {dtype}, head size {head_size}, MLA={is_mla}; "
        f"you pick {yours}"
    )


@pytest.mark.live
@pytest.mark.parametrize(
    ("platform", "is_mla"), [(H100, False), (B200, False), (H100, True)],
    ids=["sm90", "sm100", "sm90_mla"],
)
def test_your_chain_follows_vllm_cuda_ranking(impl, platform: Platform, is_mla: bool) -> None:
    yours = list(impl.default_chain(platform, is_mla))
    ranking = _vllm_ranking(platform.capability, is_mla)
    known = {_norm(n) for n in yours}
    theirs = [n for n in ranking if _norm(n) in known]
    assert [_norm(n) for n in yours] == [_norm(n) for n in theirs], (
        f"vLLM 0.32 ranks {ranking} on {platform} (MLA={is_mla}); the backends of your chain "
        f"{yours} must appear there in the same order: {theirs}"
    )


@pytest.mark.live
def test_your_filter_agrees_with_vllm_backend_classes(impl) -> None:
    configs = [  # (capability, dtype, head size, MLA, sliding window)
        ((9, 0), "bfloat16", 128, False, None), ((9, 0), "float32", 128, False, None),
        ((9, 0), "bfloat16", 100, False, None), ((9, 0), "bfloat16", 16, False, None),
        ((9, 0), "bfloat16", 128, False, WINDOW), ((7, 5), "float16", 128, False, None),
        ((9, 0), "bfloat16", MLA_HEAD, True, None), ((8, 0), "float32", MLA_HEAD, True, None),
        ((8, 0), "bfloat16", MLA_HEAD, True, WINDOW),
    ]
    impl.unsupported_reasons("FLASH_ATTN", H100, "bfloat16", 128)
    _vllm_cuda()
    from vllm.platforms.interface import DeviceCapability
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    disagree = []
    for name in ("FLASH_ATTN", "TRITON_ATTN", "TRITON_MLA"):
        backend = AttentionBackendEnum[name].get_class()
        for cap, dtype, head, mla, window in configs:
            theirs = backend.validate_configuration(
                device_capability=DeviceCapability(*cap),
                **_selector_config(dtype, head, mla, window)._asdict())
            yours = impl.unsupported_reasons(name, Platform("cuda", cap), dtype, head, mla,
                                             window)
            if bool(theirs) != bool(yours):
                disagree.append(f"{name} sm{cap[0]}{cap[1]} {dtype} head {head} MLA={mla} "
                                f"window={window}: vLLM says {theirs or 'ok'}, you say "
                                f"{yours or 'ok'}")
    assert not disagree, "your filter and vLLM's backend classes disagree:\n" + "\n".join(disagree)


@pytest.mark.live
def test_flashmla_on_a_standard_model_is_refused_by_both(impl) -> None:
    with expect_raises(ValueError, "FLASHMLA cannot read a standard model's KV cache",
                       match="(?i)mla"):
        impl.select_backend(H100, "bfloat16", 128, False, None, "FLASHMLA")
    cuda = _vllm_cuda()
    from vllm.platforms.interface import DeviceCapability
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    class Hopper(cuda.CudaPlatform):  # the CUDA platform, told it runs on an sm90 GPU
        @classmethod
        def get_device_capability(cls, device_id: int = 0) -> DeviceCapability:
            return DeviceCapability(9, 0)

    with expect_raises(ValueError, "vLLM's CUDA platform refuses FLASHMLA for a non-MLA model",
                       match="(?i)non-MLA"):
        Hopper.get_attn_backend_cls(AttentionBackendEnum.FLASHMLA,
                                    attn_selector_config=_selector_config("bfloat16", 128))


@pytest.mark.live
def test_a_flash_attn_override_is_ignored_on_cpu_as_vllm_does(impl) -> None:
    yours = impl.select_backend(CPU, "bfloat16", 64, False, None, "flash_attn")
    platform = _cpu_platform()
    from vllm.config.attention import AttentionConfig

    # vLLM 0.32 takes the override from attention_config (VLLM_ATTENTION_BACKEND is gone);
    # get_attn_backend hands attention_config.backend to the platform, as here.
    requested = AttentionConfig(backend="flash_attn").backend
    with _log_lines(type(platform).__module__) as lines:
        theirs = _backend_name(platform.get_attn_backend_cls(
            requested, attn_selector_config=_selector_config("bfloat16", 64)))
    assert any("cannot use" in line.lower() and "FLASH_ATTN" in line for line in lines), (
        f"vLLM's CPU platform should log that it cannot use FLASH_ATTN; it logged {lines}"
    )
    assert _norm(yours) == _norm(theirs), (
        f"with a FLASH_ATTN override vLLM's CPU platform runs {theirs}; you pick {yours}"
    )


@pytest.mark.live
def test_the_engine_runs_the_backend_you_predict(impl, live_engines: LiveEngines) -> None:
    impl.select_backend(CPU, "bfloat16", 64)  # your code first: no engine for a stub
    handle = live_engines.get(TINY)
    mc = handle.vllm_config.model_config
    window = getattr(mc.hf_config, "sliding_window", None)
    dtype = str(mc.dtype).removeprefix("torch.")
    predicted = impl.select_backend(CPU, dtype, mc.get_head_size(), False, window)
    layers = handle.vllm_config.compilation_config.static_forward_context
    chosen = {name: layer.attn_backend.get_name() for name, layer in layers.items()
              if hasattr(layer, "attn_backend")}
    assert len(chosen) == mc.hf_config.num_hidden_layers, f"one attention layer per layer: {chosen}"
    wrong = {n: b for n, b in chosen.items() if _norm(b) != _norm(predicted)}
    assert not wrong, f"the engine's attention layers run {chosen}; you predicted {predicted}"


@pytest.mark.live
def test_the_backend_and_its_metadata_builder_are_fixed_at_start_up(
        impl, live_engines: LiveEngines) -> None:
    predicted = impl.select_backend(CPU, "bfloat16", 64)
    from vllm import SamplingParams

    handle = live_engines.get(TINY)
    runner = handle.engine_core.model_executor.driver_worker.worker.model_runner

    def snapshot() -> list[tuple[str, str, list[int]]]:
        groups = [g for per_spec in runner.attn_groups for g in per_spec]
        return [(g.backend.get_name(), g.backend.get_builder_cls().__name__,
                 [id(b) for b in g.metadata_builders]) for g in groups]

    before = snapshot()
    assert before, "the model runner holds no attention groups"
    for g in (g for per_spec in runner.attn_groups for g in per_spec):
        builder_cls = g.backend.get_builder_cls()
        assert g.metadata_builders and all(isinstance(b, builder_cls)
                                           for b in g.metadata_builders), (
            f"{g.backend.get_name()} brings its own metadata builder {builder_cls.__name__}; "
            f"the runner holds {[type(b).__name__ for b in g.metadata_builders]}"
        )
    assert {_norm(name) for name, _, _ in before} == {_norm(predicted)}, (
        f"the engine's attention groups run {[name for name, _, _ in before]}; you predicted "
        f"{predicted}"
    )
    handle.llm.generate(["backend"], SamplingParams(max_tokens=3, temperature=0),
                        use_tqdm=False)
    after = snapshot()
    assert after == before, (
        "serving requests must not change the backend or rebuild its metadata builders: both "
        f"are fixed at start-up; before {before}, after {after}"
    )
