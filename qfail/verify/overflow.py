"""Where a network's float32 arithmetic may overflow: bounds there are (-inf, inf).

Bounds for a float32 program (:func:`qfail.verify.extract`) hold for the network as it runs in
float32. Past float32's maximum it computes inf, and from there nan, which no finite interval
contains: :func:`may_overflow` flags the boxes where that can happen, and :mod:`qfail.verify.bounds`
gives them (-inf, inf) through :func:`unbounded_where`.
"""
from __future__ import annotations

import math

import torch

from qfail.verify.program import ActQuant, Affine, Step

__all__ = ["FLOAT32_MAX", "may_overflow", "unbounded_where"]

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def may_overflow(steps: list[Step], io: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """(N,) the boxes on which the network's float32 arithmetic may overflow, given the bounds
    ``io[k]`` of every step's input; none for bounds in exact arithmetic.

    A float32 sum of products, and each of its partial sums, stays within (1 + gamma_n) times the
    sum of the magnitudes, which over a box is at most max|x| sum_j |W_ij| + |b_i|; a dynamic
    quantizer's scale needs the range of its input below float32's maximum."""
    flag = torch.zeros(io[0][0].shape[0], dtype=torch.bool)
    if not all(s.float32 for s in steps if isinstance(s, Affine)) or not len(flag):
        return flag
    if _below_float32_max(steps, max(float(io[0][1].max()), -float(io[0][0].min()))):
        return flag  # the usual case, decided for the whole batch at once
    for step, (lo, hi) in zip(steps, io):
        if isinstance(step, Affine):
            top = torch.maximum(hi.amax(1), -lo.amin(1))  # max |x| over the box (lo <= hi)
            worst = torch.outer(top, step.weight_float32()[2]).add_(step.bias.abs())
            flag |= ~(worst * ((1 + step.rounding_gamma()) * (1 + 1e-6)) < FLOAT32_MAX).all(1)  # nan: flagged
        elif isinstance(step, ActQuant) and step.mode == "dynamic":
            flag |= ~(hi.amax(1) - lo.amin(1) < FLOAT32_MAX / 2)
    return flag


def _below_float32_max(steps: list[Step], top: float) -> bool:
    """Whether every value the float32 network computes stays below float32's maximum in
    magnitude when its inputs do not exceed ``top``: one bound for all boxes, step by step."""
    for step in steps:
        if isinstance(step, Affine):
            rows = float(step.weight_float32()[2].max())
            top = (top * rows + float(step.bias.abs().max())) * (1 + step.rounding_gamma()) * (1 + 1e-6)
        elif isinstance(step, ActQuant) and step.mode == "dynamic":
            if not 2 * top < FLOAT32_MAX / 2:  # the input's range (at most 2 top), computed in float32
                return False
            top *= 2  # a level is within half a step (at most top / levels) of its input
        elif isinstance(step, ActQuant):
            top += step.step / 2  # a level is within half a step of its input, or is the range's end
        if not top < FLOAT32_MAX:
            return False
    return True


def unbounded_where(flag: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bounds with the flagged boxes' rows replaced by (-inf, inf)."""
    if not bool(flag.any()):
        return lo, hi
    rows = flag.unsqueeze(1)
    return lo.masked_fill(rows, -math.inf), hi.masked_fill(rows, math.inf)
