"""Kata 17-01: a Platform answers the hardware questions; the engine core only asks."""

from __future__ import annotations

import inspect
import re
import warnings

import pytest

from katas.phase17.platform_abstraction import scaffold
from katas.phase17.platform_abstraction.scaffold import GiB, configure_engine
from pytest_vllm_katas import expect_raises

pytestmark = pytest.mark.cpu_ok

DEVICE_MEMORY = 24 * GiB  # an L4's worth, for the knob arithmetic


def mytpu(impl):
    """An out-of-tree platform, written here — "outside" the engine and the registry's module."""
    return impl.Platform(
        name="mytpu",
        device_type="tpu",
        attention_backend="PALLAS",
        supported_dtypes=("float32", "bfloat16"),
        supports_graphs=True,
        kv_cache_knob="memory_fraction",
    )


def _registry(impl) -> dict:
    registry = impl.make_default_platforms()
    assert isinstance(registry, dict), (
        f"make_default_platforms returns a dict from name to Platform; got {registry!r}"
    )
    return registry


def _warnings_from(call) -> tuple[object, list[str]]:  # noqa: ANN001
    """Run ``call`` recording every warning; (its result, the warnings' messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [f"{w.category.__name__}: {w.message}" for w in caught]


@pytest.mark.parametrize(
    ("name", "device_type", "backend", "dtypes", "graphs", "knob"),
    [
        ("cpu", "cpu", "CPU_ATTN", {"float32", "bfloat16"}, False, "absolute_gib"),
        ("cuda", "cuda", "FLASH_ATTN", {"float32", "float16", "bfloat16"}, True,
         "memory_fraction"),
    ],
    ids=["cpu", "cuda"],
)
def test_default_registry_holds_cpu_then_cuda(
    impl, name: str, device_type: str, backend: str, dtypes: set[str], graphs: bool, knob: str
) -> None:
    registry = _registry(impl)
    assert list(registry) == ["cpu", "cuda"], f"expected ['cpu', 'cuda'], got {list(registry)}"
    platform = registry[name]
    got = (platform.name, platform.device_type, platform.attention_backend,
           set(platform.supported_dtypes), platform.supports_graphs, platform.kv_cache_knob)
    want = (name, device_type, backend, dtypes, graphs, knob)
    assert got == want, (
        f"the in-tree {name} platform is (name, device_type, attention_backend, "
        f"supported_dtypes, supports_graphs, kv_cache_knob) = {want}; got {got}"
    )


def test_each_call_makes_a_fresh_registry(impl) -> None:
    first = _registry(impl)
    impl.register_platform(first, mytpu(impl))
    assert "mytpu" not in _registry(impl), (
        "make_default_platforms returned a shared registry: a plugin registered in one engine "
        "leaked into the next"
    )


def test_resolution_prefers_the_accelerator(impl) -> None:
    registry = _registry(impl)
    platform = impl.resolve_platform(registry, ["cpu", "cuda"])
    assert platform.name == "cuda", f"a GPU is present, so cuda must win; got {platform.name}"
    decisions = configure_engine(platform, "bfloat16", DEVICE_MEMORY, 0.9)
    assert (decisions.attention_backend, decisions.execution) == ("FLASH_ATTN", "graphs"), (
        "the accelerator brings its backend and graph capture as a bundle; got "
        f"{decisions.attention_backend}, {decisions.execution}"
    )


@pytest.mark.parametrize(
    "devices",
    [["cuda", "tpu"], ["tpu", "cuda"], ["cpu", "tpu", "cuda"]],
    ids=["cuda_listed_first", "tpu_listed_first", "cpu_tpu_cuda"],
)
def test_the_first_registered_accelerator_wins(impl, devices: list[str]) -> None:
    registry = _registry(impl)
    impl.register_platform(registry, mytpu(impl))
    got = impl.resolve_platform(registry, devices).name
    assert got == "cuda", (
        f"cpu, cuda, mytpu are registered in that order and {devices} are present: the first "
        f"registered accelerator, cuda, wins whatever order the devices are listed in; got {got}"
    )
    # The same platforms registered with the plugin ahead of cuda: now the plugin comes first.
    plugin_first: dict = {}
    for platform in (registry["cpu"], registry["mytpu"], registry["cuda"]):
        impl.register_platform(plugin_first, platform)
    got = impl.resolve_platform(plugin_first, devices).name
    assert got == "mytpu", (
        f"registered as cpu, mytpu, cuda with {devices} present, the first registered "
        f"accelerator is mytpu; got {got}"
    )


@pytest.mark.parametrize("devices", [[], ["cpu"]], ids=["no_devices", "only_a_cpu"])
def test_cpu_is_the_floor(impl, devices: list[str]) -> None:
    platform = impl.resolve_platform(_registry(impl), devices)
    assert platform.name == "cpu", f"with devices {devices} the floor is cpu, got {platform.name}"
    decisions = configure_engine(platform, "bfloat16", DEVICE_MEMORY, 4)
    assert decisions.execution == "eager", "no graphs on a CPU: the engine runs eagerly"


def test_override_wins_over_detection(impl) -> None:
    platform = impl.resolve_platform(_registry(impl), ["cuda"], override="cpu")
    assert platform.name == "cpu", f"the override must beat detection, got {platform.name}"


def test_unknown_override_is_loud(impl) -> None:
    registry = _registry(impl)
    with expect_raises(ValueError, "an override naming no registered platform is a typo to "
                       "report, never a reason to fall back to detection", match="rocm") as caught:
        impl.resolve_platform(registry, ["cuda"], override="rocm")
    message = str(caught.value)
    assert "cpu" in message and "cuda" in message, (
        f"the error must list the registered platforms (cpu, cuda) so the user can fix the "
        f"typo; got {message!r}"
    )


@pytest.mark.parametrize(
    ("platform", "asked", "got"),
    [
        ("cpu", "bfloat16", "bfloat16"),
        ("cpu", "float32", "float32"),
        ("cuda", "float16", "float16"),
        ("cuda", "bfloat16", "bfloat16"),
        ("cuda", "float32", "float32"),
    ],
    ids=["cpu-bf16", "cpu-fp32", "cuda-fp16", "cuda-bf16", "cuda-fp32"],
)
def test_a_supported_dtype_passes_silently(impl, platform: str, asked: str, got: str) -> None:
    chosen = _registry(impl)[platform]
    result, warned = _warnings_from(lambda: chosen.check_dtype(asked))
    assert result == got and not warned, (
        f"{platform} supports {asked}: keep it, without a warning; got {result!r} with "
        f"warnings {warned}"
    )


@pytest.mark.parametrize(
    ("platform", "asked"),
    [("cpu", "float16"), ("cpu", "fp8"), ("cuda", "fp8")],
    ids=["cpu-fp16", "cpu-fp8", "cuda-fp8"],
)
def test_an_unsupported_dtype_falls_back_to_float32_with_a_warning(
    impl, platform: str, asked: str
) -> None:
    chosen = _registry(impl)[platform]
    got, warned = _warnings_from(lambda: chosen.check_dtype(asked))
    assert got == "float32", f"{platform} cannot run {asked}: fall back to float32, got {got!r}"
    assert any(w.startswith("UserWarning") and asked in w for w in warned), (
        f"falling back must be loud: a UserWarning that names {asked!r}; got warnings {warned}"
    )


def test_the_cpu_knob_is_absolute_gib(impl) -> None:
    cpu = _registry(impl)["cpu"]
    for memory in (8 * GiB, 512 * GiB):
        got = cpu.kv_cache_bytes(memory, 4)
        assert got == 4 * GiB, (
            f"VLLM_CPU_KVCACHE_SPACE=4 means 4 GiB whatever the RAM; got {got} bytes with "
            f"{memory // GiB} GiB of RAM"
        )


@pytest.mark.parametrize(("setting", "gib"), [(2.5, 2), (7.9, 7)], ids=["2.5", "7.9"])
def test_the_cpu_knob_counts_whole_gib(impl, setting: float, gib: int) -> None:
    got = _registry(impl)["cpu"].kv_cache_bytes(DEVICE_MEMORY, setting)
    assert got == gib * GiB, (
        f"the absolute knob counts whole GiB (VLLM_CPU_KVCACHE_SPACE is an integer), so "
        f"{setting} means {gib} GiB = {gib * GiB} bytes; got {got}"
    )


@pytest.mark.parametrize(
    ("memory", "setting", "expected"),
    [(DEVICE_MEMORY, 0.5, 12 * GiB), (DEVICE_MEMORY, 0.9, int(DEVICE_MEMORY * 0.9)),
     (80 * GiB, 0.25, 20 * GiB)],
    ids=["half_of_24_GiB", "0.9_of_24_GiB", "quarter_of_80_GiB"],
)
def test_the_cuda_knob_is_a_fraction_of_device_memory(
    impl, memory: int, setting: float, expected: int
) -> None:
    got = _registry(impl)["cuda"].kv_cache_bytes(memory, setting)
    assert got == expected, (
        f"gpu_memory_utilization={setting} of {memory / GiB:g} GiB is {expected} bytes (whole "
        f"bytes, rounded down); got {got}"
    )


@pytest.mark.parametrize("knob", ["gpu_fraction", "ABSOLUTE_GIB", ""])
def test_an_unknown_kv_knob_is_an_error(impl, knob: str) -> None:
    with expect_raises(ValueError, f"a platform whose kv_cache_knob is {knob!r} names no known "
                       f"way to size the KV cache; a silent 0 bytes would start an engine "
                       f"that cannot hold one token", match=re.escape(knob) if knob else None):
        odd = impl.Platform(name="odd", device_type="odd", attention_backend="ODD",
                            supported_dtypes=("float32",), supports_graphs=False,
                            kv_cache_knob=knob)
        odd.kv_cache_bytes(DEVICE_MEMORY, 4)


def test_out_of_tree_plugin_changes_decisions_without_core_edits(impl) -> None:
    registry = _registry(impl)
    impl.register_platform(registry, mytpu(impl))
    platform = impl.resolve_platform(registry, ["cpu", "tpu"])
    assert platform.name == "mytpu", f"a TPU is here, so the plugin must win; got {platform.name}"
    decisions, warned = _warnings_from(
        lambda: configure_engine(platform, "float16", DEVICE_MEMORY, 0.5)
    )
    assert any("float16" in w for w in warned), (
        f"mytpu has no float16, so its check_dtype warns; got warnings {warned}"
    )
    assert decisions.attention_backend == "PALLAS", (
        f"the plugin brings its own backend, PALLAS; got {decisions.attention_backend}"
    )
    assert decisions.dtype == "float32", "mytpu has no float16: its own check_dtype decided"
    core = inspect.getsource(scaffold.configure_engine)
    named = [word for word in ("cpu", "cuda", "tpu", "PALLAS", "FLASH") if word in core]
    assert not named, f"the engine core must not name a platform, but it mentions {named}"


@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_duplicate_registration_is_refused(impl, name: str) -> None:
    registry = _registry(impl)
    original = registry[name]
    impostor = impl.Platform(
        name=name,
        device_type=name,
        attention_backend="SHADOW",
        supported_dtypes=("float32",),
        supports_graphs=False,
        kv_cache_knob="absolute_gib",
    )
    with expect_raises(ValueError, f"{name} is taken: a plugin must not shadow an in-tree "
                       f"platform", match=name):
        impl.register_platform(registry, impostor)
    assert registry[name] is original and list(registry) == ["cpu", "cuda"], (
        f"a refused registration must leave the registry as it was; {name} is now "
        f"{registry[name]!r}, names {list(registry)}"
    )
