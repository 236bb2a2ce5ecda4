"""Hu et al.'s findings as verdict rows (:mod:`qfail.verdict`), ours beside the paper's MNIST numbers.

Findings 1-3 are claims over cells (deployment settings, training methods). Each cell is judged
on its own intervals, and the claim must hold in at least half of the cells: the paper's MNIST
tables, judged cell by cell with the same intervals (its counts are out of 10,000 inputs), meet
"in at least half", while "in every cell" or "in most cells" would fail the paper's own QAT rows
(QAT is lowest in the TFLite settings its fake quantization targets, not in the CoreML ones). Finding 4 is judged on the
paper's own argument: after retraining, the disagreements left are mostly *new* ones.

The chapter runs one seed (more are out of its time budget); the intervals are over inputs
(Wilson for rates, bootstrap for AUROC differences), as each row says.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from qfail.metrics import proportion
from qfail.papers.hu import published
from qfail.papers.hu.disagreements import RETRAIN_ARMS, label
from qfail.verdict import Estimate, Rule, decided_count, finding, wilson

__all__ = ["SCORES", "MOSTLY_NEW", "above", "lowest", "majority", "shift_finding", "qat_finding", "verdict_table"]

SCORES = ("Entropy", "Gini", "LC", "Margin")
MOSTLY_NEW = Rule("more than half of the disagreements left after retraining are new", low=50.0)


def majority(cells: int, what: str) -> Rule:
    """The claim holds in at least half of ``cells`` cells, each judged on its own interval."""
    return Rule(f"holds in at least half of the {what}, each judged on its 95 % intervals", low=(cells - 1) / 2)


def above(low_a: float, high_a: float, low_b: float, high_b: float) -> str:
    """Is a above b? reproduced if a's interval lies above b's, not reproduced if below, else open."""
    if low_a > high_b:
        return "reproduced"
    if high_a < low_b:
        return "not reproduced"
    return "inconclusive"


def lowest(intervals: pd.DataFrame, candidate: str) -> str:
    """Is ``candidate``'s rate the lowest? ``intervals``: rows per method, columns low and high."""
    others = intervals.drop(index=candidate)
    mine = intervals.loc[candidate]
    if (mine["high"] < others["low"]).all():
        return "reproduced"
    if (others["high"] < mine["low"]).any():
        return "not reproduced"
    return "inconclusive"


def _rate(count: int, total: int) -> tuple[float, float]:
    r = proportion(count, total)
    return 1e3 * r.low, 1e3 * r.high


def _paper_shift_cells(paper: pd.DataFrame) -> list[str]:
    out = []
    for _, r in paper[paper.training == "standard"].iterrows():
        out.append(above(*_rate(r["shifted count"], r["shifted inputs"]), *_rate(r["clean count"], 10_000)))
    return out


def _paper_qat_cells(paper: pd.DataFrame) -> list[str]:
    out = []
    for _, g in paper.groupby(["model", "setting"]):
        iv = pd.DataFrame({t: _rate(r["shifted count"], r["shifted inputs"]) for t, r in g.set_index("training").iterrows()},
                          index=["low", "high"]).T
        out.append(lowest(iv, "QAT"))
    return out


def _by_rule(outcomes: list[str], what: str) -> str:
    """The majority rule on the paper's own cells."""
    est = decided_count(outcomes, what)
    return f"{majority(len(outcomes), what).judge(est)} (holds in {est.low:.0f} to {est.high:.0f} of {len(outcomes)} {what})"


def shift_finding(summary: pd.DataFrame, settings: Sequence[str], claim: str = "") -> dict:
    """Finding 1 from ``summary`` (``disagreements.summary_table``): for standard training, is the
    pooled shifted rate above the in-distribution one, setting by setting?"""
    paper = published.hu_shift_summary("MNIST")
    standard = summary[summary.method == "standard"].set_index("setting")
    cells = [above(standard.loc[s, "shifted low"], standard.loc[s, "shifted high"],
                   standard.loc[s, "ID low"], standard.loc[s, "ID high"]) for s in settings]
    return finding(claim or "1. shifted data give more disagreements (standard training)",
                   "; ".join(f"{r.model} {label(r.setting)}: {r['clean per 1k']:.1f} clean vs {r['shifted per 1k']:.1f} "
                             "shifted per 1k" for _, r in paper[(paper.training == "standard") & (paper.setting == "int8")].iterrows()),
                   decided_count(cells, "settings"), majority(len(settings), "deployment settings"),
                   _by_rule(_paper_shift_cells(paper), "model x setting cells"),
                   measured="; ".join(f"{label(s)}: {standard.loc[s, 'ID per 1k']:.1f} [{standard.loc[s, 'ID low']:.1f}, "
                                      f"{standard.loc[s, 'ID high']:.1f}] vs {standard.loc[s, 'shifted per 1k']:.1f} "
                                      f"[{standard.loc[s, 'shifted low']:.1f}, {standard.loc[s, 'shifted high']:.1f}] per 1k"
                                      for s in settings))


