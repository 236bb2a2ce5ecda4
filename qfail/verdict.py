"""Verdicts on a paper's findings: an estimate with its interval, a rule, an outcome.

Every finding of the four works is judged the same way. The measurement is an
:class:`Estimate` (a value with a 95 % interval and the sampling that produced it). The claim is
a :class:`Rule`: an interval of values in which the claim holds. The outcome follows from where
the estimate's interval lies:

- **reproduced**: the whole interval lies where the claim holds;
- **not reproduced**: the whole interval lies where it fails;
- **inconclusive**: the interval straddles the rule's threshold;
- **partly**: a claim made over several cells (settings, regimes) holds in some and fails in others.

The same rule judges the paper's own numbers (``Rule.judge`` on an estimate built from the
paper's counts, or ``Rule.judge_number`` on a point value where the paper gives no interval):
a rule the paper itself fails is the wrong rule.

The chapters display a verdict table with :func:`show` (HTML for the page, JSON for the
scorecard, which :mod:`qfail.site.scorecard` collects from the executed notebooks) and end with
:func:`summary`, prose generated from the rows, so that no number in the text is typed by hand.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # tables are built by the callers; the scorecard reads verdicts without pandas
    import pandas as pd

__all__ = ["OUTCOMES", "MIME", "ESTIMATE", "paired_difference", "Estimate", "Rule", "t_interval", "bootstrap", "wilson", "decided_count",
           "combine", "finding", "show", "summary", "COLUMNS"]

OUTCOMES = ("reproduced", "partly", "not reproduced", "inconclusive")
MIME = "application/vnd.qfail.verdicts+json"
ESTIMATE = "estimate"  # a row's numbers (value, low, high, unit): not shown, carried for sweeps over seeds
COLUMNS = ("finding", "the paper reports", "measured here (95% interval)", "rule",
           "the paper, by this rule", "verdict", "interval from")


@dataclass(frozen=True)
class Estimate:
    """A measured value, its 95 % interval and how the interval was obtained (``basis``)."""

    value: float
    low: float
    high: float
    basis: str
    unit: str = ""
    digits: int = 1

    def __post_init__(self) -> None:
        if not (self.low <= self.high) and not (math.isnan(self.low) or math.isnan(self.high)):
            raise ValueError(f"interval [{self.low}, {self.high}] is inverted")

    def text(self) -> str:
        f = f"{{:.{self.digits}f}}"
        unit = f" {self.unit}" if self.unit else ""
        return f"{f.format(self.value)} [{f.format(self.low)}, {f.format(self.high)}]{unit}"


def t_interval(values: Iterable[float], unit: str = "", what: str = "seeds", digits: int = 1,
               within: tuple[float, float, str] | None = None) -> Estimate:
    """Mean of independent replicates (seeds) with Student's t interval; one replicate has none.

    ``within`` = ``(low, high, why)``: the values the mean can take (a capped reward, say); the
    interval is cut to them, which keeps its coverage and drops only impossible values.
    """
    from scipy import stats

    x = np.asarray(list(values), dtype=float)
    if len(x) == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(x.mean())
    if len(x) < 2:
        return Estimate(mean, -math.inf, math.inf, f"1 of {what}: no interval", unit, digits)
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    low, high, basis = mean - half, mean + half, f"t over {len(x)} {what}"
    if within is not None and (low < within[0] or high > within[1]):
        low, high, basis = max(low, within[0]), min(high, within[1]), f"{basis}, cut at {within[2]}"
    return Estimate(mean, low, high, basis, unit, digits)


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, what: str, unit: str = "", seed: int = 0,
              resamples: int = 1000, digits: int = 1) -> Estimate:
    """Percentile bootstrap of ``statistic(indices)`` over ``n`` units (inputs, episodes, cells).

    ``statistic`` receives an index array (the identity for the point estimate, then resampled
    indices), so paired measurements stay paired.
    """
    if n < 1:
        raise ValueError("bootstrap needs at least one unit")
    rng = np.random.default_rng(seed)
    point = float(statistic(np.arange(n)))
    draws = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)], dtype=float)
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return Estimate(point, -math.inf, math.inf, f"bootstrap over {n} {what}: undefined", unit, digits)
    low, high = np.quantile(draws, [0.025, 0.975])
    return Estimate(point, float(min(low, point)), float(max(high, point)),
                    f"bootstrap over {n} {what}, seed {seed}", unit, digits)


def wilson(count: int, total: int, scale: float = 100.0, unit: str = "%", what: str = "inputs",
           digits: int = 1) -> Estimate:
    """A proportion with its Wilson interval, scaled (100: percent, 1000: per 1,000)."""
    from qfail.metrics import proportion

    rate = proportion(int(count), int(total))
    return Estimate(scale * rate.value, scale * rate.low, scale * rate.high,
                    f"Wilson over {total} {what}", unit, digits)


def paired_difference(a, b, basis: str) -> Estimate:  # a, b: bool arrays
    """Accuracy of ``a`` minus accuracy of ``b`` (points), two models scored on the same inputs.

    ``a`` and ``b`` are per-input correctness, shape ``(inputs,)`` or ``(cells, inputs)`` for the
    mean over matched cells. The input is the sampling unit: its difference (averaged over the
    cells) is one observation, so the inputs both models get right, or both get wrong, add no
    noise, as they would if the two accuracies' errors were added in quadrature. The 95 % Wald
    interval carries Agresti and Min's (2005) adjustment, half a discordant input each way and one
    concordant, so that two models that agree on every input still get an interval.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs the same inputs on both sides, got shapes {a.shape} and {b.shape}")
    if a.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), "no matched cells", "points")
    d = (a - b).reshape(-1, a.shape[-1]).mean(axis=0)
    total = d.size + 2  # the pseudo-inputs: +1 and -1 with weight 1/2 each, 0 with weight 1
    centre = float(d.sum()) / total
    spread = float(((d - centre) ** 2).sum()) + 0.5 * (1 - centre) ** 2 + 0.5 * (1 + centre) ** 2 + centre ** 2
    half = 1.96 * math.sqrt(spread / total) / math.sqrt(total)
    value = float(d.mean())
    low, high = max(min(centre - half, value), -1.0), min(max(centre + half, value), 1.0)
    return Estimate(100 * value, 100 * low, 100 * high, basis, "points")


