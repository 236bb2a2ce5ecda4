"""Adversarial robustness along a quantization pipeline (Li et al., 2024), in qfail's pieces.

A *pipeline* fixes where robust optimisation happens: the float model is trained the standard way
or adversarially (the initialisation), then quantized by PTQ (uniform or PWLQ) or by QAT with
PACT, clean or adversarial, on all or part of the training data:

====  ======================  ============================  ===============
name  float model             quantization                  training data
====  ======================  ============================  ===============
a     standard                PTQ                           all
b     adversarial             PTQ                           all
c     standard                adversarial QAT (PACT)        all
d     adversarial             adversarial QAT (PACT)        all
e     adversarial             adversarial QAT (PACT)        ``fraction``
====  ======================  ============================  ===============

``evaluate`` measures clean accuracy, robust accuracy under white-box attacks through the STE,
and the accuracy under the same attacks crafted on the float model (transfer), which exposes
gradient masking by the rounding.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from ._validate import check_choice, check_range
from .attack import ATTACKS, NORMS, robust_accuracy
from .data import DataSplits
from .sweep import quantized
from .train import TrainConfig, accuracy

__all__ = ["PIPELINES", "Pipeline", "pipeline", "Attack", "DEFAULT_ATTACKS", "quantize_along", "evaluate"]

PTQ_METHODS = ("static", "pwlq")


@dataclass(frozen=True)
class Pipeline:
    name: str
    init: str  # "standard" or "adversarial": how the float model was trained
    adversarial_qat: bool  # QAT (when the method is a QAT one) is adversarial
    fraction: float = 1.0  # share of the training data that QAT sees


PIPELINES = ("a", "b", "c", "d", "e")


def pipeline(name: str, fraction: float = 0.25) -> Pipeline:
    """One of ``PIPELINES`` (``fraction`` only matters for ``e``)."""
    check_choice("pipeline", name, PIPELINES)
    check_range("fraction", fraction, 1e-3, 1.0)
    init = "standard" if name in ("a", "c") else "adversarial"
    return Pipeline(name, init, adversarial_qat=name in ("c", "d", "e"), fraction=fraction if name == "e" else 1.0)


def quantize_along(p: Pipeline, float_models: dict[str, nn.Module], model_keys: dict[str, dict],
                   data: DataSplits, method: str, part: str, bits: int, qat: TrainConfig,
                   device: str | torch.device = "cpu") -> nn.Module:
    """The float model of ``p.init`` quantized by ``method`` (``static``/``pwlq`` PTQ or
    ``qat``/``pact`` QAT) on ``part`` at ``bits``. PTQ ignores the QAT settings of ``p``.

    ``qat`` is the QAT run; its method is set by the pipeline (``adversarial`` or
    ``standard``), and pipeline ``e`` trains on a seeded ``p.fraction`` of the data.
    """
    if p.init not in float_models:
        raise ValueError(f"pipeline {p.name!r} needs the {p.init!r} float model; given: {', '.join(float_models)}")
    model, key = float_models[p.init], model_keys[p.init]
    if method in PTQ_METHODS:
        return quantized(model, data, method, part, bits, device=device)
    qat = replace(qat, method="adversarial" if p.adversarial_qat else "standard")
    qat_data = data.train_fraction(p.fraction, qat.seed) if p.fraction < 1.0 else data
    return quantized(model, qat_data, method, part, bits, qat=qat, model_key=key, device=device)


@dataclass(frozen=True)
class Attack:
    name: str  # "fgsm" or "pgd"
    norm: str  # "linf" or "l2"
    eps: float
    steps: int = 10

    def __post_init__(self) -> None:
        check_choice("attack", self.name, ATTACKS)
        check_choice("norm", self.norm, NORMS)
        check_range("eps", self.eps, 0.0, 100.0)

    @property
    def label(self) -> str:
        return f"{self.name.upper()}-{self.norm} {self.eps:g}"


# three budgets per attack, in pixel units of [0, 1] images (L2 budgets scale with sqrt(pixels))
DEFAULT_ATTACKS = tuple(
    [Attack("fgsm", "linf", e) for e in (0.03, 0.1, 0.2)]
    + [Attack("pgd", "linf", e) for e in (0.03, 0.1, 0.2)]
    + [Attack("pgd", "l2", e) for e in (0.5, 1.0, 2.0)])


def evaluate(model: nn.Module, data: DataSplits, attacks: Sequence[Attack] = DEFAULT_ATTACKS,
             source: nn.Module | None = None, limit: int | None = None, seed: int = 0,
             device: str | torch.device = "cpu") -> dict[str, float]:
    """Clean and robust accuracy (%) of ``model`` on the test split (first ``limit`` inputs).

    With a ``source`` (the float model), each attack is also crafted on it and applied to
    ``model`` ("transfer"): if white-box accuracy is much higher than transfer accuracy, the
    rounding hides the gradient rather than removing the vulnerability.
    """
    test = data.test if limit is None else data.test.subset(limit)
    row = {"clean": accuracy(model, test, device)}
    for a in attacks:
        kwargs = {} if a.name == "fgsm" else {"steps": a.steps}
        row[a.label] = robust_accuracy(model, test.x, test.y, a.name, a.eps, a.norm, seed=seed, device=device, **kwargs)
        if source is not None:
            row[f"{a.label} transfer"] = robust_accuracy(model, test.x, test.y, a.name, a.eps, a.norm, source=source,
                                                         seed=seed, device=device, **kwargs)
    return row
