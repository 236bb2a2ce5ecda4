"""Quantizing a whole model: per-layer bit-widths over any Conv2d/Linear network.

``quantize_model(model, config, layer_bits)`` copies the model once, folds BatchNorm into the
preceding convolution (for PTQ), and swaps every ``nn.Conv2d``/``nn.Linear`` for a
:class:`QuantLayer` that quantizes the layer's weight and its *input* activation. Each layer
gets its own ``(weight_bits, act_bits)`` from its *layer bits*. The same object serves:

* static PTQ: ``calibrate`` on a few batches, then ranges stay fixed;
* dynamic PTQ: activation ranges come from each input sample at run time;
* QAT: train the wrapped model; the STE passes gradients (static ranges follow an EMA,
  PACT learns its clipping level);
* full precision: ``with qmodel.full_precision():`` runs the very same weights unquantized;
* without rounding: ``with qmodel.without_rounding():`` keeps every clipping (PACT's learned
  level, a static range) and replaces only the rounding by the identity, the smooth surrogate
  of a BPDA attack (Athalye et al., 2018).

Weight-only and activation-only quantization are layer bits with 32 (= float) on one side.
Layer bits are ``(w, a)`` for every layer, a list of pairs in layer order, or a dict
``{layer_name: (w, a)}`` (names as in ``model.named_modules()``; missing names stay float).
Per-input activation bits (chosen per input by a *bit layer_bits*, Frank & Ardis) are set with
``set_sample_act_bits(bits)`` where ``bits`` has shape (B, L) for L quantized layers.
"""
from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from qfail.checks import FULL_PRECISION, check_bits, check_choice, check_range
from qfail.quant.observers import OBSERVERS, Observer
from qfail.quant.pact import pact_quantize
from qfail.quant.primitives import choose_qparams, fake_quantize, fake_quantize_tensor, integer_levels
from qfail.quant.pwlq import pwlq_quantize

__all__ = [
    "QuantConfig", "QuantLayer", "QuantizedModel", "quantize_model", "fold_batchnorm",
    "quantizable_layers", "qat_config", "LayerBits", "ACT_MODES", "WEIGHT_METHODS", "GRANULARITIES",
]

ACT_MODES = ("static", "dynamic", "pact")
WEIGHT_METHODS = ("uniform", "pwlq")
GRANULARITIES = ("per_tensor", "per_channel")
QUANTIZABLE = (nn.Conv2d, nn.Linear)

LayerBits = tuple[int, int] | Sequence[tuple[int, int]] | Mapping[str, tuple[int, int]]


@dataclass(frozen=True)
class QuantConfig:
    """How weights and activations are quantized (bit-widths come from the layer bits).

    Args:
        weight_method: ``uniform`` (affine grid) or ``pwlq`` (piecewise linear, PTQ).
        weight_scheme: ``symmetric`` or ``asymmetric`` (uniform weights only).
        weight_granularity: ``per_channel`` (one scale per output channel) or ``per_tensor``.
        act_mode: ``static`` (calibrated range), ``dynamic`` (per-sample range at run time) or
            ``pact`` (learned clipping level, for QAT).
        act_scheme: grid for activations (``asymmetric`` suits post-ReLU inputs).
        observer: static range estimator, one of ``minmax``, ``percentile``, ``mse``.
        percentile: upper percentile for the ``percentile`` observer.
        fold_bn: fold BatchNorm into the preceding conv before quantizing (PTQ); keep it
            ``False`` for QAT so BatchNorm keeps training.
        ema_momentum: how fast static ranges follow the data while training (QAT).
        pact_init_alpha: starting clipping level of PACT.
    """

    weight_method: str = "uniform"
    weight_scheme: str = "symmetric"
    weight_granularity: str = "per_channel"
    act_mode: str = "static"
    act_scheme: str = "asymmetric"
    observer: str = "minmax"
    percentile: float = 99.99
    fold_bn: bool = True
    ema_momentum: float = 0.1
    pact_init_alpha: float = 10.0

    def __post_init__(self) -> None:
        check_choice("weight_method", self.weight_method, WEIGHT_METHODS)
        check_choice("weight_scheme", self.weight_scheme, ("symmetric", "asymmetric"))
        check_choice("weight_granularity", self.weight_granularity, GRANULARITIES)
        check_choice("act_mode", self.act_mode, ACT_MODES)
        check_choice("act_scheme", self.act_scheme, ("symmetric", "asymmetric"))
        check_choice("observer", self.observer, OBSERVERS)
        check_range("percentile", self.percentile, 50.0, 100.0)
        check_range("ema_momentum", self.ema_momentum, 0.0, 1.0)
        check_range("pact_init_alpha", self.pact_init_alpha, 1e-6)


