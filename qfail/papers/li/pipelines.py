"""Adversarial robustness along a quantization pipeline (Li et al., 2024), in qfail's pieces.

A *pipeline* fixes where robust optimisation happens: the float model is trained the standard way
or adversarially (the initialisation), then quantized by PTQ (uniform or PWLQ) or by QAT with
PACT, clean or adversarial, on all or part of the training data:

====  ======================  ============================  ===============
name  float model             quantization                  training data
====  ======================  ============================  ===============
a     standard                PTQ (or clean QAT)            all
b     adversarial             PTQ (or clean QAT)            all
c     standard                adversarial QAT (PACT)        all
d     adversarial             adversarial QAT (PACT)        all
e     adversarial             adversarial QAT (PACT)        ``fraction``
f     random (untrained)      clean QAT from scratch        all
g     adversarial             clean QAT (PACT)              ``fraction``
====  ======================  ============================  ===============

``evaluate`` measures clean accuracy, robust accuracy under white-box attacks through the STE,
and the accuracy under the same attacks crafted on the float model (transfer), which exposes
gradient masking by the rounding. The transfer examples depend only on the float model, so
``transfer_set`` crafts them once for all the quantized copies of that model (a random
initialisation has no float model worth attacking: pipeline f is attacked by transfer from the
standard one). ``run_matrix`` adds two stronger attackers on the headline budget: AutoAttack's
parameter-free attacks, and a BPDA surrogate that keeps every clipping and drops only the rounding.
The raw input image is not quantized unless ``raw_input`` says so (the source quantizes
activations between layers).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from qfail.attack import ATTACKS, NORMS, accuracy_on, adversarial_examples, autoattack, correct_on
from qfail.checks import check_choice, check_range
from qfail.data import DataSplits
from qfail.quant import QuantizedModel
from qfail.sweep import PARTS, quantized
from qfail.train import TrainConfig, Trained, example_passes

__all__ = ["PIPELINES", "RECIPES", "training_configs", "Pipeline", "pipeline", "Attack", "DEFAULT_ATTACKS", "quantize_along", "transfer_set",
           "evaluate", "surrogate_examples", "surrogate_accuracy", "autoattack_correct", "strongest", "transfer_source", "untrained", "INITS",
           "Cell", "matrix_cells", "float_rows", "run_matrix", "qat_run"]

PTQ_METHODS = ("static", "pwlq")
QAT_METHODS = ("pact", "qat")
METHOD_LABELS = {"static": "uniform PTQ", "pwlq": "PWLQ PTQ", "pact": "PACT QAT", "qat": "uniform QAT"}


@dataclass(frozen=True)
class Pipeline:
    """One of Li et al.'s pipelines: which float model it starts from and how QAT trains."""

    name: str
    init: str  # "standard", "adversarial" or "random": how the float model was trained (random: not at all)
    adversarial_qat: bool  # QAT (when the method is a QAT one) is adversarial
    fraction: float = 1.0  # share of the training data that QAT sees


PIPELINES = ("a", "b", "c", "d", "e", "f", "g")
INITS = {"a": "standard", "b": "adversarial", "c": "standard", "d": "adversarial", "e": "adversarial", "f": "random",
         "g": "adversarial"}


RECIPES = ("auto", "adam", "cifar")


def training_configs(recipe: str, dataset: str, epochs: int, qat_epochs: int, batch_size: int, adv_eps: float,
                     adv_steps: int, seed: int = 0) -> tuple[dict[str, TrainConfig], TrainConfig]:
    """The float models' training (``standard`` and ``adversarial``) and the QAT fine-tuning.

    ``adam``: the book's small-scale recipe (Adam, cosine schedule, no augmentation). ``cifar``:
    the ResNet-20 CIFAR-10 recipe the source follows (He et al. 2016): SGD with momentum 0.9 and
    weight decay 1e-4, learning rate 0.1 divided by 10 after half and three quarters of the run,
    random crops and flips; QAT fine-tunes at 0.01 with the same schedule. ``auto``: ``cifar``
    on CIFAR-10, else ``adam``. Adversarial training uses PGD-L-inf with ``adv_steps`` steps of
    2.5 ``adv_eps`` / ``adv_steps`` on every example (Madry et al.'s recipe).
    """
    check_choice("recipe", recipe, RECIPES)
    if recipe == "auto":
        recipe = "cifar" if dataset == "cifar10" else "adam"
    adv = {"adv_eps": adv_eps, "adv_steps": adv_steps, "adv_step_size": 2.5 * adv_eps / adv_steps, "adv_ratio": 1.0}
    if recipe == "cifar":
        common = {"batch_size": batch_size, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4,
                  "lr_schedule": "step", "augment": "crop_flip", "seed": seed, **adv}
        floats = {init: TrainConfig(epochs=epochs, method=init, lr=0.1, **common) for init in ("standard", "adversarial")}
        return floats, TrainConfig(epochs=qat_epochs, lr=0.01, **common)
    common = {"batch_size": batch_size, "lr_schedule": "cosine", "seed": seed, **adv}
    floats = {init: TrainConfig(epochs=epochs, method=init, **common) for init in ("standard", "adversarial")}
    return floats, TrainConfig(epochs=qat_epochs, lr=1e-3, **common)


