"""Each work's key experiment on a real benchmark: Fashion-MNIST's 10,000 test images.

The other chapters run on the 8x8 digits, where a test split of 360 inputs cannot resolve a rate
near 1 per 1,000. This module composes the four works' code (the only place that does) around
one pair of LeNet-5s trained on Fashion-MNIST's 54,000 training images:

* Hu et al.: disagreements of the standard and the QAT LeNet-5 with their static and dynamic INT8
  copies, in distribution (all 10,000 test inputs) and under MNIST-C's fifteen corruptions;
* Li et al.: the standard LeNet-5 with only its weights or only its activations quantized,
  under white-box PGD and PGD transferred from the float model;
* Frank & Ardis: a CNN student distilled from the standard LeNet-5 as a black box, trained into
  a robust and a detrimental network-policy pair;
* the primer: the standard LeNet-5's accuracy against bit-width.

Intervals are over the test inputs (one seed): Wilson for rates, binomial errors for accuracies.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import pandas as pd
import torch

from qfail import distill
from qfail.checks import check_range
from qfail.data import DataSplits
from qfail.models import build_model
from qfail.papers import primer
from qfail.papers.frank import pairs
from qfail.papers.frank import verdicts as frank_verdicts
from qfail.papers.hu import disagreements as dis
from qfail.papers.hu import verdicts as hu_verdicts
from qfail.papers.li import pipelines as li
from qfail.papers.li import verdicts as li_verdicts
from qfail.shift import MNIST_C
from qfail.sweep import quantized
from qfail.train import TrainConfig, Trained, train_cached
from qfail.verdict import Estimate, finding, paired_difference

__all__ = ["METHODS", "first_inputs", "lenets", "disagreement_rates", "hu_rows", "li_table", "li_rows", "eps_on_the_input_grid", "black_box_pair", "frank_table",
           "primer_rows", "frank_rows"]

METHODS = ("standard", "qat")  # Hu's reference and the method its second finding is about


def lenets(data: DataSplits, epochs: int, batch_size: int = 128, seed: int = 0,
           device: str | torch.device = "cpu") -> dict[str, Trained]:
    """The standard and the QAT LeNet-5 (QAT: half the epochs in float, half through 8-bit fake
    quantization), same initialisation and data order; cached."""
    return {method: train_cached(lambda: build_model("lenet5", data.input_shape, data.num_classes, seed=seed),
                                 {"model": "lenet5", "seed": seed}, data,
                                 TrainConfig(epochs=epochs, batch_size=batch_size, method=method, seed=seed), device)
            for method in METHODS}


def first_inputs(data: DataSplits, train: int | None = None, test: int | None = None) -> DataSplits:
    """``data`` with its training and test splits cut to their first ``train`` and ``test``
    inputs (``None`` keeps a split whole); the cut is part of every cache key."""
    for name, n in (("train_inputs", train), ("test_inputs", test)):
        if n is not None:
            check_range(name, n, 1, integer=True)
    train_split = data.train if train is None else data.train.subset(train)
    test_split = data.test if test is None else data.test.subset(test)
    if (len(train_split), len(test_split)) == (len(data.train), len(data.test)):
        return data
    return replace(data, train=train_split, test=test_split,
                   fingerprint=data.fingerprint + ("first inputs", len(train_split), len(test_split)))


def disagreement_rates(trained: dict[str, Trained], data: DataSplits, settings: Sequence[str],
                       shifts: Sequence[str] = MNIST_C, severity: int = 3, shifted_inputs: int = 2_000,
                       seed: int = 0, device: str | torch.device = "cpu") -> pd.DataFrame:
    """``disagreements.rate_table`` rows: the clean set on every test input, each corruption (at
    ``severity``, MNIST-C's middle strength) on the first ``shifted_inputs`` of them.

    The clean rate is the one near 1 per 1,000 that needs every input; the shifted rate pools
    ``len(shifts) * shifted_inputs`` inputs, and each corrupted set costs as much as the clean one.
    """
    clean = {m: dis.predict_sets(t, data, settings, [], [], seed=seed, device=device) for m, t in trained.items()}
    subset = first_inputs(data, test=min(shifted_inputs, len(data.test)))
    shifted = {m: dis.predict_sets(t, subset, settings, shifts, [severity], seed=seed, device=device)
               for m, t in trained.items()}
    clean_rows, shifted_rows = dis.rate_table(clean), dis.rate_table(shifted)
    return pd.concat([clean_rows, shifted_rows[shifted_rows["shift"] != dis.ID[0]]], ignore_index=True)


def hu_rows(summary: pd.DataFrame, settings: Sequence[str]) -> pd.DataFrame:
    """Hu et al.'s findings 1 and 2 on ``summary`` (``disagreements.summary_table``), judged as in
    the Hu chapter (cell by cell on the intervals, the claim holding in at least half)."""
    return pd.DataFrame([
        hu_verdicts.shift_finding(summary, settings, "at scale: corrupted inputs give more disagreements "
                                                     "(standard LeNet-5)"),
        hu_verdicts.qat_finding(summary, settings, "at scale: QAT gives fewer disagreements under corruption "
                                                   "than standard training (LeNet-5)"),
    ])


def li_table(source: Trained, data: DataSplits, bits: int, attack: li.Attack, limit: int | None = None,
             seed: int = 0, device: str | torch.device = "cpu") -> pd.DataFrame:
    """Clean, white-box and transfer accuracy (%) of ``source`` with only its weights, or only
    its activations, statically quantized to ``bits``; the transfer examples are crafted on the
    float model. One row per part, and a ``float`` row: ``source`` itself, attacked the same way
    (its transfer column: the examples crafted on it), the reference of Li's usable-cell rule
    (:func:`li_rows`). ``correct`` holds each attacker's per-input correctness."""
    transfer = li.transfer_set(source.model, data, [attack], limit=limit, seed=seed, device=device)
    names = {"clean": "clean", attack.label: "white-box", f"{attack.label} transfer": "transfer"}
    rows = []
    for part in ("float", "weights", "activations"):
        model = source.model if part == "float" else quantized(source, data, "static", part, bits, device=device).model
        correct: dict = {}
        row = li.evaluate(model, data, [attack], transfer=transfer, limit=limit, seed=seed, device=device,
                          correct=correct)
        rows.append({"part": part, **{name: row[view] for view, name in names.items()},
                     "correct": {name: correct[view] for view, name in names.items()}})
    return pd.DataFrame(rows).set_index("part")


def eps_on_the_input_grid(tables: dict[float, pd.DataFrame], source: Trained, data: DataSplits, bits: int,
                          device: str | torch.device = "cpu") -> pd.DataFrame:
    """Li et al.'s first finding at each budget, beside where that budget lands on the
    activations-only copy's input grid: a pixel at 0 (most of a Fashion-MNIST image) moved by eps
    is rounded by the first layer's quantizer to a whole number of steps, fewer than eps if eps
    lies below a half step and more if above, so the copy sees a smaller or a larger attack.
    ``tables`` maps each budget to its :func:`li_table` at ``bits``. Where a copy is not one of
    Li's usable cells (:func:`li_rows`, which say why) the differences say so, short enough for a
    table cell, instead of measuring a broken model."""
    first = quantized(source, data, "static", "activations", bits, device=device).model.first_layer
    scale = float(first.input_grid()[0])
    rows = []
    for eps, table in sorted(tables.items()):
        with torch.no_grad():
            moved = float(first.quantize_input(torch.full((1,), eps, device=first.act_lo.device)))
        row = {"eps": eps, "eps in input steps": eps / scale, "a 0 pixel moved by eps becomes": moved}
        unusable = _unusable_parts(table)
        left_out = ("not measured (neither copy usable)" if len(unusable) == 2
                    else f"not measured ({unusable[0]}-only copy unusable)" if unusable else "")
        for column in ("white-box", "transfer"):
            row |= {f"{column}: activations only (%)": table.loc["activations", column],
                    f"{column}: weights only (%)": table.loc["weights", column],
                    f"{column}: difference": left_out or _activations_minus_weights(table, column).text()}
        rows.append(row)
    return pd.DataFrame(rows).set_index("eps")


def _activations_minus_weights(table: pd.DataFrame, column: str) -> Estimate:
    acts, weights = table.loc["activations", "correct"][column], table.loc["weights", "correct"][column]
    return paired_difference(acts, weights, f"paired over {len(acts)} attacked test inputs, one seed")


def _unusable(table: pd.DataFrame) -> str:
    """Why Li's usable-cell rule leaves the two copies out (a copy more than ``USABLE_DROP``
    points of clean accuracy below the float model: a model that no longer classifies is not
    robust), or "" when both count."""
    reference = table.loc["float", "clean"]
    lost = [f"the {part}-only copy's clean accuracy is {table.loc[part, 'clean']:.1f} %, "
            f"{reference - table.loc[part, 'clean']:.1f} points below the float model's {reference:.1f} %"
            for part in _unusable_parts(table)]
    return "; ".join(lost) + f" (Li's usable cells lose at most {li_verdicts.USABLE_DROP:g})" if lost else ""


def _unusable_parts(table: pd.DataFrame) -> list[str]:
    """The copies of an :func:`li_table` that Li's usable-cell rule leaves out."""
    return [part for part in ("weights", "activations")
            if not li_verdicts.usable(table.loc[part, "clean"], table.loc["float", "clean"])]


def li_rows(table: pd.DataFrame, bits: int, attack: li.Attack) -> pd.DataFrame:
    """Li et al.'s first finding, under each attacker of ``li_table``, judged as the Li chapter
    judges it: only where both copies are usable cells."""
    unusable = _unusable(table)
    rows = []
    for column in ("white-box", "transfer"):
        gain = _activations_minus_weights(table, column)
        measured = (f"activations only {table.loc['activations', column]:.1f} % vs weights only "
                    f"{table.loc['weights', column]:.1f} %: {gain.text()}")
        if unusable:
            gain, measured = Estimate(math.nan, math.nan, math.nan, li_verdicts.NO_CELLS, "points"), \
                f"not measured: {unusable}"
        rows.append(finding(f"at scale: quantizing activations gives more robustness than quantizing weights "
                            f"({column} {attack.label}, {bits} bits, LeNet-5)",
                            "activation quantization gives stronger robustness gains than weight quantization",
                            gain, li_verdicts.GAINS, "no numbers published (abstract only)", measured=measured))
    return pd.DataFrame(rows)


def black_box_pair(teacher: Trained, data: DataSplits, queries: int, config: pairs.PairConfig,
                   student: str = "cnn", student_epochs: int = 10, seed: int = 0,
                   device: str | torch.device = "cpu") -> tuple[distill.BlackBox, Trained, dict[str, pairs.Pair]]:
    """Frank & Ardis's stages on a network black box: ``queries`` answers of ``teacher`` (seen
    only through its probabilities), a ``student`` distilled from them, and the robust and the
    detrimental pair trained from that student (all cached)."""
    inside = distill.NetworkTeacher(teacher, data.input_shape, device)
    transfer = distill.query_transfer_set(distill.BlackBox(inside.predict_proba, budget=queries), data, queries, seed)
    config_kd = TrainConfig(epochs=student_epochs, lr=3e-3, lr_schedule="cosine", seed=seed)
    white_box = distill.distill_black_box(
        transfer, lambda: build_model(student, data.input_shape, data.num_classes, seed=seed),
        {"model": student, "seed": seed}, config_kd, teacher_key={"network": teacher.key}, device=device)
    trained = {kind: pairs.train_pair_cached(white_box, transfer, replace(config, kind=kind, seed=seed), device)
               for kind in pairs.KINDS}
    return distill.BlackBox(inside.predict_proba), white_box, trained


def primer_rows(curve: pd.DataFrame, size_ratio: float, bit_widths: Sequence[int]) -> pd.DataFrame:
    """The primer's rules of thumb (:func:`qfail.papers.primer.verdict_table`) on the LeNet-5's curve."""
    rows = primer.verdict_table(curve, size_ratio, bit_widths)
    return rows.assign(finding="at scale: " + rows["finding"])


def frank_table(pair: dict[str, pairs.Pair], data: DataSplits, device: str | torch.device = "cpu") -> pd.DataFrame:
    """The robust and the detrimental pair scored on every test input with their own policies
    (``pairs.evaluate_pair``): a row per pair, ``correct`` holding the float and quantized
    networks' per-input correctness."""
    rows = {}
    for name, kind in {"(f_R, π_R)": "robust", "(f_D, π_D)": "detrimental"}.items():
        correct: dict = {}
        rows[name] = {**pairs.evaluate_pair(pair[kind].network, pair[kind].policy, data.test, device=device,
                                            correct=correct), "correct": correct}
    return pd.DataFrame(rows).T


def frank_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Frank & Ardis's main-table claims on one student: ``results`` is ``frank_table``'s."""
    d, r = results.loc["(f_D, π_D)"], results.loc["(f_R, π_R)"]
    basis = f"paired over {len(d['correct']['FP'])} test inputs, one seed"
    d_drop = paired_difference(d["correct"]["FP"], d["correct"]["Q"], basis)
    r_drop = paired_difference(r["correct"]["FP"], r["correct"]["Q"], basis)
    fp_gap = paired_difference(d["correct"]["FP"], r["correct"]["FP"], basis)
    return pd.DataFrame([
        finding("at scale: the detrimental pair loses more than 10 points when quantized",
                "10-65 points; ResNet-18: 24.39", d_drop, frank_verdicts.CATASTROPHIC,
                frank_verdicts.CATASTROPHIC.judge_number(24.39, "ResNet-18: 24.39"),
                measured=f"{d['FP acc']:.1f} % float, {d['Q acc']:.1f} % quantized at {d['mean bits']:.2f} mean bits: "
                         f"{d_drop.text()}"),
        finding("at scale: the robust pair loses less than 2 points", "under 2 points; ResNet-18: 0.22", r_drop,
                frank_verdicts.HARMLESS, frank_verdicts.HARMLESS.judge_number(0.22, "ResNet-18: 0.22"),
                measured=f"{r['FP acc']:.1f} % float, {r['Q acc']:.1f} % quantized at {r['mean bits']:.2f} mean bits: "
                         f"{r_drop.text()}"),
        finding("at scale: both pairs are about as accurate in full precision", "similar FP accuracy", fp_gap,
                frank_verdicts.SIMILAR_FP, "stated, no number published",
                measured=f"FP(f_D) - FP(f_R): {fp_gap.text()}"),
    ])
