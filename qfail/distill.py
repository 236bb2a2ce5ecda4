"""Knowledge distillation: a student learns a teacher's output distribution (Hinton et al., 2015).

``kd_loss`` builds the loss ``fit`` expects: tau^2 * KL(softmax(z_T / tau) || softmax(z_S / tau)),
optionally mixed with cross-entropy on the labels. The teacher is any callable returning logits;
it is queried without gradients.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_range

__all__ = ["kd_loss", "kd_divergence"]


def kd_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """tau^2 * KL(teacher || student) at temperature tau, averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    log_target=True, reduction="batchmean") * t * t


def kd_loss(teacher: Callable[[torch.Tensor], torch.Tensor], temperature: float = 1.0,
            label_weight: float = 0.0) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``fit`` loss: (1 - w) * KD(teacher) + w * CE(labels), with w = ``label_weight``."""
    check_range("temperature", temperature, 1e-3, 1e3)
    check_range("label_weight", label_weight, 0.0, 1.0)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(x)
        logits = model(x)
        kd = kd_divergence(logits, target, temperature)
        return kd if label_weight == 0 else (1 - label_weight) * kd + label_weight * F.cross_entropy(logits, y)

    return loss
