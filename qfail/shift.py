"""Synthetic distribution shifts for image batches, with a severity scale 1..5 (0 = identity).

Every shift is a pure function ``(x, severity, seed) -> x'`` on a float batch (N, C, H, W) with
values in [0, 1]: the output keeps shape, dtype and range, and the same seed gives the same
result. Random parameters are drawn from a private ``torch.Generator``, never from the global
RNG. Geometric and blur shifts call torchvision's functional transforms; their strengths are
given relative to the image side, so that 8x8 digits and 32x32 CIFAR images shift alike. The
menu follows MNIST-C / CIFAR-10-C (Mu & Gilmer 2019; Hendrycks & Dietterich 2019) and holds all
fifteen MNIST-C corruptions (``MNIST_C``), each with five severities: MNIST-C itself applies one
fixed strength, which here sits near the middle of the scale.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision.transforms.v2.functional as TF

from qfail.checks import check_choice, check_range

__all__ = ["SHIFTS", "MNIST_C", "shift", "SEVERITIES"]

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
                       scale: float = 1.0, shear: float = 0.0) -> torch.Tensor:
    gen = _gen(seed)
    out = torch.empty_like(x)
    side = x.shape[-1]
    for i in range(len(x)):
        sign = 1.0 if torch.rand(1, generator=gen).item() < 0.5 else -1.0
        direction = torch.rand(1, generator=gen).item() * 2 * torch.pi
        dx = shift * side * torch.cos(torch.tensor(direction)).item()
        dy = shift * side * torch.sin(torch.tensor(direction)).item()
        out[i] = TF.affine(x[i], angle=sign * angle, translate=[dx, dy], scale=scale, shear=[sign * shear, 0.0],
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


def shear(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    return _per_sample_affine(x, seed, shear=_level((8.0, 15.0, 22.0, 30.0, 40.0), severity))


def _sobel(x: torch.Tensor) -> torch.Tensor:
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype)
    kernel = torch.stack([kx, kx.T]).unsqueeze(1)  # (2, 1, 3, 3)
    flat = x.reshape(-1, 1, *x.shape[-2:])
    g = torch.nn.functional.conv2d(flat, kernel, padding=1)
    return g.pow(2).sum(1, keepdim=True).sqrt().reshape(x.shape)


def canny_edges(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """The image replaced, in part, by its edges (smoothed Sobel magnitude, thresholded; MNIST-C
    uses Canny's detector): severity is the share of the edge map in the mix."""
    mix = _level((0.2, 0.4, 0.6, 0.8, 1.0), severity)
    sigma = 0.5 * x.shape[-1] / 28
    smooth = TF.gaussian_blur(x, [3, 3], [max(sigma, 0.3)] * 2)
    magnitude = _sobel(smooth)
    edges = (magnitude > 0.5 * magnitude.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-8)).to(x.dtype)
    return (1 - mix) * x + mix * edges


def _polyline_mask(h: int, w: int, points: torch.Tensor, every: int = 1) -> torch.Tensor:
    """A (h, w) mask of the pixels on the segments through ``points`` (K, 2) in pixel units;
    ``every`` > 1 keeps every ``every``-th pixel only (a dotted line)."""
    mask = torch.zeros(h, w)
    for a, b in zip(points[:-1], points[1:]):
        n = int((b - a).abs().max().ceil()) + 1
        t = torch.linspace(0, 1, n)[::every]
        pts = (a[None] + t[:, None] * (b - a)[None]).round().long()
        pts[:, 0].clamp_(0, h - 1)
        pts[:, 1].clamp_(0, w - 1)
        mask[pts[:, 0], pts[:, 1]] = 1.0
    return mask


def _lines(x: torch.Tensor, seed: int, count: int, vertices: int, every: int) -> torch.Tensor:
    gen = _gen(seed)
    h, w = x.shape[-2:]
    out = x.clone()
    for i in range(len(x)):
        mask = torch.zeros(h, w)
        for _ in range(count):
            pts = torch.rand(vertices, 2, generator=gen) * torch.tensor([h - 1.0, w - 1.0])
            mask = torch.maximum(mask, _polyline_mask(h, w, pts, every))
        out[i] = torch.maximum(out[i], mask.to(x.dtype))
    return out


