"""Quantization: primitives, observers, PACT, PWLQ, model wrapping and real INT8."""
from qfail.quant.int8 import (
                   ACT_BITS_INT8,
                   ENGINES,
                   decide,
                   fake_quant_twin,
                   footprint,
                   int8_dynamic,
                   int8_static,
                   latency_ms,
                   packed_size,
                   per_call_scale,
                   quantized_engine,
                   serialized_size,
)
from qfail.quant.model import (
                   ACT_MODES,
                   GRANULARITIES,
                   WEIGHT_METHODS,
                   QuantConfig,
                   QuantizedModel,
                   QuantLayer,
                   fold_batchnorm,
                   qat_config,
                   quantizable_layers,
                   quantize_model,
)
from qfail.quant.observers import OBSERVERS, Observer
from qfail.quant.pact import PACT, pact_quantize
from qfail.quant.primitives import (
                   SCHEMES,
                   QRange,
                   choose_qparams,
                   dequantize,
                   fake_quantize,
                   fake_quantize_tensor,
                   integer_levels,
                   qrange,
                   quantize,
                   reduce_dims,
)
from qfail.quant.pwlq import pwlq_breakpoints, pwlq_quantize

__all__ = [
    "ACT_BITS_INT8", "ENGINES", "decide", "per_call_scale", "fake_quant_twin", "footprint", "int8_dynamic", "int8_static", "latency_ms", "packed_size", "quantized_engine",
    "serialized_size", "ACT_MODES", "GRANULARITIES", "WEIGHT_METHODS", "QuantConfig", "QuantizedModel",
    "QuantLayer", "fold_batchnorm", "qat_config", "quantizable_layers", "quantize_model", "OBSERVERS",
    "Observer", "PACT", "pact_quantize", "SCHEMES", "QRange", "choose_qparams", "dequantize",
    "fake_quantize", "fake_quantize_tensor", "qrange", "quantize", "integer_levels", "reduce_dims", "pwlq_breakpoints", "pwlq_quantize",
]
