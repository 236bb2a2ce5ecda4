"""The verdict rules: an interval decides, straddling is inconclusive, and claims over cells combine."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from qfail import verdict
from qfail.site import scorecard
from qfail.verdict import MIME, Estimate, Rule


@pytest.mark.parametrize("low, high, outcome", [(11, 20, "reproduced"), (2, 9, "not reproduced"), (5, 15, "inconclusive"),
                                                (10, 12, "inconclusive")])
def test_rule_judges_by_where_the_interval_lies(low, high, outcome):
    assert Rule("above 10", low=10).judge(Estimate((low + high) / 2, low, high, "test")) == outcome


def test_band_rule_and_point_values():
    band = Rule("within 2", low=-2, high=2)
    assert band.judge(Estimate(0.1, -1, 1, "t")) == "reproduced"
    assert band.judge(Estimate(5, 3, 7, "t")) == "not reproduced"
    assert band.judge(Estimate(1.5, 0, 3, "t")) == "inconclusive"
    assert band.judge_number(0.22).startswith("holds") and band.judge_number(3).startswith("fails")


def test_intervals():
    t = verdict.t_interval([1.0, 2.0, 3.0])
    assert t.low < 2 < t.high and t.value == 2 and "3 seeds" in t.basis
    assert math.isinf(verdict.t_interval([4.0]).high)  # one replicate has no interval
    w = verdict.wilson(0, 1000)
    assert w.low == 0 and 0 < w.high < 0.5
    values = np.array([0.0, 1.0, 1.0, 1.0])
    b = verdict.bootstrap(lambda i: values[i].mean(), 4, "units")
    assert b.low <= 0.75 <= b.high
    with pytest.raises(ValueError, match="inverted"):
        Estimate(1, 2, 0, "t")


def test_paired_difference_is_agresti_and_min_on_one_cell():
    a = np.arange(100) < 30  # right on inputs 0-29
    b = (np.arange(100) < 20) | ((np.arange(100) >= 30) & (np.arange(100) < 34))  # 10 lost, 4 gained
    e = verdict.paired_difference(a, b, "paired")
    se = math.sqrt(10.5 + 4.5 - 6 ** 2 / 102) / 102  # Agresti and Min (2005): half an input added to each cell
    assert e.value == pytest.approx(6.0) and e.unit == "points" and e.basis == "paired"
    assert (e.low, e.high) == pytest.approx((100 * (6 / 102 - 1.96 * se), 100 * (6 / 102 + 1.96 * se)))


def test_models_that_agree_on_every_input_still_get_an_interval(right):
    a = right(90, 360)
    e = verdict.paired_difference(a, a.copy(), "paired")
    assert e.value == 0 and e.low == pytest.approx(-e.high) and 0.5 < e.high < 0.6  # 1.96 / 362 points
    assert Rule("below 1", high=1).judge(e) == "reproduced"  # the unpaired quadrature interval was +-4.4 points


def test_paired_difference_over_cells_averages_each_input(right):
    a = np.stack([right(80, 200), right(60, 200)])
    b = np.stack([right(60, 200), right(80, 200)])  # inputs 120-159: a gains in one cell, loses in the other
    e = verdict.paired_difference(a, b, "cells")
    assert e.value == 0 and e.low < 0 < e.high < 1  # each input's mean is 0: only the pseudo-inputs are left
    apart = verdict.paired_difference(a[:1], b[:1], "one cell")
    assert apart.value == pytest.approx(20.0) and apart.high - apart.low > 5
    with pytest.raises(ValueError, match="same inputs"):
        verdict.paired_difference(a, b[:, :100], "x")
    assert math.isnan(verdict.paired_difference(np.zeros((0, 5)), np.zeros((0, 5)), "x").value)


def test_a_payload_without_an_interval_is_json():
    """One seed gives no interval ([-inf, inf]); the scorecard's JSON holds null there, since a
    kernel's message with Infinity in it fails over to a warning printed into the chapter."""
    one = verdict.t_interval([1.5], what="seeds")
    rows = pd.DataFrame([verdict.finding("a claim", "1", one, Rule("above 1", low=1), "holds")])
    payload = verdict.show(rows, "Work", "Chapter", "work-verdicts")._repr_mimebundle_()[MIME]
    assert json.loads(json.dumps(payload, allow_nan=False))["estimates"] == [
        {"value": 1.5, "low": None, "high": None, "unit": ""}]
    assert rows["measured here (95% interval)"].iloc[0] == "1.5 [-inf, inf]" and rows.verdict.iloc[0] == "inconclusive"


def test_counts_over_cells():
    est = verdict.decided_count(["reproduced", "inconclusive", "not reproduced", "reproduced"], "cells")
    assert (est.low, est.high) == (2, 3)
    assert verdict.combine(["reproduced", "not reproduced"]) == "partly"
    assert verdict.combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert verdict.combine(["not reproduced"] * 2) == "not reproduced"


def test_rows_are_checked_and_reach_the_scorecard():
    rows = pd.DataFrame([verdict.finding("a claim", "1.0", Estimate(2, 1.5, 2.5, "paired over 9 inputs, one seed"),
                                         Rule("above 1", low=1), "holds")])
    assert rows.verdict.iloc[0] == "reproduced"
    with pytest.raises(ValueError, match="verdict='yes' is not allowed"):
        verdict.finding("a claim", "1", None, "typed", "—", verdict="yes")
    shown = verdict.show(rows, "Work", "Chapter", "work-verdicts")
    bundle = shown._repr_mimebundle_()
    assert "reproduced" in bundle["text/html"]
    notebook = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "display_data", "data": bundle}]}]}
    page = scorecard.scorecard_markdown(scorecard.verdict_tables(notebook))
    assert "| Work | a claim | **reproduced** |" in page and "{ref}`Chapter <work-verdicts>`" in page and "1 reproduced" in page
    assert "| 2.0 [1.5, 2.5] | paired over 9 inputs, one seed | 1.0 |" in page  # what the interval is over
    assert "Of 1 findings: 1 reproduced." in verdict.summary(rows).data
