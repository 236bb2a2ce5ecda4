"""Hu et al. verdict rows from synthetic tables, each finding three ways, beside the paper's own numbers."""
import pandas as pd
import pytest

from qfail.papers.hu import verdicts

SETTINGS = ["int8", "dynamic"]
METHODS = ["standard", "qat"]


def _summary(id_iv=(1.0, 5.0), shifted_iv=(20.0, 40.0), qat_iv=(1.0, 3.0)):
    rows = []
    for m in METHODS:
        for s in SETTINGS:
            lo, hi = qat_iv if m == "qat" else shifted_iv
            rows.append({"method": m, "setting": s, "ID per 1k": sum(id_iv) / 2, "ID low": id_iv[0], "ID high": id_iv[1],
                         "shifted per 1k": (lo + hi) / 2, "shifted low": lo, "shifted high": hi})
    return pd.DataFrame(rows)


def _advantage(iv=(0.01, 0.05), disagreements=30):
    return pd.DataFrame({"disagreements": [disagreements] * 2, "Margin minus best other": [sum(iv) / 2] * 2,
                         "low": [iv[0]] * 2, "high": [iv[1]] * 2}, index=pd.Index(METHODS, name="method"))


def _retrain(old=10, new=60):
    return pd.DataFrame([{"fine-tuned": arm, "setting": "int8", "before": 100, "after": old + new, "old (persist)": old,
                          "new": new} for arm in ("with the disagreements", "with random shifted inputs",
                                                  "with no added input")])


def _verdicts(summary=None, advantage=None, retrain=None):
    table = verdicts.verdict_table(_summary() if summary is None else summary,
                                   _advantage() if advantage is None else advantage,
                                   _retrain() if retrain is None else retrain, "int8", SETTINGS)
    return table


def test_every_finding_reproduced_and_the_paper_passes_its_rules():
    table = _verdicts()
    assert list(table["verdict"]) == ["reproduced"] * 4
    assert all(v.startswith(("reproduced", "LeNet1 reproduced")) for v in table["the paper, by this rule"])
    assert "LeNet1 static INT8: 1.4 clean" in table["the paper reports"].iloc[0]  # the paper's own file


def test_every_finding_not_reproduced():
    table = _verdicts(_summary(id_iv=(50.0, 60.0), shifted_iv=(1.0, 2.0), qat_iv=(20.0, 30.0)),
                      _advantage((-0.05, -0.01)), _retrain(old=60, new=10))
    assert list(table["verdict"]) == ["not reproduced"] * 4


def test_every_finding_inconclusive():
    table = _verdicts(_summary(id_iv=(1.0, 25.0), shifted_iv=(20.0, 40.0), qat_iv=(15.0, 30.0)),
                      _advantage((-0.01, 0.02)), _retrain(old=9, new=11))
    assert list(table["verdict"]) == ["inconclusive"] * 4


def test_a_setting_without_disagreements_says_so_instead_of_nan():
    """Weight-only FP16 can change no decision: no AUROC, no retraining share, and no 'nan' text."""
    nan = float("nan")
    table = _verdicts(advantage=_advantage((nan, nan), disagreements=0), retrain=_retrain(old=0, new=0))
    assert list(table["verdict"])[2:] == ["inconclusive"] * 2
    assert "standard: no disagreement to flag; qat: no disagreement to flag" in table["measured here (95% interval)"].iloc[2]
    assert "0 old, 0 new: none left" in table["measured here (95% interval)"].iloc[3]
    assert not table["measured here (95% interval)"].str.contains("nan").any()


@pytest.mark.parametrize("cells, outcome", [(["reproduced", "not reproduced"], "reproduced"),
                                            (["not reproduced", "not reproduced", "reproduced"], "not reproduced"),
                                            (["inconclusive", "inconclusive", "not reproduced"], "inconclusive")])
def test_at_least_half_of_the_cells(cells, outcome):
    from qfail.verdict import decided_count

    assert verdicts.majority(len(cells), "cells").judge(decided_count(cells, "cells")) == outcome
