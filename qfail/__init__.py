"""qfail: how quantized neural networks fail -- the package behind the book.

Modules: ``quant`` (fake-quant, PTQ, QAT, PACT, PWLQ, real INT8), ``data``, ``models``,
``train`` (standard, Mixup, adversarial and QAT training), ``attack`` (FGSM, PGD, transfer),
``shift`` (distribution shifts), ``metrics`` (disagreements, uncertainty scores),
``disagreements`` (model vs quantized self under shift), ``published`` (the papers' result
files), ``rl``, ``verify``, ``distill``, ``cache``, ``widgets`` (kernel-free widgets) and
``runner`` (papermill chapters).
"""
from . import attack, cache, data, models, quant, train
from .data import load_data
from .models import build_model
from .quant import QuantConfig, quantize_model
from .train import TrainConfig, accuracy, fit, predict_logits, train_cached

__version__ = "0.1.0"
__all__ = ["attack", "cache", "data", "models", "quant", "train", "load_data", "build_model", "QuantConfig",
           "quantize_model", "TrainConfig", "accuracy", "fit", "predict_logits", "train_cached"]
