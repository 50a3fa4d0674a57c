"""ToyModel: deterministic logits from (seed, last token, position) — a stand-in forward pass.

Upstream twin: ``vllm/v1/worker/gpu_model_runner.py: GPUModelRunner.execute_model`` (which runs
the real network over the scheduled tokens and returns one logits row per sampling position).

Honest simplification: the toy never reads the KV cache. Its logits for a row depend only on the
model seed, the last scheduled token of that row and that token's position. That is exactly
enough for the course's equality tests: a request's continuation is fixed by
``(last token, position)``, so chunked prefill, prefix caching, paging and preemption-by-
recompute can only change *when* a token is produced, never *which*. Memory is still checked:
the toy runs behind the same ``ModelRunner`` as the real models (``mini_vllm.models``), which
writes a fingerprint of every token into its KV slot and refuses a step whose requests would read
a slot that does not hold their own token (``KVCacheError``).

Trap avoided: Python's ``hash()`` of ``str`` is salted per process; we mix integers with a
fixed 64-bit finaliser instead, so two processes (or xdist workers) agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mini_vllm.tokenizer import VOCAB_SIZE

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 that scrambles every input bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


class ToyModel:
    """``forward(last_tokens, positions) -> logits[batch, 257]``, float64, a pure function."""

    vocab_size: int = VOCAB_SIZE

    def __init__(self, seed: int = 0, scale: float = 4.0) -> None:
        self.seed = int(seed)
        # Logits lie in [-scale, scale); a moderate spread keeps temperature sampling interesting.
        self.scale = float(scale)
        self._vocab = np.arange(VOCAB_SIZE, dtype=np.uint64) * _GOLDEN

    def forward(self, last_tokens: Sequence[int], positions: Sequence[int]) -> np.ndarray:
        tokens = np.asarray(last_tokens, dtype=np.int64)
        pos = np.asarray(positions, dtype=np.int64)
        if tokens.shape != pos.shape or tokens.ndim != 1:
            raise ValueError(
                f"last_tokens and positions must be equal-length 1-D sequences, "
                f"got shapes {tokens.shape} and {pos.shape}"
            )
        if tokens.size and (tokens.min() < 0 or tokens.max() >= VOCAB_SIZE or pos.min() < 0):
            raise ValueError("token ids must lie in [0, 257) and positions must be >= 0")
        with np.errstate(over="ignore"):  # uint64 multiplication wraps by design
            row = _mix64(
                np.uint64(self.seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN
                ^ _mix64(tokens.astype(np.uint64) + np.uint64(1))
                ^ (pos.astype(np.uint64) * _M2)
            )
            bits = _mix64(row[:, None] + self._vocab[None, :])
        # Top 53 bits -> a float in [0, 1), exactly representable in float64.
        unit = (bits >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return (unit * 2.0 - 1.0) * self.scale

    __call__ = forward
