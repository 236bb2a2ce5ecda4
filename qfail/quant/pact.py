"""PACT: parameterized clipping activation (Choi et al., 2018, arXiv 1805.06085).

y = clip(x, 0, alpha) with a learnable alpha per layer (eq. 1), quantized on k bits as
y_q = round(y (2^k - 1) / alpha) alpha / (2^k - 1) (eq. 2). Gradients (eq. 3, STE on round):
dy_q/dx = 1 for 0 <= x <= alpha else 0, and dy_q/dalpha = 1 for x >= alpha else 0, summed over
the elements that share alpha. ``bits`` may be a tensor broadcasting against x (per-sample bits).
"""
from __future__ import annotations

import torch
from torch import nn

from qfail.checks import check_range

__all__ = ["pact_quantize", "PACT"]


def _clip_and_round(x: torch.Tensor, alpha: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 1 and 2: the clipped ``y`` and its quantized copy (a new tensor each)."""
    y = torch.minimum(torch.clamp(x, min=0.0), alpha)
    scale = alpha / levels
    return y, torch.div(y, scale).round_().mul_(scale)


class _PACTFunction(torch.autograd.Function):
    """Eqs. 1-3 with the gradient masks held as 1.0 / 0.0 floats, built only for the inputs that
    need a gradient: on the CPU a comparison into bool and a product with a bool mask cost about
    4x a float pass, and they dominated a PACT layer's backward. For ``alpha > 0`` the masks are
    exact: ``0 <= x <= alpha`` iff the clipped ``y`` equals ``x``, and ``x >= alpha`` iff
    ``y == alpha``; a difference of two distinct floats is never 0, so ``1 - sign|x - y|`` and
    ``1 + sign(y - alpha)`` are those masks (NaN inputs give NaN gradients). Any other ``alpha``
    takes the comparisons."""

    @staticmethod
    def forward(ctx, x, alpha, levels):
        y, out = _clip_and_round(x, alpha, levels)
        grad_x, grad_alpha = ctx.needs_input_grad[:2]
        if float(alpha) > 0:
            inside = torch.sub(x, y).abs_().sign_().neg_().add_(1.0) if grad_x else None
            above = y.sub_(alpha).sign_().add_(1.0) if grad_alpha else None
        else:
            inside = ((x >= 0) & (x <= alpha)).to(x.dtype) if grad_x else None
            above = (x >= alpha).to(x.dtype) if grad_alpha else None
        ctx.save_for_backward(inside, above)
        ctx.alpha_shape = alpha.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        inside, above = ctx.saved_tensors
        grad_x = None if inside is None else grad_out * inside
        grad_alpha = None if above is None else (grad_out * above).sum().reshape(ctx.alpha_shape)
        return grad_x, grad_alpha, None


def pact_quantize(x: torch.Tensor, alpha: torch.Tensor, bits: int | torch.Tensor) -> torch.Tensor:
    """PACT-quantize ``x`` on ``bits`` bits with clipping level ``alpha`` (a 0-d tensor).

    Where no graph is recorded (``no_grad``, or neither input needs a gradient) no mask is built:
    an autograd function is told which inputs require a gradient, not whether one will be taken.
    """
    levels = (2.0 ** torch.as_tensor(bits, dtype=x.dtype, device=x.device)) - 1
    if not (torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad)):
        return _clip_and_round(x, alpha, levels)[1]
    return _PACTFunction.apply(x, alpha, levels)


class PACT(nn.Module):
    """A learnable clipping level; ``alpha`` starts at ``init_alpha`` (the paper uses 10)."""

    def __init__(self, init_alpha: float = 10.0) -> None:
        super().__init__()
        check_range("init_alpha", init_alpha, 1e-6)
        self.alpha = nn.Parameter(torch.tensor(float(init_alpha)))

    def forward(self, x: torch.Tensor, bits: int | torch.Tensor) -> torch.Tensor:
        return pact_quantize(x, self.alpha, bits)
