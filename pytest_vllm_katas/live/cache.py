"""The per-user model cache, re-exported from ``mini_vllm.models.cache`` where it now lives.

mini_vllm loads the same checkpoints without torch, so the cache belongs to it; this module keeps
the old import path working for the live tier and for learners' code.
"""

from __future__ import annotations

from mini_vllm.models.cache import MARKER, MODELS_DIR_ENV, building, models_dir, progress

__all__ = ["MARKER", "MODELS_DIR_ENV", "building", "models_dir", "progress"]
