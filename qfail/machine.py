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
1.3-2.4x faster than the native ones here. Two caveats, measured on this project's AVX2 machine:
oneDNN picks its kernels by instruction set, so the last bits of a float convolution may differ
between an AVX2 and an AVX-512 machine (the tables round them away; the INT8 models are exact);
and torch 2.15's oneDNN convolution backward corrupted the heap for ResNet stages of 4 or 6
channels, which is why :mod:`qfail.models` rounds channel counts up to multiples of 8.
``QFAIL_ONEDNN=0`` switches to the native convolutions.

The same holds for the thread pools outside torch: numpy's and scipy's OpenBLAS and
scikit-learn's OpenMP start one thread per core unless told otherwise, so ``configure`` limits
them too (:func:`limit_other_pools`), for both reasons above. The black box's scikit-learn MLP
in Frank & Ardis's chapters ends with weights that differ by up to 1e-6 between one and two
OpenBLAS threads, so without the cap its numbers would follow the reader's core count; and
beside a busy process (the book runs two chapters side by side on two cores) its fit took 5.5 s
with two threads and 2.4 s with one (alone: 2.1 s).

``configure`` also keeps freed memory in the process (:func:`keep_freed_memory`): PyTorch on a
CPU frees and reallocates buffers of the same sizes at every step, and glibc's defaults hand large
ones back to the system, so every step faults fresh pages in again.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from pathlib import Path

import torch

from qfail.checks import check_range

__all__ = ["configure", "describe", "facts", "has_vnni", "keep_freed_memory", "limit_other_pools"]


def has_vnni() -> bool | None:
    """True if the CPU has AVX-512 VNNI or AVX-VNNI, False if not, None where it cannot be read."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return None
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_vnni", "avx_vnni", "avx512vnni"})


def facts() -> dict[str, str]:
    """What the numbers depend on: versions, engine, CPU, threads."""
    vnni = has_vnni()
    return {
        "torch": torch.__version__,
        "quantized engine": torch.backends.quantized.engine,
        "CPU": platform.machine() + (f", {torch.backends.cpu.get_cpu_capability()}" if platform.machine() in
                                     ("x86_64", "AMD64") else ""),
        "VNNI": "unknown" if vnni is None else ("yes" if vnni else "no"),
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
    (``onednn``, else ``$QFAIL_ONEDNN != "0"``); return :func:`facts`."""
    if threads is None:
        threads = int(os.environ.get("QFAIL_THREADS", "1"))
    if onednn is None:
        onednn = os.environ.get("QFAIL_ONEDNN", "1") != "0"
    check_range("threads", threads, 1, 1024, integer=True)
    torch.set_num_threads(threads)
    limit_other_pools(threads)
    torch.backends.mkldnn.enabled = bool(onednn)
    keep_freed_memory()
    return facts()


def describe(values: dict[str, str]) -> str:
    """One line of :func:`facts`, for a chapter's set-up output."""
    return "; ".join(f"{k}: {v}" for k, v in values.items())
