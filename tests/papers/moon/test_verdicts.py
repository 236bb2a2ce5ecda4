"""Moon verdict rows from synthetic tables: the INN row is computed, not typed."""
import pandas as pd
import pytest

from qfail.papers.moon import verdicts


def _tables(int8_reward=500.0, agreement=100.0, sound_passes=100.0):
    table = pd.DataFrame({"reward mean": [500.0, int8_reward, 500.0, 480.0], "agreement with FP (%)": [100.0, agreement, 99.0, 97.0]},
                         index=["FP32", "dynamic INT8", "QAT 8-bit", "QAT 2-bit"])
    inn = pd.DataFrame({"variant": list("abcd"), "inputs": [1000] * 4, "inverted": [10.0] * 4,
                        "passes": [2.0, 50.0, 80.0, sound_passes]})
    sweep = pd.DataFrame([{"model": "dynamic INT8", "eps": 0.01, "certified (%)": 90.0, "refuted (%)": 5.0,
                           "unknown (%)": 5.0}])
    return table, inn, sweep


@pytest.mark.parametrize("sound_passes, holds", [(100.0, False), (93.0, True)])
def test_inn_row_follows_the_sound_check(sound_passes, holds):
    rows = verdicts.verdict_table(*_tables(sound_passes=sound_passes), [8, 2], [0.01, 0.03], 20)
    assert bool(rows["holds"].iloc[2]) is holds
    assert ("artifact" in rows["measured here"].iloc[2]) is (not holds)


def test_reward_and_agreement_rows_can_fail():
    rows = verdicts.verdict_table(*_tables(int8_reward=300.0, agreement=97.5), [8, 2], [0.01], 20)
    assert list(rows["holds"]) == [False, True, False, False]
