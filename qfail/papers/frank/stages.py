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

from qfail import distill
from qfail.checks import check_range
from qfail.data import DataSplits, load_data
from qfail.models import build_model
from qfail.papers.frank.pairs import KINDS, Pair, PairConfig, train_pair_cached
from qfail.sweep import scored
from qfail.train import TrainConfig, Trained, predict_logits

__all__ = ["Setup", "setup", "train_pairs", "agreement", "student_scores"]


@dataclass
class Setup:
    """Stage A's outcome: the data, the black box, the answers its budget bought and the student."""

    data: DataSplits
    teacher: distill.BlackBox  # unbudgeted handle for evaluation (its queries are counted apart)
    teacher_accuracy: float
    transfer: DataSplits  # the answers the budget bought (train.teacher: probabilities)
    student: Trained  # the distilled white box and the key it is cached under


def setup(dataset: str = "digits", size: int | None = None, model: str = "cnn", teacher: str = "mlp",
          queries: int = 2000, epochs: int = 30, temperature: float = 2.0, label_weight: float = 0.0,
          seed: int = 0, device: str | torch.device = "cpu") -> Setup:
    """Data, black box, the answers to ``queries`` queries and the student distilled from them."""
    check_range("queries", queries, 1, integer=True)
    data = load_data(dataset, size=size, seed=seed)
    inside = distill.teacher(data, teacher, seed, device)
    evaluation = distill.BlackBox(inside.predict_proba)
    teacher_accuracy = 100.0 * float((evaluation.query(data.test.x).argmax(1) == data.test.y).float().mean())
    transfer = distill.query_transfer_set(distill.BlackBox(inside.predict_proba, budget=queries), data, queries, seed)
    config = TrainConfig(epochs=epochs, lr=3e-3, lr_schedule="cosine", seed=seed)
    student = distill.distill_black_box(
        transfer, lambda: build_model(model, data.input_shape, seed=seed), {"model": model, "seed": seed}, config,
        temperature, label_weight, teacher_key={"kind": teacher, "seed": seed}, device=device)
    return Setup(data, evaluation, teacher_accuracy, transfer, student)


def train_pairs(s: Setup, config: PairConfig, device: str | torch.device = "cpu") -> dict[str, Pair]:
    """The robust and the detrimental pair, same student and settings, ``config.kind`` set per pair."""
    return {kind: train_pair_cached(s.student, s.transfer, replace(config, kind=kind), device)
            for kind in KINDS}


def agreement(model: nn.Module, teacher: distill.BlackBox, data: DataSplits) -> float:
    """Top-1 agreement (%) of ``model`` with the black box on the test split."""
    pred = predict_logits(model, data.test.x).argmax(1)
    return 100.0 * float((pred == teacher.query(data.test.x).argmax(1)).float().mean())



def student_scores(s: Setup, device: str | torch.device = "cpu") -> dict[str, object]:
    """The student's test accuracy and agreement with the black box and the box's accuracy (%),
    with the per-input correctness of the student (``correct``) and of the box (``teacher
    correct``), so that the two are compared input by input."""
    student = scored(s.student.model, s.data.test, device)
    box = (s.teacher.query(s.data.test.x).argmax(1) == s.data.test.y).numpy()
    return {"accuracy (%)": student["accuracy"], "agreement with teacher (%)": agreement(s.student.model, s.teacher, s.data),
            "teacher accuracy (%)": s.teacher_accuracy, "correct": student["correct"], "teacher correct": box}
