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


class _PACTFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, levels):
        y = torch.clamp(x, min=0.0)
        y = torch.minimum(y, alpha)
        scale = alpha / levels
        ctx.save_for_backward(x, alpha)
        return torch.round(y / scale) * scale

    @staticmethod
    def backward(ctx, grad_out):
        x, alpha = ctx.saved_tensors
        grad_x = grad_out * ((x >= 0) & (x <= alpha))
        grad_alpha = (grad_out * (x >= alpha)).sum().reshape(alpha.shape)
        return grad_x, grad_alpha, None


def pact_quantize(x: torch.Tensor, alpha: torch.Tensor, bits: int | torch.Tensor) -> torch.Tensor:
    """PACT-quantize ``x`` on ``bits`` bits with clipping level ``alpha`` (a 0-d tensor)."""
    levels = (2.0 ** torch.as_tensor(bits, dtype=x.dtype, device=x.device)) - 1
    return _PACTFunction.apply(x, alpha, levels)


class PACT(nn.Module):
    """A learnable clipping level; ``alpha`` starts at ``init_alpha`` (the paper uses 10)."""

    def __init__(self, init_alpha: float = 10.0) -> None:
        super().__init__()
        check_range("init_alpha", init_alpha, 1e-6)
        self.alpha = nn.Parameter(torch.tensor(float(init_alpha)))

    def forward(self, x: torch.Tensor, bits: int | torch.Tensor) -> torch.Tensor:
        return pact_quantize(x, self.alpha, bits)
