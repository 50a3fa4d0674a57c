"""The pytest plugin of vllm-katas, registered through the ``pytest11`` entry point.

Each concern is its own module (the pattern of pytest's own plugins); registering this module
registers them all. Nothing here imports torch, triton or vllm.
"""

from __future__ import annotations

# Ordered so that each module is registered before any later one imports it (pytest can only
# rewrite the asserts of a plugin module it imports itself).
pytest_plugins = [
    "pytest_vllm_katas.timeout",
    "pytest_vllm_katas.variants",
    "pytest_vllm_katas.impl",
    "pytest_vllm_katas.outcomes",
    "pytest_vllm_katas.tiers",
    "pytest_vllm_katas.progress",
    "pytest_vllm_katas.header",
    "pytest_vllm_katas.bench",
    # `tiny_llama`: mini_vllm's seeded real model, for engine-driving tests.
    "pytest_vllm_katas.real_model",
    # The live tier's engine fixtures and `live` marker; engines start only when a test asks.
    "pytest_vllm_katas.live.fixtures",
]
