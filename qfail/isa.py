"""One instruction set on every x86 machine, so that every machine prints the same tables.

torch's vectorised operators (ATen), its oneDNN convolutions, MKL and numpy's OpenBLAS each pick
their kernels by the CPU they find, and an AVX-512 kernel sums in another order than an AVX2 one.
Training turns those last bits into other models. On an AVX-512 machine, the unpinned book
printed other numbers in every chapter: Hu's static-INT8 disagreements on clean digits were
0.0 per 1k instead of 2.8, and Frank & Ardis's layer-wise gap was 12.2 points instead of 7.6.

Every x86 CPU the book is built on has AVX2, so :func:`pin_kernels` asks ATen, oneDNN, numpy's
own loops and OpenBLAS for their AVX2 kernels (numpy's AVX-512 ``exp``, ``log``, ``power`` and
more round float64 results differently). MKL also chooses by vendor: with its AVX2 branch, an
Intel CPU (emulated by QEMU, ``tests/test_machine.py``) computed other matrix products and
exponentials than an AMD one. Its ``COMPATIBLE`` branch computes the same bits on both, at about
2.5 times the time per matrix product, which the book's convolutional networks hardly notice (a
fresh build took 257 s, against 255 s before). The INT8 models need no pin: they are exact on
every x86 CPU (:mod:`qfail.quant.int8`).

One kind of operation stays machine-dependent under every pin: MKL's vector square root (and
arctangent) start from the CPU's approximate reciprocal square root, whose bits differ between
processors. So qfail takes no tensor square root on a path to a printed number: Adam runs fused
(:func:`qfail.train.adam`), and norms use ``torch.linalg.vector_norm``, whose square root is exact.

The libraries read these variables when they load (numpy and its OpenBLAS) or first run (ATen,
oneDNN, MKL). So ``import qfail`` sets them before anything else loads, and every chapter
imports ``qfail`` first. A variable the reader has set is kept.
"""
from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["KERNEL_PINS", "VNNI_FLAGS", "cpu_flags", "cpu_summary", "has_avx2", "pin_kernels"]

KERNEL_PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",   # torch's own vectorised operators
    "ONEDNN_MAX_CPU_ISA": "AVX2",    # convolutions (torch.backends.mkldnn)
    "MKL_CBWR": "COMPATIBLE",        # MKL's matrix products: the branch that is the same on Intel and AMD
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's, scipy's and so scikit-learn's BLAS
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's own loops: AVX2 at most
}


def _cpuinfo(field: str) -> str | None:
    """The first CPU's ``field`` in ``/proc/cpuinfo``; None where it cannot be read."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return None
    for line in cpuinfo.read_text().splitlines():
        if line.startswith(field):
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo``; None where it cannot be read."""
    flags = _cpuinfo("flags")
    return None if flags is None else set(flags.split())


def has_avx2() -> bool:
    """Whether this is an x86 CPU with AVX2: the CPUs the pins apply to."""
    flags = cpu_flags()
    return platform.machine() in ("x86_64", "AMD64") and flags is not None and "avx2" in flags


VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "avx512vnni"})  # /proc/cpuinfo's names for integer dot products


def cpu_summary() -> str:
    """The processor in a few words: its name, logical CPUs and widest vector extension, so that
    timings taken on two machines are not read as one machine's."""
    flags = cpu_flags() or set()
    name = _cpuinfo("model name") or platform.processor() or platform.machine()
    widest = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name}, {os.cpu_count()} CPUs, {widest}{' with VNNI' if flags & VNNI_FLAGS else ''}"


def pin_kernels(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set :data:`KERNEL_PINS` in ``environ`` where :func:`has_avx2` (elsewhere: nothing, an
    older CPU cannot run those kernels); return the variables set now."""
    if not has_avx2():
        return {}
    unset = {name: value for name, value in KERNEL_PINS.items() if name not in environ}
    environ.update(unset)
    return unset
