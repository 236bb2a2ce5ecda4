"""Moon's interval neural network (INN), as published and with each defect corrected.

Moon checks a quantized CartPole controller by widening every weight by ``eps`` and asking
whether the full-precision output lies inside the resulting output interval. ``inn_ablation``
runs that check as published, then corrects one defect per row, ending at a sound check.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from qfail.verify import Affine, extract

if TYPE_CHECKING:  # pandas is imported where a table is built
    import pandas as pd

__all__ = ["moon_inn", "inn_ablation"]


def moon_inn(layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor, eps: float, *, sound: bool = False,
             relu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Output interval of Moon's Interval Neural Network for point inputs ``x`` (N, d).

    Every weight and bias of ``layers`` ([(W, b), ...], as the network under test uses them) is
    widened to [w - eps, w + eps]. As published (``sound=False, relu=False``) the lower bound is
    x_lo @ W_lo^T + b_lo and the upper x_hi @ W_hi^T + b_hi, wrong whenever signs mix, and no ReLU
    is applied between layers. ``sound=True`` uses the exact interval product in centre/radius
    form (|W| r + eps |x_mid| + eps r + eps); ``relu=True`` applies ReLU between layers.
    """
    lo = hi = x.double()
    for i, (w, b) in enumerate(layers):
        w, b = w.double(), b.double()
        if sound:
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            c = mid @ w.T + b
            r = rad @ w.abs().T + eps * mid.abs().sum(1, keepdim=True) + eps * rad.sum(1, keepdim=True) + eps
            lo, hi = c - r, c + r
        else:
            lo, hi = lo @ (w - eps).T + (b - eps), hi @ (w + eps).T + (b + eps)
        if relu and i < len(layers) - 1:
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
    return lo, hi


def _linear_layers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    prog = extract(model)
    return [(s.weight, s.bias) for s in prog.steps if isinstance(s, Affine)]


def inn_ablation(fp_model: nn.Module, q_model: nn.Module, uniform_inputs: torch.Tensor, states: torch.Tensor,
                 eps: float = 0.05) -> pd.DataFrame:
    """Moon's INN check as published, then with one defect corrected per row.

    The check (Moon): the full-precision output must lie inside the interval that the INN of the
    quantized network gives for the same point input. Columns: the share of inputs whose
    interval is inverted somewhere (lower > upper), the share passing Moon's check, and the
    share whose *decision* the interval proves (margin interval excludes 0). The last row uses
    weight intervals just wide enough to cover the actual quantization error.
    """
    import pandas as pd

    q_layers = _linear_layers(q_model)
    fp_layers = _linear_layers(fp_model)
    weight_error = max(float((wf - wq).abs().max()) for (wf, _), (wq, _) in zip(fp_layers, q_layers))
    bias_error = max(float((bf - bq).abs().max()) for (_, bf), (_, bq) in zip(fp_layers, q_layers))
    steps = [
        ("as published (eps 0.05, uniform inputs, softmax vs interval)", {"sound": False, "relu": False}, "softmax",
         uniform_inputs, eps),
        ("+ sound interval products", {"sound": True, "relu": False}, "softmax", uniform_inputs, eps),
        ("+ ReLU applied", {"sound": True, "relu": True}, "softmax", uniform_inputs, eps),
        ("+ logits compared with logits", {"sound": True, "relu": True}, "logits", uniform_inputs, eps),
        ("+ real CartPole states", {"sound": True, "relu": True}, "logits", states, eps),
        (f"+ eps = actual weight error ({max(weight_error, bias_error):.2g})", {"sound": True, "relu": True}, "logits",
         states, max(weight_error, bias_error)),
    ]
    rows = []
    for label, flags, units, x, e in steps:
        lo, hi = moon_inn(q_layers, x, e, **flags)
        with torch.no_grad():
            z = fp_model(x.float()).double()
        ref = torch.softmax(z, 1) if units == "softmax" else z
        inside = ((lo <= ref) & (ref <= hi)).all(1)
        margin_lo = lo[:, 1] - hi[:, 0]
        margin_hi = hi[:, 1] - lo[:, 0]
        decided = (margin_lo > 0) | (margin_hi < 0)
        rows.append({"INN variant": label, "inputs": len(x), "inverted intervals (%)": 100 * float((lo > hi).any(1).float().mean()),
                     "Moon's check passes (%)": 100 * float(inside.float().mean()),
                     # an unsound interval proves nothing
                     "decision proved (%)": 100 * float(decided.float().mean()) if flags["sound"] else float("nan")})
    return pd.DataFrame(rows)


