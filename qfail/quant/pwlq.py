"""PWLQ: piecewise linear quantization of weights (Fang et al., ECCV 2020, arXiv 2002.00104).

Bell-shaped weights waste uniform levels on their long tails. PWLQ splits [-m, m] (m = max|w|)
at a breakpoint p: the centre [-p, p] gets a b-bit symmetric grid and each tail [p, m] a
(b-1)-bit affine grid, so both regions hold the same number of levels (option 2 of the official
code, ``jun-fang/PWLQ/quant/pwlq.py``). The breakpoint ratio p/m is found by the paper's
coarse-to-fine grid search on the L2 error, separately for each output channel.

Shapes: ``w`` is (C_out, ...); ratios are (C_out, K) for K candidates.
"""
from __future__ import annotations

import torch

from qfail.checks import FULL_PRECISION, check_bits, check_choice

__all__ = ["pwlq_quantize", "pwlq_breakpoints"]


def _uniform_symmetric(x: torch.Tensor, bits: int, m: torch.Tensor) -> torch.Tensor:
    scale = torch.clamp(2 * m / (2 ** bits - 1), min=1e-12)
    return torch.clamp(torch.round(x / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * scale


def _uniform_affine(x: torch.Tensor, bits: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    scale = torch.clamp((hi - lo) / (2 ** bits - 1), min=1e-12)
    return torch.clamp(torch.round((x - lo) / scale), 0, 2 ** bits - 1) * scale + lo


def _pwlq(w: torch.Tensor, bits: int, p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Option-2 PWLQ of ``w`` (C, ..., N) with breakpoints ``p`` and maxima ``m`` broadcasting."""
    centre = _uniform_symmetric(torch.clamp(w, -p, p), bits, p)
    tail = torch.sign(w) * _uniform_affine(w.abs().clamp(min=p), bits - 1, p, m)
    return torch.where(w.abs() < p, centre, tail)


def pwlq_breakpoints(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-channel breakpoints p (shape (C,)) minimising ||Q(w) - w||_2, coarse to fine."""
    flat = w.detach().reshape(w.shape[0], 1, -1)  # (C, 1, N)
    m = flat.abs().amax(dim=2, keepdim=True)  # (C, 1, 1)
    best = torch.full((w.shape[0],), 0.5, device=w.device)
    for step, half_width in ((0.1, None), (0.01, 0.1), (0.001, 0.01)):
        if half_width is None:
            ratios = torch.arange(0.1, 0.95, step, device=w.device).expand(w.shape[0], -1)
        else:
            offsets = torch.arange(-half_width, half_width + step / 2, step, device=w.device)
            ratios = (best[:, None] + offsets).clamp(0.01, 0.999)  # (C, K)
        p = ratios[:, :, None] * m  # (C, K, 1)
        err = (_pwlq(flat, bits, p, m) - flat).pow(2).sum(dim=2)  # (C, K)
        best = ratios.gather(1, err.argmin(dim=1, keepdim=True)).squeeze(1)
    return best * m.reshape(-1)


def pwlq_quantize(w: torch.Tensor, bits: int, granularity: str = "per_channel") -> torch.Tensor:
    """PWLQ-quantized copy of ``w``; bits 32 returns ``w``. At 2 bits each tail keeps two levels."""
    check_bits("bits", bits)
    check_choice("granularity", granularity, ("per_channel", "per_tensor"))
    if bits == FULL_PRECISION:
        return w
    src = w if granularity == "per_channel" else w.reshape(1, -1)
    p = pwlq_breakpoints(src, bits)
    flat = src.detach().reshape(src.shape[0], -1)
    m = flat.abs().amax(dim=1, keepdim=True)
    out = _pwlq(flat, bits, p[:, None], m)
    # straight-through: the value of PWLQ, the gradient of the identity
    return w + (out.reshape(w.shape) - w).detach()
