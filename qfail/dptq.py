"""The shared set-up of the dynamic-PTQ chapters (Frank & Ardis): black box -> student -> pairs.

``setup`` trains the black box's inside (a scikit-learn classifier), spends the query budget
once and distills a white-box torch student (cached); ``train_pairs`` trains the robust and the
detrimental pair from that student (cached by configuration). Every chapter that needs a
student or a pair calls these, so they all see the same models for the same parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from . import distill
from ._validate import check_range
from .data import DataSplits, load_data
from .models import build_model
from .pairs import KINDS, Pair, PairConfig, train_pair_cached
from .train import TrainConfig, predict_logits

__all__ = ["Setup", "setup", "train_pairs", "agreement"]


@dataclass
class Setup:
    data: DataSplits
    teacher: distill.BlackBox  # unbudgeted handle for evaluation (its queries are counted apart)
    teacher_accuracy: float
    transfer: DataSplits  # the answers the budget bought, packed [p | label]
    student: nn.Module
    student_key: dict


def setup(dataset: str = "digits", size: int | None = None, model: str = "cnn", teacher: str = "mlp",
          queries: int = 2000, epochs: int = 30, temperature: float = 2.0, label_weight: float = 0.0,
          seed: int = 0, device: str | torch.device = "cpu") -> Setup:
    """Data, black box, the answers to ``queries`` queries and the student distilled from them."""
    check_range("queries", queries, 1, integer=True)
    data = load_data(dataset, size=size, seed=seed)
    inside = distill.sklearn_teacher(data, teacher, seed)
    evaluation = distill.BlackBox(inside.predict_proba)
    teacher_accuracy = 100.0 * float((evaluation.query(data.test.x).argmax(1) == data.test.y).float().mean())
    transfer = distill.query_transfer_set(distill.BlackBox(inside.predict_proba, budget=queries), data, queries, seed)
    config = TrainConfig(epochs=epochs, lr=3e-3, lr_schedule="cosine", seed=seed)
    key = {"model": model, "seed": seed}
    student = distill.distill_black_box(
        transfer, lambda: build_model(model, data.input_shape, seed=seed), key, config, temperature, label_weight,
        teacher_key={"kind": teacher, "seed": seed}, device=device)
    key = key | {"train": config.__dict__, "teacher": teacher, "temperature": temperature, "label_weight": label_weight}
    return Setup(data, evaluation, teacher_accuracy, transfer, student, key)


def train_pairs(s: Setup, config: PairConfig, device: str | torch.device = "cpu") -> dict[str, Pair]:
    """The robust and the detrimental pair, same student and settings, ``config.kind`` set per pair."""
    return {kind: train_pair_cached(s.student, s.student_key, s.transfer, replace(config, kind=kind), device)
            for kind in KINDS}


def agreement(model: nn.Module, teacher: distill.BlackBox, data: DataSplits) -> float:
    """Top-1 agreement (%) of ``model`` with the black box on the test split."""
    pred = predict_logits(model, data.test.x).argmax(1)
    return 100.0 * float((pred == teacher.query(data.test.x).argmax(1)).float().mean())

