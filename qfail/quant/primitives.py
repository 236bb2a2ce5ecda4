"""Uniform affine quantization primitives: the arithmetic every quantizer in qfail shares.

A real value x maps to an integer code q = clamp(round(x / s) + z, q_min, q_max) and back to
x_hat = (q - z) * s (Jacob et al., 2018, eq. 1). ``fake_quantize`` returns x_hat in float so a
model can *simulate* b-bit arithmetic; its gradient is the straight-through estimator (STE):
1 where x lies inside the clipping range [ (q_min - z) s, (q_max - z) s ], 0 outside
(Bengio et al., 2013; the clipped STE used by PACT and torch.ao).

In float32, x / s is computed as torch's kernels compute it, ``x * (1 / s)`` with a float32
reciprocal (its fused fake-quant ops and ``quantize_per_tensor`` alike): on an input near a
rounding tie the division can round the other way (about 1 value in 5 million of a chapter's
activations). Every path here, with or without autograd, is the same function of x as torch's.

Shapes: ``x`` is any tensor; ``scale`` and ``zero_point`` broadcast against it (a scalar tensor
per-tensor, shape (C, 1, ..., 1) per output channel, shape (B, 1, ..., 1) per sample). Bits may
also be a tensor broadcasting the same way, which is how a per-input bit-width policy runs.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from qfail.checks import FULL_PRECISION, check_bits, check_choice

__all__ = [
    "QRange", "qrange", "choose_qparams", "quantize", "dequantize", "fake_quantize",
    "fake_quantize_tensor", "integer_levels", "reduce_dims", "SCHEMES",
]

SCHEMES = ("symmetric", "asymmetric")


@dataclass(frozen=True)
class QRange:
    """The integer codes a b-bit scheme may use."""

    q_min: int
    q_max: int


@functools.lru_cache(maxsize=256, typed=True)  # called on every fake-quant step; the checks still raise
def qrange(bits: int, scheme: str) -> QRange:
    """Signed codes for symmetric, unsigned codes for asymmetric (as in int8 / uint8)."""
    check_bits("bits", bits)
    check_choice("scheme", scheme, SCHEMES)
    if scheme == "symmetric":
        return QRange(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return QRange(0, 2 ** bits - 1)


def integer_levels(bits: torch.Tensor | int, scheme: str) -> tuple:
    """(q_min, q_max) as python ints or as float tensors when bits is a tensor."""
    if isinstance(bits, torch.Tensor):
        b = bits.to(torch.float32)
        if scheme == "symmetric":
            return -(2.0 ** (b - 1)), 2.0 ** (b - 1) - 1
        return torch.zeros_like(b), 2.0 ** b - 1
    r = qrange(bits, scheme)
    return r.q_min, r.q_max


def choose_qparams(lo: torch.Tensor, hi: torch.Tensor, bits: int | torch.Tensor,
                   scheme: str = "asymmetric", eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map [lo, hi] onto the b-bit grid.

    The range is first widened to contain 0 so that 0 is represented exactly (padding and ReLU
    zeros stay exact). Symmetric: z = 0 and s = max(|lo|, |hi|) / q_max. Asymmetric:
    s = (hi - lo) / (q_max - q_min) and z = round(q_min - lo / s), an integer inside the range.

    Example:
        >>> s, z = choose_qparams(torch.tensor(0.), torch.tensor(2.55), 8)
        >>> round(s.item(), 4), z.item()
        (0.01, 0.0)
    """
    if scheme not in SCHEMES:  # the check itself costs more than the rest on a small layer
        check_choice("scheme", scheme, SCHEMES)
    lo = torch.clamp(torch.as_tensor(lo, dtype=torch.float32), max=0.0)
    hi = torch.clamp(torch.as_tensor(hi, dtype=torch.float32), min=0.0)
    q_min, q_max = integer_levels(bits, scheme)
    if scheme == "symmetric":
        scale = torch.maximum(-lo, hi) / q_max
        scale = torch.clamp(scale, min=eps)
        return scale, torch.zeros_like(scale)
    scale = torch.clamp((hi - lo) / (q_max - q_min), min=eps)
    zero_point = torch.clamp(torch.round(q_min - lo / scale), q_min, q_max)
    return scale, zero_point


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
             q_min, q_max) -> torch.Tensor:
    """Integer codes (held in a float tensor so that any bit-width fits)."""
    return torch.clamp(torch.round(x * torch.reciprocal(scale)) + zero_point, q_min, q_max)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    return (q - zero_point) * scale


