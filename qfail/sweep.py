"""Accuracy over bit-widths, quantized parts and methods: the sweep behind several chapters.

A *part* says what is quantized: ``weights`` (activations stay float), ``activations``
(weights stay float) or ``both``. A *method* says how: ``static`` PTQ (ranges calibrated on a
few training batches), ``dynamic`` PTQ (activation ranges from each input), ``qat``
(fine-tuning through the STE, cached on disk), ``pact`` (QAT with PACT's learned activation
clipping, Choi et al. 2018) or ``pwlq`` (piecewise-linear weights, static activations).
QAT runs with whatever ``TrainConfig`` is given: ``method="adversarial"`` makes it adversarial
QAT, and a ``DataSplits.train_fraction`` copy of the data trains it on part of the data.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict

import pandas as pd
import torch
from torch import nn

from ._validate import FULL_PRECISION, check_bits, check_choice
from .cache import cached
from .data import DataSplits
from .quant import QuantConfig, QuantizedModel, fake_quantize_tensor, pwlq_quantize, qat_config, quantize_model
from .train import TrainConfig, accuracy, fit

__all__ = ["PARTS", "METHODS", "policy_for", "quantized", "accuracy_sweep", "largest_weight", "rounding_error"]

PARTS = ("weights", "activations", "both")
METHODS = ("static", "dynamic", "qat", "pact", "pwlq")


def policy_for(part: str, bits: int) -> tuple[int, int]:
    """``(weight_bits, act_bits)`` for quantizing ``part`` at ``bits``."""
    check_choice("part", part, PARTS)
    check_bits("bits", bits)
    return {"weights": (bits, FULL_PRECISION), "activations": (FULL_PRECISION, bits), "both": (bits, bits)}[part]


def _calibration(data: DataSplits, n: int = 256) -> list[torch.Tensor]:
    return [data.train.x[:n]]


def quantized(model: nn.Module, data: DataSplits, method: str, part: str, bits: int,
              qat: TrainConfig | None = None, model_key: dict | None = None,
              device: str | torch.device = "cpu") -> QuantizedModel:
    """``model`` quantized by ``method`` at ``bits`` on ``part``.

    For ``qat`` and ``pact``, ``qat`` gives the fine-tuning run and ``model_key`` identifies
    ``model`` in the cache key (the fine-tuned weights are stored, never retrained for the same
    key); the returned model's ``train_seconds`` says what the fine-tuning cost when it ran.
    """
    check_choice("method", method, METHODS)
    policy = policy_for(part, bits)
    if method == "dynamic":
        return quantize_model(model, QuantConfig(act_mode="dynamic"), policy)
    if method in ("static", "pwlq"):
        weight_method = "pwlq" if method == "pwlq" else "uniform"
        return quantize_model(model, QuantConfig(weight_method=weight_method), policy,
                              calibration=_calibration(data))
    if qat is None or model_key is None:
        raise ValueError(f"method={method!r} needs qat=TrainConfig(...) and model_key={{...}}")
    config = qat_config(act_mode="pact") if method == "pact" else qat_config()
    qm = quantize_model(model, config, policy, calibration=None if method == "pact" else _calibration(data))

    def build() -> dict:
        start = time.perf_counter()
        fit(qm, data.train, qat, device)
        return {"state": {k: v.cpu() for k, v in qm.state_dict().items()}, "seconds": time.perf_counter() - start}

    key = {"model": model_key, "data": list(data.fingerprint), "qat": asdict(qat), "policy": list(policy),
           "method": method}
    result = cached("qat", key, build)
    qm.load_state_dict(result["state"])
    qm.train_seconds = result["seconds"]
    return qm.eval()


def accuracy_sweep(model: nn.Module, data: DataSplits, bit_widths: Sequence[int],
                   methods: Sequence[str] = ("static", "dynamic", "qat"), parts: Sequence[str] = PARTS,
                   qat: TrainConfig | None = None, model_key: dict | None = None,
                   device: str | torch.device = "cpu") -> pd.DataFrame:
    """Test accuracy for every method x part x bit-width; one row each, plus the FP reference."""
    rows = [{"method": "float", "part": "none", "bits": FULL_PRECISION, "accuracy": accuracy(model, data.test, device)}]
    for method in methods:
        for part in parts:
            for bits in bit_widths:
                qm = quantized(model, data, method, part, bits, qat, model_key, device)
                rows.append({"method": method, "part": part, "bits": bits,
                             "accuracy": accuracy(qm, data.test, device)})
    return pd.DataFrame(rows)


def largest_weight(model: nn.Module) -> tuple[str, torch.Tensor]:
    """Name and (detached) weight of the Conv/Linear layer with the most weights."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ValueError("model has no Conv2d or Linear layer")
    name, layer = max(layers, key=lambda nm: nm[1].weight.numel())
    return name, layer.weight.detach()


def rounding_error(w: torch.Tensor, bit_widths: Sequence[int]) -> pd.DataFrame:
    """Mean squared rounding error of ``w`` per bit-width: per-tensor, per-channel and PWLQ grids."""
    rows = [{"bits": b,
             "per-tensor": (fake_quantize_tensor(w, b, "symmetric") - w).pow(2).mean().item(),
             "per-channel": (fake_quantize_tensor(w, b, "symmetric", axis=0) - w).pow(2).mean().item(),
             "PWLQ per-channel": (pwlq_quantize(w, b) - w).pow(2).mean().item()} for b in bit_widths]
    return pd.DataFrame(rows).set_index("bits")
