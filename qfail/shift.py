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
from types import ModuleType

import torch
import torch.nn.functional as F

from qfail.checks import check_choice, check_range

__all__ = ["SHIFTS", "MNIST_C", "shift", "SEVERITIES"]

SEVERITIES = (0, 1, 2, 3, 4, 5)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tv() -> ModuleType:
    """torchvision's functional transforms, imported on a blur's or resize's first call: importing
    torchvision loads torch._dynamo (1.5 s), which a chapter whose shifts use neither never needs."""
    import torchvision.transforms.v2.functional as tv_functional

    return tv_functional


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
    return _tv().gaussian_blur(x, [size, size], [sigma, sigma])


def brightness(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    return x + _level((0.1, 0.2, 0.3, 0.4, 0.5), severity)


def contrast(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    factor = _level((0.75, 0.5, 0.4, 0.3, 0.15), severity)
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    return (x - mean) * factor + mean


def _warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Resample a batch at ``grid`` (N, H, W, 2) in normalised [-1, 1] coordinates (bilinear, zero fill)."""
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def _per_sample_affine(x: torch.Tensor, seed: int, angle: float = 0.0, shift: float = 0.0,
                       scale: float = 1.0, shear: float = 0.0) -> torch.Tensor:
    """One random affine map per image, applied in one batched ``grid_sample``: rotation and
    shear get a random sign, the translation a random direction. Coordinates are normalised to
    [-1, 1] on square images, so angles and shears act as they do in pixels."""
    gen = _gen(seed)
    n = len(x)
    sign = (torch.rand(n, generator=gen, dtype=torch.float64) < 0.5).double() * 2 - 1
    direction = torch.rand(n, generator=gen, dtype=torch.float64) * 2 * torch.pi
    a, s = torch.deg2rad(sign * angle), torch.tan(torch.deg2rad(sign * torch.tensor(shear, dtype=torch.float64)))
    rotation = torch.stack([torch.stack([a.cos(), -a.sin()], -1), torch.stack([a.sin(), a.cos()], -1)], -2)
    shearing = torch.zeros(n, 2, 2, dtype=torch.float64)
    shearing[:, 0, 0], shearing[:, 0, 1], shearing[:, 1, 1] = 1.0, s, 1.0
    forward = torch.zeros(n, 3, 3, dtype=torch.float64)
    forward[:, :2, :2] = scale * rotation @ shearing
    forward[:, 0, 2], forward[:, 1, 2] = 2 * shift * direction.cos(), 2 * shift * direction.sin()
    forward[:, 2, 2] = 1.0
    theta = torch.linalg.inv(forward)[:, :2]  # affine_grid maps output coordinates back to input ones
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return _warp(x, grid)


def rotate(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    return _per_sample_affine(x, seed, angle=_level((6.0, 12.0, 18.0, 25.0, 35.0), severity))


def translate(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    return _per_sample_affine(x, seed, shift=_level((0.06, 0.1, 0.14, 0.18, 0.24), severity))


def scale(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    return _per_sample_affine(x, seed, scale=_level((0.9, 0.8, 0.7, 0.6, 0.5), severity))


def elastic(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """Smooth random displacement fields (Simard et al. 2003), one per image."""
    alpha = _level((0.04, 0.07, 0.1, 0.14, 0.18), severity)  # displacement, in units of the image side
    n, _, h, w = x.shape
    sigma = max(h, w) / 8
    size = 2 * int(2 * sigma) + 1
    field = torch.rand(n, 2, h, w, generator=_gen(seed)) * 2 - 1
    field = _tv().gaussian_blur(field, [size, size], [sigma, sigma])
    field = field / field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8) * alpha * 2  # [-1, 1] spans a side
    identity = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), [n, 1, h, w], align_corners=False)
    return _warp(x, identity + field.permute(0, 2, 3, 1))


def pixelate(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    keep = _level((0.8, 0.65, 0.5, 0.4, 0.3), severity)
    h, w = x.shape[-2:]
    tv = _tv()
    small = tv.resize(x, [max(1, round(h * keep)), max(1, round(w * keep))],
                      interpolation=tv.InterpolationMode.BILINEAR, antialias=True)
    return tv.resize(small, [h, w], interpolation=tv.InterpolationMode.NEAREST)


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
    return torch.linalg.vector_norm(g, dim=1, keepdim=True).reshape(x.shape)  # exact sqrt (qfail.isa)


def canny_edges(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """The image replaced, in part, by its edges (smoothed Sobel magnitude, thresholded; MNIST-C
    uses Canny's detector): severity is the share of the edge map in the mix."""
    mix = _level((0.2, 0.4, 0.6, 0.8, 1.0), severity)
    sigma = 0.5 * x.shape[-1] / 28
    smooth = _tv().gaussian_blur(x, [3, 3], [max(sigma, 0.3)] * 2)
    magnitude = _sobel(smooth)
    edges = (magnitude > 0.5 * magnitude.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-8)).to(x.dtype)
    return (1 - mix) * x + mix * edges


def _segment_masks(h: int, w: int, starts: torch.Tensor, ends: torch.Tensor, every: int = 1) -> torch.Tensor:
    """(N, h, w) masks of the pixels on N groups of segments, ``starts`` and ``ends`` (N, S, 2) in
    pixel units; each segment is sampled at one point per pixel of its longer side, and
    ``every`` > 1 keeps every ``every``-th of them (a dotted line)."""
    n = starts.shape[0]
    steps = (ends - starts).abs().amax(-1).ceil().long() + 1  # (N, S) samples per segment
    j = torch.arange(int(steps.max()))
    t = j / (steps[..., None] - 1).clamp(min=1)  # (N, S, M)
    keep = (j < steps[..., None]) & (j % every == 0)
    points = (starts[..., None, :] + t[..., None] * (ends - starts)[..., None, :]).round().long()
    rows, cols = points[..., 0].clamp(0, h - 1), points[..., 1].clamp(0, w - 1)
    flat = torch.arange(n).view(n, 1, 1) * (h * w) + rows * w + cols
    mask = torch.zeros(n * h * w)
    mask[flat[keep]] = 1.0
    return mask.view(n, h, w)


def _lines(x: torch.Tensor, seed: int, count: int, vertices: int, every: int) -> torch.Tensor:
    """``count`` bright polylines of ``vertices`` random vertices drawn over every image."""
    n, _, h, w = x.shape
    vertices_ = torch.rand(n, count, vertices, 2, generator=_gen(seed)) * torch.tensor([h - 1.0, w - 1.0])
    starts = vertices_[:, :, :-1].reshape(n, -1, 2)
    ends = vertices_[:, :, 1:].reshape(n, -1, 2)
    return torch.maximum(x, _segment_masks(h, w, starts, ends, every).to(x.dtype)[:, None])


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
    tv = _tv()
    haze = tv.resize(coarse, [h, w], interpolation=tv.InterpolationMode.BICUBIC, antialias=False).clamp(0, 1)
    return x + strength * haze.expand_as(x)


def glass_blur(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """Blur, then every pixel swapped with a random neighbour within ``delta`` pixels, repeatedly
    (the frosted-glass effect of ImageNet-C)."""
    sigma, delta, rounds = _level(((0.4, 1, 1), (0.5, 1, 2), (0.6, 1, 3), (0.7, 2, 2), (0.9, 2, 3)), severity)
    sigma = sigma * x.shape[-1] / 28
    out = _tv().gaussian_blur(x, [3, 3], [max(sigma, 0.3)] * 2)
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
    """A straight streak: each image convolved with a line kernel at a random angle (one grouped
    convolution for the whole batch)."""
    length = max(1 + severity, round(_level((3, 5, 7, 9, 11), severity) * x.shape[-1] / 28))
    size = 2 * ((length + 1) // 2) + 1
    n, c, h, w = x.shape
    angle = torch.rand(n, generator=_gen(seed)) * torch.pi
    direction = torch.stack([angle.sin(), angle.cos()], -1)  # (N, 2), rows then columns
    centre = torch.full((n, 1, 2), float(size // 2))
    half = (direction * length / 2)[:, None]
    kernels = _segment_masks(size, size, centre - half, centre + half).to(x.dtype)
    kernels = kernels / kernels.sum(dim=(1, 2), keepdim=True)
    weight = kernels[:, None].repeat_interleave(c, dim=0)  # (N*C, 1, k, k): one kernel per image and channel
    out = F.conv2d(x.reshape(1, n * c, h, w), weight, padding=size // 2, groups=n * c)
    return out.view(n, c, h, w)


def spatter(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """Bright splashes: blurred noise above a threshold, the covered share growing with severity."""
    cover = _level((0.04, 0.08, 0.12, 0.17, 0.23), severity)
    h, w = x.shape[-2:]
    noise = torch.rand(len(x), 1, h, w, generator=_gen(seed), dtype=x.dtype)
    sigma = max(0.5, h / 16)
    smooth = _tv().gaussian_blur(noise, [2 * int(2 * sigma) + 1] * 2, [sigma, sigma])
    threshold = torch.quantile(smooth.flatten(1), 1 - cover, dim=1).view(-1, 1, 1, 1)
    return torch.maximum(x, (smooth > threshold).to(x.dtype).expand_as(x))


def stripe(x: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """A vertical band of the image inverted, wider with severity."""
    width = max(severity, round(_level((0.06, 0.1, 0.14, 0.18, 0.24), severity) * x.shape[-1]))
    start = torch.randint(0, x.shape[-1] - width + 1, (len(x), 1), generator=_gen(seed))
    column = torch.arange(x.shape[-1])
    band = ((column >= start) & (column < start + width)).view(len(x), 1, 1, -1)
    return torch.where(band, 1 - x, x)


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
        side = round(x.shape[1] ** 0.5)
        if side * side != x.shape[1]:
            raise ValueError(f"a flat batch needs square images; got {x.shape[1]} features")
        x4 = x.reshape(len(x), 1, side, side)
    elif x.dim() == 4:
        x4 = x
    else:
        raise ValueError(f"x must have shape (N, C, H, W) or (N, D); got {tuple(x.shape)}")
    out = SHIFTS[name](x4, severity, seed).clamp(0.0, 1.0).to(x.dtype)
    return out.reshape(x.shape)
