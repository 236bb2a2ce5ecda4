"""Hu et al. verdict rows from synthetic tables, beside the paper's own numbers."""
import pandas as pd

from qfail.papers.hu import verdicts

SETTINGS = ["int8", "dynamic"]


def _tables(id_high=5.0, shifted_low=20.0, winner="qat", margin=0.9, after=80):
    standard = pd.DataFrame({"ID per 1k": [2.0, 1.0], "ID high": [id_high, id_high], "shifted per 1k": [30.0, 25.0],
                             "shifted low": [shifted_low, shifted_low]}, index=SETTINGS)
    winners = pd.Series({s: winner for s in SETTINGS})
    auroc = pd.DataFrame({"Entropy": [0.7, 0.7], "Gini": [0.7, 0.7], "LC": [0.7, 0.7], "Margin": [margin, margin]},
                         index=["standard", "qat"])
    retrain = pd.DataFrame([{"fine-tuned": arm, "setting": "int8", "before": 100, "after": after, "old (persist)": 60,
                             "new": after - 60} for arm in ("with the disagreements", "with random shifted inputs",
                                                            "with no added input")])
    return standard, winners, auroc, retrain


def test_every_finding_reproduced():
    table = verdicts.verdict_table(*_tables(), "int8", SETTINGS)
    assert list(table["reproduced"]) == ["yes", "yes", "yes", "yes"]
    assert "LeNet1 static INT8: 1.4 clean" in table["paper (MNIST, standard)"].iloc[0]  # the paper's own file


def test_every_finding_not_reproduced():
    table = verdicts.verdict_table(*_tables(id_high=50.0, winner="standard", margin=0.5, after=20), "int8", SETTINGS)
    assert list(table["reproduced"]) == ["no", "no", "no", "no"]
