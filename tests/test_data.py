import gzip
import struct

import numpy as np
import pytest
import torch

from qfail import data
from qfail.data import batches, load_data


def test_digits_split_is_deterministic_and_disjoint():
    a, b = load_data(seed=0), load_data(seed=0)
    c = load_data(seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)
    assert (len(a.train), len(a.val), len(a.test)) == (1078, 359, 360)
    assert a.train.x.min() >= 0 and a.train.x.max() <= 1
    rows = lambda s: {tuple(r) for r in s.x.flatten(1).tolist()}
    assert not rows(a.train) & rows(a.test) or len(rows(a.train) & rows(a.test)) < 5  # digits has a few duplicates
    assert torch.bincount(a.test.y).min() >= 30  # stratified: every class present


@pytest.mark.parametrize("size", [16, 32])
def test_upscaling(size):
    d = load_data(size=size, limit=10)
    assert d.input_shape == (1, size, size)
    assert d.train.x.min() >= 0 and d.train.x.max() <= 1


def _write_idx(path, array, magic):
    with gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_torchvision_mnist_path_with_generated_files(tmp_path):
    """The MNIST loader reads torchvision's on-disk format; files are generated, never downloaded."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)), 2049)
    d = load_data("mnist", root=tmp_path, seed=0)
    assert d.input_shape == (1, 28, 28)
    assert (len(d.train), len(d.val), len(d.test)) == (45, 5, 20)
    assert 0 <= d.train.x.min() and d.train.x.max() <= 1
    assert load_data("mnist", root=tmp_path, size=16).input_shape == (1, 16, 16)


def _fake_debian_folder(folder, train=50, test=20):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), 2051)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)), 2049)
    return folder


def test_fashion_mnist_reads_debian_files_offline(tmp_path, monkeypatch):
    """Debian's dataset-fashion-mnist layout (gzipped IDX in one folder), generated here."""
    monkeypatch.setenv("QFAIL_FASHION_MNIST", str(_fake_debian_folder(tmp_path / "fm")))
    monkeypatch.setenv("QFAIL_DATA", str(tmp_path / "empty"))
    assert data.data_present("fashion_mnist")
    d = load_data("fashion_mnist", seed=0)
    assert d.input_shape == (1, 28, 28) and (len(d.train), len(d.val), len(d.test)) == (45, 5, 20)
    assert torch.equal(d.test.x, load_data("fashion_mnist", seed=1).test.x)
    assert not torch.equal(d.train.x, load_data("fashion_mnist", seed=1).train.x)  # the validation hold-out moves


def test_a_corrupt_idx_file_is_one_clear_line(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    _write_idx(bad, np.zeros((3, 28, 28)), 2051)
    with gzip.open(bad) as f:
        raw = f.read()
    with gzip.open(bad, "wb") as f:
        f.write(raw[:-10])
    with pytest.raises(ValueError, match="holds 2342 values but its header says .3, 28, 28. .truncated"):
        data.read_idx(bad)
    (tmp_path / "text.gz").write_bytes(gzip.compress(b"hello world"))
    with pytest.raises(ValueError, match="is not an IDX file"):
        data.read_idx(tmp_path / "text.gz")


@pytest.mark.skipif(not data.debian_fashion_mnist().exists(), reason="apt install dataset-fashion-mnist")
def test_the_real_fashion_mnist():
    d = load_data("fashion_mnist")
    assert (len(d.train), len(d.val), len(d.test)) == (54_000, 6_000, 10_000)
    assert torch.bincount(d.test.y).tolist() == [1000] * 10


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_torchvision_data_gives_one_clear_line(tmp_path, name, monkeypatch):
    monkeypatch.setenv("QFAIL_FASHION_MNIST", str(tmp_path / "no-debian-copy"))
    with pytest.raises(FileNotFoundError) as err:
        load_data(name, root=tmp_path)
    message = str(err.value)
    assert "\n" not in message and f"dataset={name!r} is not present" in message and "download=True" in message


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "imagenet"}, "dataset='imagenet' is not allowed; choose one of 'digits', 'mnist'"),
    ({"size": 12}, "size=12 is not allowed; choose one of None, 8, 16, 28, 32"),
    ({"seed": -1}, "seed=-1 is out of range"),
    ({"limit": 0}, "limit=0 is out of range"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        load_data(**kwargs)


def test_batches_cover_split_once():
    d = load_data(limit=100)
    seen = torch.cat([y for _, y in batches(d.train, 32, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == sorted(d.train.y.tolist())


def test_natural_shift_reads_generated_usps_files(tmp_path):
    """USPS through torchvision's reader, from a generated file in its format (nothing downloaded)."""
    import bz2

    gen = np.random.default_rng(0)
    lines = []
    for i in range(12):
        pixels = gen.uniform(-1, 1, 256)
        lines.append(f"{i % 10 + 1} " + " ".join(f"{j + 1}:{v:.4f}" for j, v in enumerate(pixels)))
    with bz2.open(tmp_path / "usps.t.bz2", "wt") as f:
        f.write("\n".join(lines) + "\n")
    split = data.load_natural_shift("usps", size=8, root=tmp_path)
    assert split.x.shape == (12, 1, 8, 8) and split.x.min() >= 0 and split.x.max() <= 1
    assert split.y.tolist() == [i % 10 for i in range(12)]
    assert len(data.load_natural_shift("usps", root=tmp_path, limit=5)) == 5


def test_missing_natural_shift_gives_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="natural shift 'usps' is not present under"):
        data.load_natural_shift("usps", root=tmp_path)
    with pytest.raises(ValueError, match="natural shift='usps_c' is not allowed; choose one of 'usps'"):
        data.load_natural_shift("usps_c", root=tmp_path)
