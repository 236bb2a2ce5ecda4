"""Hu et al.'s findings as verdict rows, computed from the chapter's tables and the paper's files.

``verdict_table`` takes what the chapter measured (disagreement rates with intervals, the
per-method winners, the AUROC table and the retraining table) and reads the paper's own numbers
from :mod:`qfail.papers.hu.published`, so each row shows both.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from qfail.papers.hu import published
from qfail.papers.hu.disagreements import RETRAIN_ARMS, label

__all__ = ["SCORES", "verdict_table"]

SCORES = ("Entropy", "Gini", "LC", "Margin")


def _outcome(wins: int, total: int) -> str:
    return "yes" if wins == total else ("partly" if wins else "no")


def verdict_table(standard: pd.DataFrame, winners: pd.Series, auroc: pd.DataFrame, retrain: pd.DataFrame,
                  setting: str, settings: Sequence[str]) -> pd.DataFrame:
    """Hu et al.'s four findings, ours beside the paper's MNIST numbers.

    Args:
        standard: the standard model's rates per setting (``ID per 1k``, ``ID high``,
            ``shifted per 1k``, ``shifted low``), from ``disagreements.summary_table``.
        winners: per setting, the training method with the lowest shifted rate.
        auroc: AUROC per training method (rows) and score (columns), as fractions.
        retrain: ``disagreements.retrain_with_disagreements``.
        setting: the deployment setting of findings 3 and 4.
        settings: every deployment setting measured.
    """
    paper = published.hu_shift_summary("MNIST")
    paper_std = paper[paper.training == "standard"].pivot(index="setting", columns="model",
                                                         values=["clean per 1k", "shifted per 1k"])
    paper_winners = paper.pivot_table(index=["model", "setting"], columns="training",
                                      values="shifted per 1k").idxmin(axis=1)
    paper_auc = published.hu_metric_auroc()
    paper_mnist = paper_auc[paper_auc.dataset == "MNIST"].set_index(["model", "training"])[list(SCORES)]
    _, paper_changes = published.hu_retraining()
    lenet1 = paper_changes.set_index(["model", "kind"])["count"]

    shift_holds = [bool(standard.loc[s, "shifted low"] > standard.loc[s, "ID high"]) for s in settings]
    qat_wins_ours = int((winners == "qat").sum())
    qat_wins_paper = int((paper_winners == "QAT").sum())
    margin_best = int((auroc[list(SCORES)].idxmax(axis=1) == "Margin").sum())
    paper_margin_best = int((paper_mnist.idxmax(axis=1) == "Margin").sum())
    main = retrain[(retrain.setting == setting) & (retrain["fine-tuned"] == RETRAIN_ARMS[0])].iloc[0]
    rand = retrain[(retrain.setting == setting) & (retrain["fine-tuned"] == RETRAIN_ARMS[1])].iloc[0]
    return pd.DataFrame([
        {"finding": "1. shifted data give more disagreements",
         "paper (MNIST, standard)": f"LeNet1 static INT8: {paper_std.loc['int8', ('clean per 1k', 'LeNet1')]:.1f} clean vs "
                                    f"{paper_std.loc['int8', ('shifted per 1k', 'LeNet1')]:.1f} shifted per 1k",
         "measured here": "; ".join(f"{label(s)} {standard.loc[s, 'ID per 1k']:.1f} vs "
                                    f"{standard.loc[s, 'shifted per 1k']:.1f}" for s in settings),
         "reproduced": _outcome(sum(shift_holds), len(shift_holds))},
        {"finding": "2. QAT gives the most stable models",
         "paper (MNIST, standard)": f"QAT lowest shifted rate in {qat_wins_paper} of {len(paper_winners)} model x setting cells",
         "measured here": f"QAT lowest in {qat_wins_ours} of {len(winners)} settings; lowest: "
                          + ", ".join(f"{label(s)}: {w}" for s, w in winners.items()),
         "reproduced": _outcome(qat_wins_ours, len(winners))},
        {"finding": "3. Margin separates disagreements best",
         "paper (MNIST, standard)": f"Margin best in {paper_margin_best} of {len(paper_mnist)} model x training rows",
         "measured here": f"Margin best in {margin_best} of {len(auroc)} methods ({label(setting)}); standard: Margin "
                          f"{100 * auroc.loc['standard', 'Margin']:.1f} vs best other "
                          f"{100 * auroc.loc['standard', ['Entropy', 'Gini', 'LC']].max():.1f}",
         "reproduced": _outcome(margin_best, len(auroc))},
        {"finding": "4. retraining with disagreements removes few of them",
         "paper (MNIST, standard)": f"LeNet1: {lenet1['LeNet1', 'old']:.0f} old persist, {lenet1['LeNet1', 'new']:.0f} new appear",
         "measured here": f"{label(setting)}: {main['before']} -> {main['after']} ({main['old (persist)']} old, "
                          f"{main['new']} new); random shifted inputs instead: {rand['before']} -> {rand['after']}",
         "reproduced": "no" if main["after"] < 0.5 * main["before"] else "yes"},
    ])