def qat_finding(summary: pd.DataFrame, settings: Sequence[str], claim: str = "") -> dict:
    """Finding 2 from ``summary``: is QAT's pooled shifted rate the lowest of the methods trained,
    setting by setting, on separate intervals?"""
    methods = list(dict.fromkeys(summary.method))
    cells = []
    for s in settings:
        iv = summary[summary.setting == s].set_index("method")[["shifted low", "shifted high"]]
        cells.append(lowest(iv.set_axis(["low", "high"], axis=1), "qat") if "qat" in methods else "inconclusive")
    return finding(claim or "2. QAT gives the most stable models (lowest shifted rate)",
                   "QAT vs standard, adversarial and Mixup on MNIST-C, per model and setting",
                   decided_count(cells, "settings"), majority(len(settings), "deployment settings"),
                   _by_rule(_paper_qat_cells(published.hu_shift_summary("MNIST")), "model x setting cells"),
                   measured=("QAT lowest with separate intervals in " + ", ".join(
                       f"{label(s)}: {o}" for s, o in zip(settings, cells))) if "qat" in methods else "QAT not trained")


def verdict_table(summary: pd.DataFrame, advantage: pd.DataFrame, retrain: pd.DataFrame, setting: str,
                  settings: Sequence[str]) -> pd.DataFrame:
    """Hu et al.'s four findings.

    Args:
        summary: ``disagreements.summary_table`` for every method and setting (rates per 1,000
            with Wilson intervals: ``ID low/high``, ``shifted low/high``).
        advantage: ``disagreements.margin_advantage`` (per method: Margin's AUROC minus the best
            other score's, with a bootstrap interval).
        retrain: ``disagreements.retrain_with_disagreements``.
        setting: the deployment setting of findings 3 and 4.
        settings: every deployment setting measured.
    """
    margin_cells = ["reproduced" if r.low > 0 else "not reproduced" if r.high < 0 else "inconclusive"
                    for _, r in advantage.iterrows()]
    margin_rule = majority(len(advantage), "training methods")
    paper_auc = published.hu_metric_auroc()
    paper_auc = paper_auc[paper_auc.dataset == "MNIST"]
    paper_gap = paper_auc["Margin"] - paper_auc[["Entropy", "Gini", "LC"]].max(axis=1)
    paper_margin = ["reproduced" if g > 0 else "not reproduced" if g < 0 else "inconclusive" for g in paper_gap]

    main = retrain[(retrain.setting == setting) & (retrain["fine-tuned"] == RETRAIN_ARMS[0])].iloc[0]
    rand = retrain[(retrain.setting == setting) & (retrain["fine-tuned"] == RETRAIN_ARMS[1])].iloc[0]
    left = int(main["old (persist)"] + main["new"])
    new_share = wilson(int(main["new"]), left, what="disagreements left after retraining") if left else \
        Estimate(float("nan"), float("nan"), float("nan"), "no disagreement left after retraining", "%")
    _, changes = published.hu_retraining()
    paper_changes = changes.set_index(["model", "kind"])["count"]
    paper_new = {m: wilson(int(paper_changes[m, "new"]), int(paper_changes[m, "new"] + paper_changes[m, "old"]))
                 for m in ("LeNet1", "LeNet5")}

    return pd.DataFrame([
        shift_finding(summary, settings),
        qat_finding(summary, settings),
        finding("3. Margin flags disagreements best",
                "AUROC (%) of Margin vs Entropy, Gini, LC per model and training",
                decided_count(margin_cells, "methods"), margin_rule,
                _by_rule(paper_margin, "model x training rows") + " (point values)",
                measured=f"{label(setting)}, Margin's AUROC minus the best other score's, in points: " + "; ".join(
                    f"{m} {100 * r['Margin minus best other']:+.1f} [{100 * r.low:+.1f}, {100 * r.high:+.1f}]"
                    if r.disagreements else f"{m}: no disagreement to flag" for m, r in advantage.iterrows())),
        finding("4. retraining with disagreements has limited effect: those left are mostly new",
                "; ".join(f"{m}: {paper_changes[m, 'old']:.0f} old persist, {paper_changes[m, 'new']:.0f} new appear"
                          for m in ("LeNet1", "LeNet5")),
                new_share, MOSTLY_NEW,
                "; ".join(f"{m} {MOSTLY_NEW.judge(e)} ({e.text()})" for m, e in paper_new.items()),
                measured=f"{label(setting)}: {main['before']} before, {main['after']} after ({main['old (persist)']} old, "
                         f"{main['new']} new: {new_share.text() + ' new' if left else 'none left'}); random shifted inputs instead: "
                         f"{rand['before']} -> {rand['after']}"),
    ])
