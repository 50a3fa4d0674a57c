"""Session-scoped real-vLLM engines for the live katas, one start per configuration.

Starting ``vllm.LLM`` costs about half a minute on two cores, so a test session starts each
configuration at most once and hands the same engine to every test that asks for it. To keep
memory bounded (each engine pins its ``VLLM_CPU_KVCACHE_SPACE`` GiB of RAM), at most
``KATAS_LIVE_MAX_ENGINES`` engines (default 1) stay alive; asking for another configuration shuts
the least recently used one down first. Group tests that share a configuration in one module.

By default the engine core runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): no spawned
process, start-up in seconds instead of half a minute, and tests can read the scheduler and the KV
cache manager directly (``EngineHandle.scheduler``). Throughput measurements want
``EngineConfig(inprocess=False)``: the spawned worker binds OpenMP threads and decodes 2-3x faster.

Registered as a plugin module (``pytest_vllm_katas.plugin`` lists it), so katas and the project's
tests get the fixtures without a conftest. It also registers the ``live`` marker: every test that
asks for ``live_engines`` carries it, so ``-m live`` selects the live tier and ``-m "not live"``
leaves it out. Importing this module imports neither torch nor vLLM.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import env

MAX_ENGINES_ENV = "KATAS_LIVE_MAX_ENGINES"
KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
LIVE_MARKER = "live"
LIVE_MARKER_HELP = (
    "starts a real vLLM engine (the live tier): select with -m live, leave out with -m 'not live';"
    " skipped with the install command when vLLM is absent"
)
# Fixtures that start engines: a test asking for one of them is a live test.
_ENGINE_FIXTURES = ("live_engines",)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{LIVE_MARKER}: {LIVE_MARKER_HELP}")


@pytest.hookimpl(tryfirst=True)  # before -m deselects, so `-m live` sees the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in _ENGINE_FIXTURES):
            item.add_marker(LIVE_MARKER)


@dataclass(frozen=True)
class EngineConfig:
    """Everything that changes what an engine is; two equal configs share one engine."""

    model: str = "tiny"  # "tiny" (built locally) or "smollm2" (fetched once)
    kv_cache_gib: int = 1  # VLLM_CPU_KVCACHE_SPACE: whole GiB of RAM for the KV cache
    max_model_len: int = 512
    enable_prefix_caching: bool = True
    max_num_seqs: int = 16
    block_size: int | None = None  # None: the platform's default (128 on CPU)
    seed: int = 0
    # In-process engine core: ~7 s start instead of ~28 s and direct access to the scheduler,
    # but no OMP thread binding, so decode is 2-3x slower. Use False to measure tok/s.
    inprocess: bool = True
    # None: the checkpoint's own dtype (the tiny Llama runs bfloat16); "float32" to match numpy.
    dtype: str | None = None
    # vLLM's speculative_config dict, frozen as sorted (key, value) pairs so configs stay
    # hashable: EngineConfig(speculative_config=(("method", "ngram"), ...)). None: no drafts.
    speculative_config: tuple[tuple[str, Any], ...] | None = None

    def llm_kwargs(self, model_path: Path) -> dict[str, Any]:
        kw: dict[str, Any] = dict(
            model=str(model_path),
            max_model_len=self.max_model_len,
            enable_prefix_caching=self.enable_prefix_caching,
            max_num_seqs=self.max_num_seqs,
            seed=self.seed,
            enforce_eager=True,  # CPU has no CUDA graphs; say so rather than let it fall back
            disable_log_stats=False,  # keep prefix-cache and scheduler stats
        )
        if self.block_size is not None:
            kw["block_size"] = self.block_size
        if self.dtype is not None:
            kw["dtype"] = self.dtype
        if self.speculative_config is not None:
            kw["speculative_config"] = dict(self.speculative_config)
        return kw


@dataclass
class EngineHandle:
    """A started engine plus what it reported at start-up."""

    config: EngineConfig
    llm: Any  # vllm.LLM
    model_path: Path
    start_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def vllm_config(self) -> Any:
        return self.llm.llm_engine.vllm_config

    @property
    def engine_core(self) -> Any:
        """The in-process ``EngineCore`` (scheduler, executor)."""
        if not self.config.inprocess:
            raise RuntimeError("the engine core lives in another process; use inprocess=True")
        return self.llm.llm_engine.engine_core.engine_core

    @property
    def scheduler(self) -> Any:
        return self.engine_core.scheduler

    def kv_report(self) -> dict[str, Any]:
        """What vLLM itself says about KV capacity, read from the resolved config."""
        cc = self.vllm_config.cache_config
        return {
            "num_blocks": cc.num_gpu_blocks,
            "block_size": cc.block_size,
            "kv_cache_size_tokens": cc.kv_cache_size_tokens,
            "max_concurrency": cc.kv_cache_max_concurrency,
            "kv_cache_memory_bytes": cc.kv_cache_memory_bytes,
            "max_model_len": self.vllm_config.model_config.max_model_len,
            "dtype": str(self.vllm_config.model_config.dtype).removeprefix("torch."),
        }

    def shutdown(self) -> None:
        try:
            self.llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort; the finalizer retries
            pass


def model_path_for(name: str) -> Path:
    """The checkpoint directory for ``name``; skip (with the fetch command) when absent."""
    # Imported here, not at the top: the model cache lives in mini_vllm, and importing it (and
    # so numpy) at plugin load would slow every pytest start, live tests or not.
    from . import models

    if name == "tiny":
        return models.build_tiny_llama()
    if name == "smollm2":
        if not models.smollm2_available():
            pytest.skip(models.smollm2_missing_reason())
        return models.smollm2_path()
    raise ValueError(f"unknown live model {name!r}; expected 'tiny' or 'smollm2'")


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block, then restore them (vLLM reads many at start-up)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def guard_llvmlite() -> None:
    """Let vLLM start after numba has been loaded in this process.

    At start-up vLLM 0.32 (``triton_utils/dispatcher.py``) scans every loaded module's
    attributes and, for any value answering ``hasattr(value, "__dict__")``, reads
    ``vars(value)``. llvmlite's ``ffi.lib`` (loaded by numba, which vLLM's n-gram proposer
    uses) answers every attribute through ``__getattr__``, ``__dict__`` included, with a
    function wrapper, so ``vars(...)`` is not a dict and every later engine start fails
    (``'_lib_fn_wrapper' object has no attribute 'get'``). The library's functions never have
    dunder names: refusing those is the honest answer, and the scan then skips it.
    """
    ffi = sys.modules.get("llvmlite.binding.ffi")
    wrapper = getattr(ffi, "_lib_wrapper", None)
    if wrapper is None or getattr(wrapper, "_katas_dunder_guard", False):
        return
    lookup = wrapper.__getattr__

    def __getattr__(self: Any, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return lookup(self, name)

    wrapper.__getattr__ = __getattr__
    wrapper._katas_dunder_guard = True


def start_engine(config: EngineConfig) -> EngineHandle:
    """Start one in-process ``vllm.LLM`` for ``config`` (no caching; see ``LiveEngines``)."""
    path = model_path_for(config.model)
    guard_llvmlite()
    # The CPU platform reads VLLM_CPU_KVCACHE_SPACE while the config is resolved, in this
    # process; it overrides any kv_cache_memory_bytes argument.
    mp = "0" if config.inprocess else "1"
    settings = {KVCACHE_ENV: str(config.kv_cache_gib), "VLLM_ENABLE_V1_MULTIPROCESSING": mp}
    with environment(**settings):
        from vllm import LLM

        t0 = time.perf_counter()
        llm = LLM(**config.llm_kwargs(path))
        start = time.perf_counter() - t0
    return EngineHandle(config=config, llm=llm, model_path=path, start_seconds=start)


class LiveEngines:
    """At most ``max_alive`` engines alive, each configuration started once per session."""

    def __init__(self, max_alive: int = 1) -> None:
        self.max_alive = max(1, max_alive)
        self._alive: OrderedDict[EngineConfig, EngineHandle] = OrderedDict()
        self.starts: list[tuple[EngineConfig, float]] = []

    def get(self, config: EngineConfig | None = None, **overrides: Any) -> EngineHandle:
        config = config or EngineConfig(**overrides)
        if config in self._alive:
            self._alive.move_to_end(config)
            return self._alive[config]
        while len(self._alive) >= self.max_alive:
            _, old = self._alive.popitem(last=False)
            old.shutdown()
            del old
            gc.collect()
        handle = start_engine(config)
        self.starts.append((config, handle.start_seconds))
        self._alive[config] = handle
        return handle

    def close(self) -> None:
        while self._alive:
            _, handle = self._alive.popitem(last=False)
            handle.shutdown()
        gc.collect()


def require_vllm() -> None:
    """Skip the calling test with the exact install/fix command when vLLM cannot run here."""
    status = env.live_status()
    problem = status.problem()
    if problem:
        pytest.skip(problem)
    if not status.is_cpu_build:
        # The live tier sizes the KV cache with VLLM_CPU_KVCACHE_SPACE and its numbers assume
        # the CPU platform (128-token blocks, exact budgets); a CUDA build would start on the
        # GPU with other numbers.
        pytest.skip(f"the live tier runs vLLM's CPU build; this is {status.vllm_distribution} "
                    f"{status.vllm_version} with torch {status.torch_version}: use a separate "
                    f"environment with {env.install_command()}")


@pytest.fixture(scope="session")
def live_engines() -> Iterator[LiveEngines]:
    """Session-wide engine cache: ``live_engines.get(model="tiny", kv_cache_gib=1)``."""
    require_vllm()
    engines = LiveEngines(int(os.environ.get(MAX_ENGINES_ENV, "1")))
    yield engines
    engines.close()


@pytest.fixture(scope="session")
def tiny_llama_dir() -> Path:
    """The locally built tiny Llama (built on first use, then cached)."""
    return model_path_for("tiny")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted SmolLM2 checkpoint; skips with the fetch command when it is not cached."""
    return model_path_for("smollm2")


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Any:
    """SmolLM2's byte-level BPE tokenizer (``mini_vllm.tokenizer.HFTokenizer``), loaded once per
    session so that what is cached on it (``mini_vllm.structured_output.token_bytes``: each id's
    raw bytes) is built once too; skips with the fetch command when the model is not cached."""
    from mini_vllm.tokenizer import HFTokenizer

    return HFTokenizer(model_path_for("smollm2"))
