"""Range estimation for static post-training quantization.

An observer sees a few calibration batches and returns the clipping range [lo, hi] that the
quantizer then keeps fixed. Three estimators, as in torch.ao and TensorRT calibration:

* ``minmax``: the extreme values seen; never clips, wastes levels on outliers.
* ``percentile``: the p-th and (100-p)-th percentiles; clips rare outliers.
* ``mse``: the symmetric shrink of the min-max range that minimises the mean squared
  quantization error on the observed values (a 1-D grid search, as in Banner et al. 2019).

``axis`` keeps one range per index of that dimension (per output channel for weights).
"""
from __future__ import annotations

import torch

from qfail.checks import check_choice, check_range
from qfail.quant.primitives import choose_qparams, fake_quantize, integer_levels, reduce_dims

__all__ = ["Observer", "OBSERVERS"]

OBSERVERS = ("minmax", "percentile", "mse")


class Observer:
    """Accumulates the statistics of the tensors passed to :meth:`update`.

    Args:
        method: one of ``OBSERVERS``.
        axis: ``None`` for one range, else the dimension that keeps its own range.
        percentile: for ``percentile``, the upper percentile (the lower one is 100 - p).
        max_samples: values kept for percentile/MSE estimates (a seeded random subset beyond it).
    """

    def __init__(self, method: str = "minmax", axis: int | None = None, percentile: float = 99.99,
                 max_samples: int = 1 << 20) -> None:
        self.method = check_choice("observer", method, OBSERVERS)
        self.percentile = check_range("percentile", percentile, 50.0, 100.0)
        self.axis = axis
        self.max_samples = max_samples
        self._lo: torch.Tensor | None = None
        self._hi: torch.Tensor | None = None
        self._samples: list[torch.Tensor] = []

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        dims = reduce_dims(x, self.axis)
        lo, hi = x.amin(dim=dims), x.amax(dim=dims)
        self._lo = lo if self._lo is None else torch.minimum(self._lo, lo)
        self._hi = hi if self._hi is None else torch.maximum(self._hi, hi)
        if self.method != "minmax":
            flat = x.movedim(self.axis, 0).reshape(x.shape[self.axis], -1) if self.axis is not None \
                else x.reshape(1, -1)
            self._samples.append(flat.cpu())

    def _kept(self) -> torch.Tensor:
        flat = torch.cat(self._samples, dim=1)
        if flat.shape[1] > self.max_samples:
            gen = torch.Generator().manual_seed(0)
            flat = flat[:, torch.randperm(flat.shape[1], generator=gen)[: self.max_samples]]
        return flat

    def range(self, bits: int = 8, scheme: str = "asymmetric") -> tuple[torch.Tensor, torch.Tensor]:
        """The clipping range (shape () per tensor, (C,) per channel)."""
        if self._lo is None:
            raise RuntimeError("observer has seen no data: run calibration batches first")
        if self.method == "minmax":
            lo, hi = self._lo, self._hi
        elif self.method == "percentile":
            flat = self._kept()
            q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
            lo, hi = torch.quantile(flat, q[0], dim=1), torch.quantile(flat, q[1], dim=1)
        else:
            lo, hi = self._mse_range(self._kept(), bits, scheme)
        if self.axis is None:
            lo, hi = lo.reshape(()), hi.reshape(())
        return lo.to(self._lo.device), hi.to(self._hi.device)

    def _mse_range(self, flat: torch.Tensor, bits: int, scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
        lo0, hi0 = flat.amin(dim=1), flat.amax(dim=1)
        q_min, q_max = integer_levels(bits, scheme)
        best_err = torch.full_like(lo0, float("inf"))
        best_lo, best_hi = lo0.clone(), hi0.clone()
        for ratio in torch.linspace(0.3, 1.0, 71):
            lo, hi = lo0 * ratio, hi0 * ratio
            s, z = choose_qparams(lo, hi, bits, scheme)
            err = (fake_quantize(flat, s[:, None], z[:, None], q_min, q_max) - flat).pow(2).mean(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo, best_hi = torch.where(better, lo, best_lo), torch.where(better, hi, best_hi)
        return best_lo, best_hi
