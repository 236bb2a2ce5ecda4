"""Li et al.'s findings as verdict rows, computed from the chapter's matrix.

The source's tables are not public, so each row tests the direction of a finding on matched
cells under the headline attack, scored by the strongest of its three attackers (``worst``).
Cells whose clean accuracy falls more than ``USABLE_DROP`` points below their float model are
left out of findings 1 and 2: a model that no longer classifies is not "robust".
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

__all__ = ["USABLE_DROP", "paired", "verdict_table"]

USABLE_DROP = 10.0  # points of clean accuracy a cell may lose and still count as usable


def paired(rows: pd.DataFrame, column: str, a: str, b: str, on: Sequence[str], value: str = "worst") -> pd.DataFrame:
    """Rows with ``column == a`` against ``column == b``, matched on ``on``: columns ``a`` and ``b``."""
    left = rows[rows[column] == a].set_index(list(on))[value]
    right = rows[rows[column] == b].set_index(list(on))[value]
    return pd.concat({a: left, b: right}, axis=1).dropna()


def _gain(pairs: pd.DataFrame) -> str:
    if pairs.empty:
        return "not computed"
    d = pairs.iloc[:, 0] - pairs.iloc[:, 1]
    return f"{d.mean():+.1f} points on average, higher in {(d > 0).sum()} of {len(d)} cells"


def _outcome(pairs: pd.DataFrame, margin: float = 0.0) -> str:
    if pairs.empty:
        return "not tested"
    return "yes" if (pairs.iloc[:, 0] - pairs.iloc[:, 1]).mean() > margin else "no"


def _ratio(pairs: pd.DataFrame) -> float:
    return float((pairs.iloc[:, 0] / pairs.iloc[:, 1]).mean())


def verdict_table(results: pd.DataFrame, float_rows: pd.DataFrame, main_attack: str, fraction: float) -> pd.DataFrame:
    """The four findings from ``run_matrix``'s results (with a ``worst`` column) and ``float_rows``."""
    fp_clean = float_rows.set_index("init")["clean"]
    usable = results[results.clean >= results.init.map(fp_clean) - USABLE_DROP]
    low = usable[usable.bits <= 4]
    on_cells = ["pipeline", "method", "bits"]
    acts_vs_w = paired(low, "part", "activations", "weights", on_cells, main_attack)
    acts_vs_w_worst = paired(low, "part", "activations", "weights", on_cells, "worst")
    regimes = {
        "PTQ": paired(usable[usable.stage == "PTQ"], "pipeline", "b", "a", ["method", "part", "bits"]),
        "clean QAT": paired(results[results.stage == "clean QAT"], "pipeline", "b", "a", ["method", "part", "bits"]),
        "adversarial QAT": paired(results[results.stage == "adversarial QAT"], "pipeline", "d", "c",
                                  ["method", "part", "bits"]),
    }
    qat_ac = results[results.pipeline.isin(["a", "c"]) & (results.method == "PACT QAT")]
    adv_qat = paired(qat_ac, "pipeline", "c", "a", ["part", "bits"])
    cost_ratio = paired(qat_ac, "pipeline", "c", "a", ["part", "bits"], "quant s")
    de = results[results.pipeline.isin(["d", "e"])]
    partial = paired(de, "pipeline", "e", "d", ["part", "bits"])
    partial_cost = paired(de, "pipeline", "e", "d", ["part", "bits"], "quant s")

    helps = [name for name, pairs in regimes.items()
             if not pairs.empty and (pairs.iloc[:, 0] - pairs.iloc[:, 1]).mean() > 5]
    white, worst = _outcome(acts_vs_w), _outcome(acts_vs_w_worst)
    source = "source (ResNet-20, CIFAR-10)"
    return pd.DataFrame([
        {"finding": "1. quantizing activations gives more robustness than quantizing weights",
         source: "activation quantization gives stronger robustness gains than weight quantization",
         "measured here": f"activations vs weights only, usable cells at ≤ 4 bits: white-box {_gain(acts_vs_w)}; "
                          f"strongest of white-box, transfer and surrogate {_gain(acts_vs_w_worst)}",
         "reproduced": "not tested" if white == "not tested" else
                       ("yes" if white == worst == "yes" else "partly (white-box only: masking)" if white == "yes" else "no")},
        {"finding": "2. a robust initialisation helps in some regimes",
         source: "robust initialisation helps in certain regimes",
         "measured here": "; ".join(f"{name}: {_gain(pairs)}" for name, pairs in regimes.items()),
         "reproduced": f"yes ({', '.join(helps)})" if helps else "no"},
        {"finding": "3. adversarial QAT buys robustness at a large compute cost",
         source: "adversarial training in QAT offers robustness at a large computational cost",
         "measured here": (f"(c) vs clean QAT (a): {_gain(adv_qat)}; QAT wall time x{_ratio(cost_ratio):.1f}"
                           if not adv_qat.empty else "not computed"),
         "reproduced": "not tested" if adv_qat.empty else
                       ("yes" if _outcome(adv_qat, 5) == "yes" and _ratio(cost_ratio) > 2 else "no")},
        {"finding": "4. from a robust model, QAT on part of the data reaches a robust quantized model",
         source: "transfer learning enables robust performance with partial data",
         "measured here": (f"(e) on {fraction:.0%} of the data vs (d) on all: {_gain(partial)} "
                           f"(e keeps {100 * _ratio(partial):.0f}% of (d)'s robust accuracy "
                           f"at {100 * _ratio(partial_cost):.0f}% of its QAT time)"
                           if not partial.empty else "not computed"),
         "reproduced": "not tested" if partial.empty else ("yes" if _ratio(partial) >= 0.9 else "no")},
    ])
