"""Frank & Ardis verdict rows from synthetic tables: each claim can come out either way."""
import pandas as pd
import pytest

from qfail.papers.frank import verdicts


def _results(d_drops, r_drops, fp_gap=0.5, cross=(0.5, 0.5), bits=3.5):
    rows = []
    for seed, (d, r) in enumerate(zip(d_drops, r_drops)):
        for pair, drop, fp in [("(f_R, π_R)", r, 97.0), ("(f_D, π_D)", d, 97.0 + fp_gap),
                               ("(f_R, π_D)", cross[1], 97.0), ("(f_D, π_R)", cross[0], 97.0 + fp_gap)]:
            rows.append({"model": "cnn", "seed": seed, "pair": pair, "drop": drop, "FP acc": fp, "mean bits": bits})
    return pd.DataFrame(rows)


def _search(learned=40.0, exhaustive=50.0):
    return pd.DataFrame([{"model": "cnn", "seed": 0, "network": "f_D", "search": "learned (REINFORCE)", "worst drop": learned},
                         {"model": "cnn", "seed": 0, "network": "f_D", "search": "exhaustive static", "worst drop": exhaustive}])


@pytest.mark.parametrize("d_drops, outcome", [([30.0, 40.0], "yes"), ([5.0, 40.0], "partly"), ([1.0, 3.0], "no")])
def test_detrimental_drop_claim(d_drops, outcome):
    table = verdicts.pairs_verdicts(_results(d_drops, [0.1, 0.2]), _search(), budget=4.0).set_index("claim")
    assert table.loc["detrimental pairs lose 10-65 points when quantized", "reproduced"] == outcome


def test_robust_fp_gap_budget_and_where_the_failure_lives():
    table = verdicts.pairs_verdicts(_results([30, 40], [3.0, 0.1], fp_gap=5.0, cross=(20.0, 1.0), bits=4.5),
                                    _search(), budget=4.0).set_index("claim")
    assert table.loc["robust pairs lose less than 2 points", "reproduced"] == "partly"  # mean 1.55, max 3
    assert table.loc["both pairs are about as accurate in full precision", "reproduced"] == "no"
    assert table.loc["the budget holds", "reproduced"] == "no"
    assert "in the network" in table.loc["where the failure lives (not in the source)", "measured here"]
    assert "80%" in table.loc["the learned policy as a worst-case search (not in the source)", "measured here"]


def test_analyses_outcomes():
    layers = ["a", "b"]
    only = pd.DataFrame({"detrimental": [1.0, 30.0], "robust": [0.1, 0.2]}, index=layers)
    deviation = pd.DataFrame({"detrimental": [0.3, 0.4], "robust": [0.1, 0.1]}, index=layers)
    growth = pd.DataFrame([[40.0, 20.0], [0.5, 0.6]], index=["detrimental", "robust"], columns=[1, 5])
    transitory = pd.DataFrame({"transitory points": [10, 0], "median FP margin, transitory": [0.2, float("nan")],
                               "median FP margin, others": [0.9, 0.9], "AUROC of 1 - margin for flips": [0.8, float("nan")],
                               "distinct width assignments": [1, 1]}, index=["detrimental", "robust"])
    table = verdicts.analyses_verdicts(only, deviation, growth, transitory, layers, 100).set_index("analysis")
    assert table.iloc[0]["outcome"].startswith("largest in b")
    assert table.iloc[1]["outcome"] == "yes"
    assert table.iloc[2]["outcome"] == "no: the detrimental gap does not grow"
    assert table.iloc[3]["outcome"] == "yes"
    assert table.iloc[4]["outcome"] == "no: one static assignment"
