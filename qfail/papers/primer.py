"""The primer's textbook claims as verdict rows (:mod:`qfail.verdict`), from its accuracy table.

The claims are the field's rules of thumb, not one paper's numbers: 8-bit PTQ is nearly free
(Jacob et al. 2018 report under one point on their networks), QAT recovers what low-bit PTQ
loses, activations are the fragile half, and INT8 storage is a quarter of float32. Accuracy
differences get the conservative binomial interval of :func:`qfail.verdict.accuracy_difference`
over the test inputs; the size ratio is exact (serialized bytes), so its interval is a point.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from qfail.verdict import Estimate, Rule, accuracy_difference, finding

__all__ = ["NEARLY_FREE", "GAINS", "QUARTER_SIZE", "verdict_table"]

NEARLY_FREE = Rule("the drop is below 1 point", high=1.0)
GAINS = Rule("the difference is above 0", low=0.0)
QUARTER_SIZE = Rule("float32 over INT8 bytes is above 3", low=3.0)
_RULE_OF_THUMB = "a rule of thumb; no number to judge"


def _accuracy(table: pd.DataFrame, method: str, part: str, bits: int) -> float:
    return float(table[(table.method == method) & (table.part == part) & (table.bits == bits)].accuracy.iloc[0])


def verdict_table(table: pd.DataFrame, fp_accuracy: float, size_ratio: float, bit_widths: Sequence[int],
                  inputs: int) -> pd.DataFrame:
    """Verdict rows from the primer's sweep ``table`` (method, part, bits, accuracy) measured on
    ``inputs`` test inputs, the float model's accuracy and the float32/INT8 size ratio."""
    low = min(bit_widths)
    basis = f"{inputs} test inputs, one seed (two binomial errors in quadrature)"
    rows = []
    if 8 in bit_widths:
        drop = accuracy_difference(fp_accuracy, _accuracy(table, "static", "both", 8), inputs, basis)
        rows.append(finding("8-bit static PTQ costs under 1 point of accuracy", "under 1 point (Jacob et al. 2018)",
                            drop, NEARLY_FREE, _RULE_OF_THUMB))
    gain = accuracy_difference(_accuracy(table, "qat", "both", low), _accuracy(table, "static", "both", low), inputs,
                               basis)
    rows.append(finding(f"QAT recovers accuracy that static PTQ loses at {low} bits", "QAT above PTQ at low bits",
                        gain, GAINS, _RULE_OF_THUMB))
    fragile = accuracy_difference(_accuracy(table, "static", "weights", low),
                                  _accuracy(table, "static", "activations", low), inputs, basis)
    rows.append(finding(f"activations are more fragile than weights at {low} bits (weights only minus activations only)",
                        "activations lose more", fragile, GAINS, _RULE_OF_THUMB))
    size = Estimate(size_ratio, size_ratio, size_ratio, "exact: serialized bytes, no sampling", "x", digits=2)
    rows.append(finding("INT8 storage is about 4x smaller than float32", "4x (8 of 32 bits)", size, QUARTER_SIZE,
                        QUARTER_SIZE.judge_number(4.0)))
    return pd.DataFrame(rows)
