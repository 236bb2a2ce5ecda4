"""Frank & Ardis verdict rows from synthetic tables: each claim reproduced, not reproduced or inconclusive."""
import pandas as pd
import pytest

from qfail.papers.frank import verdicts


def _results(d_drops, r_drops, fp_gaps=(0.5, 0.4, 0.6), cross=(0.5, 0.5)):
    rows = []
    for seed, (d, r, gap) in enumerate(zip(d_drops, r_drops, fp_gaps)):
        for pair, drop, fp in [("(f_R, π_R)", r, 97.0), ("(f_D, π_D)", d, 97.0 + gap),
                               ("(f_R, π_D)", cross[1], 97.0), ("(f_D, π_R)", cross[0], 97.0 + gap)]:
            rows.append({"model": "cnn", "seed": seed, "pair": pair, "drop": drop, "FP acc": fp, "mean bits": 3.5})
    return pd.DataFrame(rows)


def _dynamic(gains=(5.0, 6.0, 7.0)):
    return pd.DataFrame([{"model": "cnn", "seed": i, "drop (π_D)": 30.0, "drop (π_D shuffled)": 20.0,
                          "dynamic gain": g, "distinct assignments": 3} for i, g in enumerate(gains)])


@pytest.mark.parametrize("gains, outcome", [((5.0, 6.0, 7.0), "reproduced"), ((-5.0, -6.0, -7.0), "not reproduced"),
                                            ((-2.0, 0.5, 3.0), "inconclusive")])
def test_dynamic_gain_row(gains, outcome):
    table = verdicts.pairs_verdicts(_results((30.0, 40.0, 35.0), (0.1, 0.2, 0.1)), _dynamic(gains))
    assert table["verdict"].iloc[3] == outcome


@pytest.mark.parametrize("d_drops, outcome", [((30.0, 40.0, 35.0), "reproduced"), ((1.0, 3.0, 2.0), "not reproduced"),
                                              ((5.0, 40.0, 20.0), "inconclusive")])
def test_detrimental_drop_claim(d_drops, outcome):
    table = verdicts.pairs_verdicts(_results(d_drops, (0.1, 0.2, 0.1)), _dynamic())
    assert table["verdict"].iloc[0] == outcome
    assert table["the paper, by this rule"].iloc[0].startswith("holds (ResNet-18: 24.39")


@pytest.mark.parametrize("r_drops, gaps, outcome", [((0.1, 0.2, 0.1), (0.5, 0.4, 0.6), "reproduced"),
                                                    ((5.0, 6.0, 5.5), (5.0, 6.0, 5.5), "not reproduced"),
                                                    ((0.1, 3.0, 1.0), (0.1, 3.0, 1.0), "inconclusive")])
def test_robust_drop_and_float_gap(r_drops, gaps, outcome):
    table = verdicts.pairs_verdicts(_results((30.0, 40.0, 35.0), r_drops, gaps), _dynamic())
    assert list(table["verdict"].iloc[1:3]) == [outcome, outcome]


def test_where_the_failure_lives():
    beyond = verdicts.pairs_beyond(_results((30.0, 40.0, 35.0), (0.1, 0.2, 0.1), cross=(20.0, 1.0)),
                                   pd.DataFrame([{"model": "cnn", "seed": 0, "network": "f_D", "search": s, "worst drop": w}
                                                 for s, w in (("learned (REINFORCE)", 40.0), ("exhaustive static", 50.0))]))
    assert "in the network" in beyond.iloc[0, 1] and "80 %" in beyond.iloc[1, 1]


def _analyses(top=30.0, d_growth=20.0, auc=0.8, inputs=400, dev=(0.3, 0.4)):
    layers = pd.DataFrame([{"pair": pair, "protocol": protocol, "layer": name, "position": i + 1, "Q acc": 97.0 - drop,
                            "drop": drop}
                           for pair, drops, every in (("detrimental", (1.0, top), 40.0), ("robust", (0.1, 0.2), 0.3))
                           for protocol, values in (("only", drops), ("up to", (drops[0], every)))
                           for i, (name, drop) in enumerate(zip("ab", values))])
    deviation = pd.DataFrame({"detrimental": list(dev), "robust": [0.35, 0.35]}, index=list("ab"))
    curves = pd.DataFrame([{"pair": pair, "corruption": "noise", "severity": s, "FP acc": 95.0, "Q acc": 95.0 - gap}
                           for pair, gaps in (("detrimental", (5.0, 5.0 + d_growth)), ("robust", (0.5, 0.6)))
                           for s, gap in zip((1, 5), gaps)])
    flips = 20
    transitory = pd.DataFrame({"transitory points": [flips, 0], "median FP margin, transitory": [0.2, float("nan")],
                               "median FP margin, others": [0.9, 0.9], "AUROC of 1 - margin for flips": [auc, float("nan")]},
                              index=["detrimental", "robust"])
    return verdicts.analyses_verdicts(layers, deviation, curves, transitory, inputs)["verdict"].tolist()


def test_analyses_reproduced():
    assert _analyses(dev=(0.5, 0.6)) == ["reproduced"] * 4


def test_analyses_not_reproduced():
    assert _analyses(top=5.0, d_growth=-20.0, auc=0.2, dev=(0.1, 0.2)) == ["not reproduced"] * 4


def test_analyses_inconclusive():
    assert [v for i, v in enumerate(_analyses(top=20.0, d_growth=1.0, auc=0.55, inputs=100)) if i != 1] == \
        ["inconclusive"] * 3


def test_distill_handoff_pairs_the_student_with_the_box(right):
    def curve(student: float, n: int) -> pd.DataFrame:
        return pd.DataFrame([{"student": "KD on the answers", "queries": 2000, "teacher accuracy (%)": 97.0,
                              "accuracy (%)": student, "agreement with teacher (%)": 97.0,
                              "correct": right(student, n), "teacher correct": right(97.0, n)}])
    assert verdicts.distill_handoff(curve(96.8, 5000), "mlp", "cnn")["verdict"].iloc[0] == "reproduced"
    assert verdicts.distill_handoff(curve(80.0, 5000), "mlp", "cnn")["verdict"].iloc[0] == "not reproduced"
    few = verdicts.distill_handoff(curve(95.0, 100), "mlp", "cnn")
    assert few["verdict"].iloc[0] == "inconclusive" and "paired over 100 test inputs" in few["interval from"].iloc[0]
