"""Li et al.'s findings as verdict rows (:mod:`qfail.verdict`), computed from the chapter's matrix.

The source's tables are not public, so each row tests the direction of a finding on matched
cells, scored by the strongest attacker of each cell (``worst``). Cells whose clean accuracy
falls more than ``USABLE_DROP`` points below their float model are left out of every finding: a
model that no longer classifies is not "robust".

Intervals: one seed (a second is out of the chapter's time budget), so the interval is over the
attacked inputs, which every cell shares: a difference is paired input by input, each input's
difference averaged over the matched cells (:func:`qfail.verdict.paired_difference`), and a
ratio of robust accuracies is bootstrapped over the inputs, resampling the same inputs for
both sides.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from qfail.papers.li.pipelines import transfer_source
from qfail.verdict import Estimate, Rule, bootstrap, decided_count, finding, paired_difference

__all__ = ["USABLE_DROP", "usable", "GAINS", "HELPS_SOMEWHERE", "KEEPS_MOST", "paired", "difference", "ratio", "verdict_table"]

USABLE_DROP = 10.0  # points of clean accuracy a cell may lose and still count as usable
GAINS = Rule("the mean robust-accuracy difference over matched cells is above 0", low=0.0)
HELPS_SOMEWHERE = Rule("the robust initialisation's gain is above 0 in at least one regime", low=0.5)
KEEPS_MOST = Rule("(e) keeps more than 90 % of (d)'s robust accuracy", low=90.0)
_PAPER = "no numbers published (abstract only)"
NO_CELLS = "no usable matched cells"  # none in the run, or every one lost more than USABLE_DROP


def usable(clean: float | pd.Series, reference: float | pd.Series) -> bool | pd.Series:
    """Whether a cell of clean accuracy ``clean`` (%) still counts against its float model's
    ``reference``: it loses at most ``USABLE_DROP`` points (the rule every Li finding applies)."""
    return clean >= reference - USABLE_DROP


def paired(rows: pd.DataFrame, column: str, a: str, b: str, on: Sequence[str], value: str = "worst",
           correct: bool = False) -> pd.DataFrame:
    """Rows with ``column == a`` against ``column == b``, matched on ``on``: columns ``a`` and ``b``
    holding ``value``, or with ``correct`` the per-input correctness under the attacker ``value``
    (from the rows' ``correct``)."""
    def side(name: str) -> pd.Series:
        chosen = rows[rows[column] == name].set_index(list(on))
        return chosen["correct"].map(lambda c: c[value]) if correct else chosen[value]

    return pd.concat({a: side(a), b: side(b)}, axis=1).dropna()


def _stacked(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The two columns of correctness arrays as (cells, inputs) arrays."""
    return np.stack(pairs.iloc[:, 0].to_list()), np.stack(pairs.iloc[:, 1].to_list())


def difference(pairs: pd.DataFrame) -> Estimate:
    """Mean robust accuracy of the first column minus the second (points) over matched cells,
    from per-input correctness (``paired(..., correct=True)``), paired over the inputs."""
    if pairs.empty:
        return Estimate(float("nan"), float("nan"), float("nan"), NO_CELLS, "points")
    a, b = _stacked(pairs)
    return paired_difference(a, b, f"{len(pairs)} matched cells, paired over {a.shape[1]} attacked inputs, one seed")


def ratio(pairs: pd.DataFrame) -> Estimate:
    """Mean over matched cells of the first column's robust accuracy over the second's (%), from
    per-input correctness, with a bootstrap over the inputs (both sides resampled alike)."""
    if pairs.empty:
        return Estimate(float("nan"), float("nan"), float("nan"), NO_CELLS, "%")
    a, b = _stacked(pairs)
    if (b.sum(axis=1) == 0).any():
        return Estimate(float("nan"), float("nan"), float("nan"),
                        "the reference pipeline has no robust accuracy in a matched cell: the ratio is undefined", "%")

    def mean_ratio(idx: np.ndarray) -> float:
        below = b[:, idx].sum(axis=1)
        return float(100 * np.mean(a[:, idx].sum(axis=1) / below)) if (below > 0).all() else float("nan")

    return bootstrap(mean_ratio, a.shape[1], f"attacked inputs ({len(pairs)} matched cells, one training seed)", "%")


def _measured(results: pd.DataFrame, needed: str, estimate: Estimate, text: str) -> tuple[Estimate, str]:
    """A finding's estimate and text, or, where there is no number (the run left out a pipeline the
    finding compares, or no cell could be compared), an estimate and text that say why instead of a
    NaN interval."""
    missing = [p for p in needed if p not in set(results.pipeline)]
    if missing:
        why = f"pipeline{'s' if len(missing) > 1 else ''} {', '.join(f'({p})' for p in missing)} not in this run"
        return replace(estimate, basis=why), f"not measured: {why}"
    return estimate, (f"not measured: {estimate.basis}" if np.isnan(estimate.value) else text)


def verdict_table(results: pd.DataFrame, float_rows: pd.DataFrame, main_attack: str, fraction: float) -> pd.DataFrame:
    """The findings from ``run_matrix``'s results (with ``strongest``'s ``worst``) and ``float_rows``."""
    fp_clean = float_rows.set_index("init")["clean"]
    reference = results.init.map(lambda i: fp_clean.get(transfer_source(i), float("nan")))  # random: standard's
    usable_cells = results[usable(results.clean, reference)]
    low = usable_cells[usable_cells.bits <= 4]
    cells = ["pipeline", "method", "bits"]
    acts_vs_w = paired(low, "part", "activations", "weights", cells, correct=True)
    white = difference(paired(low, "part", "activations", "weights", cells, main_attack, correct=True))
    regimes = {
        "PTQ": paired(usable_cells[usable_cells.stage == "PTQ"], "pipeline", "b", "a", ["method", "part", "bits"], correct=True),
        "clean QAT": paired(usable_cells[usable_cells.stage == "clean QAT"], "pipeline", "b", "a", ["method", "part", "bits"], correct=True),
        "adversarial QAT": paired(usable_cells[usable_cells.stage == "adversarial QAT"], "pipeline", "d", "c",
                                  ["method", "part", "bits"], correct=True),
        "clean QAT against a random initialisation": paired(usable_cells[usable_cells.stage.isin(["clean QAT", "QAT from scratch"])],
                                                            "pipeline", "b", "f", ["method", "part", "bits"],
                                                            correct=True),
    }
    regime_gains = {name: difference(pairs) for name, pairs in regimes.items() if not pairs.empty}
    qat_ac = usable_cells[usable_cells.pipeline.isin(["a", "c"]) & (usable_cells.stage != "PTQ")]
    adv_qat = paired(qat_ac, "pipeline", "c", "a", ["method", "part", "bits"], correct=True)
    cost = paired(results[results.stage != "PTQ"], "pipeline", "c", "a", ["method", "part", "bits"], "QAT passes")
    de = usable_cells[usable_cells.pipeline.isin(["d", "e"])]
    partial = paired(de, "pipeline", "e", "d", ["method", "part", "bits"], correct=True)
    partial_cost = paired(results[results.pipeline.isin(["d", "e"])], "pipeline", "e", "d",
                          ["method", "part", "bits"], "QAT passes")

    bg = usable_cells[usable_cells.pipeline.isin(["b", "g"]) & (usable_cells.stage == "clean QAT")]
    clean_partial = paired(bg, "pipeline", "g", "b", ["method", "part", "bits"], correct=True)
    strongest = difference(acts_vs_w)
    finding1, finding1_text = _measured(
        results, "", strongest, f"activations minus weights only, usable cells at ≤ 4 bits, strongest "
        f"attacker: {strongest.text()}; white-box ({main_attack}) alone: {white.text()}")
    per_regime = [GAINS.judge(e) for e in regime_gains.values()]
    regimes_count = decided_count(per_regime, "regimes")
    # costs in examples passed through the network (the same on every machine; the chapter shows seconds)
    cost_text = (f"; QAT cost x{float((cost.iloc[:, 0] / cost.iloc[:, 1]).mean()):.1f} in examples passed (c over a)"
                 if not cost.empty else "")
    partial_text = (f" at {100 * float((partial_cost.iloc[:, 0] / partial_cost.iloc[:, 1]).mean()):.0f} % of its "
                    "QAT cost in examples passed" if not partial_cost.empty else "")
    adversarial, transfer, clean_transfer = difference(adv_qat), ratio(partial), ratio(clean_partial)  # once each
    adversarial, adversarial_text = _measured(results, "ac", adversarial,
                                              f"(c) minus (a): {adversarial.text()}{cost_text}")
    transfer, transfer_text = _measured(results, "de", transfer,
                                        f"(e) on {fraction:.0%} of the data over (d) on all: {transfer.text()} of "
                                        f"its robust accuracy{partial_text}")
    clean_transfer, clean_transfer_text = _measured(
        results, "bg", clean_transfer,
        f"(g) clean QAT on {fraction:.0%} of the data over (b) clean QAT on all: {clean_transfer.text()} of its "
        "robust accuracy")
    return pd.DataFrame([
        finding("1. quantizing activations gives more robustness than quantizing weights",
                "activation quantization gives stronger robustness gains than weight quantization",
                finding1, GAINS, _PAPER, measured=finding1_text),
        finding("2. a robust initialisation helps in some regimes", "robust initialisation helps in certain regimes",
                regimes_count, HELPS_SOMEWHERE, _PAPER,
                measured="; ".join(f"{name}: {e.text()} ({GAINS.judge(e)})" for name, e in regime_gains.items())
                         or "no regime computed",
                verdict=HELPS_SOMEWHERE.judge(regimes_count) if regime_gains else "inconclusive"),
        finding("3. adversarial QAT buys robustness (compared with clean QAT from the same float model)",
                "adversarial training in QAT offers robustness at a large computational cost",
                adversarial, GAINS, _PAPER, measured=adversarial_text),
        finding("4. from a robust model, QAT on part of the data reaches a robust quantized model",
                "transfer learning enables robust performance with partial data",
                transfer, KEEPS_MOST, _PAPER, measured=transfer_text),
        finding("5. from a robust model, clean QAT on part of the data keeps most of the robustness",
                "transfer learning enables robust performance with partial data",
                clean_transfer, Rule("(g) keeps more than 90 % of (b)'s robust accuracy", low=90.0), _PAPER,
                measured=clean_transfer_text),
    ])
