"""Knowledge distillation: a student learns a teacher's output distribution (Hinton et al., 2015).

``kd_loss`` builds the loss ``fit`` expects: tau^2 * KL(softmax(z_T / tau) || softmax(z_S / tau)),
optionally mixed with cross-entropy on the labels. The teacher is any callable returning logits;
it is queried without gradients.

Frank & Ardis start from a *black box*: a model that only answers queries with probabilities.
``BlackBox`` wraps such a model (a scikit-learn classifier, or a torch model) so that nothing
but ``query`` is reachable, counts every input it answers and refuses to go over its budget;
``distill_black_box`` spends the budget once on a transfer set and trains a white-box torch
student on the answers.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qfail.checks import check_choice, check_range
from qfail.data import DataSplits, Split
from qfail.train import TrainConfig, Trained, train_cached

__all__ = ["kd_loss", "kd_divergence", "QueryBudgetExceeded", "BlackBox", "TEACHERS", "SKLEARN_TEACHERS",
           "NETWORK_TEACHERS", "teacher", "sklearn_teacher", "NetworkTeacher", "network_teacher",
           "transfer_inputs", "query_transfer_set", "teacher_log_probs",
           "distill_black_box"]

SKLEARN_TEACHERS = ("mlp", "forest", "svm")
NETWORK_TEACHERS = ("cnn", "resnet")  # networks trained by the project, for image sets of any size
TEACHERS = SKLEARN_TEACHERS + NETWORK_TEACHERS


def kd_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """tau^2 * KL(teacher || student) at temperature tau, averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    log_target=True, reduction="batchmean") * t * t


def kd_loss(teacher: Callable[[torch.Tensor], torch.Tensor], temperature: float = 1.0,
            label_weight: float = 0.0) -> Callable[[nn.Module, Split], torch.Tensor]:
    """A ``fit`` loss: (1 - w) * KD(teacher) + w * CE(labels), with w = ``label_weight``."""
    check_range("temperature", temperature, 1e-3, 1e3)
    check_range("label_weight", label_weight, 0.0, 1.0)

    def loss(model: nn.Module, batch: Split) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(batch.x)
        return _mixed(model(batch.x), target, batch.y, temperature, label_weight)

    return loss


def _mixed(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float,
           label_weight: float) -> torch.Tensor:
    """(1 - w) * KD + w * CE: the one mix both KD losses use."""
    kd = kd_divergence(logits, teacher_logits, temperature)
    return kd if label_weight == 0 else (1 - label_weight) * kd + label_weight * F.cross_entropy(logits, labels)


class QueryBudgetExceeded(RuntimeError):
    """A black box was asked more than its budget allows."""


class BlackBox:
    """Query-only access to a classifier: ``query(x)`` returns probabilities (N, K), nothing else.

    The wrapped function lives in a closure, so the object has no parameters, no gradients and
    no model attribute to reach; answers are fresh tensors that do not require grad. Every
    answered input counts against ``budget`` (``None``: unlimited); a query that would exceed
    it is refused whole.
    """

    __slots__ = ("_answer", "budget", "queries")

    def __init__(self, predict_proba: Callable[[np.ndarray], np.ndarray], budget: int | None = None) -> None:
        if budget is not None:
            check_range("query_budget", budget, 1, integer=True)

        def answer(x: torch.Tensor) -> torch.Tensor:
            flat = x.detach().cpu().reshape(len(x), -1).numpy()
            return torch.as_tensor(np.asarray(predict_proba(flat)), dtype=torch.float32)

        self._answer, self.budget, self.queries = answer, budget, 0

    def query(self, x: torch.Tensor) -> torch.Tensor:
        if self.budget is not None and self.queries + len(x) > self.budget:
            raise QueryBudgetExceeded(f"query of {len(x)} inputs refused: {self.queries} of the budget of "
                                      f"{self.budget} already spent")
        self.queries += len(x)
        return self._answer(x)

    def __repr__(self) -> str:
        return f"BlackBox(queries={self.queries}, budget={self.budget})"


_TEACHERS: dict[tuple, object] = {}  # fitted insides by (data fingerprint, kind, seed), for this process


