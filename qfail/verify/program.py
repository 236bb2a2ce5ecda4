"""Networks as verifiable programs: extraction of the exact arithmetic a network runs.

A network is *extracted* into a :class:`Program`, a list of three kinds of steps: ``Affine`` (a
Linear layer with its weights exactly as the network uses them, i.e. already quantized),
``ReLU``, and ``ActQuant`` (activation rounding). Three networks extract: a plain
``nn.Sequential`` MLP, qfail's :class:`~qfail.quant.QuantizedModel` over one, and the
``Sequential`` that ``torch.ao`` dynamic INT8 quantization returns. :mod:`qfail.verify.bounds`
propagates input boxes through a program; :mod:`qfail.verify.consistency` decides whether two
programs take the same decision on a box.

Shape legend: ``N`` boxes (or inputs), ``d`` input features, ``K`` outputs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from qfail.quant.model import QuantizedModel, QuantLayer

__all__ = ["Affine", "ReLU", "ActQuant", "Step", "Program", "extract", "zero_bias", "UNIT_ROUNDOFF_32"]

UNIT_ROUNDOFF_32 = 2.0 ** -24  # unit roundoff of float32


def gamma32(n: int) -> float:
    """Twice Higham's gamma_n in float32: bounds the error of a float32 sum of n products, in any
    order, relative to the sum of their magnitudes."""
    return 2 * n * UNIT_ROUNDOFF_32 / (1 - n * UNIT_ROUNDOFF_32)


@dataclass
class Affine:
    """y = W x + b, with W and b as the network uses them (float64 copies)."""

    weight: torch.Tensor
    bias: torch.Tensor
    float32: bool = True  # widen by float32 rounding error (False: bounds in exact arithmetic)
    _weight32: tuple[torch.Tensor, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def slack(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Worst-case float32 error of computing W x + b for x in [lo, hi] (per output)."""
        if not self.float32:
            return torch.zeros(lo.shape[0], self.weight.shape[0], dtype=lo.dtype)
        mag = torch.maximum(lo.abs(), hi.abs())
        return self.rounding_gamma() * (mag @ self.weight.abs().T + self.bias.abs())

    def rounding_gamma(self) -> float:
        """The network's own float32 error of W x + b, relative to |W| |x| + |b|: twice Higham's
        gamma_{n+2} (for blocked sums), 0 where bounds are in exact arithmetic."""
        if not self.float32:
            return 0.0
        return gamma32(self.weight.shape[1] + 2)

    def weight_float32(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """W and |W| rounded to float32, and the float64 sums of |W|'s rows: computed once, for
        the float32 products of wide steps and for the forward pass."""
        if self._weight32 is None:
            w32 = self.weight.float()
            self._weight32 = (w32, w32.abs(), w32.abs().double().sum(1))
        return self._weight32


@dataclass
class ReLU:
    """max(x, 0), element-wise."""


@dataclass
class ActQuant:
    """Activation rounding at a layer input.

    ``static``: fixed scale/zero point; ``apply`` is the network's own float32 quantizer.
    ``dynamic``: scale from each input's own range (per sample); only ``bits``/``scheme`` matter.
    """

    mode: str
    bits: int
    scheme: str = "asymmetric"
    apply: Callable[[torch.Tensor], torch.Tensor] | None = None
    step: float = 0.0  # static: the scale s
    clip: tuple[float, float] = (-np.inf, np.inf)  # static: values that round without clamping

    def levels(self) -> int:
        return 2 ** self.bits - 1

    def max_step(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """(N, 1) the largest scale any input of the box can get (dynamic mode)."""
        top = hi.max(dim=1, keepdim=True).values.clamp(min=0)
        bottom = lo.min(dim=1, keepdim=True).values.clamp(max=0)
        if self.scheme == "symmetric":
            return torch.maximum(top, -bottom) / (2 ** (self.bits - 1) - 1)
        return (top - bottom) / self.levels()


Step = Affine | ReLU | ActQuant


@dataclass
class Program:
    """A network as a list of steps, plus an STE-differentiable forward pass for the falsifier."""

    steps: list[Step]
    in_features: int
    out_features: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output on ``x`` (N, d), in float32 as the network computes it (up to the
        order of its sums); the rounding steps pass gradients straight through."""
        x = x.to(torch.float32)
        for step in self.steps:
            if isinstance(step, Affine):
                x = x @ step.weight_float32()[0].T + step.bias.float()
            elif isinstance(step, ReLU):
                x = torch.relu(x)
            elif step.mode == "static":
                x = x + (step.apply(x.detach()) - x).detach()  # straight-through: exact value, identity gradient
            else:
                x = x + (_dynamic_round(x.detach(), step) - x).detach()
        return x


def _dynamic_round(x: torch.Tensor, step: ActQuant) -> torch.Tensor:
    from qfail.quant.primitives import fake_quantize_tensor

    return fake_quantize_tensor(x, step.bits, step.scheme, axis=0)


def _static_quant(layer: QuantLayer) -> ActQuant:
    scale, zp, q_min, q_max = layer.input_grid()
    s, z = float(scale), float(zp)
    def apply(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # no range tracking, whatever mode the model is in
            return layer.quantize_input(t)

    return ActQuant("static", layer.act_bits, layer.config.act_scheme, apply=apply, step=s,
                    clip=((q_min - z) * s, (q_max - z) * s))


@torch.no_grad()
def extract(model: nn.Module, float32: bool = True) -> Program:
    """The :class:`Program` of a Sequential MLP, a QuantizedModel over one, or its dynamic INT8 copy.

    ``float32=False`` drops the float32 rounding allowance (bounds then hold in exact arithmetic,
    which is what other verifiers compute; used to compare with them).
    """
    from torch.ao.nn.quantized import dynamic as nnqd

    net = model.net if isinstance(model, QuantizedModel) else model
    if not isinstance(net, nn.Sequential):
        raise ValueError(f"model={type(net).__name__} is not supported; allowed: nn.Sequential of "
                         "Linear/ReLU, a QuantizedModel over one, or its torch.ao dynamic INT8 copy")
    if isinstance(model, QuantizedModel) and model.config.act_mode == "pact":
        raise ValueError("act_mode='pact' is not supported by extract(); allowed: 'static', 'dynamic'")
    steps: list[Step] = []
    for module in net:
        if isinstance(module, QuantLayer):
            if module.enabled and module.act_bits != 32:
                if module.config.act_mode == "static":
                    steps.append(_static_quant(module))
                else:
                    steps.append(ActQuant("dynamic", module.act_bits, module.config.act_scheme))
            w = module.quantized_weight() if module.enabled else module.layer.weight
            steps.append(Affine(w.detach().double().clone(), zero_bias(module.layer.bias, w.shape[0])))
        elif isinstance(module, nnqd.Linear):
            # quantized::linear_dynamic rounds the input to uint8 with reduce_range (7 bits) on x86;
            # modelling it with 7 bits is sound for 8 as well (the error bound only grows)
            steps.append(ActQuant("dynamic", 7, "asymmetric"))
            steps.append(Affine(module.weight().dequantize().double(), zero_bias(module.bias(), module.out_features)))
        elif isinstance(module, nn.Linear):
            steps.append(Affine(module.weight.detach().double().clone(), zero_bias(module.bias, module.out_features)))
        elif isinstance(module, nn.ReLU):
            steps.append(ReLU())
        elif not isinstance(module, (nn.Identity, nn.Flatten, nn.Dropout)):
            raise ValueError(f"layer {type(module).__name__} is not supported; allowed: Linear, ReLU, Identity, "
                             "Flatten, Dropout")
    affines = [s for s in steps if isinstance(s, Affine)]
    for affine in affines:
        affine.float32 = float32
    if not affines:
        raise ValueError("model has no Linear layer")
    return Program(steps, affines[0].weight.shape[1], affines[-1].weight.shape[0])


def zero_bias(bias: torch.Tensor | None, out: int) -> torch.Tensor:
    """The layer's bias as float64, or zeros for a layer without one."""
    return torch.zeros(out, dtype=torch.float64) if bias is None else bias.detach().double().clone()


