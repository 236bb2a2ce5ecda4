"""Shared fixtures: a private cache folder, small trained models on the digits, toy chapters."""
from __future__ import annotations  # noqa: I001 - qfail is imported first, on purpose (qfail.isa)

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import qfail  # first, as in every chapter: it pins numpy's and torch's kernels before they load (qfail.isa)
import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The chapters' arithmetic (qfail.machine.configure): one torch thread, the same sums everywhere."""
    import qfail.machine

    qfail.machine.configure(1)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests never read or write the book's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("QFAIL_CACHE", str(tmp_path_factory.mktemp("qfail-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def digits():
    return qfail.load_data("digits", seed=0)


@pytest.fixture(scope="session")
def trained_cnn(digits):
    model = qfail.build_model("cnn", digits.input_shape, seed=0)
    qfail.fit(model, digits.train, qfail.TrainConfig(epochs=8, seed=0))
    return model


@pytest.fixture(scope="session")
def trained_mlp(digits):
    model = qfail.build_model("mlp", digits.input_shape, seed=0)
    qfail.fit(model, digits.train, qfail.TrainConfig(epochs=8, seed=0))
    return model


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def float32_error_bound(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Elementwise a-priori bound on how far two float32 evaluations of ``module`` on ``x`` may
    differ when they order or fuse operations differently (BatchNorm folding, another kernel).

    Higham's bound for a length-n dot product, |fl(w.x) - w.x| <= gamma_n sum |w_i x_i| with
    gamma_n = n u / (1 - n u), applied to every layer of a Conv/BN/ReLU/pool/Linear stack: the
    magnitudes sum |w_i x_i| come from the same stack run in float64 with |W|, |BN scale| and |x|,
    and each side may err by the bound, so the difference is bounded by twice its sum over layers.
    """
    import copy

    from torch import nn

    u = torch.finfo(torch.float32).eps / 2
    magnitude = copy.deepcopy(module).double().eval()
    layers, fan_in = 0, 1
    with torch.no_grad():
        for m in magnitude.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.abs_()
                if m.bias is not None:
                    m.bias.abs_()
                fan_in = max(fan_in, m.weight[0].numel() + 1)
                layers += 1
            elif isinstance(m, nn.BatchNorm2d):
                scale = m.weight / torch.sqrt(m.running_var + m.eps)
                m.weight.copy_(scale.abs()), m.bias.copy_((m.bias - m.running_mean * scale).abs())
                m.running_mean.zero_(), m.running_var.fill_(1 - m.eps)
        bound = magnitude(x.double().abs())
    gamma = fan_in * u / (1 - fan_in * u)
    return (2 * layers * gamma * bound).float()


@pytest.fixture
def float32_bound():
    """:func:`float32_error_bound`, for tests that compare two float32 evaluations."""
    return float32_error_bound


@pytest.fixture
def right() -> Callable[[float, int], np.ndarray]:
    """Per-input correctness at ``accuracy`` (%) on ``n`` inputs for synthetic tables: the first
    inputs are right, so two such arrays disagree on as few inputs as their accuracies allow."""
    return lambda accuracy, n: np.arange(n) < round(accuracy * n / 100)


_FRONT_MATTER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


@pytest.fixture()
def toy_chapter(tmp_path) -> Callable[..., Path]:
    """``toy_chapter(name, parameters, *cells)``: a MyST chapter in ``tmp_path/nbs`` whose first
    code cell is the ``parameters`` cell; returns the folder (a ``notebook_dir``)."""
    folder = tmp_path / "nbs"

    def write(name: str, parameters: str, *cells: str) -> Path:
        folder.mkdir(exist_ok=True)
        blocks = [f"```{{code-cell}} ipython3\n:tags: [parameters]\n{parameters.strip()}\n```"]
        blocks += [f"```{{code-cell}} ipython3\n{c.strip()}\n```" for c in cells]
        (folder / f"{name}.md").write_text(_FRONT_MATTER + "\n# " + name + "\n\n" + "\n\n".join(blocks) + "\n")
        return folder

    return write


EMULATED_TEST_SECONDS = 3600  # a test's limit under --emulate-cpu: QEMU ran the small runs in 760-810 s


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The book tests first, then the emulated CPU's: they take half and a fifth of the run, so
    under ``make test``'s two workers (``--no-loadscope-reorder`` keeps this order) they start at
    once, side by side, and the short files fill in after them. Under ``--emulate-cpu`` every
    test may take :data:`EMULATED_TEST_SECONDS` instead of the configured limit."""
    items.sort(key=lambda item: (item.get_closest_marker("book") is None, "qemu" not in item.fixturenames))
    if config.getoption("emulate_cpu"):
        for item in items:
            item.add_marker(pytest.mark.timeout(EMULATED_TEST_SECONDS))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--record-tables", action="store_true", dest="record_tables",
                     help="record the small runs' verdict tables again (tests/site/small-run-verdicts.json)")
    parser.addoption("--emulate-cpu", dest="emulate_cpu", default=None, metavar="MODEL",
                     help="run the small runs' chapter kernels on a CPU that QEMU emulates (qemu-x86_64 -cpu MODEL, "
                          "for example Haswell-v4 or EPYC-Rome)")


@pytest.fixture(scope="session")
def qemu() -> str:
    """QEMU's x86-64 user-mode emulator, 10 or newer (tests/setup_system.sh installs it), which runs
    this machine's Python on another x86 CPU: another vendor, no AVX-512. QEMU 7.2 miscomputes
    AVX2 gathers (NaN in grid_sample)."""
    path = shutil.which("qemu-x86_64")
    if path is None:
        pytest.skip("qemu-x86_64 is missing (Debian's qemu-user; tests/setup_system.sh installs it)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    major = re.search(r"version (\d+)\.", version)
    if major is None or int(major.group(1)) < 10:
        pytest.skip(f"{path} is not QEMU 10 or newer ({version.splitlines()[0] if version else '?'}); "
                    "tests/setup_system.sh installs it")
    return path
