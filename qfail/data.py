"""Data sets as tensors: scikit-learn digits by default, torchvision sets as options.

Every split is a pair of CPU tensors: images ``x`` of shape (N, C, H, W) with values in [0, 1]
(no mean subtraction, so attack budgets and corruptions live in pixel units) and labels ``y``
of shape (N,). The digits split (60/20/20, stratified) depends only on ``seed``.

MNIST, Fashion-MNIST and CIFAR-10 are read with torchvision from ``root``; nothing is ever
downloaded unless ``download=True`` is passed explicitly.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from qfail.checks import check_choice, check_range

__all__ = ["data_present", "read_idx", "debian_fashion_mnist", "DATASETS", "SIZES", "NATURAL_SHIFTS", "Split", "DataSplits", "load_data", "load_natural_shift", "batches", "minibatches",
           "default_data_root"]

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
SIZES = (None, 8, 16, 28, 32)


@dataclass(frozen=True)
class Split:
    """Images (N, C, H, W) in [0, 1], integer labels (N,) and, in a distillation set, the
    teacher's class probabilities (N, K) that were bought with the images."""

    x: torch.Tensor
    y: torch.Tensor
    teacher: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: torch.Tensor | slice) -> Split:
        """The rows ``index``, the teacher's answers included."""
        return Split(self.x[index], self.y[index], None if self.teacher is None else self.teacher[index])

    def subset(self, n: int) -> Split:
        """The first ``n`` rows."""
        return self.take(slice(0, n))

    def to(self, device: str | torch.device) -> Split:
        """The same rows on ``device``."""
        return Split(self.x.to(device), self.y.to(device), None if self.teacher is None else self.teacher.to(device))


@dataclass(frozen=True)
class DataSplits:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    fingerprint: tuple  # what the splits depend on; part of every cache key

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])

    def train_fraction(self, fraction: float, seed: int = 0) -> DataSplits:
        """The same splits with a seeded random ``fraction`` of the training set (val/test kept)."""
        check_range("fraction", fraction, 1e-6, 1.0)
        n = max(1, round(fraction * len(self.train)))
        keep = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(seed))[:n]
        train = self.train.take(keep)
        return DataSplits(self.name, train, self.val, self.test, self.num_classes,
                          self.fingerprint + ("train_fraction", fraction, seed))


def default_data_root() -> Path:
    return Path(os.environ.get("QFAIL_DATA", Path.home() / ".cache" / "qfail" / "data"))


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)


def _stratified_split(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[Split, Split, Split]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    i_train, i_rest = train_test_split(idx, test_size=0.4, stratify=y, random_state=seed)
    i_val, i_test = train_test_split(i_rest, test_size=0.5, stratify=y[i_rest], random_state=seed)

    def make(i: np.ndarray) -> Split:
        return Split(torch.from_numpy(x[i]).float(), torch.from_numpy(y[i]).long())

    return make(i_train), make(i_val), make(i_test)


def _digits(seed: int) -> tuple[Split, Split, Split]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    return _stratified_split(x, bunch.target, seed)


_TORCHVISION = {"mnist": ("MNIST", 10), "fashion_mnist": ("FashionMNIST", 10), "cifar10": ("CIFAR10", 10)}


# files torchvision reads for each data set, relative to the data root (any one present is enough)
_FILES = {"mnist": ("MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-images-idx3-ubyte.gz"),
          "fashion_mnist": ("FashionMNIST/raw/train-images-idx3-ubyte", "FashionMNIST/raw/train-images-idx3-ubyte.gz"),
          "cifar10": ("cifar-10-batches-py/data_batch_1",),
          "usps": ("usps.t.bz2",)}


# Debian's package dataset-fashion-mnist ships the original gzipped IDX files here
_IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
              "t10k-labels-idx1-ubyte.gz")


