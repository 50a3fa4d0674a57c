"""Tensor parallelism for mini_vllm, simulated in one process (phase 10).

``parallel_state`` holds the group (world size, ranks, the collectives: an in-process stand-in for
NCCL); ``tensor_parallel`` shards a loaded Llama's weights rank by rank and wraps the shards in a
model the engine runs unchanged.
"""

from mini_vllm.distributed.parallel_state import TensorParallelGroup, divide
from mini_vllm.distributed.tensor_parallel import (
    TensorParallelLlama,
    column_shards,
    qkv_shards,
    row_shards,
    shard_model,
)

__all__ = [
    "TensorParallelGroup",
    "TensorParallelLlama",
    "column_shards",
    "divide",
    "qkv_shards",
    "row_shards",
    "shard_model",
]
