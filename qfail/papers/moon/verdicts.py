"""Moon's findings as verdict rows (:mod:`qfail.verdict`), from the chapter's measurement tables.

The chapter trains one FP controller (a second seed is out of its time budget), so most intervals
are over what varies within a run: the evaluation episodes (bootstrap of the mean return) and
the inputs or states (Wilson). QAT is cheap enough to repeat, and one run's reward depends on
its seed, so the QAT row is judged on several QAT runs (Student's t over their seeds). Moon's
own numbers are judged by the same rules: 200 of 200 reward, and the INN check rerun here
exactly as published.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from qfail.verdict import Estimate, Rule, finding, t_interval, wilson

__all__ = ["KEEPS_REWARD", "CHECK_FAILS", "DECISIONS_MATCH", "verdict_table"]

KEEPS_REWARD = Rule("the quantized mean reward is above 95 % of the FP one", low=95.0)
CHECK_FAILS = Rule("the sound interval check fails on more than 1 % of inputs", low=1.0)
DECISIONS_MATCH = Rule("the quantized controller takes the FP action on more than 99 % of visited states", low=99.0)


def _reward_ratio(table: pd.DataFrame, name: str, episodes: int) -> Estimate:
    fp = table.loc["FP32", "reward mean"]
    row = table.loc[name]
    return Estimate(100 * row["reward mean"] / fp, 100 * row["reward low"] / fp, 100 * row["reward high"] / fp,
                    f"bootstrap over {episodes} episodes (FP mean held fixed)", "% of FP")


def _qat_ratio(table: pd.DataFrame, runs: pd.DataFrame | None, top: int, episodes: int) -> tuple[Estimate, str | None]:
    """The QAT controller's reward as a share of FP's: over the QAT runs of ``runs`` (one per
    seed) where there are two or more, else over the episodes of the table's one run."""
    if runs is None or len(runs) < 2:
        return _reward_ratio(table, f"QAT {top}-bit", episodes), None
    fp = table.loc["FP32", "reward mean"]
    ratios = 100 * runs["reward mean"] / fp
    cap = float(runs["reward cap"].iloc[0])
    estimate = t_interval(ratios, unit="% of FP", what="QAT seeds",
                          within=(0.0, 100 * cap / fp, f"the {cap:g}-step cap"))
    kept = sum(KEEPS_REWARD.holds_at(r) for r in ratios)
    return estimate, f"{estimate.text()}; {kept} of {len(runs)} QAT runs above {KEEPS_REWARD.low:g} % of FP"


def verdict_table(table: pd.DataFrame, inn: pd.DataFrame, sweep: pd.DataFrame, bit_widths: Sequence[int],
                  eps_values: Sequence[float], episodes: int, states: int,
                  qat_runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Moon's four claims against the controller table, the INN ablation and the consistency sweep.

    Args:
        table: :func:`qfail.papers.moon.controller.controller_table` (indexed by controller).
        inn: :func:`qfail.papers.moon.inn.inn_ablation` (row 0 as published, row 3 sound and in logits).
        sweep: :func:`qfail.verify.consistency_sweep` over ``eps_values``.
        bit_widths, eps_values, episodes: the chapter's parameters.
        states: how many visited states the agreement is measured on.
        qat_runs: :func:`qfail.papers.moon.controller.qat_seeds_table` at the largest bit-width,
            scored on the table's episodes; with two or more runs the QAT row is judged on them.
    """
    top = max(bit_widths)
    int8 = _reward_ratio(table, "dynamic INT8", episodes)
    qat, qat_text = _qat_ratio(table, qat_runs, top, episodes)
    published_fails = 100.0 - inn.iloc[0, 3]
    sound_inputs = int(inn.iloc[3, 1])
    sound_fails = wilson(round((100.0 - inn.iloc[3, 3]) / 100 * sound_inputs), sound_inputs)
    agreement = table.loc["dynamic INT8", "agreement with FP (%)"]
    agree = wilson(round(agreement / 100 * states), states, what="visited states")
    eps = min(eps_values)
    boxes = sweep[(sweep.model == "dynamic INT8") & (sweep.eps == eps)].iloc[0]
    paper_reward = KEEPS_REWARD.judge_number(100.0, "200 of 200 over 3 episodes")
    return pd.DataFrame([
        finding("PTQ (dynamic INT8) keeps the reward", "200 vs 200 (3 episodes, 200-step cap)", int8, KEEPS_REWARD,
                paper_reward),
        finding(f"QAT keeps the reward ({top}-bit here)", "200 vs 200 (3 episodes, 200-step cap)", qat, KEEPS_REWARD,
                paper_reward, measured=qat_text),
        finding("the INN check finds the decisions inconsistent ('False')", "decision consistency: False",
                sound_fails, CHECK_FAILS,
                f"{'holds' if CHECK_FAILS.holds_at(published_fails) else 'fails'} (rerun as published: fails on "
                f"{published_fails:.0f} % of inputs, from unsound products and softmax-vs-logit units)"),
        finding("quantized decisions match the FP decisions (the goal)", "not measured (rewards only)", agree,
                DECISIONS_MATCH, "not reported",
                measured=f"{agree.text()} of visited states; noise boxes at eps={eps:g}: {boxes['certified (%)']:.1f} % "
                         f"certified, {boxes['refuted (%)']:.1f} % refuted, {boxes['unknown (%)']:.1f} % unknown"),
    ])
