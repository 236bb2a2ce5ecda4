import pandas as pd
import pytest

from qfail.papers import primer
from qfail.verdict import ESTIMATE


def _table(static8: float, qat2: float, static2: float, weights2: float, acts2: float) -> pd.DataFrame:
    rows = [("static", "both", 8, static8), ("qat", "both", 2, qat2), ("static", "both", 2, static2),
            ("static", "weights", 2, weights2), ("static", "activations", 2, acts2)]
    return pd.DataFrame(rows, columns=["method", "part", "bits", "accuracy"])


@pytest.mark.parametrize(("table", "size", "expected"), [
    (_table(97.9, 90.0, 40.0, 95.0, 50.0), 3.9, ["inconclusive", "reproduced", "reproduced", "reproduced"]),
    (_table(80.0, 40.0, 90.0, 50.0, 95.0), 1.5, ["not reproduced", "not reproduced", "not reproduced",
                                                "not reproduced"]),
])
def test_each_claim_is_judged_on_its_interval(table, size, expected):
    rows = primer.verdict_table(table, 98.0, size, [2, 8], 10_000 if expected[0] != "inconclusive" else 360)
    assert list(rows.verdict) == expected
    assert rows[ESTIMATE].iloc[3] == {"value": size, "low": size, "high": size, "unit": "x"}


def test_a_grid_without_8_bits_has_no_8_bit_row():
    rows = primer.verdict_table(_table(0, 90.0, 40.0, 95.0, 50.0), 98.0, 3.9, [2, 4], 360)
    assert len(rows) == 3 and not rows.finding.str.contains("8-bit").any()


def test_a_drop_of_zero_on_many_inputs_is_reproduced():
    rows = primer.verdict_table(_table(98.0, 90.0, 40.0, 95.0, 50.0), 98.0, 3.9, [2, 8], 10_000)
    assert rows.verdict.iloc[0] == "reproduced"
