"""qfail: how quantized neural networks fail -- the package behind the book.

The tree is the architecture:

* shared layers: ``quant`` (fake-quant with an STE, observers, PACT, PWLQ, per-layer bits, real
  INT8), ``data``, ``models``, ``train`` (standard, Mixup, adversarial and QAT training, the
  cached trainer and its :class:`~qfail.train.Trained` record), ``cache``, ``attack``, ``shift``,
  ``metrics``, ``distill``, ``sweep``, ``checks`` (argument validation) and ``isa`` (the same
  kernels on every x86 CPU, pinned on import);
* ``verify``: programs extracted from networks, sound bounds (IBP, CROWN), decision consistency;
* ``papers``: one subpackage per work (``moon``, ``hu``, ``li``, ``frank``), each with its
  experiments and a ``verdicts`` module;
* ``site``: the papermill runner, the offline book build, widgets and figures.

Papers import the shared layers, never each other; nothing outside ``site`` imports ``site``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from qfail.isa import pin_kernels

# before numpy or torch load: every x86 machine runs the same kernels and so prints the same tables
pin_kernels()

__version__ = "0.1.0"

# The names below load on first use (PEP 562), so ``python -m qfail`` can reject a bad parameter
# before torch is imported.
_SUBMODULES = ("attack", "cache", "checks", "data", "distill", "isa", "machine", "metrics", "models", "quant", "shift",
               "sweep", "train", "verify", "papers", "site")
_NAMES = {"load_data": "data", "build_model": "models", "QuantConfig": "quant", "quantize_model": "quant",
          "TrainConfig": "train", "Trained": "train", "accuracy": "train", "fit": "train",
          "predict_logits": "train", "train_cached": "train"}
__all__ = [*_SUBMODULES, *_NAMES]  # noqa: PLE0604 - strings, which ruff cannot see through the unpacking

if TYPE_CHECKING:
    from qfail import attack, cache, checks, data, distill, isa, machine, metrics, models, quant, shift, sweep, train  # noqa: F401
    from qfail.data import load_data  # noqa: F401
    from qfail.models import build_model  # noqa: F401
    from qfail.quant import QuantConfig, quantize_model  # noqa: F401
    from qfail.train import TrainConfig, Trained, accuracy, fit, predict_logits, train_cached  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"qfail.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"qfail.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'qfail' has no attribute {name!r}")
