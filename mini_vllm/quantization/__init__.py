"""Weight quantization for mini_vllm's numpy models: fake-quant (quantize, then dequantize back
to the model's float dtype) of every linear weight of a loaded model.

Upstream twin: ``vllm/model_executor/layers/quantization/`` (one ``QuantizationConfig`` per
format, handing each ``LinearBase`` layer a ``LinearMethodBase``). mini_vllm keeps the float
GEMM and changes the numbers in the weights instead; see :mod:`.fake_quant`.
"""

from __future__ import annotations

from mini_vllm.quantization.fake_quant import (
    FakeQuantFn,
    fake_quantize_weights,
    fake_quantized,
    linear_weights,
    restore_weights,
)

__all__ = [
    "FakeQuantFn",
    "fake_quantize_weights",
    "fake_quantized",
    "linear_weights",
    "restore_weights",
]