class QuantLayer(nn.Module):
    """A Conv2d or Linear whose weight and input activation are fake-quantized.

    The wrapped layer's parameters are used as they are (no copy), so QAT updates them.
    """

    def __init__(self, layer: nn.Module, config: QuantConfig, weight_bits: int, act_bits: int) -> None:
        super().__init__()
        if not isinstance(layer, QUANTIZABLE):
            raise ValueError(f"layer={type(layer).__name__} is not quantizable; allowed: Conv2d, Linear")
        self.layer = layer
        self.config = config
        self.enabled = True
        self.rounding = True
        self.calibrating = False
        self.sample_act_bits: torch.Tensor | None = None  # (B,) per-input bits, or None
        self.set_bits(weight_bits, act_bits)
        self.register_buffer("act_lo", torch.tensor(float("nan")))
        self.register_buffer("act_hi", torch.tensor(float("nan")))
        self.observer: Observer | None = None
        if config.act_mode == "pact":
            self.pact_alpha = nn.Parameter(torch.tensor(float(config.pact_init_alpha)))
        self._wq_cache: tuple | None = None
        self._act_cache: tuple | None = None

    def set_bits(self, weight_bits: int, act_bits: int) -> None:
        self.weight_bits = check_bits("weight_bits", weight_bits)
        self.act_bits = check_bits("act_bits", act_bits)
        self._wq_cache = None

    # ----- calibration -------------------------------------------------------------------------
    def start_calibration(self) -> None:
        self.observer = Observer(self.config.observer, percentile=self.config.percentile)
        self.calibrating = True

    def finish_calibration(self) -> None:
        if self.observer is None or self.observer._lo is None:
            raise RuntimeError("calibration saw no batch; pass at least one batch to calibrate()")
        bits = self.act_bits if self.act_bits != FULL_PRECISION else 8
        lo, hi = self.observer.range(bits, self.config.act_scheme)
        self.act_lo.copy_(lo)
        self.act_hi.copy_(hi)
        self.calibrating = False
        self.observer = None

    @property
    def calibrated(self) -> bool:
        return math.isfinite(self.act_lo.item())  # one read, no tensor op: checked on every forward

    # ----- quantizers --------------------------------------------------------------------------
    def quantized_weight(self) -> torch.Tensor:
        w = self.layer.weight
        if self.weight_bits == FULL_PRECISION:
            return w
        training = torch.is_grad_enabled() and w.requires_grad
        key = (w._version, w.data_ptr(), self.weight_bits)
        if not training and self._wq_cache is not None and self._wq_cache[0] == key:
            return self._wq_cache[1]
        axis = 0 if self.config.weight_granularity == "per_channel" else None
        if self.config.weight_method == "pwlq":
            wq = pwlq_quantize(w, self.weight_bits, self.config.weight_granularity)
        else:
            wq = fake_quantize_tensor(w, self.weight_bits, self.config.weight_scheme, axis=axis)
        if not training:
            self._wq_cache = (key, wq.detach())
        return wq

    def _act_bits(self, x: torch.Tensor) -> int | torch.Tensor:
        if self.sample_act_bits is None:
            return self.act_bits
        bits = self.sample_act_bits.to(x.device)
        if bits.shape[0] != x.shape[0]:
            raise ValueError(f"sample_act_bits has {bits.shape[0]} rows but the batch has {x.shape[0]}")
        return bits.reshape((-1,) + (1,) * (x.dim() - 1)).float()

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        bits = self._act_bits(x)
        if not isinstance(bits, torch.Tensor) and bits == FULL_PRECISION:
            return x
        mode = self.config.act_mode
        if not self.rounding:
            return self._clip_only(x, mode)
        if mode == "pact":
            return pact_quantize(x, self.pact_alpha, bits)
        if mode == "dynamic":
            return fake_quantize_tensor(x, bits, self.config.act_scheme, axis=0)
        if self.training and torch.is_grad_enabled():
            self._track_range(x)
        if not self.calibrated:
            raise RuntimeError("static activation quantization needs calibrate() before use")
        return fake_quantize(x, *self._static_grid(bits))

    def input_grid(self) -> tuple:
        """``(scale, zero_point, q_min, q_max)`` of the calibrated static input quantizer at the
        layer's own bits: the grid its inputs are rounded to (verification, the chapters' tables)."""
        if not self.calibrated:
            raise RuntimeError("static activation quantization needs calibrate() before use")
        return self._static_grid(self.act_bits)

    def _static_grid(self, bits: int | torch.Tensor) -> tuple:
        """``(scale, zero_point, q_min, q_max)`` of the calibrated range at ``bits``, computed once
        per range: on a controller's 64 units the ten small tensor ops of ``choose_qparams`` cost
        more than the layer's arithmetic, and the range changes only where calibration or a
        training step writes it (in place, which moves its version counter). The cache holds the
        range tensors themselves, so one that ``.to()`` replaces is never mistaken for its successor."""
        scheme = self.config.act_scheme
        if isinstance(bits, torch.Tensor):  # per-sample bits: a grid per input, nothing to keep
            return (*choose_qparams(self.act_lo, self.act_hi, bits, scheme), *integer_levels(bits, scheme))
        state = (self.act_lo._version, self.act_hi._version, bits, scheme)
        cached = self._act_cache
        if cached is None or cached[0] is not self.act_lo or cached[1] is not self.act_hi or cached[2] != state:
            grid = (*choose_qparams(self.act_lo, self.act_hi, bits, scheme), *integer_levels(bits, scheme))
            self._act_cache = cached = (self.act_lo, self.act_hi, state, grid)
        return cached[3]

    def _clip_only(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        """The activation quantizer without its rounding: the clipping alone (identity for dynamic
        ranges, which never clip)."""
        if mode == "pact":
            return torch.minimum(x.clamp(min=0.0), self.pact_alpha)
        if mode == "dynamic":
            return x
        if not self.calibrated:
            raise RuntimeError("static activation quantization needs calibrate() before use")
        scale, zp, q_min, q_max = self._static_grid(self._act_bits(x))
        return torch.maximum(torch.minimum(x, scale * (q_max - zp)), scale * (q_min - zp))

    def _track_range(self, x: torch.Tensor) -> None:
        lo, hi = torch.aminmax(x.detach())
        if not self.calibrated:
            self.act_lo.copy_(lo)
            self.act_hi.copy_(hi)
        else:
            m = self.config.ema_momentum
            self.act_lo.mul_(1 - m).add_(m * lo)
            self.act_hi.mul_(1 - m).add_(m * hi)

    # ----- forward -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.observer.update(x)
            return self.layer(x)
        if not self.enabled:
            return self.layer(x)
        x = self.quantize_input(x)
        w = self.quantized_weight() if self.rounding else self.layer.weight
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)

    def extra_repr(self) -> str:
        return f"weight_bits={self.weight_bits}, act_bits={self.act_bits}, act_mode={self.config.act_mode}"


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the Conv2d/Linear layers of ``model``, in forward-definition order."""
    return [n for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]


def _resolve_layer_bits(layer_bits: LayerBits, names: list[str]) -> dict[str, tuple[int, int]]:
    if isinstance(layer_bits, Mapping):
        unknown = sorted(set(layer_bits) - set(names))
        if unknown:
            raise ValueError(f"layer_bits names unknown layer(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
        return {n: tuple(layer_bits.get(n, (FULL_PRECISION, FULL_PRECISION))) for n in names}
    if isinstance(layer_bits, tuple) and len(layer_bits) == 2 and not any(isinstance(b, (tuple, list)) for b in layer_bits):
        return {n: layer_bits for n in names}  # one (weight_bits, act_bits) pair for every layer
    layer_bits = list(layer_bits)
    if len(layer_bits) != len(names):
        raise ValueError(f"layer_bits has {len(layer_bits)} entries but the model has {len(names)} quantizable layers "
                         f"({', '.join(names)})")
    return {n: tuple(p) for n, p in zip(names, layer_bits)}


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d into it (in place, eval stats).

    The pairs are found by tracing the model with torch.fx, so any architecture works as long
    as it traces; a BatchNorm whose input is not a conv's sole use is left alone.
    """
    from torch.fx import symbolic_trace
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    graph = symbolic_trace(model).graph
    modules = dict(model.named_modules())
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if getattr(src, "op", None) != "call_module" or not isinstance(modules.get(src.target), nn.Conv2d):
            continue
        if len(src.users) != 1:
            continue
        conv, bn = modules[src.target], modules[node.target]
        fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
        _set_submodule(model, src.target, fused)
        _set_submodule(model, node.target, nn.Identity())
    return model


