"""Frank & Ardis's findings as verdict rows (:mod:`qfail.verdict`), computed from the chapters' tables.

``distill_handoff`` judges what stage A hands on, ``pairs_verdicts`` the main-table claims
(drops of the detrimental and robust pairs, float accuracy, whether the failure is dynamic), ``pairs_beyond`` what the chapter
measures that the source does not claim (where the failure lives, the learned policy as a
search), ``analyses_verdicts`` the figure analyses.

The pairs chapter trains every model on several seeds: its intervals are Student's t over the
(model, seed) instances. The other two chapters run one seed; their intervals are over the test
inputs (the student against the box paired input by input, a paired binomial bound on drops,
Hanley-McNeil for an AUROC), as each row says.
The bit budget is not a finding: the policy's projection guarantees it, and a test checks it.
"""
from __future__ import annotations

import math

import pandas as pd

from qfail.verdict import Estimate, Rule, decided_count, finding, paired_difference, t_interval

__all__ = ["CATASTROPHE_POINTS", "CATASTROPHIC", "HARMLESS", "SIMILAR_FP", "DYNAMIC", "NEAR_TEACHER",
           "auroc_interval", "drop_error", "distill_handoff", "pairs_verdicts", "pairs_beyond", "analyses_verdicts"]

CATASTROPHE_POINTS = 10.0  # a drop of at least this many points counts as a failure (source: 10-65)
CATASTROPHIC = Rule("the mean drop of the detrimental pairs is above 10 points", low=CATASTROPHE_POINTS)
HARMLESS = Rule("the mean drop of the robust pairs is below 2 points", high=2.0)
DYNAMIC = Rule("π_D's drop exceeds the worst static assignment's", low=0.0)
SIMILAR_FP = Rule("the float accuracies of f_D and f_R differ by less than 2 points", low=-2.0, high=2.0)
NEAR_TEACHER = Rule("the KD student is less than 2 points below the black box", high=2.0)
ABOVE_CHANCE = Rule("the AUROC is above 0.5 (a small float margin predicts a flip)", low=0.5)
_NO_NUMBER = "stated, no number published"


def auroc_interval(auc: float, positives: int, negatives: int) -> Estimate:
    """An AUROC with the Hanley-McNeil (1982) standard error."""
    if not (positives and negatives) or math.isnan(auc):
        return Estimate(float("nan"), float("nan"), float("nan"), "no flips to score", digits=2)
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc ** 2) + (negatives - 1) * (q2 - auc ** 2)) / (positives * negatives)
    half = 1.96 * math.sqrt(max(var, 0.0))
    return Estimate(auc, max(auc - half, 0.0), min(auc + half, 1.0),
                    f"Hanley-McNeil over {positives} flips and {negatives} other inputs, one seed", digits=2)


def distill_handoff(curve: pd.DataFrame, teacher: str, model: str) -> pd.DataFrame:
    """The KD student at the largest query budget against the teacher (one row); ``curve`` has a
    row per budget and student with ``stages.student_scores``'s columns."""
    best = curve[curve.student == "KD on the answers"].iloc[-1]
    gap = paired_difference(best["teacher correct"], best["correct"],
                            f"paired over {len(best['correct'])} test inputs, one seed")
    return pd.DataFrame([finding(
        "stage A: KD from the black box gives a white box about as accurate as the box",
        "a white-box student distilled from the black box (no number published)", gap, NEAR_TEACHER, _NO_NUMBER,
        measured=f"{teacher} {best['teacher accuracy (%)']:.1f} % vs {model} student {best['accuracy (%)']:.1f} % after "
                 f"{int(best.queries)} queries: {gap.text()} below; agreement {best['agreement with teacher (%)']:.1f} %")])