def _inside_mask(code: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """The clipped STE's mask in float, 1.0 inside the grid and 0.0 outside, computed in ``code``'s
    storage: a code outside lies at least 1 from its clamped value ``kept`` (both are integers).
    Comparisons into bool and ``grad * bool`` cost 3x a float pass; the products are the same bits."""
    return code.sub_(kept).abs_().neg_().add_(1.0).clamp_(min=0.0)


class _PerTensorSTE(torch.autograd.Function):
    """``torch.fake_quantize_per_tensor_affine`` bit for bit, forward and backward, in vectorized
    passes: torch's CPU kernel is a scalar loop around ``std::nearbyint``, about 5x slower on a
    chapter's activations than the same arithmetic here (benchmarks/run_all.py).

    The kernel computes ``code = z + nearbyint(x * (1.0f / s))`` and returns
    ``(clamp(code, q_min, q_max) - z) * s`` with the mask ``q_min <= code <= q_max``. In float32
    the same: the reciprocal is float32, ``round`` rounds half to even as ``nearbyint`` does,
    adding the integer ``z`` is exact below 2^24 (and turns a rounded -0 into +0, as the kernel's
    integer code has no sign of zero), and ``k * s`` for a small integer k rounds as the kernel's
    double product does; the gradient multiplies by a mask of 1.0 and 0.0, as torch's backward
    multiplies by its bool mask. ``tests/quant/test_primitives.py`` checks the bits, ties included.
    They agree wherever the kernel's int64 code is defined (``|x / s| < 2^63``); beyond it the
    kernel's cast is undefined behaviour (on x86, +inf lands on ``q_min``), here it clamps.
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, q_min, q_max):
        code = torch.mul(x, torch.reciprocal(scale)).round_().add_(zero_point)
        kept = code.clamp(q_min, q_max)
        ctx.save_for_backward(_inside_mask(code, kept))
        return kept.sub_(zero_point).mul_(scale)

    @staticmethod
    def backward(ctx, grad_out):
        (inside,) = ctx.saved_tensors
        return grad_out * inside, None, None, None, None


class _FakeQuantizeSTE(torch.autograd.Function):
    """dequantize(quantize(x)) forward; clipped straight-through gradient backward."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, q_min, q_max):
        code = torch.round(x * torch.reciprocal(scale)) + zero_point
        kept = torch.clamp(code, q_min, q_max)
        ctx.save_for_backward(_inside_mask(code, kept))
        return (kept - zero_point) * scale

    @staticmethod
    def backward(ctx, grad_out):
        (inside,) = ctx.saved_tensors
        return grad_out * inside, None, None, None, None


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                  q_min, q_max) -> torch.Tensor:
    """Simulated quantization with the clipped STE.

    Without autograd it is the plain formula computed in place (no mask is built). With
    autograd, a per-tensor grid runs :class:`_PerTensorSTE` (torch's fused per-tensor arithmetic,
    vectorized), a per-channel grid torch's fused kernel, whose gradient is the same clipped STE;
    other shapes (per-sample bits) use :class:`_FakeQuantizeSTE`.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        fused = _fused(x, scale, zero_point, q_min, q_max)
        if fused is not None:
            return fused
        return _FakeQuantizeSTE.apply(x, scale, zero_point, q_min, q_max)
    # clamp(round(x / s) + z, q_min, q_max) - z == clamp(round(x / s), q_min - z, q_max - z) exactly
    # (z is an integer; beyond 2^24 both sides clamp): four passes over one fresh tensor
    q = torch.mul(x, torch.reciprocal(scale)).round_()
    return q.clamp_(q_min - zero_point, q_max - zero_point).mul_(scale)


def _fused(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, q_min, q_max) -> torch.Tensor | None:
    """torch's fused fake-quant (forward and STE backward) where its semantics fit, else None;
    per tensor, its arithmetic in :class:`_PerTensorSTE`."""
    if isinstance(q_min, torch.Tensor) or x.dtype != torch.float32 or scale.requires_grad:
        return None
    scale, zero_point = scale.detach().float(), zero_point.detach()
    if scale.numel() == 1:  # the kernel takes an integer zero point: .int() as torch's op is given it
        return _PerTensorSTE.apply(x, scale.reshape(()), zero_point.reshape(()).int().float(), int(q_min), int(q_max))
    axes = [d for d, n in enumerate(scale.shape) if n != 1]
    if len(axes) == 1 and scale.dim() == x.dim() and scale.shape[axes[0]] == x.shape[axes[0]]:
        return torch.fake_quantize_per_channel_affine(x, scale.flatten(), zero_point.flatten().int(), axes[0],
                                                      int(q_min), int(q_max))
    return None


def reduce_dims(x: torch.Tensor, axis: int | None) -> tuple[int, ...]:
    """Dimensions to reduce over for a per-tensor (``axis=None``) or per-channel range."""
    if axis is None:
        return tuple(range(x.dim()))
    return tuple(d for d in range(x.dim()) if d != axis % x.dim())


def fake_quantize_tensor(x: torch.Tensor, bits: int | torch.Tensor, scheme: str = "asymmetric",
                         axis: int | None = None) -> torch.Tensor:
    """Min-max fake quantization of ``x`` from its own range.

    ``axis=None`` uses one range for the whole tensor; ``axis=k`` one range per index of
    dimension k (axis 0 of a weight = per output channel, axis 0 of an activation = per sample,
    i.e. dynamic quantization). Bits 32 return ``x`` unchanged.
    """
    if not isinstance(bits, torch.Tensor) and check_bits("bits", bits) == FULL_PRECISION:
        return x
    dims = reduce_dims(x, axis)
    lo = x.detach().amin(dim=dims, keepdim=True)
    hi = x.detach().amax(dim=dims, keepdim=True)
    if isinstance(bits, torch.Tensor) and axis is not None:
        shape = [1] * x.dim()
        shape[axis % x.dim()] = -1
        bits = bits.reshape(shape)
    scale, zp = choose_qparams(lo, hi, bits, scheme)
    q_min, q_max = integer_levels(bits, scheme)
    return fake_quantize(x, scale, zp, q_min, q_max)
