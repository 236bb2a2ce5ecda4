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

from qfail.attack import correct_on
from qfail.cache import cached_entry
from qfail.checks import FULL_PRECISION, check_bits, check_choice
from qfail.data import DataSplits, Split
from qfail.quant import QuantConfig, fake_quantize_tensor, pwlq_quantize, qat_config, quantizable_layers, quantize_model
from qfail.train import TrainConfig, Trained, fit, resolve_device

__all__ = ["PARTS", "QUANT_METHODS", "layer_bits_for", "quantized", "scored", "accuracy_sweep", "largest_weight", "rounding_error"]

PARTS = ("weights", "activations", "both")
QUANT_METHODS = ("static", "dynamic", "qat", "pact", "pwlq")


def layer_bits_for(part: str, bits: int) -> tuple[int, int]:
    """``(weight_bits, act_bits)`` for quantizing ``part`` at ``bits``."""
    check_choice("part", part, PARTS)
    check_bits("bits", bits)
    return {"weights": (bits, FULL_PRECISION), "activations": (FULL_PRECISION, bits), "both": (bits, bits)}[part]


def _calibration(data: DataSplits, n: int = 256) -> list[torch.Tensor]:
    return [data.train.x[:n]]


def quantized(source: Trained, data: DataSplits, method: str, part: str, bits: int,
              qat: TrainConfig | None = None, device: str | torch.device = "cpu", raw_input: bool = True) -> Trained:
    """``source.model`` quantized by ``method`` at ``bits`` on ``part``, as a :class:`Trained`.

    PTQ methods calibrate (``seconds`` is the calibration's wall time). For ``qat`` and
    ``pact``, ``qat`` gives the fine-tuning run; the fine-tuned weights are cached under
    ``source.key`` and the run, and ``seconds`` is what the fine-tuning cost when it ran.
    With ``raw_input=False`` the first layer's input (the image itself) stays in float.
    """
    check_choice("method", method, QUANT_METHODS)
    layer_bits = layer_bits_for(part, bits)
    if not raw_input:
        first, *rest = quantizable_layers(source.model)
        layer_bits = {first: (layer_bits[0], FULL_PRECISION)} | {n: layer_bits for n in rest}
    key = {"source": source.key, "data": list(data.fingerprint), "method": method,
           "layer_bits": list(layer_bits) if isinstance(layer_bits, tuple) else {n: list(b) for n, b in layer_bits.items()}}
    start = time.perf_counter()
    if method == "dynamic":
        qm = quantize_model(source.model, QuantConfig(act_mode="dynamic"), layer_bits)
        return Trained(qm, key, [], time.perf_counter() - start)
    if method in ("static", "pwlq"):
        weight_method = "pwlq" if method == "pwlq" else "uniform"
        qm = quantize_model(source.model, QuantConfig(weight_method=weight_method), layer_bits,
                            calibration=_calibration(data))
        return Trained(qm, key, [], time.perf_counter() - start)
    if qat is None:
        raise ValueError(f"method={method!r} needs qat=TrainConfig(...)")
    config = qat_config(act_mode="pact") if method == "pact" else qat_config()
    qm = quantize_model(source.model, config, layer_bits,
                        calibration=None if method == "pact" else _calibration(data))

    def build() -> dict:
        begin = time.perf_counter()
        history = fit(qm, data.train, qat, device)
        return {"state": {k: v.cpu() for k, v in qm.state_dict().items()}, "history": history,
                "seconds": time.perf_counter() - begin}

    key |= {"qat": asdict(qat)}
    result, entry = cached_entry("qat", key, build, code=__name__)
    key |= {"entry": entry}
    qm.load_state_dict(result["state"])
    return Trained(qm.eval(), key, result.get("history", []), result["seconds"])


def scored(model: nn.Module, split: Split, device: str | torch.device = "cpu") -> dict[str, object]:
    """``accuracy`` (%) of ``model`` on ``split`` and its per-input ``correct`` (a bool array):
    two models scored on the same inputs are compared input by input
    (:func:`qfail.verdict.paired_difference`), not accuracy against accuracy."""
    correct = correct_on(model, split.x, split.y, device=resolve_device(device)).numpy()
    return {"accuracy": 100.0 * int(correct.sum()) / max(len(correct), 1), "correct": correct}


def accuracy_sweep(source: Trained, data: DataSplits, bit_widths: Sequence[int],
                   methods: Sequence[str] = ("static", "dynamic", "qat"), parts: Sequence[str] = PARTS,
                   qat: TrainConfig | None = None, device: str | torch.device = "cpu") -> pd.DataFrame:
    """Test accuracy for every method x part x bit-width; one row each, plus the FP reference
    (``method="float"``). Each row also carries its per-input ``correct`` (see :func:`scored`)."""
    rows = [{"method": "float", "part": "none", "bits": FULL_PRECISION, **scored(source.model, data.test, device)}]
    for method in methods:
        for part in parts:
            for bits in bit_widths:
                qm = quantized(source, data, method, part, bits, qat, device).model
                rows.append({"method": method, "part": part, "bits": bits, **scored(qm, data.test, device)})
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
