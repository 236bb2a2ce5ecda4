import pandas as pd
import pytest

from qfail.papers import primer
from qfail.verdict import ESTIMATE


@pytest.fixture
def table(right):
    """A primer sweep table (``sweep.accuracy_sweep``'s columns) with the float model at 98 %."""
    def build(static8: float, qat2: float, static2: float, weights2: float, acts2: float, n: int) -> pd.DataFrame:
        rows = [("float", "none", 32, 98.0), ("static", "both", 8, static8), ("qat", "both", 2, qat2),
                ("static", "both", 2, static2), ("static", "weights", 2, weights2), ("static", "activations", 2, acts2)]
        return pd.DataFrame([{"method": m, "part": p, "bits": b, "accuracy": a, "correct": right(a, n)}
                             for m, p, b, a in rows])
    return build


@pytest.mark.parametrize(("accuracies", "n", "size", "expected"), [
    ((97.5, 90.0, 40.0, 95.0, 50.0), 360, 3.9, ["inconclusive", "reproduced", "reproduced", "reproduced"]),
    ((97.5, 90.0, 40.0, 95.0, 50.0), 10_000, 3.9, ["reproduced", "reproduced", "reproduced", "reproduced"]),
    ((80.0, 40.0, 90.0, 50.0, 95.0), 10_000, 1.5, ["not reproduced"] * 4),
])
def test_each_claim_is_judged_on_its_paired_interval(table, accuracies, n, size, expected):
    rows = primer.verdict_table(table(*accuracies, n), size, [2, 8])
    assert list(rows.verdict) == expected
    assert rows[ESTIMATE].iloc[3] == {"value": size, "low": size, "high": size, "unit": "x"}
    assert f"paired over {n} test inputs" in rows["interval from"].iloc[0]


def test_a_grid_without_8_bits_has_no_8_bit_row(table):
    rows = primer.verdict_table(table(0, 90.0, 40.0, 95.0, 50.0, 360), 3.9, [2, 4])
    assert len(rows) == 3 and not rows.finding.str.contains("8-bit").any()


def test_a_model_that_agrees_on_every_input_costs_nothing_even_on_few_inputs(table):
    """The unpaired interval gave +-2.1 points here, wider than the rule's 1 point."""
    rows = primer.verdict_table(table(98.0, 90.0, 40.0, 95.0, 50.0, 360), 3.9, [2, 8])
    assert rows.verdict.iloc[0] == "reproduced"