def decided_count(outcomes: Sequence[str], what: str, judged: str = "each judged on its own interval") -> Estimate:
    """How many cells a claim holds in, as an interval: decided cells count, undecided ones may go
    either way (low: only the reproduced, high: the reproduced and the inconclusive). ``judged``
    says how each cell was decided, for the row's basis."""
    wins = sum(o == "reproduced" for o in outcomes)
    open_ = sum(o == "inconclusive" for o in outcomes)
    return Estimate(wins + open_ / 2, wins, wins + open_, f"{len(outcomes)} {what}, {judged}",
                    f"of {len(outcomes)}", digits=1 if open_ % 2 else 0)


@dataclass(frozen=True)
class Rule:
    """A claim as the set of values ``low < value < high`` in which it holds."""

    text: str
    low: float = -math.inf
    high: float = math.inf

    def holds_at(self, value: float) -> bool:
        return self.low < value < self.high

    def judge(self, estimate: Estimate) -> str:
        """reproduced, not reproduced or inconclusive, from where the interval lies."""
        if math.isnan(estimate.value):
            return "inconclusive"
        if self.low < estimate.low and estimate.high < self.high:
            return "reproduced"
        if estimate.high <= self.low or estimate.low >= self.high:
            return "not reproduced"
        return "inconclusive"

    def judge_number(self, value: float, text: str | None = None) -> str:
        """The rule on a point value that has no interval (a paper's reported number)."""
        shown = text if text is not None else f"{value:g}"
        return f"holds ({shown}; no interval reported)" if self.holds_at(value) else \
            f"fails ({shown}; no interval reported)"


def combine(outcomes: Sequence[str]) -> str:
    """One outcome for a claim judged in several cells."""
    kinds = set(outcomes)
    if not kinds:
        return "inconclusive"
    if len(kinds) == 1:
        return kinds.pop()
    if {"reproduced", "not reproduced"} <= kinds or "partly" in kinds:
        return "partly"
    return "inconclusive"


