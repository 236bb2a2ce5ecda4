"""Li et al.'s pipelines: which float model, which quantizer, adversarial or clean QAT, how much data."""
import pytest
import torch

import qfail
from qfail import robustness as rb
from qfail.train import TrainConfig, train_cached

QAT = TrainConfig(epochs=1, adv_eps=0.1, adv_steps=2, adv_step_size=0.05)


@pytest.fixture(scope="module")
def floats(digits):
    models, keys = {}, {}
    for init in ("standard", "adversarial"):
        cfg = TrainConfig(epochs=3, method=init, adv_eps=0.1, adv_steps=3, adv_step_size=0.05)
        keys[init] = {"t": "rb", "train": cfg.__dict__}
        models[init] = train_cached(lambda: qfail.build_model("cnn", digits.input_shape, seed=0), keys[init], digits, cfg)
    return models, keys


def test_pipeline_table():
    assert [(p.init, p.adversarial_qat, p.fraction) for p in map(rb.pipeline, rb.PIPELINES)] == [
        ("standard", False, 1.0), ("adversarial", False, 1.0), ("standard", True, 1.0), ("adversarial", True, 1.0),
        ("adversarial", True, 0.25)]
    with pytest.raises(ValueError, match="pipeline='f' is not allowed; choose one of 'a', 'b', 'c', 'd', 'e'"):
        rb.pipeline("f")


def test_train_fraction_is_seeded_and_keyed(digits):
    part = digits.train_fraction(0.25, seed=1)
    assert len(part.train) == round(0.25 * len(digits.train)) and part.test is digits.test
    assert torch.equal(part.train.x, digits.train_fraction(0.25, seed=1).train.x)
    assert part.fingerprint != digits.fingerprint != digits.train_fraction(0.25, seed=2).fingerprint


@pytest.mark.parametrize("method", ["static", "pwlq", "pact"])
def test_quantize_along_pipelines(floats, digits, method):
    models, keys = floats
    for name in ("b", "e") if method == "pact" else ("a",):
        qm = rb.quantize_along(rb.pipeline(name), models, keys, digits, method, "activations", 4, QAT)
        assert all(layer.weight_bits == 32 and layer.act_bits == 4 for layer in qm.layers.values())
        assert qfail.accuracy(qm, digits.test) > 50
        if method == "pact":
            assert qm.train_seconds > 0 and qm.config.act_mode == "pact"


def test_evaluate_reports_white_box_and_transfer(floats, digits):
    models, _ = floats
    attacks = [rb.Attack("fgsm", "linf", 0.1), rb.Attack("pgd", "linf", 0.1, steps=5)]
    qm = rb.quantize_along(rb.pipeline("a"), *floats, digits, "static", "both", 4, QAT)
    row = rb.evaluate(qm, digits, attacks, source=models["standard"], limit=100)
    assert set(row) == {"clean", "FGSM-linf 0.1", "FGSM-linf 0.1 transfer", "PGD-linf 0.1", "PGD-linf 0.1 transfer"}
    assert row["PGD-linf 0.1"] <= row["FGSM-linf 0.1"] + 5 and row["PGD-linf 0.1"] < row["clean"]
    robust = rb.evaluate(models["adversarial"], digits, attacks, limit=100)["PGD-linf 0.1"]
    assert robust > rb.evaluate(models["standard"], digits, attacks, limit=100)["PGD-linf 0.1"]