def debian_fashion_mnist() -> Path:
    """Where Debian's ``dataset-fashion-mnist`` puts its files (``$QFAIL_FASHION_MNIST`` overrides)."""
    return Path(os.environ.get("QFAIL_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


def _idx_present(folder: Path) -> bool:
    return all((folder / n).exists() for n in _IDX_NAMES)


def data_present(name: str, root: str | Path | None = None) -> bool:
    """Whether ``name`` (a data set or natural shift) can be loaded offline: built in, or on disk."""
    if name == "digits":
        return True
    check_choice("dataset", name, tuple(_FILES))
    if name == "fashion_mnist" and _idx_present(debian_fashion_mnist()):
        return True
    root = Path(root) if root else default_data_root()
    return any((root / f).exists() for f in _FILES[name])


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, gzipped or not) as a numpy array.

    Raises ValueError for a file that is not IDX or whose size does not match its header.
    """
    import gzip

    raw = (gzip.open if str(path).endswith(".gz") else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (corrupt or wrong file)")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {body.size} values but its header says {shape} (truncated?)")
    return body.reshape(shape)


def _idx_splits(folder: Path, seed: int) -> tuple[Split, Split, Split]:
    """Train/val/test from the four IDX files in ``folder``; the validation tenth held out by ``seed``."""
    x, y, x_test, y_test = (read_idx(folder / n) for n in _IDX_NAMES)
    x = torch.as_tensor(x.copy()).float().div_(255)[:, None]
    x_test = torch.as_tensor(x_test.copy()).float().div_(255)[:, None]
    y, y_test = torch.as_tensor(y.astype(np.int64)), torch.as_tensor(y_test.astype(np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = len(y) // 10
    val, tr = perm[:n_val], perm[n_val:]
    return Split(x[tr], y[tr]), Split(x[val], y[val]), Split(x_test, y_test)


def _tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision data set's uint8 images as (N, C, H, W) floats in [0, 1], and its labels."""
    x = torch.as_tensor(np.asarray(ds.data)).float().div_(255)
    x = x.permute(0, 3, 1, 2) if x.dim() == 4 else x[:, None]
    return x.contiguous(), torch.as_tensor(np.asarray(ds.targets)).long()


def _torchvision(name: str, root: Path, download: bool, seed: int) -> tuple[Split, Split, Split]:
    import torchvision

    cls_name, _ = _TORCHVISION[name]
    cls = getattr(torchvision.datasets, cls_name)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as err:
        if "not found" not in str(err).lower() and "corrupted" not in str(err).lower():
            raise
        raise FileNotFoundError(
            f"dataset={name!r} is not present under {root}; on a machine with network run "
            f"qfail.data.load_data({name!r}, download=True) once (or set QFAIL_DATA to a folder "
            f"holding torchvision's {cls_name} files)") from None

    x, y = _tensors(train)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=gen)
    n_val = len(y) // 10
    val, tr = perm[:n_val], perm[n_val:]
    x_test, y_test = _tensors(test)
    return Split(x[tr], y[tr]), Split(x[val], y[val]), Split(x_test, y_test)


def load_data(name: str = "digits", size: int | None = None, seed: int = 0, limit: int | None = None,
              root: str | Path | None = None, download: bool = False) -> DataSplits:
    """Load a data set as train/val/test tensors.

    Args:
        name: one of ``DATASETS``.
        size: resize images to size x size (bilinear); ``None`` keeps the native size.
        seed: the split seed (digits: the stratified split; torchvision sets: the validation
            hold-out of the training set).
        limit: keep at most this many examples per split (for CPU-sized runs).
        root: folder with torchvision's files (default ``$QFAIL_DATA`` or ~/.cache/qfail/data).
            Fashion-MNIST is read from Debian's ``dataset-fashion-mnist`` files when they are
            installed and no ``root`` is given (``debian_fashion_mnist``).
        download: let torchvision fetch missing files (needs network).

    Raises:
        ValueError: an unknown name, size or limit.
        FileNotFoundError: a torchvision set that is not on disk (and ``download`` is False).
    """
    check_choice("dataset", name, DATASETS)
    check_choice("size", size, SIZES)
    check_range("seed", seed, 0, integer=True)
    if limit is not None:
        check_range("limit", limit, 1, integer=True)
    if name == "digits":
        splits = _digits(seed)
    elif name == "fashion_mnist" and root is None and not download and _idx_present(debian_fashion_mnist()):
        splits = _idx_splits(debian_fashion_mnist(), seed)  # Debian's copy, offline
    else:
        splits = _torchvision(name, Path(root) if root else default_data_root(), download, seed)
    splits = [Split(_resize(s.x, size), s.y) for s in splits]
    if limit is not None:
        splits = [s.subset(limit) for s in splits]
    train, val, test = splits
    return DataSplits(name, train, val, test, 10, (name, size, seed, limit))


NATURAL_SHIFTS = ("usps",)


def load_natural_shift(name: str, size: int | None = None, root: str | Path | None = None,
                       download: bool = False, limit: int | None = None) -> Split:
    """A test set of the same task drawn from another source: a *natural* distribution shift.

    ``usps``: the USPS handwritten digits (16x16, US postal envelopes), a natural shift for the
    digits and MNIST (Hull 1994), read by torchvision from ``usps.t.bz2`` under ``root``.
    """
    check_choice("natural shift", name, NATURAL_SHIFTS)
    check_choice("size", size, SIZES)
    import torchvision

    root = Path(root) if root else default_data_root()
    try:
        ds = torchvision.datasets.USPS(str(root), train=False, download=download)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"natural shift {name!r} is not present under {root} (usps.t.bz2); on a machine with network run "
            f"qfail.data.load_natural_shift({name!r}, download=True) once (or set QFAIL_DATA)") from None
    x, y = _tensors(ds)
    split = Split(_resize(x, size), y)
    return split.subset(limit) if limit is not None else split


def minibatches(split: Split, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Split]:
    """Mini-batches of a split as splits (teacher answers included); shuffled with ``generator``
    so the order is seeded."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield split.take(order[start:start + batch_size])


def batches(split: Split, batch_size: int, shuffle: bool = False,
            generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` of :func:`minibatches`, in the same seeded order."""
    for batch in minibatches(split, batch_size, shuffle, generator):
        yield batch.x, batch.y
