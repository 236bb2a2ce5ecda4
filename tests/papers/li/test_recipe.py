"""The source's CIFAR-10 ResNet-20 recipe, run on generated CIFAR-10 files (nothing downloaded)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import qfail
from qfail.papers.li import pipelines as rb
from qfail.train import TrainConfig, crop_flip, fit


def _fake_cifar(root, n_train: int = 40, n_test: int = 20) -> None:
    """torchvision's cifar-10-batches-py layout with random images (its md5 check is bypassed)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    gen = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", n_train // 5) for i in range(1, 6)), ("test_batch", n_test)]:
        batch = {"data": gen.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8), "labels": list(gen.integers(0, 10, n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))


def test_auto_picks_the_cifar_recipe_on_cifar10_only():
    floats, qat = rb.training_configs("auto", "cifar10", 160, 20, 128, 8 / 255, 7)
    assert (floats["standard"].optimizer, floats["standard"].lr, floats["standard"].lr_schedule) == ("sgd", 0.1, "step")
    assert floats["adversarial"].method == "adversarial" and floats["standard"].augment == "crop_flip"
    assert (qat.lr, qat.batch_size, qat.weight_decay) == (0.01, 128, 1e-4)
    book, _ = rb.training_configs("auto", "digits", 15, 4, 64, 0.1, 5)
    assert (book["standard"].optimizer, book["standard"].lr_schedule, book["standard"].augment) == ("adam", "cosine", "none")
    with pytest.raises(ValueError, match="recipe='sgd' is not allowed"):
        rb.training_configs("sgd", "digits", 15, 4, 64, 0.1, 5)


def test_crop_flip_moves_images_by_at_most_the_padding_and_is_seeded():
    x = torch.rand(16, 3, 8, 8)
    a, b = crop_flip(x, torch.Generator().manual_seed(1)), crop_flip(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    with pytest.raises(ValueError, match="augment='crop_flip' needs images"):
        crop_flip(torch.rand(4, 64), torch.Generator())


def test_the_recipe_trains_a_resnet20_on_generated_cifar10(tmp_path, monkeypatch):
    from torchvision.datasets import cifar

    _fake_cifar(tmp_path)
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: True)
    data = qfail.load_data("cifar10", root=tmp_path, seed=0)
    assert data.input_shape == (3, 32, 32)
    floats, _ = rb.training_configs("auto", "cifar10", 2, 1, 8, 8 / 255, 2)

    def trained() -> list[float]:
        model = qfail.build_model("resnet", data.input_shape, seed=0, depth=20, width=0.25)
        return fit(model, data.train, floats["standard"])

    first = trained()
    assert len(first) == 2 and all(np.isfinite(first))
    assert trained() == first  # seeded: the crops, flips and batches repeat


def test_the_step_schedule_divides_by_ten_twice():
    net = torch.nn.Linear(2, 2)
    data = qfail.data.Split(torch.rand(8, 2), torch.randint(0, 2, (8,)))
    seen = []
    original = torch.optim.SGD.step

    def record(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.SGD, "step", record)
        fit(net, data, TrainConfig(epochs=4, batch_size=2, optimizer="sgd", lr=0.1, lr_schedule="step"))
    assert seen[0] == pytest.approx(0.1) and seen[8] == pytest.approx(0.01) and seen[-1] == pytest.approx(0.001)