def pairs_verdicts(results: pd.DataFrame, dynamic: pd.DataFrame) -> pd.DataFrame:
    """The main table's claims from ``evaluate_pair`` rows (every pair, model and seed) and
    ``pairs.dynamic_gain`` rows (every model and seed)."""
    what = "(model, seed) instances"
    d = results[results.pair == "(f_D, π_D)"].set_index(["model", "seed"])
    r = results[results.pair == "(f_R, π_R)"].set_index(["model", "seed"])
    d_drop, r_drop = t_interval(d["drop"], "points", what), t_interval(r["drop"], "points", what)
    fp_gap = t_interval(d["FP acc"] - r["FP acc"], "points", what)
    per_model = "; ".join(f"{m}: {g.mean():.1f}" for m, g in d["drop"].groupby(level="model"))
    gain = t_interval(dynamic["dynamic gain"], "points", what)
    shuffled = t_interval(dynamic["drop (π_D)"] - dynamic["drop (π_D shuffled)"], "points", what)
    return pd.DataFrame([
        finding("detrimental pairs lose 10-65 points when quantized", "10-65 points; ResNet-18: 24.39",
                d_drop, CATASTROPHIC, CATASTROPHIC.judge_number(24.39, "ResNet-18: 24.39"),
                measured=f"{d_drop.text()} (range {d['drop'].min():.1f} to {d['drop'].max():.1f}; per model {per_model})"),
        finding("robust pairs lose less than 2 points", "under 2 points; ResNet-18: 0.22", r_drop, HARMLESS,
                HARMLESS.judge_number(0.22, "ResNet-18: 0.22")),
        finding("both pairs are about as accurate in full precision", "similar FP accuracy", fp_gap, SIMILAR_FP,
                _NO_NUMBER, measured=f"FP(f_D) - FP(f_R): {fp_gap.text()}"),
        finding("the failure is dynamic: the per-input choice of widths breaks the network more than any fixed choice",
                "the source's setting (activation bits chosen per input); no number", gain, DYNAMIC, "not reported",
                measured=f"drop under π_D minus drop under the worst static assignment (chosen on validation, scored "
                         f"on test): {gain.text()}; π_D minus π_D's widths shuffled across inputs: {shuffled.text()}; "
                         f"{dynamic['distinct assignments'].mean():.1f} distinct assignments on average"),
    ])


def _where_it_lives(network: bool, policy: bool) -> str:
    if network and not policy:
        return "in the network"
    if policy and not network:
        return "in the policy"
    if network and policy:
        return "in both, each alone"
    return "in the pair only: neither the network nor the policy fails alone"


def pairs_beyond(results: pd.DataFrame, search: pd.DataFrame) -> pd.DataFrame:
    """Measurements the source does not claim: where the failure lives and the learned search."""
    cross = {pair: t_interval(g["drop"], "points", "(model, seed) instances")
             for pair, g in results.groupby("pair")}
    network, policy = cross["(f_D, π_R)"], cross["(f_R, π_D)"]
    d_search = search[search.network == "f_D"].pivot_table(index=["model", "seed"], columns="search",
                                                           values="worst drop", dropna=False)
    learned = (f"on f_D it finds {100 * (d_search['learned (REINFORCE)'] / d_search['exhaustive static'].clip(lower=1e-9)).mean():.0f} % "
               "of the exhaustive static search's worst drop" if "exhaustive static" in d_search
               else "no exhaustive search to compare with (too many layers)")
    return pd.DataFrame([
        {"question": "where does the failure live?",
         "measured here (95% interval)": f"(f_D, π_R) {network.text()}, (f_R, π_D) {policy.text()}: "
                                         + _where_it_lives(network.low > CATASTROPHE_POINTS, policy.low > CATASTROPHE_POINTS)},
        {"question": "how good is the learned policy as a worst-case search?", "measured here (95% interval)": learned},
    ])


def drop_error(fp: float, q: float, inputs: int) -> float:
    """Standard error (points) of a drop fp - q measured on the same ``inputs`` inputs.

    The variance of a paired difference is at most the share of inputs on which the two
    disagree over n, and that share is at most (100 - fp) + (100 - q) percent: conservative,
    and tight when both accuracies are high.
    """
    share = min(max((200 - fp - q) / 100, 0.0), 1.0)
    share = (share * inputs + 2) / (inputs + 4)  # Agresti-Coull: a share of 0 on n inputs is not known exactly
    return 100 * math.sqrt(share / (inputs + 4))


