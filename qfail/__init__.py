"""qfail: how quantized neural networks fail -- the package behind the book.

Modules: ``quant`` (fake-quant, PTQ, QAT, PACT, PWLQ, real INT8), ``data``, ``models``,
``train``, ``cache``, ``widgets`` (kernel-free widgets), ``runner`` (papermill chapters).
"""
from . import cache, data, models, quant, train
from .data import load_data
from .models import build_model
from .quant import QuantConfig, quantize_model
from .train import TrainConfig, accuracy, fit, predict_logits, train_cached

__version__ = "0.1.0"
__all__ = ["cache", "data", "models", "quant", "train", "load_data", "build_model", "QuantConfig",
           "quantize_model", "TrainConfig", "accuracy", "fit", "predict_logits", "train_cached"]
