"""Kata 17-01: a Platform answers the hardware questions; the engine core only asks."""

from __future__ import annotations

import inspect
import warnings

import pytest

from katas.phase17.platform_abstraction import scaffold
from katas.phase17.platform_abstraction.scaffold import GiB, configure_engine

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


def test_default_registry_holds_cpu_then_cuda(impl) -> None:
    registry = impl.make_default_platforms()
    assert list(registry) == ["cpu", "cuda"], f"expected ['cpu', 'cuda'], got {list(registry)}"
    assert registry["cpu"].attention_backend == "CPU_ATTN", "vLLM's CPU backend is CPU_ATTN"
    assert registry["cuda"].attention_backend == "FLASH_ATTN"
    assert not registry["cpu"].supports_graphs, "a CPU cannot capture CUDA graphs"
    assert registry["cuda"].supports_graphs


def test_each_call_makes_a_fresh_registry(impl) -> None:
    first = impl.make_default_platforms()
    impl.register_platform(first, mytpu(impl))
    assert "mytpu" not in impl.make_default_platforms(), (
        "make_default_platforms returned a shared registry: a plugin registered in one engine "
        "leaked into the next"
    )


def test_resolution_prefers_the_accelerator(impl) -> None:
    registry = impl.make_default_platforms()
    platform = impl.resolve_platform(registry, ["cpu", "cuda"])
    assert platform.name == "cuda", f"a GPU is present, so cuda must win; got {platform.name}"
    decisions = configure_engine(platform, "bfloat16", DEVICE_MEMORY, 0.9)
    assert (decisions.attention_backend, decisions.execution) == ("FLASH_ATTN", "graphs"), (
        "the accelerator brings its backend and graph capture as a bundle; got "
        f"{decisions.attention_backend}, {decisions.execution}"
    )


@pytest.mark.parametrize("devices", [[], ["cpu"]], ids=["no_devices", "only_a_cpu"])
def test_cpu_is_the_floor(impl, devices: list[str]) -> None:
    platform = impl.resolve_platform(impl.make_default_platforms(), devices)
    assert platform.name == "cpu", f"with devices {devices} the floor is cpu, got {platform.name}"
    decisions = configure_engine(platform, "bfloat16", DEVICE_MEMORY, 4)
    assert decisions.execution == "eager", "no graphs on a CPU: the engine runs eagerly"


def test_override_wins_over_detection(impl) -> None:
    platform = impl.resolve_platform(impl.make_default_platforms(), ["cuda"], override="cpu")
    assert platform.name == "cpu", f"the override must beat detection, got {platform.name}"


def test_unknown_override_is_loud(impl) -> None:
    registry = impl.make_default_platforms()
    with pytest.raises(ValueError, match="cpu") as caught:
        impl.resolve_platform(registry, ["cuda"], override="rocm")
    assert "rocm" in str(caught.value), "the error must name the override it could not find"


@pytest.mark.parametrize(
    ("platform", "asked", "got"),
    [
        ("cpu", "bfloat16", "bfloat16"),
        ("cpu", "float32", "float32"),
        ("cuda", "float16", "float16"),
        ("cuda", "bfloat16", "bfloat16"),
    ],
    ids=["cpu-bf16", "cpu-fp32", "cuda-fp16", "cuda-bf16"],
)
def test_a_supported_dtype_passes_silently(impl, platform: str, asked: str, got: str) -> None:
    chosen = impl.make_default_platforms()[platform]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert chosen.check_dtype(asked) == got, f"{platform} supports {asked}; keep it"


@pytest.mark.parametrize(
    ("platform", "asked"),
    [("cpu", "float16"), ("cpu", "fp8"), ("cuda", "fp8")],
    ids=["cpu-fp16", "cpu-fp8", "cuda-fp8"],
)
def test_an_unsupported_dtype_falls_back_to_float32_with_a_warning(
    impl, platform: str, asked: str
) -> None:
    chosen = impl.make_default_platforms()[platform]
    with pytest.warns(UserWarning, match=asked):
        got = chosen.check_dtype(asked)
    assert got == "float32", f"{platform} cannot run {asked}: fall back to float32, got {got}"


def test_the_cpu_knob_is_absolute_gib(impl) -> None:
    cpu = impl.make_default_platforms()["cpu"]
    for memory in (8 * GiB, 512 * GiB):
        got = cpu.kv_cache_bytes(memory, 4)
        assert got == 4 * GiB, (
            f"VLLM_CPU_KVCACHE_SPACE=4 means 4 GiB whatever the RAM; got {got} bytes with "
            f"{memory // GiB} GiB of RAM"
        )


def test_the_cuda_knob_is_a_fraction_of_device_memory(impl) -> None:
    cuda = impl.make_default_platforms()["cuda"]
    got = cuda.kv_cache_bytes(DEVICE_MEMORY, 0.5)
    assert got == 12 * GiB, f"gpu_memory_utilization=0.5 of 24 GiB is 12 GiB, got {got} bytes"


def test_out_of_tree_plugin_changes_decisions_without_core_edits(impl) -> None:
    registry = impl.make_default_platforms()
    impl.register_platform(registry, mytpu(impl))
    platform = impl.resolve_platform(registry, ["cpu", "tpu"])
    assert platform.name == "mytpu", f"a TPU is here, so the plugin must win; got {platform.name}"
    with pytest.warns(UserWarning, match="float16"):
        decisions = configure_engine(platform, "float16", DEVICE_MEMORY, 0.5)
    assert decisions.attention_backend == "PALLAS"
    assert decisions.dtype == "float32", "mytpu has no float16: its own check_dtype decided"
    core = inspect.getsource(scaffold.configure_engine)
    named = [word for word in ("cpu", "cuda", "tpu", "PALLAS", "FLASH") if word in core]
    assert not named, f"the engine core must not name a platform, but it mentions {named}"


@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_duplicate_registration_is_refused(impl, name: str) -> None:
    registry = impl.make_default_platforms()
    original = registry[name]
    impostor = impl.Platform(
        name=name,
        device_type=name,
        attention_backend="SHADOW",
        supported_dtypes=("float32",),
        supports_graphs=False,
        kv_cache_knob="absolute_gib",
    )
    with pytest.raises(ValueError, match=name):
        impl.register_platform(registry, impostor)
    assert registry[name] is original, "a refused registration must leave the registry as it was"
