"""qfail.machine and qfail.isa: the settings every chapter's numbers depend on."""
import os
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from qfail import isa, machine


def test_configure_caps_torch_and_the_blas_and_openmp_pools():
    import sklearn.linear_model  # noqa: F401 - loads scikit-learn's OpenMP runtime too

    np.ones((64, 64)) @ np.ones((64, 64))  # OpenBLAS is loaded
    with threadpool_limits(limits=2):  # as a process starts on two cores; the session's limits come back after
        facts = machine.configure(1)
        assert torch.get_num_threads() == 1 and facts["torch threads"] == "1"
        pools = threadpool_info()
        assert pools and all(p["num_threads"] == 1 for p in pools), pools


_AVX2 = isa.has_avx2()
# A ResNet-8 trained for one epoch on 128 digits and the small CNN on all of them (ATen, oneDNN,
# MKL, fused Adam), and a scikit-learn MLP fitted for 20 iterations in float64 (OpenBLAS, numpy's
# exp): SHA-256 prefixes of their weights with the pinned kernels, then the instruction set ATen
# ran. On the AVX-512 machine here, without the pins, all three differ (so do the book's tables);
# on an Intel CPU with MKL's AVX2 branch instead of COMPATIBLE, and with Adam's foreach update,
# the first two do.
_SETUP = """
import hashlib, sys, warnings
import qfail
import torch
from qfail import machine
from qfail.data import Split
machine.configure(1)
digest = lambda arrays: hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()[:12]
"""
_LOAD_DIGITS = """
data = qfail.load_data("digits", size=16, seed=0)
resnet_set, cnn_set = data.train.subset(128), qfail.load_data("digits", seed=0).train
"""
_TORCH_MODELS = """
model = qfail.build_model("resnet", tuple(resnet_set.x.shape[1:]), seed=0, depth=8, width=0.5)
qfail.fit(model, resnet_set, qfail.TrainConfig(epochs=1, seed=0, batch_size=64))
cnn = qfail.build_model("cnn", tuple(cnn_set.x.shape[1:]), seed=0)
qfail.fit(cnn, cnn_set, qfail.TrainConfig(epochs=1, seed=0))
print(*(digest(p.detach().numpy() for p in m.state_dict().values()) for m in (model, cnn)))
"""
_MLP = """
from sklearn.neural_network import MLPClassifier
x, y = data.train.x[:500].flatten(1).double().numpy(), data.train.y[:500].numpy()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # 20 iterations do not converge; they need not
    mlp = MLPClassifier((64,), max_iter=20, random_state=0).fit(x, y)
print(digest(mlp.coefs_))
"""
_CAPABILITY = "print(torch.backends.cpu.get_cpu_capability())\n"
_TRAINING = _SETUP + _LOAD_DIGITS + _TORCH_MODELS + _MLP + _CAPABILITY
_WEIGHTS = ["0f4a4245c8e6", "6d965dd696ca", "f1df67284b5c"]
# The two torch models of _TRAINING alone, on the digits loaded here and handed over in a file
# (its first argument): torch is all the emulated CPU has to import. scikit-learn and numpy choose
# their code by instruction set, not by vendor, and under QEMU importing scikit-learn took 7 s of
# the test's 43.
_TORCH_TRAINING = _SETUP + """
sets = torch.load(sys.argv[1])
resnet_set, cnn_set = Split(*sets["resnet"]), Split(*sets["cnn"])
""" + _TORCH_MODELS + _CAPABILITY
_INTEL_AVX2 = "Haswell-v4"  # QEMU's Intel CPU with AVX2 and FMA and without AVX-512


