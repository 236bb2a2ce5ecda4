"""Moon verdict rows from synthetic tables: every row can come out reproduced, not reproduced or inconclusive."""
import pandas as pd
import pytest

from qfail.papers.moon import verdicts


def _tables(int8=(500.0, 500.0, 500.0), agreement=100.0, sound_passes=100.0, published_passes=2.0):
    table = pd.DataFrame({"reward mean": [500.0, int8[0], 500.0], "reward low": [500.0, int8[1], 500.0],
                          "reward high": [500.0, int8[2], 500.0], "agreement with FP (%)": [100.0, agreement, 99.0]},
                         index=["FP32", "dynamic INT8", "QAT 8-bit"])
    inn = pd.DataFrame({"variant": list("abcd"), "inputs": [1000] * 4, "inverted": [10.0] * 4,
                        "passes": [published_passes, 50.0, 80.0, sound_passes]})
    sweep = pd.DataFrame([{"model": "dynamic INT8", "eps": 0.01, "certified (%)": 90.0, "refuted (%)": 5.0,
                           "unknown (%)": 5.0}])
    return table, inn, sweep


def _rows(**kw):
    return verdicts.verdict_table(*_tables(**kw), [8, 2], [0.01], 20, 2000)["verdict"].tolist()


@pytest.mark.parametrize("int8, outcome", [((500, 500, 500), "reproduced"), ((300, 250, 350), "not reproduced"),
                                           ((470, 400, 500), "inconclusive")])
def test_reward_row(int8, outcome):
    assert _rows(int8=int8)[0] == outcome


@pytest.mark.parametrize("sound_passes, outcome", [(100.0, "not reproduced"), (90.0, "reproduced"),
                                                   (99.0, "inconclusive")])
def test_inn_row_follows_the_sound_check(sound_passes, outcome):
    assert _rows(sound_passes=sound_passes)[2] == outcome


def test_paper_judged_by_the_same_rule():
    table = verdicts.verdict_table(*_tables(), [8, 2], [0.01], 20, 2000)
    assert table["the paper, by this rule"].iloc[0].startswith("holds")
    assert table["the paper, by this rule"].iloc[2].startswith("holds (rerun as published: fails on 98 %")


@pytest.mark.parametrize("agreement, outcome", [(100.0, "reproduced"), (90.0, "not reproduced"), (99.1, "inconclusive")])
def test_agreement_row(agreement, outcome):
    assert _rows(agreement=agreement)[3] == outcome


@pytest.mark.parametrize("rewards, outcome", [((500, 500, 500), "reproduced"), ((300, 250, 350), "not reproduced"),
                                              ((480, 300, 500), "inconclusive")])
def test_qat_row_is_judged_over_the_qat_seeds(rewards, outcome):
    """The table's own QAT row (99 % of FP over its episodes) decides nothing once two or more runs are given."""
    runs = pd.DataFrame({"reward mean": rewards, "reward cap": 500}, index=pd.Index([0, 1, 2], name="QAT seed"))
    table, inn, sweep = _tables()
    row = verdicts.verdict_table(table, inn, sweep, [8, 2], [0.01], 20, 2000, runs).iloc[1]
    assert row["verdict"] == outcome and row["interval from"].startswith("t over 3 QAT seeds")
    kept = sum(r > 475 for r in rewards)
    assert row["measured here (95% interval)"].endswith(f"; {kept} of 3 QAT runs above 95 % of FP")
    assert row["estimate"]["high"] <= 100  # no controller earns more than the 500-step cap, FP's reward here


def _qat_row(rewards):
    runs = pd.DataFrame({"reward mean": rewards, "reward cap": 500}, index=pd.Index(range(len(rewards)), name="QAT seed"))
    return verdicts.verdict_table(*_tables(), [8, 2], [0.01], 20, 2000, runs).iloc[1]


def test_the_qat_interval_is_cut_at_the_reward_cap_only_where_it_passes_it():
    cut = _qat_row([480.0, 300.0, 500.0])
    assert cut["interval from"] == "t over 3 QAT seeds, cut at the 500-step cap" and cut["estimate"]["high"] == 100
    assert _qat_row([300.0, 250.0, 350.0])["interval from"] == "t over 3 QAT seeds"


def test_one_qat_run_keeps_the_episode_interval():
    runs = pd.DataFrame({"reward mean": [100.0], "reward cap": 500}, index=pd.Index([0], name="QAT seed"))
    row = verdicts.verdict_table(*_tables(), [8, 2], [0.01], 20, 2000, runs).iloc[1]
    assert row["interval from"].startswith("bootstrap over 20 episodes") and row["verdict"] == "reproduced"
