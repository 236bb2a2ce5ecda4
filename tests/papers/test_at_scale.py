"""The at-scale chapter's pieces: cut data, disagreement rates on two sample sizes, verdict rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qfail.papers import at_scale
from qfail.papers.hu.disagreements import ID
from qfail.papers.li import pipelines as li
from qfail.papers.li.pipelines import Attack


def test_first_inputs_cuts_both_splits_and_keys_the_cut(digits):
    cut = at_scale.first_inputs(digits, train=100, test=50)
    assert (len(cut.train), len(cut.test), len(cut.val)) == (100, 50, len(digits.val))
    assert bool((cut.test.x == digits.test.x[:50]).all())
    assert cut.fingerprint != digits.fingerprint
    assert at_scale.first_inputs(digits) is digits
    assert at_scale.first_inputs(digits, train=10**6, test=10**6) is digits  # nothing cut: same key
    with pytest.raises(ValueError, match="test_inputs"):
        at_scale.first_inputs(digits, test=0)


@pytest.fixture(scope="module")
def lenets(digits):
    return at_scale.lenets(digits, epochs=2, batch_size=64, seed=0)


def test_clean_rate_uses_every_test_input_and_shifted_rates_the_first_ones(digits, lenets):
    rates = at_scale.disagreement_rates(lenets, digits, ["dynamic"], ["rotate", "stripe"], severity=3,
                                        shifted_inputs=100)
    clean = rates[rates["shift"] == ID[0]]
    shifted = rates[rates["shift"] != ID[0]]
    assert set(rates.method) == set(at_scale.METHODS)
    assert len(clean) == 2 and (clean.inputs == len(digits.test)).all()
    assert len(shifted) == 4 and (shifted.inputs == 100).all()
    assert set(shifted["shift"]) == {"rotate", "stripe"} and (shifted.severity == 3).all()


@pytest.fixture
def frank(right):
    """``at_scale.frank_table``'s rows on ``n`` inputs, each network's inputs nested by accuracy."""
    def build(d_fp: float, d_q: float, r_fp: float, r_q: float, n: int) -> pd.DataFrame:
        return pd.DataFrame({"FP acc": [d_fp, r_fp], "Q acc": [d_q, r_q], "mean bits": [3.0, 4.0],
                             "correct": [{"FP": right(d_fp, n), "Q": right(d_q, n)},
                                         {"FP": right(r_fp, n), "Q": right(r_q, n)}]},
                            index=["(f_D, π_D)", "(f_R, π_R)"])
    return build


def test_frank_rows_judge_the_drops_on_their_paired_intervals(frank):
    rows = at_scale.frank_rows(frank(85.0, 25.0, 85.0, 84.8, 10_000)).set_index("finding")["verdict"]
    assert list(rows) == ["reproduced", "reproduced", "reproduced"]
    few = at_scale.frank_rows(frank(85.0, 80.0, 85.0, 83.0, 100))
    assert list(few.verdict) == ["not reproduced", "inconclusive", "reproduced"]  # 5 points is no catastrophe
    assert "paired over 100 test inputs" in few["interval from"].iloc[0]


def _li_table(right, float_clean: float, weights_clean: float, n: int = 10_000) -> pd.DataFrame:
    """``li_table``'s shape: the activations-only copy 10 % robust under white-box PGD, the
    weights-only one 4 %, both 5 % under transfer (on other inputs: 1,000 discordant, no difference)."""
    elsewhere = np.roll(right(5.0, n), 500)
    return pd.DataFrame({"clean": [float_clean, 86.0, weights_clean], "white-box": [1.0, 10.0, 4.0],
                         "transfer": [1.0, 5.0, 5.0],
                         "correct": [{"white-box": right(1.0, n), "transfer": right(1.0, n)},
                                     {"white-box": right(10.0, n), "transfer": right(5.0, n)},
                                     {"white-box": right(4.0, n), "transfer": elsewhere}]},
                        index=pd.Index(["float", "activations", "weights"], name="part"))


def test_li_rows_read_activations_minus_weights_per_attacker(right):
    rows = at_scale.li_rows(_li_table(right, 86.0, 86.0), 4, Attack("pgd", "linf", 0.1))
    assert list(rows.verdict) == ["reproduced", "inconclusive"]
    assert "white-box PGD-linf 0.1" in rows.finding.iloc[0] and "transfer" in rows.finding.iloc[1]


def test_li_rows_leave_out_a_copy_that_no_longer_classifies(right):
    """Li's usable-cell rule: a copy more than 10 points below the float model's clean accuracy
    measures a broken model, not robustness; at exactly 10 points it still counts."""
    at_limit = at_scale.li_rows(_li_table(right, 86.0, 76.0), 2, Attack("pgd", "linf", 0.1))
    assert list(at_limit.verdict) == ["reproduced", "inconclusive"]
    broken = at_scale.li_rows(_li_table(right, 86.0, 19.2), 2, Attack("pgd", "linf", 0.1))
    assert list(broken.verdict) == ["inconclusive", "inconclusive"]
    assert broken["measured here (95% interval)"].str.startswith(
        "not measured: the weights-only copy's clean accuracy is 19.2 %, 66.8 points below the float model's 86.0 %").all()
    assert (broken["interval from"] == "no usable matched cells").all()


def test_hu_rows_need_separate_intervals():
    summary = pd.DataFrame({"method": ["standard", "qat"], "setting": ["int8", "int8"],
                            "ID per 1k": [2.0, 2.0], "ID low": [1.0, 1.0], "ID high": [3.0, 3.0],
                            "shifted per 1k": [20.0, 10.0], "shifted low": [18.0, 8.0], "shifted high": [22.0, 12.0]})
    rows = at_scale.hu_rows(summary, ["int8"])
    assert list(rows.verdict) == ["reproduced", "reproduced"]


def test_the_budget_is_placed_on_the_activations_only_copys_input_grid(digits, lenets):
    """Below half a step a background pixel moved by eps rounds to one step, above it to two:
    the table says which the activations-only copy met, beside the difference it measured."""
    tables = {eps: at_scale.li_table(lenets["standard"], digits, 4, Attack("pgd", "linf", eps, 1), limit=40) for eps in (0.11, 0.09)}
    table = at_scale.eps_on_the_input_grid(tables, lenets["standard"], digits, 4)
    assert list(table.index) == [0.09, 0.11]
    step = 1 / 15  # 4 bits over the digits' pixel range [0, 1]
    np.testing.assert_allclose(table["eps in input steps"], [0.09 / step, 0.11 / step], rtol=1e-6)
    np.testing.assert_allclose(table["a 0 pixel moved by eps becomes"], [step, 2 * step], rtol=1e-6)
    assert table["transfer: difference"].str.endswith(" points").all()
    assert ((table["white-box: activations only (%)"] >= 0) & (table["white-box: weights only (%)"] <= 100)).all()
    attack = Attack("pgd", "linf", 0.11, 1)  # the float row: the source scored as Li's chapter scores its float models
    transfer = li.transfer_set(lenets["standard"].model, digits, [attack], limit=40)
    expected = li.evaluate(lenets["standard"].model, digits, [attack], transfer=transfer, limit=40)
    assert list(tables[0.11].index) == ["float", "weights", "activations"]
    assert tables[0.11].loc["float", ["clean", "white-box", "transfer"]].tolist() == [
        expected["clean"], expected[attack.label], expected[f"{attack.label} transfer"]]


def test_the_grid_table_measures_no_difference_where_a_copy_is_not_usable(right, digits, lenets):
    """The verdict rows' usable-cell rule holds in the grid table beside them: a broken copy's
    difference would measure the breakage, at every budget."""
    tables = {0.09: _li_table(right, 86.0, 86.0), 0.1: _li_table(right, 86.0, 19.2), 0.11: _li_table(right, 100.0, 19.2)}
    table = at_scale.eps_on_the_input_grid(tables, lenets["standard"], digits, 4)
    assert table.loc[0.09, "white-box: difference"].endswith(" points")
    assert (table.loc[0.1, ["white-box: difference", "transfer: difference"]]
            == "not measured (weights-only copy unusable)").all()
    assert table.loc[0.11, "transfer: difference"] == "not measured (neither copy usable)"