def finding(claim: str, paper: str, ours: Estimate | None, rule: Rule | str, paper_by_rule: str,
            verdict: str | None = None, measured: str | None = None) -> dict[str, str]:
    """One verdict row. ``verdict`` defaults to ``rule.judge(ours)``; ``measured`` replaces the
    estimate's text where a row needs more words (the estimate's interval still decides)."""
    if verdict is None:
        if ours is None or isinstance(rule, str):
            raise ValueError("a row without an estimate and a Rule must be given its verdict")
        verdict = rule.judge(ours)
    if verdict not in OUTCOMES:
        raise ValueError(f"verdict={verdict!r} is not allowed; choose one of {', '.join(OUTCOMES)}")
    return {"finding": claim, "the paper reports": paper,
            "measured here (95% interval)": measured if measured is not None else (ours.text() if ours else "—"),
            "rule": rule if isinstance(rule, str) else rule.text, "the paper, by this rule": paper_by_rule,
            "verdict": verdict, "interval from": ours.basis if ours is not None else "—",
            ESTIMATE: None if ours is None else {"value": ours.value, "low": ours.low, "high": ours.high,
                                                 "unit": ours.unit}}


_COLOURS = {"reproduced": "#cde8d0", "partly": "#fbe7b5", "not reproduced": "#f5c6c2", "inconclusive": "#e4e4e4"}


def _json_number(value: object) -> object:
    """NaN (a row without a measurement) and the open ends of an interval there is none of (one
    seed) as JSON's null: JSON has neither, and the kernel's message to the notebook would fail
    over to a warning printed into the chapter."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


class _Shown:
    """A verdict table as a page shows it (HTML) and as the scorecard reads it (JSON)."""

    def __init__(self, rows: pd.DataFrame, work: str, chapter: str, anchor: str) -> None:
        self.rows, self.work, self.chapter, self.anchor = rows, work, chapter, anchor

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:  # IPython's signature
        shown = self.rows[list(COLUMNS)]
        styled = shown.style.hide(axis="index").map(
            lambda v: f"background-color: {_COLOURS[v]}" if v in _COLOURS else "", subset=["verdict"])
        estimates = list(self.rows[ESTIMATE]) if ESTIMATE in self.rows else [None] * len(shown)
        payload = {"work": self.work, "chapter": self.chapter, "anchor": self.anchor,
                   "rows": shown.to_dict(orient="records"),
                   "estimates": [{k: _json_number(v) for k, v in e.items()} if isinstance(e, dict) else None
                                 for e in estimates]}  # a row built without an estimate reads NaN here
        return {"text/html": styled.to_html(), "text/plain": shown.to_string(index=False), MIME: payload}


def show(rows: pd.DataFrame, work: str, chapter: str, anchor: str) -> _Shown:
    """Display ``rows`` (columns :data:`COLUMNS`) and hand them to the scorecard.

    ``anchor`` is the label of the section that holds the table, for the scorecard's links.
    """
    missing = [c for c in COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"verdict rows lack the columns {missing}")
    bad = sorted(set(rows["verdict"]) - set(OUTCOMES))
    if bad:
        raise ValueError(f"verdicts {bad} are not allowed; choose from {', '.join(OUTCOMES)}")
    return _Shown(rows[[*COLUMNS, *([ESTIMATE] if ESTIMATE in rows else [])]].reset_index(drop=True),
                  work, chapter, anchor)


def summary(rows: pd.DataFrame):  # -> IPython.display.Markdown
    """The chapter's summary as Markdown generated from its verdict rows."""
    from IPython.display import Markdown

    counts = rows["verdict"].value_counts()
    head = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if o in counts)
    lines = [f"Of {len(rows)} findings: {head}.", ""]
    for _, r in rows.iterrows():
        lines.append(f"- **{r['finding']}** — *{r['verdict']}*. Measured here: {r['measured here (95% interval)']} "
                     f"({r['interval from']}); rule: {r['rule']}. The paper, by this rule: {r['the paper, by this rule']}.")
    return Markdown("\n".join(lines))
