"""The primer's textbook claims as verdict rows (:mod:`qfail.verdict`), from its accuracy table.

The claims are the field's rules of thumb, not one paper's numbers: 8-bit PTQ is nearly free
(Jacob et al. 2018 report under one point on their networks), QAT recovers what low-bit PTQ
loses, activations are the fragile half, and INT8 storage is a quarter of float32. The models
are scored on the same test inputs, so accuracy differences get the paired interval of
:func:`qfail.verdict.paired_difference`; the size ratio is exact (serialized bytes), so its
interval is a point.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from qfail.verdict import Estimate, Rule, finding, paired_difference

__all__ = ["NEARLY_FREE", "GAINS", "QUARTER_SIZE", "verdict_table"]

NEARLY_FREE = Rule("the drop is below 1 point", high=1.0)
GAINS = Rule("the difference is above 0", low=0.0)
QUARTER_SIZE = Rule("float32 over INT8 bytes is above 3", low=3.0)
_RULE_OF_THUMB = "a rule of thumb; no number to judge"


def _correct(table: pd.DataFrame, method: str, part: str, bits: int):  # -> a bool array
    return table[(table.method == method) & (table.part == part) & (table.bits == bits)].correct.iloc[0]


def verdict_table(table: pd.DataFrame, size_ratio: float, bit_widths: Sequence[int]) -> pd.DataFrame:
    """Verdict rows from the primer's sweep ``table`` (``sweep.accuracy_sweep``: method, part, bits,
    accuracy, per-input correct, with the float model as ``method="float"``) and the
    float32/INT8 size ratio."""
    low = min(bit_widths)
    fp = table[table.method == "float"].correct.iloc[0]
    basis = f"paired over {len(fp)} test inputs, one seed"
    rows = []
    if 8 in bit_widths:
        drop = paired_difference(fp, _correct(table, "static", "both", 8), basis)
        rows.append(finding("8-bit static PTQ costs under 1 point of accuracy", "under 1 point (Jacob et al. 2018)",
                            drop, NEARLY_FREE, _RULE_OF_THUMB))
    gain = paired_difference(_correct(table, "qat", "both", low), _correct(table, "static", "both", low), basis)
    rows.append(finding(f"QAT recovers accuracy that static PTQ loses at {low} bits", "QAT above PTQ at low bits",
                        gain, GAINS, _RULE_OF_THUMB))
    fragile = paired_difference(_correct(table, "static", "weights", low),
                                _correct(table, "static", "activations", low), basis)
    rows.append(finding(f"activations are more fragile than weights at {low} bits (weights only minus activations only)",
                        "activations lose more", fragile, GAINS, _RULE_OF_THUMB))
    size = Estimate(size_ratio, size_ratio, size_ratio, "exact: serialized bytes, no sampling", "x", digits=2)
    rows.append(finding("INT8 storage is about 4x smaller than float32", "4x (8 of 32 bits)", size, QUARTER_SIZE,
                        QUARTER_SIZE.judge_number(4.0)))
    return pd.DataFrame(rows)