def dotted_line(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """Bright dotted straight lines across the image (one to five)."""
    return _lines(x, seed, count=severity, vertices=2, every=2)


def zigzag(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """Bright zigzag lines (polylines with random vertices): more and longer with severity."""
    return _lines(x, seed, count=1 + (severity - 1) // 2, vertices=2 + severity, every=1)


def fog(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """A smooth random haze added to the image (coarse noise upsampled: low frequencies only)."""
    strength = _level((0.15, 0.25, 0.35, 0.45, 0.6), severity)
    h, w = x.shape[-2:]
    coarse = torch.rand(len(x), 1, 4, 4, generator=_gen(seed), dtype=x.dtype)
    haze = TF.resize(coarse, [h, w], interpolation=TF.InterpolationMode.BICUBIC, antialias=False).clamp(0, 1)
    return x + strength * haze.expand_as(x)


def glass_blur(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """Blur, then every pixel swapped with a random neighbour within ``delta`` pixels, repeatedly
    (the frosted-glass effect of ImageNet-C)."""
    sigma, delta, rounds = _level(((0.4, 1, 1), (0.5, 1, 2), (0.6, 1, 3), (0.7, 2, 2), (0.9, 2, 3)), severity)
    sigma = sigma * x.shape[-1] / 28
    out = TF.gaussian_blur(x, [3, 3], [max(sigma, 0.3)] * 2)
    gen = _gen(seed)
    n, c, h, w = out.shape
    rows = torch.arange(h).view(1, h, 1).expand(n, h, w)
    cols = torch.arange(w).view(1, 1, w).expand(n, h, w)
    for _ in range(rounds):
        dy = torch.randint(-delta, delta + 1, (n, h, w), generator=gen)
        dx = torch.randint(-delta, delta + 1, (n, h, w), generator=gen)
        r, q = (rows + dy).clamp(0, h - 1), (cols + dx).clamp(0, w - 1)
        index = (r * w + q).view(n, 1, h * w).expand(n, c, h * w)
        out = out.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)
    return out


def motion_blur(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """A straight streak: each image convolved with a line kernel at a random angle."""
    length = max(1 + severity, round(_level((3, 5, 7, 9, 11), severity) * x.shape[-1] / 28))
    size = 2 * ((length + 1) // 2) + 1
    gen = _gen(seed)
    out = torch.empty_like(x)
    centre = torch.tensor([size // 2, size // 2], dtype=torch.float32)
    for i in range(len(x)):
        angle = torch.rand(1, generator=gen).item() * torch.pi
        direction = torch.tensor([torch.sin(torch.tensor(angle)).item(), torch.cos(torch.tensor(angle)).item()])
        ends = torch.stack([centre - direction * length / 2, centre + direction * length / 2])
        kernel = _polyline_mask(size, size, ends).to(x.dtype)
        kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, size, size)
        out[i] = torch.nn.functional.conv2d(x[i:i + 1], kernel, padding=size // 2, groups=x.shape[1])[0]
    return out


def spatter(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """Bright splashes: blurred noise above a threshold, the covered share growing with severity."""
    cover = _level((0.04, 0.08, 0.12, 0.17, 0.23), severity)
    h, w = x.shape[-2:]
    noise = torch.rand(len(x), 1, h, w, generator=_gen(seed), dtype=x.dtype)
    sigma = max(0.5, h / 16)
    smooth = TF.gaussian_blur(noise, [2 * int(2 * sigma) + 1] * 2, [sigma, sigma])
    threshold = torch.quantile(smooth.flatten(1), 1 - cover, dim=1).view(-1, 1, 1, 1)
    return torch.maximum(x, (smooth > threshold).to(x.dtype).expand_as(x))


def stripe(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """A vertical band of the image inverted, wider with severity."""
    width = max(severity, round(_level((0.06, 0.1, 0.14, 0.18, 0.24), severity) * x.shape[-1]))
    gen = _gen(seed)
    out = x.clone()
    for i in range(len(x)):
        start = int(torch.randint(0, x.shape[-1] - width + 1, (1,), generator=gen))
        out[i, ..., start:start + width] = 1 - x[i, ..., start:start + width]
    return out


SHIFTS: dict[str, Callable[[torch.Tensor, int, int], torch.Tensor]] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "gaussian_blur": gaussian_blur, "brightness": brightness, "contrast": contrast, "rotate": rotate,
    "translate": translate, "scale": scale, "elastic": elastic, "pixelate": pixelate, "posterize": posterize,
    "canny_edges": canny_edges, "dotted_line": dotted_line, "fog": fog, "glass_blur": glass_blur,
    "motion_blur": motion_blur, "shear": shear, "spatter": spatter, "stripe": stripe, "zigzag": zigzag,
}
# MNIST-C's fifteen corruptions (Mu & Gilmer, 2019), by their names here
MNIST_C = ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate", "brightness",
           "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges")


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
