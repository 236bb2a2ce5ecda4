"""Li et al. verdict rows from a synthetic matrix: each finding can come out either way."""
import pandas as pd

from qfail.papers.li import verdicts

ATTACK = "PGD-linf 0.1"


def _matrix(acts=60.0, weights=20.0, robust_gain=30.0, partial=0.95, adv_gain=10.0):
    rows = []
    for pipeline, init, stage in [("a", "standard", "clean QAT"), ("b", "adversarial", "clean QAT"),
                                  ("c", "standard", "adversarial QAT"), ("d", "adversarial", "adversarial QAT"),
                                  ("e", "adversarial", "adversarial QAT")]:
        base = {"a": 0.0, "b": robust_gain, "c": adv_gain, "d": adv_gain + robust_gain,
                "e": partial * (adv_gain + robust_gain)}[pipeline]
        for part, value in [("activations", acts), ("weights", weights)]:
            robust = partial * (adv_gain + robust_gain + value) if pipeline == "e" else base + value
            rows.append({"pipeline": pipeline, "init": init, "stage": stage, "method": "PACT QAT", "part": part,
                         "bits": 4, "clean": 98.0, ATTACK: robust, "worst": robust,
                         "quant s": {"c": 40.0, "d": 40.0, "e": 10.0}.get(pipeline, 10.0), "float s": 5.0})
    return pd.DataFrame(rows)


FLOAT = pd.DataFrame({"init": ["standard", "adversarial"], "clean": [99.0, 99.0]})


def test_findings_reproduce_on_a_matrix_that_shows_them():
    table = verdicts.verdict_table(_matrix(), FLOAT, ATTACK, 0.25)
    assert list(table["reproduced"]) == ["yes", "yes (clean QAT, adversarial QAT)", "yes", "yes"]


def test_findings_fail_on_a_matrix_that_contradicts_them():
    table = verdicts.verdict_table(_matrix(acts=10.0, weights=50.0, robust_gain=0.0, partial=0.5, adv_gain=0.0), FLOAT, ATTACK, 0.25)
    assert list(table["reproduced"]) == ["no", "no", "no", "no"]


def test_unusable_cells_are_left_out_of_finding_one():
    matrix = _matrix()
    matrix.loc[matrix.part == "activations", "clean"] = 50.0  # no longer classifies
    assert verdicts.verdict_table(matrix, FLOAT, ATTACK, 0.25)["reproduced"].iloc[0] == "not tested"
