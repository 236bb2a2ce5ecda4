"""Real INT8 execution through PyTorch's quantized CPU kernels (torch.ao.quantization).

Fake quantization simulates integer arithmetic in float; this module produces the real thing
so that size and latency can be measured:

* ``int8_dynamic``: ``quantize_dynamic`` -- int8 weights for every ``nn.Linear``, activations
  quantized on the fly per batch (what Moon used, and TFLite's "dynamic range" mode).
* ``int8_static``: FX graph mode static quantization -- int8 weights (per-channel symmetric)
  and uint8 activations with ranges calibrated on a few batches (TFLite's full-integer mode).
  It needs a model that ``torch.fx`` can trace (every model in ``qfail.models`` does).

**Activations use a 7-bit range (``reduce_range=True``), on purpose.** On x86 CPUs without
AVX-512 VNNI, fbgemm multiplies uint8 activations by int8 weights with ``vpmaddubsw``, which adds
pairs of products into int16 and saturates: with the full 0..255 activation range a pair can
overflow, and the same model computes different outputs on different CPUs (on the digits CNN,
98.6 % top-1 agreement with float on an AVX2 machine against 100 % on a VNNI machine). Halving
the range keeps every pair inside int16, so x86 with or without VNNI, and ARM's qnnpack, compute
the same integers. The price is one bit of activation resolution; the primer measures it.
Dynamic INT8 (``quantize_dynamic``) makes the same choice inside torch's kernels.

``fake_quant_twin`` builds the qfail fake-quant model with the same scheme (8-bit weights, 7-bit
activations), so the two can be compared; ``ACT_BITS_INT8`` is that activation width.
"""
from __future__ import annotations

import contextlib
import copy
import io
import time
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from qfail.checks import check_choice
from qfail.quant.model import QuantConfig, QuantizedModel, quantize_model

__all__ = ["ACT_BITS_INT8", "ENGINES", "int8_dynamic", "int8_static", "serialized_size", "packed_size", "per_call_scale", "decide", "latency_ms",
           "fake_quant_twin", "quantized_engine", "footprint"]

ENGINES = tuple(e for e in ("x86", "fbgemm", "qnnpack") if e in torch.backends.quantized.supported_engines)
ACT_BITS_INT8 = 7  # activation range of the real INT8 models (reduce_range): the same integers on every CPU


@contextlib.contextmanager
def quantized_engine(engine: str) -> Iterator[None]:
    check_choice("engine", engine, ENGINES)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """torch 2.15 marks its eager INT8 stack deprecated (in favour of torchao) on every call.

    The kernels are still the fastest INT8 path on this CPU (see benchmarks/), so the notice
    is silenced here rather than repeated in every chapter.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=FutureWarning)
        yield


def int8_dynamic(model: nn.Module, engine: str = "x86") -> nn.Module:
    """Dynamic INT8 copy of ``model`` (Linear layers only; convs stay float)."""
    with _quiet_deprecations(), quantized_engine(engine):
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


def _static_qconfig_mapping():  # -> a torch.ao QConfigMapping
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver, QConfig, QConfigMapping
    qconfig = QConfig(
        # reduce_range: 7-bit activations, so int16 pair sums cannot saturate without VNNI (see above)
        activation=MinMaxObserver.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                                            reduce_range=True),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    )
    return QConfigMapping().set_global(qconfig)


def int8_static(model: nn.Module, calibration: Iterable[torch.Tensor], engine: str = "x86") -> nn.Module:
    """Static INT8 copy of ``model`` calibrated with min-max ranges on ``calibration`` batches.

    The returned module runs on the CPU engine ``engine`` (call it inside
    ``quantized_engine(engine)`` if the global engine differs).
    """
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    batches = list(calibration)
    if not batches:
        raise ValueError("calibration is empty; pass at least one input batch")
    with _quiet_deprecations(), quantized_engine(engine):
        prepared = prepare_fx(copy.deepcopy(model).eval(), _static_qconfig_mapping(), (batches[0],))
        with torch.no_grad():
            for x in batches:
                prepared(x)
        return convert_fx(prepared)


def fake_quant_twin(model: nn.Module, calibration: Iterable[torch.Tensor], dynamic: bool = False) -> QuantizedModel:
    """The qfail fake-quant model that mirrors ``int8_static`` (or ``int8_dynamic``): 8-bit
    weights and ``ACT_BITS_INT8``-bit activations."""
    if dynamic:
        config = QuantConfig(act_mode="dynamic", weight_granularity="per_tensor")
        qm = quantize_model(model, config, layer_bits=(8, ACT_BITS_INT8))
        for layer in qm.layers.values():  # quantize_dynamic leaves convs in float
            if not isinstance(layer.layer, nn.Linear):
                layer.set_bits(32, 32)
        return qm
    return quantize_model(model, QuantConfig(), layer_bits=(8, ACT_BITS_INT8), calibration=calibration)


def per_call_scale(model: nn.Module) -> bool:
    """True for torch.ao dynamic INT8 models: one activation scale per call, so a row's output
    depends on the rest of its batch."""
    from torch.ao.nn.quantized import dynamic as nnqd

    return any(isinstance(m, nnqd.Linear) for m in model.modules())


@torch.inference_mode()
def decide(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Top-1 decisions on ``x``, one row per call where the model's output depends on the batch."""
    x = x.float()
    if per_call_scale(model):
        return torch.cat([model(row.unsqueeze(0)).argmax(1) for row in x])
    return model(x).argmax(1)


def packed_size(model: QuantizedModel) -> int:
    """Bytes a fake-quantized model would need if packed: every weight at its bit-width, biases
    and one float32 scale and zero point per weight channel (or per tensor) as float32.

    An ideal figure (no file format, no padding), for bit-widths that torch has no kernel for.
    """
    bits_total = 0
    for layer in model.layers.values():
        w, b = layer.layer.weight, layer.layer.bias
        groups = w.shape[0] if layer.config.weight_granularity == "per_channel" else 1
        bits_total += w.numel() * layer.weight_bits + (0 if layer.weight_bits == 32 else 64 * groups)
        bits_total += 0 if b is None else 32 * b.numel()
    return (bits_total + 7) // 8


def serialized_size(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``, the size a deployment would ship."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@torch.inference_mode()
def latency_ms(model: nn.Module, x: torch.Tensor, repeats: int = 50, warmup: int = 5,
               engine: str | None = None) -> float:
    """Median wall time of one forward pass, in milliseconds."""
    with quantized_engine(engine) if engine else contextlib.nullcontext():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    times.sort()
    return 1e3 * times[len(times) // 2]


def footprint(model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Serialized size (KB) and median latency (ms) for each named input batch.

    Example: ``footprint(int8_dynamic(net), {"batch 1": x[:1], "batch 256": x[:256]})``.
    """
    row = {"size (KB)": serialized_size(model) / 1024}
    for label, x in inputs.items():
        row[f"latency {label} (ms)"] = latency_ms(model, x)
    return row
