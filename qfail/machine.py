"""The facts a chapter's numbers depend on, and the settings that make them the same everywhere.

Two readers should be able to compare their tables, so every chapter calls :func:`configure`
first and shows what it returns: the torch version, the quantized engine, the CPU's vector
capability and whether it has VNNI (integer dot products; see :mod:`qfail.quant.int8` for why
the INT8 models are built so that this makes no difference).

``configure`` runs torch's CPU operators on one thread by default. The book's networks are
small, so a second thread buys little; worse, with OpenMP's default busy-waiting a second thread
can be much slower (on a 2-core VM here a ResNet-8 training step took 1.13 s on two threads and
0.027 s on one), and the order of a parallel reduction, hence the last bits of a float result,
can depend on the thread count. One thread gives every reader the same arithmetic.

Convolutions keep PyTorch's oneDNN kernels (``torch.backends.mkldnn``), which train the ResNets
1.3-2.4x faster than the native ones here. oneDNN, like ATen, MKL, numpy and OpenBLAS, picks its
kernels by instruction set, and the last bits it leaves grow into other models in training:
``import qfail`` pins them all (:mod:`qfail.isa`), and :func:`facts` shows what they run. One
caveat, measured on this project's AVX2 machine: torch 2.15's oneDNN convolution backward
corrupted the heap for ResNet stages of 4 or 6 channels, which is why :mod:`qfail.models` rounds
channel counts up to multiples of 8. ``QFAIL_ONEDNN=0`` switches to the native convolutions.

The same holds for the thread pools outside torch: numpy's and scipy's OpenBLAS and
scikit-learn's OpenMP start one thread per core unless told otherwise, so ``configure`` limits
them too (:func:`limit_other_pools`), for both reasons above. The black box's scikit-learn MLP
in Frank & Ardis's chapters ends with weights that differ by up to 1e-6 between one and two
OpenBLAS threads, so without the cap its numbers would follow the reader's core count; and
beside a busy process (the book runs two chapters side by side on two cores) its fit took 5.5 s
with two threads and 2.4 s with one (alone: 2.1 s).

``configure`` also keeps freed memory in the process (:func:`keep_freed_memory`): PyTorch on a
CPU frees and reallocates buffers of the same sizes at every step, and glibc's defaults hand large
ones back to the system, so every step faults fresh pages in again. And it moves every object
alive then (the imports of torch, pandas, matplotlib and scikit-learn leave about 300,000) into
Python's permanent generation (``gc.freeze``), so that full garbage collections stop walking
them: a full collection took 141 ms after those imports, and Moon's chapter spent 1.7 s in its
12 full collections, 1.1 s with the freeze (measured on an AVX-512 machine).
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import gc
import os
import platform
import warnings

import torch

from qfail.checks import check_range
from qfail.isa import VNNI_FLAGS, cpu_flags, has_avx2

__all__ = ["configure", "describe", "facts", "has_vnni", "keep_freed_memory", "kernels", "limit_other_pools"]


def has_vnni() -> bool | None:
    """True if the CPU has AVX-512 VNNI or AVX-VNNI, False if not, None where it cannot be read."""
    flags = cpu_flags()
    return None if flags is None else bool(flags & VNNI_FLAGS)


def kernels() -> str:
    """The instruction sets the float kernels run: ATen's (torch reports it), oneDNN's and MKL's
    (their variables; they read them on first use), OpenBLAS's (it reports its core type) and the
    widest one numpy's own loops run."""
    parts = [f"ATen {torch.backends.cpu.get_cpu_capability()}",
             f"oneDNN {os.environ.get('ONEDNN_MAX_CPU_ISA', 'native')}",
             f"MKL {os.environ.get('MKL_CBWR', 'native')}",
             f"OpenBLAS {'/'.join(sorted(_openblas_cores())) or 'not loaded'}", f"numpy {_numpy_loops()}"]
    return ", ".join(parts)


def _numpy_loops() -> str:
    """The widest instruction set numpy's own loops run (its dispatch target: X86_V3 is AVX2)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy 1.x
        return "?"
    return ([t for t in __cpu_dispatch__ if __cpu_features__.get(t)] or ["baseline"])[-1]


def _openblas_cores() -> set[str]:
    from threadpoolctl import threadpool_info

    return {p.get("architecture") or "?" for p in threadpool_info() if p.get("internal_api") == "openblas"}


def facts() -> dict[str, str]:
    """What the numbers depend on: versions, engine, CPU, threads."""
    vnni = has_vnni()
    return {
        "torch": torch.__version__,
        "quantized engine": torch.backends.quantized.engine,
        "CPU": platform.machine(),
        "VNNI": "unknown" if vnni is None else ("yes" if vnni else "no"),
        "kernels": kernels() if has_avx2() else "native",
        "torch threads": str(torch.get_num_threads()),
        "oneDNN convolutions": "on" if torch.backends.mkldnn.enabled else "off",
        "CUDA": torch.version.cuda if torch.cuda.is_available() else "not available",
    }


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve blocks up to 32 MB from its heap and keep freed memory (up to
    2 GB) for the next allocation instead of returning it; False where the C library is not glibc.

    Values are unchanged; only page faults go. Measured on the 2-core AVX2 machine: CROWN on the
    784-256-256-10 benchmark 3.9 -> 3.4 s, Li's attacks on a quantized ResNet-8 about 9 % faster."""
    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    trim, top_pad, mmap_threshold = -1, -2, -3  # glibc's M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD
    return all(mallopt(option, value) == 1 for option, value in
               ((mmap_threshold, 32 * 2 ** 20), (trim, 2 ** 31 - 1), (top_pad, 256 * 2 ** 20)))


def limit_other_pools(threads: int) -> None:
    """Cap the BLAS and OpenMP thread pools that numpy, scipy and scikit-learn load (found by
    ``threadpoolctl``, scikit-learn's own dependency) at ``threads``, for the rest of the process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)


def configure(threads: int | None = None, onednn: bool | None = None) -> dict[str, str]:
    """Set torch's CPU threads (``threads``, else ``$QFAIL_THREADS``, else 1), the same cap on the
    BLAS and OpenMP pools (:func:`limit_other_pools`), and whether convolutions use oneDNN
    (``onednn``, else ``$QFAIL_ONEDNN != "0"``); return :func:`facts`. Warns if numpy loaded its
    OpenBLAS before ``import qfail`` could pin its kernels (:mod:`qfail.isa`)."""
    if threads is None:
        threads = int(os.environ.get("QFAIL_THREADS", "1"))
    if onednn is None:
        onednn = os.environ.get("QFAIL_ONEDNN", "1") != "0"
    check_range("threads", threads, 1, 1024, integer=True)
    torch.set_num_threads(threads)
    limit_other_pools(threads)
    torch.backends.mkldnn.enabled = bool(onednn)
    keep_freed_memory()
    gc.freeze()  # see the module's docstring
    atexit.unregister(gc.unfreeze)  # once, however often configure runs
    atexit.register(gc.unfreeze)  # at exit, collect them as usual (extensions such as triton's check for leaks)
    wanted = os.environ.get("OPENBLAS_CORETYPE")
    if wanted and _openblas_cores() - {wanted}:
        warnings.warn(f"numpy was imported before qfail, so its BLAS runs {'/'.join(sorted(_openblas_cores()))} "
                      f"kernels instead of {wanted}: import qfail first to get the book's numbers", stacklevel=2)
    return facts()


def describe(values: dict[str, str]) -> str:
    """One line of :func:`facts`, for a chapter's set-up output."""
    return "; ".join(f"{k}: {v}" for k, v in values.items())