def pipeline(name: str, fraction: float = 0.25) -> Pipeline:
    """One of ``PIPELINES`` (``fraction`` only matters for ``e`` and ``g``)."""
    check_choice("pipeline", name, PIPELINES)
    check_range("fraction", fraction, 1e-3, 1.0)
    return Pipeline(name, INITS[name], adversarial_qat=name in ("c", "d", "e"),
                    fraction=fraction if name in ("e", "g") else 1.0)


def untrained(model: nn.Module, spec: Mapping) -> Trained:
    """A random initialisation as the float model of pipeline f (trained for no time at all)."""
    return Trained(model.eval(), {**spec, "init": "random"}, [], 0.0)


def transfer_source(init: str) -> str:
    """The float model whose examples attack copies of ``init`` by transfer (random: standard)."""
    return "standard" if init == "random" else init


def quantize_along(p: Pipeline, float_models: Mapping[str, Trained], data: DataSplits, method: str, part: str,
                   bits: int, qat: TrainConfig, device: str | torch.device = "cpu", raw_input: bool = False,
                   scratch_epochs: int | None = None) -> Trained:
    """The float model of ``p.init`` quantized by ``method`` (``static``/``pwlq`` PTQ or
    ``qat``/``pact`` QAT) on ``part`` at ``bits``. PTQ ignores the QAT settings of ``p``.

    ``qat`` is the QAT run; its method is set by the pipeline (``adversarial`` or
    ``standard``), and pipeline ``e`` trains on a seeded ``p.fraction`` of the data. The
    result's ``seconds`` is the quantization's wall time (calibration for PTQ, the fine-tuning
    run for QAT), not counting the float model's training. QAT from a random initialisation
    (pipeline f) trains for ``scratch_epochs`` (default: ``qat.epochs``). ``raw_input`` also
    quantizes the first layer's input, the image itself.
    """
    if p.init not in float_models:
        raise ValueError(f"pipeline {p.name!r} needs the {p.init!r} float model; given: {', '.join(float_models)}")
    source = float_models[p.init]
    if method in PTQ_METHODS:
        return quantized(source, data, method, part, bits, device=device, raw_input=raw_input)
    qat, qat_data = qat_run(p, qat, data, scratch_epochs)
    return quantized(source, qat_data, method, part, bits, qat=qat, device=device, raw_input=raw_input)


def qat_run(p: Pipeline, qat: TrainConfig, data: DataSplits, scratch_epochs: int | None = None
            ) -> tuple[TrainConfig, DataSplits]:
    """The QAT run of ``p`` (see ``quantize_along``) and the data it trains on."""
    qat = replace(qat, method="adversarial" if p.adversarial_qat else "standard")
    if p.init == "random" and scratch_epochs is not None:
        qat = replace(qat, epochs=scratch_epochs)
    return qat, (data.train_fraction(p.fraction, qat.seed) if p.fraction < 1.0 else data)


@dataclass(frozen=True)
class Attack:
    """One evaluation attack: FGSM or PGD, its norm and budget (pixel units)."""

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


def _test(data: DataSplits, limit: int | None):
    return data.test if limit is None else data.test.subset(limit)


def _pgd_options(a: Attack, stop_on_success: bool = False) -> dict:
    return {} if a.name == "fgsm" else {"steps": a.steps, "stop_on_success": stop_on_success}