class QuantizedModel(nn.Module):
    """A copy of a model whose Conv2d/Linear layers are :class:`QuantLayer` s."""

    def __init__(self, model: nn.Module, config: QuantConfig, layer_bits: LayerBits) -> None:
        super().__init__()
        self.config = config
        net = copy.deepcopy(model)
        if config.fold_bn:
            net.eval()
            fold_batchnorm(net)
        self.layer_names = quantizable_layers(net)
        if not self.layer_names:
            raise ValueError("model has no Conv2d or Linear layer to quantize")
        bits = _resolve_layer_bits(layer_bits, self.layer_names)
        for name in self.layer_names:
            _set_submodule(net, name, QuantLayer(net.get_submodule(name), config, *bits[name]))
        self.net = net
        # new QuantLayers start in training mode; a PTQ model (folded BN) must not track ranges
        self.train(model.training and not config.fold_bn)

    @property
    def layers(self) -> dict[str, QuantLayer]:
        return {n: self.net.get_submodule(n) for n in self.layer_names}

    @property
    def first_layer(self) -> QuantLayer:
        """The layer that reads the network's input: its input grid is the one the image (or the
        observation) itself is rounded to."""
        return self.net.get_submodule(self.layer_names[0])

    @property
    def layer_bits(self) -> dict[str, tuple[int, int]]:
        return {n: (q.weight_bits, q.act_bits) for n, q in self.layers.items()}

    def set_layer_bits(self, layer_bits: LayerBits) -> QuantizedModel:
        for name, (wb, ab) in _resolve_layer_bits(layer_bits, self.layer_names).items():
            self.layers[name].set_bits(wb, ab)
        return self

    def set_sample_act_bits(self, bits: torch.Tensor | None) -> None:
        """Per-input activation bits, shape (B, L); ``None`` goes back to the static layer bits."""
        if bits is not None and (bits.dim() != 2 or bits.shape[1] != len(self.layer_names)):
            raise ValueError(f"bits must have shape (B, {len(self.layer_names)}), got {tuple(bits.shape)}")
        for i, layer in enumerate(self.layers.values()):
            layer.sample_act_bits = None if bits is None else bits[:, i]

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> QuantizedModel:
        """Static PTQ: observe activation ranges on ``batches`` (inputs only) and freeze them."""
        if self.config.act_mode != "static":
            return self  # dynamic and PACT ranges need no calibration
        was_training = self.training
        self.eval()
        layers = list(self.layers.values())
        for q in layers:
            q.start_calibration()
        for x in batches:
            self.net(x)
        for q in layers:
            q.finish_calibration()
        self.train(was_training)
        return self

    def float_model(self) -> nn.Module:
        """A plain copy of the wrapped network (every QuantLayer back to its layer), e.g. the
        float architecture with QAT-trained weights, ready for another quantizer."""
        net = copy.deepcopy(self.net)
        for name in self.layer_names:
            _set_submodule(net, name, net.get_submodule(name).layer)
        return net

    def set_quantized(self, enabled: bool) -> None:
        for q in self.layers.values():
            q.enabled = enabled

    @contextlib.contextmanager
    def full_precision(self) -> Iterator[QuantizedModel]:
        """Run the same weights without quantization inside the ``with`` block."""
        states = [q.enabled for q in self.layers.values()]
        self.set_quantized(False)
        try:
            yield self
        finally:
            for q, s in zip(self.layers.values(), states):
                q.enabled = s

    @contextlib.contextmanager
    def without_rounding(self) -> Iterator[QuantizedModel]:
        """Keep every clipping, replace every rounding by the identity, inside the ``with`` block."""
        states = [q.rounding for q in self.layers.values()]
        for q in self.layers.values():
            q.rounding = False
        try:
            yield self
        finally:
            for q, s in zip(self.layers.values(), states):
                q.rounding = s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def quantize_model(model: nn.Module, config: QuantConfig | None = None, layer_bits: LayerBits = (8, 8),
                   calibration: Iterable[torch.Tensor] | None = None) -> QuantizedModel:
    """Wrap ``model`` for quantized execution; calibrate static ranges if batches are given.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> qm = quantize_model(net, QuantConfig(act_mode="dynamic"), layer_bits=(4, 8))
        >>> qm.layer_bits
        {'0': (4, 8), '2': (4, 8)}
    """
    config = config or QuantConfig()
    qm = QuantizedModel(model, config, layer_bits)
    if calibration is not None:
        if config.act_mode != "static":
            raise ValueError(f"calibration only applies to act_mode='static', not {config.act_mode!r}")
        qm.calibrate(calibration)
    return qm


def qat_config(**overrides) -> QuantConfig:
    """The defaults for quantization-aware training: BatchNorm kept, static EMA ranges."""
    return replace(QuantConfig(fold_bn=False), **overrides)
