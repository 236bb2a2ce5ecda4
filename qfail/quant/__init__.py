"""Quantization: primitives, observers, PACT, PWLQ, model wrapping and real INT8."""
from .int8 import (ENGINES, decide, fake_quant_twin, footprint, int8_dynamic, int8_static, latency_ms, packed_size, per_call_scale, quantized_engine,
                   serialized_size)
from .model import (ACT_MODES, GRANULARITIES, WEIGHT_METHODS, QuantConfig, QuantizedModel, QuantLayer,
                    fold_batchnorm, qat_config, quantizable_layers, quantize_model)
from .observers import OBSERVERS, Observer
from .pact import PACT, pact_quantize
from .primitives import (SCHEMES, QRange, choose_qparams, dequantize, fake_quantize, fake_quantize_tensor,
                         qrange, quantize)
from .pwlq import pwlq_breakpoints, pwlq_quantize

__all__ = [
    "ENGINES", "decide", "per_call_scale", "fake_quant_twin", "footprint", "int8_dynamic", "int8_static", "latency_ms", "packed_size", "quantized_engine",
    "serialized_size", "ACT_MODES", "GRANULARITIES", "WEIGHT_METHODS", "QuantConfig", "QuantizedModel",
    "QuantLayer", "fold_batchnorm", "qat_config", "quantizable_layers", "quantize_model", "OBSERVERS",
    "Observer", "PACT", "pact_quantize", "SCHEMES", "QRange", "choose_qparams", "dequantize",
    "fake_quantize", "fake_quantize_tensor", "qrange", "quantize", "pwlq_breakpoints", "pwlq_quantize",
]