def _fresh_python(code: str, emulator: Sequence[str] = (), args: Sequence[str] = (), **env: str) -> str:
    """``code``'s output in a new interpreter (the pins act when libraries load) with ``env`` added
    and ``args`` as its arguments, run by ``emulator`` where one is given."""
    environ = {k: v for k, v in os.environ.items() if k not in isa.KERNEL_PINS} | env
    proc = subprocess.run([*emulator, sys.executable, "-c", code, *args], capture_output=True, text=True, env=environ,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


@pytest.mark.skipif(not _AVX2, reason="the pins need an x86 CPU with AVX2")
def test_training_computes_the_same_bits_on_every_x86_machine():
    """The same weights, bit for bit, as on the reference machine (AVX-512 VNNI, pinned to AVX2)."""
    assert _fresh_python(_TRAINING).split() == [*_WEIGHTS, "AVX2"]


@pytest.mark.skipif(not _AVX2, reason="the pins need an x86 CPU with AVX2")
def test_an_emulated_intel_cpu_trains_the_same_bits(qemu, tmp_path):
    """The same torch weights on an Intel CPU without AVX-512, emulated by QEMU: MKL chooses its
    code by vendor too. QEMU computes every IEEE operation as a CPU does; only its approximate
    reciprocals differ from a real CPU's, and qfail's arithmetic takes nothing from them (qfail.isa)."""
    import qfail

    sets = tmp_path / "digits.pt"
    resnet, cnn = qfail.load_data("digits", size=16, seed=0).train.subset(128), qfail.load_data("digits", seed=0).train
    torch.save({"resnet": (resnet.x, resnet.y), "cnn": (cnn.x, cnn.y)}, sets)
    emulated = _fresh_python(_TORCH_TRAINING, emulator=[qemu, "-cpu", _INTEL_AVX2], args=[str(sets)]).split()
    if emulated != [*_WEIGHTS[:2], "AVX2"]:  # this CPU's run of the same script tells the vendor from the script
        native = _fresh_python(_TORCH_TRAINING, args=[str(sets)]).split()
        pytest.fail(f"emulated Intel CPU: {emulated}; this CPU, the same script: {native}; recorded: {_WEIGHTS[:2]}")


@pytest.mark.skipif(not _AVX2, reason="the pins need an x86 CPU with AVX2")
def test_import_qfail_pins_every_library_and_reports_it():
    shown = _fresh_python("import qfail, numpy\nfrom qfail import machine\nprint(machine.kernels())")
    assert shown == "ATen AVX2, oneDNN AVX2, MKL COMPATIBLE, OpenBLAS Haswell, numpy X86_V3"


def test_a_kernel_variable_the_reader_set_is_kept():
    environ = {"ONEDNN_MAX_CPU_ISA": "ALL"}
    added = isa.pin_kernels(environ)
    assert environ["ONEDNN_MAX_CPU_ISA"] == "ALL" and "ONEDNN_MAX_CPU_ISA" not in added
    assert added == ({k: v for k, v in isa.KERNEL_PINS.items() if k != "ONEDNN_MAX_CPU_ISA"} if _AVX2 else {})


@pytest.mark.skipif(not _AVX2, reason="the pins need an x86 CPU with AVX2")
def test_configure_warns_when_numpy_loaded_its_blas_before_qfail():
    code = ("import warnings, numpy, qfail\nfrom qfail import machine\n"
            "with warnings.catch_warnings(record=True) as caught:\n    warnings.simplefilter('always')\n"
            "    machine.configure(1)\nprint(machine.kernels().split('OpenBLAS ')[1].split(',')[0], len(caught))")
    core, warned = _fresh_python(code, OPENBLAS_CORETYPE="Haswell").split()
    # numpy loaded OpenBLAS before the pin: its own choice for this CPU, and a warning unless that is Haswell
    assert warned == ("0" if core == "Haswell" else "1")


def test_the_cpu_summary_names_the_processor_and_its_widest_vector_extension():
    summary, flags = isa.cpu_summary(), isa.cpu_flags() or set()
    assert f", {os.cpu_count()} CPUs, " in summary
    assert ("AVX-512" in summary) == ("avx512f" in flags) and summary.endswith(" with VNNI") == bool(flags & isa.VNNI_FLAGS)
