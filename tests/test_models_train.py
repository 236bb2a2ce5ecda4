import itertools
from dataclasses import replace

import pytest
import torch

import qfail
from qfail import train
from qfail.models import build_model


@pytest.mark.parametrize("name, kwargs", [("mlp", {}), ("cnn", {}), ("resnet", {"depth": 8, "width": 0.5})])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_models_run_on_small_and_cifar_sizes(name, kwargs, shape):
    model = build_model(name, shape, seed=0, **kwargs)
    assert model(torch.rand(2, *shape)).shape == (2, 10)
    torch.fx.symbolic_trace(model)  # every model traces (needed by BN folding and INT8)


def test_resnet20_depth():
    model = build_model("resnet", (3, 32, 32), depth=20)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 19  # 1 stem + 9 blocks x 2
    with pytest.raises(ValueError, match="depth=21 is not allowed"):
        build_model("resnet", (3, 32, 32), depth=21)
    with pytest.raises(ValueError, match="model='vgg' is not allowed; choose one of 'mlp', 'cnn', 'lenet1', 'lenet5', 'resnet'"):
        build_model("vgg", (3, 32, 32))


def test_training_is_deterministic(digits):
    def run():
        model = build_model("cnn", digits.input_shape, seed=3)
        qfail.fit(model, digits.train.subset(300), qfail.TrainConfig(epochs=2, seed=3, method="mixup"))
        return model.state_dict()

    a, b = run(), run()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_training_learns(trained_cnn, digits):
    assert qfail.accuracy(trained_cnn, digits.test) > 95


def test_train_cached_reuses_weights(digits, monkeypatch):
    calls = []
    data = qfail.load_data(limit=200)

    def make():
        calls.append(1)
        return build_model("mlp", data.input_shape, seed=0)

    cfg = qfail.TrainConfig(epochs=1)
    a = qfail.train_cached(make, {"name": "mlp"}, data, cfg)
    b = qfail.train_cached(make, {"name": "mlp"}, data, cfg)
    assert len(calls) == 3  # built for training + loading, then only for loading
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key])
    # the record travels with the model: the same key, the training curve and its cost
    assert a.key == b.key and a.key["model"] == {"name": "mlp"} and a.key["train"]["epochs"] == 1 and a.key["entry"]
    assert len(a.history) == 1 and a.history == b.history and a.seconds == b.seconds > 0


def test_a_qat_run_takes_its_float_half_from_the_standard_run_unchanged(digits, monkeypatch, tmp_path):
    data = qfail.load_data(limit=300)
    standard = qfail.TrainConfig(epochs=4, batch_size=32, seed=1)  # constant rate; QAT: 2 float + 2 QAT epochs
    qat = replace(standard, method="qat")

    def make():
        return build_model("cnn", data.input_shape, seed=1, dropout=0.25)  # dropout: the global RNG must match too

    epochs = []
    real_fit = train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **k: epochs.append(a[2].epochs) or real_fit(*a, **k))
    monkeypatch.setenv("QFAIL_CACHE", str(tmp_path / "alone"))
    alone = qfail.train_cached(make, {"name": "cnn"}, data, qat)  # trains its own 2 float epochs
    assert epochs == [2, 2]
    monkeypatch.setenv("QFAIL_CACHE", str(tmp_path / "shared"))
    epochs.clear()
    full = qfail.train_cached(make, {"name": "cnn"}, data, standard)
    shared = qfail.train_cached(make, {"name": "cnn"}, data, qat)
    assert epochs == [4, 2]  # the float half was stored on the standard run's way: only QAT epochs follow
    for key, value in alone.model.state_dict().items():
        assert torch.equal(value, shared.model.state_dict()[key]), key
    assert alone.history == shared.history and len(shared.history) == 4
    assert shared.history[:2] == full.history[:2]
    by_hand = make()  # what the QAT recipe always did first: two float epochs of its own
    real_fit(by_hand, data.train, replace(qat, epochs=2))
    stored = qfail.train_cached(make, {"name": "cnn"}, data, train.float_phase(qat)).model.state_dict()
    assert all(torch.equal(value, stored[key]) for key, value in by_hand.state_dict().items())
    # a schedule that depends on the run's length has no such shortcut
    epochs.clear()
    qfail.train_cached(make, {"name": "cnn"}, data, replace(standard, lr_schedule="cosine"))
    qfail.train_cached(make, {"name": "cnn"}, data, replace(qat, lr_schedule="cosine"))
    assert epochs == [4, 2, 2]


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "sgd"}, "method='sgd' is not allowed; choose one of 'standard', 'mixup'"),
    ({"epochs": -1}, "epochs=-1 is out of range"),
    ({"lr": "fast"}, "lr='fast' must be a number"),
    ({"lr_schedule": "linear"}, "lr_schedule='linear' is not allowed; choose one of 'constant', 'cosine', 'step'"),
    ({"optimizer": "rmsprop"}, "optimizer='rmsprop' is not allowed; choose one of 'adam', 'sgd'"),
    ({"augment": "cutout"}, "augment='cutout' is not allowed; choose one of 'none', 'crop_flip'"),
])
def test_train_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        qfail.TrainConfig(**kwargs)


def test_cosine_schedule_anneals_to_zero_over_the_run(digits, monkeypatch):
    rates = []
    step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    model = qfail.build_model("mlp", digits.input_shape, seed=0)
    qfail.train.fit(model, digits.train, qfail.TrainConfig(epochs=2, lr=1e-2, lr_schedule="cosine", batch_size=256))
    steps = 2 * -(-len(digits.train) // 256)
    assert len(rates) == steps and rates[0] == 1e-2
    assert all(a > b for a, b in itertools.pairwise(rates)) and rates[-1] < 1e-2 * 0.05


def test_device_validation():
    with pytest.raises(ValueError, match="device='tpu' is not allowed"):
        qfail.train.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' is not available"):
            qfail.train.resolve_device("cuda")


@pytest.mark.parametrize("name, convs, dense", [("lenet1", (4, 12), 1), ("lenet5", (6, 16), 3)])
@pytest.mark.parametrize("side", [8, 16, 28])
def test_lenets_have_the_sources_layers_at_any_side(name, convs, dense, side):
    net = qfail.build_model(name, (1, side, side), seed=0, dropout=0.25)
    assert net(torch.rand(3, 1, side, side)).shape == (3, 10)
    assert tuple(m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)) == convs
    assert sum(isinstance(m, torch.nn.Linear) for m in net.modules()) == dense
    assert any(isinstance(m, torch.nn.Dropout) for m in net.modules())


def test_example_passes_count_the_training_pass_and_every_pgd_step():
    clean = train.TrainConfig(epochs=2, batch_size=64)
    assert train.example_passes(clean, 150) == 2 * 150  # batches of 64, 64 and 22
    adversarial = replace(clean, method="adversarial", adv_steps=5, adv_ratio=0.5)
    assert train.example_passes(adversarial, 150) == 2 * (150 + 5 * (32 + 32 + 11))
