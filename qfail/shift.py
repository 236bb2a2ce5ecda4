"""Synthetic distribution shifts for image batches, with a severity scale 1..5 (0 = identity).

Every shift is a pure function ``(x, severity, seed) -> x'`` on a float batch (N, C, H, W) with
values in [0, 1]: the output keeps shape, dtype and range, and the same seed gives the same
result. Random parameters are drawn from a private ``torch.Generator``, never from the global
RNG. Geometric and blur shifts call torchvision's functional transforms; their strengths are
given relative to the image side, so that 8x8 digits and 32x32 CIFAR images shift alike. The
menu follows MNIST-C / CIFAR-10-C (Mu & Gilmer 2019; Hendrycks & Dietterich 2019), restricted
to what runs without downloads.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision.transforms.v2.functional as TF

from qfail.checks import check_choice, check_range

__all__ = ["SHIFTS", "shift", "SEVERITIES"]

SEVERITIES = (0, 1, 2, 3, 4, 5)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _level(values: tuple[float, ...], severity: int) -> float:
    return values[severity - 1]


def gaussian_noise(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    sigma = _level((0.04, 0.08, 0.12, 0.18, 0.26), severity)
    return x + sigma * torch.randn(x.shape, generator=_gen(seed), dtype=x.dtype)


def shot_noise(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    photons = _level((60.0, 25.0, 12.0, 5.0, 3.0), severity)
    return torch.poisson(x.double() * photons, generator=_gen(seed)).to(x.dtype) / photons


def impulse_noise(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    amount = _level((0.03, 0.06, 0.09, 0.17, 0.27), severity)
    gen = _gen(seed)
    hit = torch.rand(x.shape, generator=gen) < amount
    salt = torch.rand(x.shape, generator=gen) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


def gaussian_blur(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    sigma = _level((0.6, 0.9, 1.2, 1.6, 2.0), severity) * x.shape[-1] / 28
    size = 2 * max(1, int(3 * sigma + 0.5)) + 1
    return TF.gaussian_blur(x, [size, size], [sigma, sigma])


def brightness(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    return x + _level((0.1, 0.2, 0.3, 0.4, 0.5), severity)


def contrast(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    factor = _level((0.75, 0.5, 0.4, 0.3, 0.15), severity)
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    return (x - mean) * factor + mean


def _per_sample_affine(x: torch.Tensor, seed: int, angle: float = 0.0, shift: float = 0.0,
                       scale: float = 1.0) -> torch.Tensor:
    gen = _gen(seed)
    out = torch.empty_like(x)
    side = x.shape[-1]
    for i in range(len(x)):
        sign = 1.0 if torch.rand(1, generator=gen).item() < 0.5 else -1.0
        direction = torch.rand(1, generator=gen).item() * 2 * torch.pi
        dx = shift * side * torch.cos(torch.tensor(direction)).item()
        dy = shift * side * torch.sin(torch.tensor(direction)).item()
        out[i] = TF.affine(x[i], angle=sign * angle, translate=[dx, dy], scale=scale, shear=[0.0, 0.0],
                           interpolation=TF.InterpolationMode.BILINEAR)
    return out


def rotate(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    return _per_sample_affine(x, seed, angle=_level((6.0, 12.0, 18.0, 25.0, 35.0), severity))


def translate(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    return _per_sample_affine(x, seed, shift=_level((0.06, 0.1, 0.14, 0.18, 0.24), severity))


def scale(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    return _per_sample_affine(x, seed, scale=_level((0.9, 0.8, 0.7, 0.6, 0.5), severity))


def elastic(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """Smooth random displacement fields (Simard et al. 2003), one per image."""
    alpha = _level((0.04, 0.07, 0.1, 0.14, 0.18), severity)  # displacement, in units of the image side
    h, w = x.shape[-2:]
    gen = _gen(seed)
    out = torch.empty_like(x)
    sigma = max(h, w) / 8
    size = 2 * int(2 * sigma) + 1
    for i in range(len(x)):
        field = torch.rand(2, h, w, generator=gen) * 2 - 1
        field = TF.gaussian_blur(field.unsqueeze(0), [size, size], [sigma, sigma])[0]
        field = field / field.abs().amax().clamp(min=1e-8) * alpha * 2  # grid units: [-1, 1] spans the side
        out[i] = TF.elastic(x[i], field.permute(1, 2, 0).unsqueeze(0), interpolation=TF.InterpolationMode.BILINEAR)
    return out


def pixelate(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    keep = _level((0.8, 0.65, 0.5, 0.4, 0.3), severity)
    h, w = x.shape[-2:]
    small = TF.resize(x, [max(1, round(h * keep)), max(1, round(w * keep))],
                      interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.resize(small, [h, w], interpolation=TF.InterpolationMode.NEAREST)


def posterize(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """Intensity quantization (a JPEG-like loss of grey levels): 2^k levels."""
    levels = _level((16, 8, 6, 4, 2), severity)
    return torch.round(x * (levels - 1)) / (levels - 1)


SHIFTS: dict[str, Callable[[torch.Tensor, int, int], torch.Tensor]] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "gaussian_blur": gaussian_blur, "brightness": brightness, "contrast": contrast, "rotate": rotate,
    "translate": translate, "scale": scale, "elastic": elastic, "pixelate": pixelate, "posterize": posterize,
}


def shift(x: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """Apply shift ``name`` at ``severity`` (0 = unchanged) to a batch in [0, 1].

    Accepts (N, C, H, W), or flat (N, D) with D a square (reshaped to one channel and back).
    """
    check_choice("shift", name, tuple(SHIFTS))
    check_choice("severity", severity, SEVERITIES)
    check_range("seed", seed, 0, integer=True)
    if severity == 0:
        return x.clone()
    flat = x.dim() == 2
    if flat:
        side = int(round(x.shape[1] ** 0.5))
        if side * side != x.shape[1]:
            raise ValueError(f"a flat batch needs square images; got {x.shape[1]} features")
        x4 = x.reshape(len(x), 1, side, side)
    elif x.dim() == 4:
        x4 = x
    else:
        raise ValueError(f"x must have shape (N, C, H, W) or (N, D); got {tuple(x.shape)}")
    out = SHIFTS[name](x4, severity, seed).clamp(0.0, 1.0).to(x.dtype)
    return out.reshape(x.shape)