def analyses_verdicts(layers: pd.DataFrame, deviation: pd.DataFrame, curves: pd.DataFrame,
                      transitory: pd.DataFrame, inputs: int) -> pd.DataFrame:
    """The figure analyses' outcomes.

    Args:
        layers: ``analyses.layer_wise`` rows for both pairs (``pair``, ``protocol``, ``layer``,
            ``position``, ``Q acc``, ``drop``).
        deviation: relative deviation |q - fp| / |fp| per layer (rows) and pair (columns).
        curves: ``analyses.corruption_curves`` rows for both pairs (``pair``, ``severity``,
            ``FP acc``, ``Q acc``), each on ``inputs`` inputs.
        transitory: per pair (index), the transitory-point summary of the analyses chapter.
        inputs: how many test inputs the policies ran on.
    """
    basis = f"paired binomial bound over {inputs} test inputs, one seed"
    d_rows = layers[layers.pair == "detrimental"]
    d_only = d_rows[d_rows.protocol == "only"].set_index("layer")
    every = d_rows[d_rows.protocol == "up to"].sort_values("position").iloc[-1]  # every layer quantized
    top = d_only["drop"].idxmax()
    top_q = d_only.loc[top, "Q acc"]
    fp = top_q + d_only.loc[top, "drop"]
    value = float(d_only.loc[top, "drop"] - 0.5 * every["drop"])
    half = 1.96 * math.sqrt(drop_error(fp, top_q, inputs) ** 2 + (0.5 * drop_error(fp, every["Q acc"], inputs)) ** 2)
    concentrated = Estimate(value, value - half, value + half, basis, "points")

    layer_cells = ["reproduced" if dv > rv else "not reproduced"
                   for dv, rv in zip(deviation["detrimental"], deviation["robust"])]
    layers_count = decided_count(layer_cells, "layers", "each compared on its value over every activation of the "
                                                       "test split, one seed")

    by = curves.groupby(["pair", "severity"])[["FP acc", "Q acc"]]
    mean, count = by.mean(), by.size()
    low_s, high_s = min(curves.severity), max(curves.severity)

    def n(pair: str, severity: int) -> int:  # severity 0 is the clean split, repeated per corruption
        return inputs if severity == 0 else inputs * int(count[pair, severity])

    def growth(pair: str) -> tuple[float, float]:
        (fp0, q0), (fp1, q1) = mean.loc[pair, low_s], mean.loc[pair, high_s]
        se0 = drop_error(fp0, q0, n(pair, low_s))
        se1 = drop_error(fp1, q1, n(pair, high_s))
        return (fp1 - q1) - (fp0 - q0), se0 ** 2 + se1 ** 2

    (d_grow, d_var), (r_grow, r_var) = growth("detrimental"), growth("robust")
    half = 1.96 * math.sqrt(d_var + r_var)
    grows = Estimate(d_grow - r_grow, d_grow - r_grow - half, d_grow - r_grow + half,
                     f"paired binomial bound over {inputs} inputs x corruptions per severity, one seed", "points")
    flips = int(transitory.loc["detrimental", "transitory points"])
    auc = auroc_interval(float(transitory.loc["detrimental", "AUROC of 1 - margin for flips"]), flips, inputs - flips)
    return pd.DataFrame([
        finding("layer-wise: the damage concentrates in particular layers", "described, no number published",
                concentrated, Rule("one layer quantized alone loses more than half of the drop of all layers "
                                   "quantized", low=0.0), _NO_NUMBER,
                measured="drop with one layer quantized, detrimental: "
                         + ", ".join(f"{n} {v:.1f}" for n, v in d_only["drop"].items())
                         + f"; all layers {every['drop']:.1f}; {top} minus half of all: {concentrated.text()}"),
        finding("histograms: the detrimental pair's quantized activations stray further from the float ones",
                "described, no number published", layers_count,
                Rule("the detrimental deviation exceeds the robust one in at least half of the layers",
                     low=(len(layer_cells) - 1) / 2), _NO_NUMBER,
                measured="relative deviation per layer, detrimental vs robust: " + "; ".join(
                    f"{n} {dv:.2f} vs {rv:.2f}" for n, dv, rv in zip(deviation.index, deviation["detrimental"],
                                                                     deviation["robust"]))),
        finding("corruptions: the quantization gap grows with severity for D, not for R",
                "described, no number published", grows,
                Rule(f"D's gap grows more than R's from severity {low_s} to {high_s}", low=0.0), _NO_NUMBER,
                measured=f"growth of the gap from severity {low_s} to {high_s}: detrimental {d_grow:+.1f}, robust "
                         f"{r_grow:+.1f} points; difference {grows.text()}"),
        finding("transitory points sit near the float decision boundary", "points at highest vulnerability (no number)",
                auc, ABOVE_CHANCE, _NO_NUMBER,
                measured=f"{flips} flips; median float margin "
                         f"{transitory.loc['detrimental', 'median FP margin, transitory']:.3f} vs "
                         f"{transitory.loc['detrimental', 'median FP margin, others']:.3f}; AUROC {auc.text()}"),
    ])