def sklearn_teacher(data: DataSplits, kind: str = "mlp", seed: int = 0):
    """A scikit-learn classifier trained on the training split (flattened images): the black box's inside.

    Fitting is deterministic, so a process fits each (data, kind, seed) once and hands the
    same fitted model to every later call (a chapter sweeping query budgets asks many times).
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    check_choice("teacher", kind, SKLEARN_TEACHERS)
    key = (data.fingerprint, kind, seed)
    if key not in _TEACHERS:
        model = {"mlp": lambda: MLPClassifier((128,), max_iter=400, random_state=seed),
                 "forest": lambda: RandomForestClassifier(300, random_state=seed),
                 # SVC's own probability=True is deprecated (scikit-learn 1.9): Platt scaling of 5-fold
                 # out-of-fold scores, one class against the rest (libsvm coupled the pairs), then the
                 # SVC fitted on all the data
                 "svm": lambda: CalibratedClassifierCV(SVC(random_state=seed), method="sigmoid", cv=5, ensemble=False)}[kind]()
        _TEACHERS[key] = model.fit(data.train.x.reshape(len(data.train), -1).numpy(), data.train.y.numpy())
    return _TEACHERS[key]


class NetworkTeacher:
    """A network trained on the training split, seen through ``predict_proba`` on flattened
    inputs only, like the scikit-learn insides (the black box never hands out the module)."""

    def __init__(self, trained: Trained, input_shape: tuple[int, ...], device: str | torch.device = "cpu") -> None:
        from qfail.train import predict_logits

        model = trained.model.eval()

        def predict_proba(flat: np.ndarray) -> np.ndarray:
            x = torch.as_tensor(np.asarray(flat), dtype=torch.float32).view(len(flat), *input_shape)
            return predict_logits(model, x, device=device).softmax(1).numpy()

        self.predict_proba = predict_proba


def network_teacher(data: DataSplits, kind: str = "cnn", seed: int = 0, epochs: int = 20,
                    device: str | torch.device = "cpu") -> NetworkTeacher:
    """A CNN or ResNet trained (and cached) on the training split: a realistic black box's inside
    for image sets where a scikit-learn model on flattened pixels is not one."""
    from qfail.models import build_model

    check_choice("teacher", kind, NETWORK_TEACHERS)
    config = TrainConfig(epochs=epochs, lr=3e-3, lr_schedule="cosine", seed=seed)
    trained = train_cached(lambda: build_model(kind, data.input_shape, data.num_classes, seed=seed),
                           {"teacher": kind, "seed": seed}, data, config, device=device)
    return NetworkTeacher(trained, data.input_shape, device)


def teacher(data: DataSplits, kind: str = "mlp", seed: int = 0, device: str | torch.device = "cpu"):
    """The black box's inside, by name (one of ``TEACHERS``): anything with ``predict_proba``."""
    check_choice("teacher", kind, TEACHERS)
    if kind in NETWORK_TEACHERS:
        return network_teacher(data, kind, seed, device=device)
    return sklearn_teacher(data, kind, seed)


def transfer_inputs(train: Split, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` inputs to spend queries on: the training images first, then seeded jittered copies
    (shifted by up to one pixel, plus small Gaussian noise) once they run out."""
    check_range("queries", n, 1, integer=True)
    gen = torch.Generator().manual_seed(seed)
    parts, left = [train.x[:n]], n - min(n, len(train))
    while left > 0:
        base = train.x[torch.randperm(len(train), generator=gen)[:left]]
        dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
        moved = torch.roll(base, shifts=(dy, dx), dims=(2, 3))
        parts.append((moved + 0.05 * torch.randn(moved.shape, generator=gen)).clamp(0, 1))
        left -= len(base)
    return torch.cat(parts)


def teacher_log_probs(batch: Split) -> torch.Tensor:
    """Log of the black box's probabilities in a ``query_transfer_set`` batch (zeros floored)."""
    if batch.teacher is None:
        raise ValueError("this split has no teacher answers; build it with query_transfer_set")
    return batch.teacher.clamp_min(1e-8).log()


def _answers_kd(temperature: float, label_weight: float):
    """KD loss on the black box's bought answers (``batch.teacher``) plus CE on the labels."""
    def loss(model: nn.Module, batch: Split) -> torch.Tensor:
        return _mixed(model(batch.x), teacher_log_probs(batch), batch.y, temperature, label_weight)
    return loss


def query_transfer_set(teacher: BlackBox, data: DataSplits, queries: int, seed: int = 0) -> DataSplits:
    """Spend ``queries`` of the black box once, on ``transfer_inputs``; the answers become the
    training split: the probabilities as ``teacher``, the labels as ``y`` (the real label for
    training images, the teacher's top label for jittered copies). Validation and test are kept."""
    x = transfer_inputs(data.train, queries, seed)
    probs = teacher.query(x)
    labels = torch.cat([data.train.y[:queries], probs[len(data.train):].argmax(1)])[:queries]
    return DataSplits(data.name, Split(x, labels, teacher=probs), data.val, data.test,
                      data.num_classes, data.fingerprint + ("black-box transfer", queries, seed))


def distill_black_box(transfer: DataSplits, make_student: Callable[[], nn.Module], student_key: dict,
                      config: TrainConfig, temperature: float = 2.0, label_weight: float = 0.0,
                      teacher_key: dict | None = None, device: str | torch.device = "cpu") -> Trained:
    """A student trained on the black box's answers in ``transfer`` (``query_transfer_set``):
    ``(1 - w) * tau^2 KL(teacher || student) + w * CE(labels)`` with w = ``label_weight``.

    Cached under the student's key, the transfer set, the teacher's key and the KD settings.
    """
    check_range("temperature", temperature, 1e-3, 1e3)
    check_range("label_weight", label_weight, 0.0, 1.0)
    return train_cached(make_student, student_key, transfer, config, device, kind="student",
                        loss_fn=_answers_kd(temperature, label_weight),
                        extra_key={"teacher": teacher_key, "temperature": temperature, "label_weight": label_weight},
                        code=(__name__,))
