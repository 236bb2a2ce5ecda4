"""Frank & Ardis's findings as verdict rows, computed from the chapters' tables.

``distill_handoff`` states what stage A hands on, ``pairs_verdicts`` the main-table claims
(drops of the detrimental and robust pairs, float accuracy, where the failure lives, the
learned policy as a search, the budget), ``analyses_verdicts`` the figure analyses.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["CATASTROPHE_POINTS", "distill_handoff", "pairs_verdicts", "analyses_verdicts"]

CATASTROPHE_POINTS = 10.0  # a drop of at least this many points counts as a failure (source: 10-65)


def distill_handoff(curve: pd.DataFrame, teacher: str, model: str) -> pd.DataFrame:
    """The KD student at the largest query budget against the teacher (one row)."""
    best = curve[curve.student == "KD on the answers"].iloc[-1]
    gap = best["teacher accuracy (%)"] - best["accuracy (%)"]
    return pd.DataFrame([{"teacher": f"{teacher} ({best['teacher accuracy (%)']:.1f}%)",
                          "student": f"{model} ({best['accuracy (%)']:.1f}%)", "queries": int(best.queries),
                          "agreement (%)": round(best["agreement with teacher (%)"], 1),
                          "student within 2 points of the teacher": "yes" if gap <= 2 else f"no ({gap:.1f} points below)"}])


def _where_it_lives(cross: pd.Series) -> str:
    network, policy = cross["(f_D, π_R)"] >= CATASTROPHE_POINTS, cross["(f_R, π_D)"] >= CATASTROPHE_POINTS
    if network and not policy:
        return "in the network"
    if policy and not network:
        return "in the policy"
    if network and policy:
        return "in both, each alone"
    return "in the pair only: neither the network nor the policy fails alone"


def pairs_verdicts(results: pd.DataFrame, search: pd.DataFrame, budget: float) -> pd.DataFrame:
    """The main table's claims from ``evaluate_pair`` rows (every pair and cross pair, every
    model and seed) and the search baselines' rows."""
    d_drops = results[results.pair == "(f_D, π_D)"]["drop"]
    r_drops = results[results.pair == "(f_R, π_R)"]["drop"]
    fp_gap = (results[results.pair == "(f_D, π_D)"].set_index(["model", "seed"])["FP acc"]
              - results[results.pair == "(f_R, π_R)"].set_index(["model", "seed"])["FP acc"])
    cross = results.groupby("pair")["drop"].mean()
    over_budget = int((results["mean bits"] > budget + 1e-6).sum())
    d_search = search[search.network == "f_D"].pivot_table(index=["model", "seed"], columns="search",
                                                           values="worst drop", dropna=False)
    learned_ratio = ((d_search["learned (REINFORCE)"] / d_search["exhaustive static"].clip(lower=1e-9)).mean()
                     if "exhaustive static" in d_search else float("nan"))  # NaN where the search was not run
    return pd.DataFrame([
        {"claim": "detrimental pairs lose 10-65 points when quantized", "source": "10-65 points; ResNet-18: 24.39",
         "measured here": f"{d_drops.mean():.1f} ± {d_drops.std():.1f} points (range {d_drops.min():.1f} to "
                          f"{d_drops.max():.1f}, {len(d_drops)} instances)",
         "reproduced": "yes" if d_drops.min() >= CATASTROPHE_POINTS and d_drops.max() <= 65 else
                       ("partly" if (d_drops >= CATASTROPHE_POINTS).any() else "no")},
        {"claim": "robust pairs lose less than 2 points", "source": "under 2 points; ResNet-18: 0.22",
         "measured here": f"{r_drops.mean():.2f} ± {r_drops.std():.2f} points (max {r_drops.max():.2f})",
         "reproduced": "yes" if r_drops.max() < 2 else ("partly" if r_drops.mean() < 2 else "no")},
        {"claim": "both pairs are about as accurate in full precision", "source": "similar FP accuracy",
         "measured here": f"FP(f_D) - FP(f_R) = {fp_gap.mean():+.2f} ± {fp_gap.std():.2f} points "
                          f"(largest gap {fp_gap.abs().max():.2f})",
         "reproduced": "yes" if fp_gap.abs().max() <= 2 else "no"},
        {"claim": "where the failure lives (not in the source)", "source": "—",
         "measured here": f"(f_D, π_R) {cross['(f_D, π_R)']:.1f}, (f_R, π_D) {cross['(f_R, π_D)']:.1f} points: "
                          f"{_where_it_lives(cross)}",
         "reproduced": "—"},
        {"claim": "the learned policy as a worst-case search (not in the source)", "source": "—",
         "measured here": (f"on f_D it finds {100 * learned_ratio:.0f}% of the exhaustive static search's worst drop"
                           if np.isfinite(learned_ratio) else "no exhaustive search to compare with (too many layers)"),
         "reproduced": "—"},
        {"claim": "the budget holds", "source": "fixed total bit budget",
         "measured here": f"{over_budget} of {len(results)} evaluations above {budget:g} mean bits",
         "reproduced": "yes" if over_budget == 0 else "no"},
    ])