def transfer_set(source: nn.Module, data: DataSplits, attacks: Sequence[Attack] = DEFAULT_ATTACKS,
                 limit: int | None = None, seed: int = 0, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """``{attack label: test inputs attacked on source}`` for ``evaluate(..., transfer=...)``."""
    test = _test(data, limit)
    return {a.label: adversarial_examples(source, test.x, test.y, a.name, a.eps, a.norm, seed=seed, device=device,
                                          **_pgd_options(a))
            for a in attacks}


class _Scored:
    """Per-input correctness of one model on each input set it is shown, each computed once
    (a matrix cell scores its white-box sets again as the next budget's starting points, and
    the AutoAttack stage asks for several of them once more)."""

    def __init__(self, model: nn.Module, y: torch.Tensor, device: str | torch.device) -> None:
        self.model, self.y, self.device = model, y, device
        self._seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def correct(self, x: torch.Tensor) -> torch.Tensor:
        if id(x) not in self._seen:  # the set itself is kept with its result, so its id stays its own
            self._seen[id(x)] = (x, correct_on(self.model, x, self.y, device=self.device))
        return self._seen[id(x)][1]

    def accuracy(self, x: torch.Tensor) -> float:
        return 100.0 * int(self.correct(x).sum()) / max(len(self.y), 1)


def _within_larger_budget(model: nn.Module, test, a: Attack, smaller: torch.Tensor | None, seed: int,
                          device: str | torch.device, scored: _Scored) -> torch.Tensor:
    """``a``'s white-box examples; with ``smaller`` (the same attack's examples at a smaller budget,
    which lie inside ``a``'s ball too) only the inputs those did not break are attacked again."""
    options = _pgd_options(a, stop_on_success=True)
    if smaller is None:
        return adversarial_examples(model, test.x, test.y, a.name, a.eps, a.norm, seed=seed, device=device, **options)
    adv = smaller.clone()
    standing = scored.correct(smaller).nonzero().flatten()
    if len(standing):
        adv[standing] = adversarial_examples(model, test.x[standing], test.y[standing], a.name, a.eps, a.norm,
                                             seed=seed, device=device, **options)
    return adv


def evaluate(model: nn.Module, data: DataSplits, attacks: Sequence[Attack] = DEFAULT_ATTACKS,
             transfer: Mapping[str, torch.Tensor] | None = None, limit: int | None = None, seed: int = 0,
             device: str | torch.device = "cpu", examples: dict[str, torch.Tensor] | None = None,
             scored: _Scored | None = None, correct: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Clean and robust accuracy (%) of ``model`` on the test split (first ``limit`` inputs).

    With a ``transfer`` set (``transfer_set`` of the float model, same ``limit``), each attack
    is also scored on the examples crafted there ("<label> transfer"): if white-box accuracy is
    much higher than transfer accuracy, the rounding hides the gradient rather than removing
    the vulnerability. A dict passed as ``examples`` receives the white-box examples by label, one
    passed as ``correct`` each column's per-input correctness (for paired comparisons).
    White-box PGD keeps each input's first successful iterate (``pgd(stop_on_success=True)``):
    as strong as the last iterate, and it spends steps only on inputs still standing. Budgets of
    one PGD attack run smallest first, each on the inputs the smaller one left standing
    (``_within_larger_budget``), so robust accuracy never rises with the budget.
    """
    test = _test(data, limit)
    scored = scored or _Scored(model, test.y, device)
    row = {"clean": scored.accuracy(test.x)}
    crafted: dict[Attack, torch.Tensor] = {}
    for a in sorted(attacks, key=lambda a: a.eps):  # smaller budgets first: see _within_larger_budget
        smaller = [b for b in crafted if (b.name, b.norm, b.steps) == (a.name, a.norm, a.steps)]
        crafted[a] = _within_larger_budget(model, test, a, crafted[smaller[-1]] if smaller and a.name == "pgd" else None,
                                           seed, device, scored)
    for a in attacks:
        adv = crafted[a]
        row[a.label] = scored.accuracy(adv)
        if examples is not None:
            examples[a.label] = adv
        if transfer is not None:
            if a.label not in transfer or len(transfer[a.label]) != len(test.y):
                raise ValueError(f"transfer has no {len(test.y)} examples for {a.label!r}; build it with "
                                 f"transfer_set(source, data, attacks, limit={limit})")
            row[f"{a.label} transfer"] = scored.accuracy(transfer[a.label])
    if correct is not None:
        sets = {"clean": test.x, **{a.label: crafted[a] for a in attacks},
                **({f"{a.label} transfer": transfer[a.label] for a in attacks} if transfer is not None else {})}
        correct.update({column: scored.correct(x).numpy() for column, x in sets.items()})
    return row


@dataclass(frozen=True)
class Cell:
    """One entry of the matrix: ``method`` on ``part`` at ``bits`` along ``pipeline``."""
    pipeline: str
    method: str
    part: str
    bits: int

    @property
    def stage(self) -> str:
        if self.method in PTQ_METHODS:
            return "PTQ"
        p = pipeline(self.pipeline)
        if p.init == "random":
            return "QAT from scratch"
        return "adversarial QAT" if p.adversarial_qat else "clean QAT"

    @property
    def evaluated_as(self) -> Cell:
        """PWLQ only changes weights: on activations alone it is uniform PTQ, evaluated once."""
        return replace(self, method="static") if self.method == "pwlq" and self.part == "activations" else self


def matrix_cells(pipelines: Sequence[str], ptq_methods: Sequence[str], ptq_bits: Sequence[int],
                 ptq_parts: Sequence[str], qat_methods: Sequence[str], qat_bits: Sequence[int],
                 qat_parts: Sequence[str]) -> list[Cell]:
    """The cells of Li et al.'s matrix that exist: PTQ along the PTQ pipelines (a, b), QAT along
    every pipeline (a and b then mean clean QAT from that float model)."""
    for m in ptq_methods:
        check_choice("ptq_methods", m, PTQ_METHODS)
    for m in qat_methods:
        check_choice("qat_methods", m, QAT_METHODS)
    for part in (*ptq_parts, *qat_parts):
        check_choice("parts", part, PARTS)
    for name in pipelines:
        check_choice("pipelines", name, PIPELINES)
    cells = [Cell(p, m, part, b) for p in pipelines if p in ("a", "b")
             for m in ptq_methods for part in ptq_parts for b in ptq_bits]
    return cells + [Cell(p, m, part, b) for p in pipelines for m in qat_methods for part in qat_parts for b in qat_bits]


def surrogate_examples(qm: QuantizedModel, data: DataSplits, a: Attack, limit: int | None = None, seed: int = 0,
                       device: str | torch.device = "cpu") -> torch.Tensor:
    """``a`` crafted on ``qm`` with every rounding replaced by the identity and every clipping
    kept (BPDA, Athalye et al., 2018).

    The attacker knows everything but the rounding: a third view beside the STE (white-box) and
    the starting float model (transfer). After QAT the weights differ from the starting float
    model's, and PACT's learned clipping is part of the network, so only this view removes the
    rounding alone.
    """
    test = _test(data, limit)
    with qm.without_rounding():
        return adversarial_examples(qm, test.x, test.y, a.name, a.eps, a.norm, seed=seed, device=device,
                                    **_pgd_options(a))


def surrogate_accuracy(qm: QuantizedModel, data: DataSplits, a: Attack, limit: int | None = None, seed: int = 0,
                       device: str | torch.device = "cpu") -> float:
    """Accuracy (%) of ``qm`` under ``surrogate_examples``."""
    return accuracy_on(qm, surrogate_examples(qm, data, a, limit, seed, device), _test(data, limit).y, device=device)


def autoattack_correct(model: nn.Module, data: DataSplits, a: Attack, limit: int | None = None, seed: int = 0,
                       device: str | torch.device = "cpu", survivors: torch.Tensor | None = None) -> torch.Tensor:
    """Per input, whether ``model`` withstands AutoAttack's parameter-free attacks at ``a``'s norm
    and budget (a bool tensor).

    With ``survivors`` (a mask of the inputs no earlier attacker broke) AutoAttack runs on those
    alone, and an input counts as robust only if it survived them all (AutoAttack's own
    per-input worst case): the mask's mean is the accuracy under every attacker together.
    """
    test = _test(data, limit)
    alive = correct_on(model, test.x, test.y, device=device) if survivors is None else survivors
    result = torch.zeros(len(test.y), dtype=torch.bool)
    idx = alive.nonzero().flatten()
    if len(idx):
        adv = autoattack(model, test.x[idx], test.y[idx], a.eps, a.norm, seed=seed, device=device)
        result[idx] = correct_on(model, adv, test.y[idx], device=device)
    return result


def strongest(results: pd.DataFrame, views: Sequence[str]) -> pd.DataFrame:
    """``results`` (``run_matrix``'s) with ``worst``: per cell, the lowest accuracy of ``views``
    (the strongest attacker), whose per-input correctness joins the cell's ``correct`` as ``worst``."""
    worst_view = results[list(views)].idxmin(axis=1)
    correct = [{**c, "worst": c[v]} for c, v in zip(results["correct"], worst_view)]
    return results.assign(worst=results[list(views)].min(axis=1), correct=correct)


def float_rows(float_models: Mapping[str, Trained], data: DataSplits, attacks: Sequence[Attack] = DEFAULT_ATTACKS,
               transfer: Mapping[str, Mapping[str, torch.Tensor]] | None = None, limit: int | None = None,
               seed: int = 0, device: str | torch.device = "cpu") -> pd.DataFrame:
    """The float models evaluated like the cells of ``run_matrix`` (same columns), as references."""
    return pd.DataFrame([{"pipeline": "float", "init": init, "stage": "float", "method": "float", "part": "none",
                          "bits": 32, **evaluate(m.model, data, attacks, None if transfer is None else transfer[init],
                                                 limit, seed, device),
                          "quant s": 0.0, "float s": m.seconds}
                         for init, m in float_models.items()])


def run_matrix(cells: Sequence[Cell], float_models: Mapping[str, Trained], data: DataSplits, qat: TrainConfig,
               attacks: Sequence[Attack] = DEFAULT_ATTACKS, transfer: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
               fraction: float = 0.25, surrogate: Attack | None = None, limit: int | None = None, seed: int = 0,
               device: str | torch.device = "cpu", autoattack: bool = False, raw_input: bool = False,
               scratch_epochs: int | None = None) -> tuple[pd.DataFrame, dict[Cell, Trained]]:
    """Quantize and evaluate every cell; one row per cell, plus the quantized models.

    ``transfer`` maps a float model's name (``standard``/``adversarial``) to its
    ``transfer_set`` (a random initialisation borrows the standard model's, see
    ``transfer_source``). With a ``surrogate`` attack every cell also gets
    ``"<label> surrogate"`` (``surrogate_accuracy``, BPDA) and, with ``autoattack``,
    ``"<label> AutoAttack"``: AutoAttack at the same norm and budget on the inputs that survived
    the white-box, transfer and surrogate attacks, i.e. the accuracy under all of them. Each row
    carries the quantization's wall time (``quant s``) and the float model's (``float s``), so a
    pipeline's cost is their sum, and the QAT run's ``example_passes`` (``QAT passes``; 0 for
    PTQ), the same cost in a unit that does not depend on the machine, and ``correct``: each
    column's per-input correctness, for comparisons of cells input by input. ``raw_input`` and
    ``scratch_epochs``: see ``quantize_along``.
    """
    rows, models, done = [], {}, {}
    for cell in cells:
        p = pipeline(cell.pipeline, fraction)
        key = cell.evaluated_as
        if key not in done:
            qm = quantize_along(p, float_models, data, key.method, key.part, key.bits, qat, device, raw_input,
                                scratch_epochs)
            sets = None if transfer is None else transfer[transfer_source(p.init)]
            crafted: dict[str, torch.Tensor] = {}
            scored = _Scored(qm.model, _test(data, limit).y, device)
            correct: dict[str, np.ndarray] = {}
            result = evaluate(qm.model, data, attacks, sets, limit, seed, device, crafted, scored, correct)
            if surrogate is not None:
                bpda = surrogate_examples(qm.model, data, surrogate, limit, seed, device)
                result[f"{surrogate.label} surrogate"] = scored.accuracy(bpda)
                correct[f"{surrogate.label} surrogate"] = scored.correct(bpda).numpy()
                if autoattack:  # on what survived white-box, transfer and surrogate: all of them together
                    alive = scored.correct(crafted[surrogate.label]) & scored.correct(bpda)
                    if sets is not None:
                        alive &= scored.correct(sets[surrogate.label])
                    survived = autoattack_correct(qm.model, data, surrogate, limit, seed, device, alive)
                    result[f"{surrogate.label} AutoAttack"] = 100.0 * float(survived.sum()) / len(survived)
                    correct[f"{surrogate.label} AutoAttack"] = survived.numpy()
            done[key] = (qm, result | {"correct": correct})
        qm, result = done[key]
        models[cell] = qm
        passes = 0
        if cell.method not in PTQ_METHODS:
            run, run_data = qat_run(p, qat, data, scratch_epochs)
            passes = example_passes(run, len(run_data.train))
        rows.append({"pipeline": cell.pipeline, "init": p.init, "stage": cell.stage,
                     "method": METHOD_LABELS[cell.method], "part": cell.part, "bits": cell.bits, **result,
                     "quant s": qm.seconds, "float s": float_models[p.init].seconds, "QAT passes": passes})
    return pd.DataFrame(rows), models
