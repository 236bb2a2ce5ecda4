"""Li et al. verdict rows from a synthetic matrix: each finding reproduced, not reproduced or inconclusive."""
import pandas as pd
import pytest

from qfail.papers.li import verdicts

ATTACK = "PGD-linf 0.1"
FLOAT = pd.DataFrame({"init": ["standard", "adversarial"], "clean": [99.0, 99.0]})


@pytest.fixture
def matrix(right):
    """``run_matrix``'s rows after ``strongest``, with per-input correctness on ``n`` inputs."""
    def build(acts=60.0, weights=20.0, robust_gain=30.0, partial=0.95, adv_gain=10.0, n=2000):
        rows = []
        for pipeline, init, stage in [("a", "standard", "clean QAT"), ("b", "adversarial", "clean QAT"),
                                      ("c", "standard", "adversarial QAT"), ("d", "adversarial", "adversarial QAT"),
                                      ("e", "adversarial", "adversarial QAT"), ("f", "random", "QAT from scratch"),
                                      ("g", "adversarial", "clean QAT")]:
            base = {"a": 0.0, "b": robust_gain, "c": adv_gain, "d": adv_gain + robust_gain, "f": 0.0}.get(pipeline)
            for part, value in [("activations", acts), ("weights", weights)]:
                robust = (partial * (adv_gain + robust_gain + value) if pipeline == "e" else
                          partial * (robust_gain + value) if pipeline == "g" else base + value)
                correct = right(robust, n)
                rows.append({"pipeline": pipeline, "init": init, "stage": stage, "method": "PACT QAT", "part": part,
                             "bits": 4, "clean": 98.0, ATTACK: robust, "worst": robust,
                             "quant s": {"c": 40.0, "d": 40.0, "e": 10.0}.get(pipeline, 10.0), "float s": 5.0,
                             "QAT passes": {"c": 6000, "d": 6000, "e": 1500}.get(pipeline, 1000),
                             "correct": {ATTACK: correct, "worst": correct}})
        return pd.DataFrame(rows)
    return build


def _verdicts(matrix):
    return verdicts.verdict_table(matrix, FLOAT, ATTACK, 0.25)["verdict"].tolist()


def test_findings_reproduce_on_a_matrix_that_shows_them(matrix):
    assert _verdicts(matrix()) == ["reproduced"] * 5


def test_costs_are_told_in_examples_passed_not_seconds(matrix):
    """Seconds differ between machines and runs; the verdict table must not."""
    measured = verdicts.verdict_table(matrix(), FLOAT, ATTACK, 0.25)["measured here (95% interval)"].tolist()
    assert "QAT cost x6.0 in examples passed (c over a)" in measured[2]
    assert "at 25 % of its QAT cost in examples passed" in measured[3]


def test_findings_fail_on_a_matrix_that_contradicts_them(matrix):
    assert _verdicts(matrix(acts=20.0, weights=50.0, robust_gain=-5.0, partial=0.5, adv_gain=-5.0)) == \
        ["not reproduced"] * 5


def test_small_samples_are_inconclusive(matrix):
    assert _verdicts(matrix(acts=42.0, weights=40.0, robust_gain=2.0, partial=0.9, adv_gain=2.0, n=50)) == \
        ["inconclusive"] * 5


def test_intervals_are_paired_over_the_attacked_inputs(matrix):
    table = verdicts.verdict_table(matrix(n=300), FLOAT, ATTACK, 0.25)
    assert "paired over 300 attacked inputs" in table["interval from"].iloc[0]
    assert "bootstrap over 300 attacked inputs" in table["interval from"].iloc[3]


@pytest.mark.parametrize("column", ["clean"])
def test_unusable_cells_are_left_out(matrix, column):
    rows = matrix()
    rows.loc[rows.part == "activations", column] = 50.0  # no longer classifies
    table = verdicts.verdict_table(rows, FLOAT, ATTACK, 0.25)
    assert table["verdict"].iloc[0] == "inconclusive" and "no usable matched cells" in table["interval from"].iloc[0]
    assert table["measured here (95% interval)"].iloc[0] == "not measured: no usable matched cells"


def test_findings_over_pipelines_the_run_left_out_say_so(matrix):
    """``-p pipelines a,b,c`` runs no (d), (e) or (g): those rows say which pipelines are missing, not
    a NaN interval; a finding whose pipelines ran keeps its number."""
    rows = matrix()
    table = verdicts.verdict_table(rows[rows.pipeline.isin(["a", "b", "c"])], FLOAT, ATTACK, 0.25)
    measured, basis = table["measured here (95% interval)"].tolist(), table["interval from"].tolist()
    assert measured[3] == "not measured: pipelines (d), (e) not in this run"
    assert measured[4] == "not measured: pipeline (g) not in this run" and basis[4] == "pipeline (g) not in this run"
    assert table["verdict"].tolist()[2:] == ["reproduced", "inconclusive", "inconclusive"]
    assert "nan" not in " ".join(measured) and measured[2].startswith("(c) minus (a): ")


def test_a_ratio_over_a_reference_without_robust_accuracy_is_undefined(matrix):
    rows = matrix(robust_gain=-60.0, adv_gain=0.0, acts=0.0, weights=0.0)  # (b) and (d): no input survives
    table = verdicts.verdict_table(rows, FLOAT, ATTACK, 0.25)
    assert table["measured here (95% interval)"].iloc[3] == ("not measured: the reference pipeline has no robust "
                                                              "accuracy in a matched cell: the ratio is undefined")