def analyses_verdicts(only: pd.DataFrame, deviation: pd.DataFrame, gap_growth: pd.DataFrame,
                      transitory: pd.DataFrame, layers: Sequence[str], inputs: int) -> pd.DataFrame:
    """The figure analyses' outcomes.

    Args:
        only: drop with one layer quantized, per layer (rows) and pair (columns).
        deviation: relative deviation |q - fp| / |fp| per layer (rows) and pair (columns).
        gap_growth: float minus quantized accuracy per pair (rows) and severity (columns).
        transitory: per pair (index), the transitory-point summary of ``analyses.transitory_points``.
        layers: the quantized layers, in order.
        inputs: how many test inputs the policies ran on.
    """
    d_only, r_only = only["detrimental"], only["robust"]
    d_gap, r_gap = gap_growth.loc["detrimental"], gap_growth.loc["robust"]
    auroc = transitory.loc["detrimental", "AUROC of 1 - margin for flips"]
    distinct = int(transitory.loc["detrimental", "distinct width assignments"])
    return pd.DataFrame([
        {"analysis": "layer-wise: the damage concentrates in particular layers",
         "measured here": "drop with one layer quantized, detrimental: "
                          + ", ".join(f"{n} {v:.1f}" for n, v in d_only.items()) + f"; robust max {r_only.max():.1f}",
         "outcome": f"largest in {d_only.idxmax()} ({d_only.max():.1f} of {d_only.sum():.1f} summed)"},
        {"analysis": "histograms: the detrimental pair's quantized activations stray further from the float ones",
         "measured here": "relative deviation per layer, detrimental vs robust: " + "; ".join(
             f"{n} {d:.2f} vs {r:.2f}" for n, d, r in zip(layers, deviation["detrimental"], deviation["robust"])),
         "outcome": "yes" if (deviation["detrimental"] > deviation["robust"]).mean() > 0.5 else "no"},
        {"analysis": "corruptions: the quantization gap grows with severity for D, stays flat for R",
         "measured here": f"detrimental gap {d_gap.iloc[0]:.1f} → {d_gap.iloc[-1]:.1f}; "
                          f"robust {r_gap.iloc[0]:.1f} → {r_gap.iloc[-1]:.1f} points",
         "outcome": ("yes" if d_gap.iloc[-1] > d_gap.iloc[0] + 2 and abs(r_gap.iloc[-1] - r_gap.iloc[0]) < 2 else
                     "no: the detrimental gap does not grow" if d_gap.iloc[-1] <= d_gap.iloc[0] + 2
                     else "no: the robust gap moves")},
        {"analysis": "transitory points sit near the float decision boundary",
         "measured here": f"detrimental: {int(transitory.loc['detrimental', 'transitory points'])} points, median margin "
                          f"{transitory.loc['detrimental', 'median FP margin, transitory']:.3f} vs "
                          f"{transitory.loc['detrimental', 'median FP margin, others']:.3f}; "
                          f"AUROC of a small margin for a flip {auroc:.2f}",
         "outcome": "not testable (no flips)" if np.isnan(auroc) else
                    ("yes" if auroc >= 0.7 else "weakly" if auroc >= 0.55 else "no: they are as confident as the others")},
        {"analysis": "the policy is dynamic (not in the source's summary)",
         "measured here": f"detrimental policy: {distinct} distinct width assignments over {inputs} inputs; "
                          f"robust: {int(transitory.loc['robust', 'distinct width assignments'])}",
         "outcome": "yes" if distinct > 1 else "no: one static assignment"},
    ])
