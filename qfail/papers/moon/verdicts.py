"""Moon's findings as verdict rows, computed from the chapter's measurement tables.

Each function takes the tables the chapter measured and returns one row per finding: the
source's claim, what was measured here and whether the claim holds.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

__all__ = ["verdict_table"]


def _sweep_row(sweep: pd.DataFrame, model: str, eps: float) -> pd.Series:
    return sweep[(sweep.model == model) & (sweep.eps == eps)].iloc[0]


def verdict_table(table: pd.DataFrame, inn: pd.DataFrame, sweep: pd.DataFrame, bit_widths: Sequence[int],
                  eps_values: Sequence[float], episodes: int) -> pd.DataFrame:
    """Moon's four claims against the controller table, the INN ablation and the consistency sweep.

    Args:
        table: :func:`qfail.papers.moon.controller.controller_table` (indexed by controller).
        inn: :func:`qfail.papers.moon.inn.inn_ablation`.
        sweep: :func:`qfail.verify.consistency_sweep` over ``eps_values``.
        bit_widths, eps_values, episodes: the chapter's parameters.
    """
    fp_reward = table.loc["FP32", "reward mean"]
    low, eps = min(bit_widths), min(eps_values)
    int8 = _sweep_row(sweep, "dynamic INT8", eps)
    published_passes, sound_passes = inn.iloc[0, 3], inn.iloc[3, 3]
    return pd.DataFrame([
        {"source's claim": "PTQ (dynamic INT8) keeps the reward (200 vs 200)",
         "measured here": f"{table.loc['dynamic INT8', 'reward mean']:.1f} vs FP {fp_reward:.1f} "
                          f"over {episodes} episodes of up to 500 steps",
         "holds": bool(table.loc["dynamic INT8", "reward mean"] >= 0.95 * fp_reward)},
        {"source's claim": "QAT keeps the reward (200 vs 200)",
         "measured here": f"QAT 8-bit {table.loc['QAT 8-bit', 'reward mean']:.1f}; QAT {low}-bit "
                          f"{table.loc[f'QAT {low}-bit', 'reward mean']:.1f}" if 8 in bit_widths else "8 not in bit_widths",
         "holds": bool(8 in bit_widths and table.loc["QAT 8-bit", "reward mean"] >= 0.95 * fp_reward)},
        {"source's claim": "decision consistency is False (INN check)",
         "measured here": f"as published the check passes on {published_passes:.0f}% of inputs; with sound, unit-correct "
                          f"intervals on {sound_passes:.0f}%"
                          + ("; the published 'False' is an artifact" if sound_passes >= 100.0 else ""),
         # the published 'False' holds only if the sound check fails as well
         "holds": bool(sound_passes < 100.0)},
        {"source's claim": "quantized decisions match FP decisions (the goal)",
         "measured here": f"dynamic INT8 agrees on {table.loc['dynamic INT8', 'agreement with FP (%)']:.1f}% of visited "
                          f"states; at eps={eps}: {int8['certified (%)']:.1f}% of boxes certified, "
                          f"{int8['refuted (%)']:.1f}% refuted with counterexamples, {int8['unknown (%)']:.1f}% unknown",
         "holds": bool(table.loc["dynamic INT8", "agreement with FP (%)"] == 100.0)},
    ])
