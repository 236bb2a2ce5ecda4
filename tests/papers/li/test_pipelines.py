"""Li et al.'s pipelines: which float model, which quantizer, adversarial or clean QAT, how much data."""
import pytest
import torch

import qfail
from qfail.papers.li import pipelines as rb
from qfail.train import TrainConfig, train_cached

QAT = TrainConfig(epochs=1, adv_eps=0.1, adv_steps=2, adv_step_size=0.05)


@pytest.fixture(scope="module")
def floats(digits):
    models = {}
    for init in ("standard", "adversarial"):
        cfg = TrainConfig(epochs=3, method=init, adv_eps=0.1, adv_steps=3, adv_step_size=0.05)
        models[init] = train_cached(lambda: qfail.build_model("cnn", digits.input_shape, seed=0), {"t": "rb"}, digits, cfg)
    return models


def test_pipeline_table():
    assert [(p.init, p.adversarial_qat, p.fraction) for p in map(rb.pipeline, rb.PIPELINES)] == [
        ("standard", False, 1.0), ("adversarial", False, 1.0), ("standard", True, 1.0), ("adversarial", True, 1.0),
        ("adversarial", True, 0.25), ("random", False, 1.0), ("adversarial", False, 0.25)]
    with pytest.raises(ValueError, match="pipeline='h' is not allowed; choose one of 'a', 'b', 'c', 'd', 'e', 'f', 'g'"):
        rb.pipeline("h")
    assert rb.transfer_source("random") == "standard" and rb.transfer_source("adversarial") == "adversarial"


def test_train_fraction_is_seeded_and_keyed(digits):
    part = digits.train_fraction(0.25, seed=1)
    assert len(part.train) == round(0.25 * len(digits.train)) and part.test is digits.test
    assert torch.equal(part.train.x, digits.train_fraction(0.25, seed=1).train.x)
    assert part.fingerprint != digits.fingerprint != digits.train_fraction(0.25, seed=2).fingerprint


@pytest.mark.parametrize("method", ["static", "pwlq", "pact"])
def test_quantize_along_pipelines(floats, digits, method):
    for name in ("b", "e") if method == "pact" else ("a",):
        quantized = rb.quantize_along(rb.pipeline(name), floats, digits, method, "activations", 4, QAT)
        qm = quantized.model
        first, *rest = qm.layers.values()
        assert first.act_bits == 32  # the image itself stays in float unless raw_input=True
        assert all(layer.weight_bits == 32 and layer.act_bits == 4 for layer in rest)
        assert qfail.accuracy(qm, digits.test) > 50
        assert quantized.key["source"] == floats[rb.pipeline(name).init].key  # derived from its float model
        if method == "pact":
            assert quantized.seconds > 0 and qm.config.act_mode == "pact"


def test_evaluate_reports_white_box_and_transfer(floats, digits):
    models = {init: t.model for init, t in floats.items()}
    attacks = [rb.Attack("fgsm", "linf", 0.1), rb.Attack("pgd", "linf", 0.1, steps=5)]
    qm = rb.quantize_along(rb.pipeline("a"), floats, digits, "static", "both", 4, QAT).model
    crafted = rb.transfer_set(models["standard"], digits, attacks, limit=100)
    row = rb.evaluate(qm, digits, attacks, transfer=crafted, limit=100)
    assert set(row) == {"clean", "FGSM-linf 0.1", "FGSM-linf 0.1 transfer", "PGD-linf 0.1", "PGD-linf 0.1 transfer"}
    assert row["PGD-linf 0.1"] <= row["FGSM-linf 0.1"] + 5 and row["PGD-linf 0.1"] < row["clean"]
    # on the float model itself, the transfer attack is plain PGD: white-box keeps each input's first
    # success (stop_on_success), so it is at least as strong
    same = rb.evaluate(models["standard"], digits, attacks, transfer=crafted, limit=100)
    assert same["PGD-linf 0.1"] <= same["PGD-linf 0.1 transfer"]
    with pytest.raises(ValueError, match="transfer has no 50 examples for 'FGSM-linf 0.1'"):
        rb.evaluate(qm, digits, attacks, transfer=crafted, limit=50)
    robust = rb.evaluate(models["adversarial"], digits, attacks, limit=100)["PGD-linf 0.1"]
    assert robust > rb.evaluate(models["standard"], digits, attacks, limit=100)["PGD-linf 0.1"]


def test_matrix_cells_put_ptq_on_the_ptq_pipelines_only():
    cells = rb.matrix_cells(["a", "c", "e"], ["static", "pwlq"], [8, 4], ["weights"], ["pact"], [4], ["weights", "both"])
    ptq = [c for c in cells if c.stage == "PTQ"]
    assert {c.pipeline for c in ptq} == {"a"} and len(ptq) == 4
    assert [(c.pipeline, c.stage) for c in cells if c.method == "pact"] == [
        ("a", "clean QAT"), ("a", "clean QAT"), ("c", "adversarial QAT"), ("c", "adversarial QAT"),
        ("e", "adversarial QAT"), ("e", "adversarial QAT")]
    with pytest.raises(ValueError, match="ptq_methods='pact' is not allowed; choose one of 'static', 'pwlq'"):
        rb.matrix_cells(["a"], ["pact"], [4], ["weights"], [], [], [])
    with pytest.raises(ValueError, match="parts='bias' is not allowed"):
        rb.matrix_cells(["a"], ["static"], [4], ["bias"], [], [], [])


def test_run_matrix_rows_and_the_shared_pwlq_activation_cell(floats, digits):
    attacks = [rb.Attack("pgd", "linf", 0.1, steps=2)]
    cells = rb.matrix_cells(["a", "b"], ["static", "pwlq"], [4], ["activations"], ["pact"], [4], ["activations"])
    transfer = {i: rb.transfer_set(m.model, digits, attacks, limit=30) for i, m in floats.items()}
    rows, qms = rb.run_matrix(cells, floats, digits, QAT, attacks, transfer, surrogate=attacks[0], limit=30,
                              autoattack=True)
    assert len(rows) == len(cells) == 6
    # PWLQ on activations alone is uniform PTQ: one model, one evaluation
    assert qms[rb.Cell("a", "pwlq", "activations", 4)] is qms[rb.Cell("a", "static", "activations", 4)]
    assert (rows["PGD-linf 0.1 AutoAttack"] <= rows["clean"]).all()
    assert rows["PGD-linf 0.1 surrogate"].between(0, 100).all()
    assert set(rows.stage) == {"PTQ", "clean QAT"} and (rows["float s"] > 0).all()
    qat = rows[rows.stage == "clean QAT"]
    assert (qat["quant s"] > 0).all() and qat["PGD-linf 0.1 surrogate"].between(0, 100).all()
    views = ["PGD-linf 0.1", "PGD-linf 0.1 transfer", "PGD-linf 0.1 surrogate", "PGD-linf 0.1 AutoAttack"]
    for _, row in rows.iterrows():  # each column's accuracy is the mean of its per-input correctness
        assert [100 * row["correct"][v].mean() for v in ["clean", *views]] == pytest.approx(row[["clean", *views]].tolist())
    worst = rb.strongest(rows, views)
    assert worst["worst"].tolist() == rows[views].min(axis=1).tolist()
    assert all(100 * c["worst"].mean() == pytest.approx(w) for c, w in zip(worst["correct"], worst["worst"]))


def test_surrogate_attacks_the_network_without_its_rounding(floats, digits):
    models = {init: t.model for init, t in floats.items()}
    qm = rb.quantize_along(rb.pipeline("a"), floats, digits, "static", "weights", 2, QAT).model
    a = rb.Attack("pgd", "linf", 0.1, steps=3)
    # weights only: without its rounding the network is the float model, so BPDA is the transfer attack
    crafted = rb.transfer_set(models["standard"], digits, [a], limit=50)
    assert rb.surrogate_accuracy(qm, digits, a, limit=50) == rb.evaluate(qm, digits, [a], crafted, limit=50)[f"{a.label} transfer"]
    assert all(layer.enabled and layer.rounding for layer in qm.layers.values())  # rounding is back on afterwards
    raw = rb.quantize_along(rb.pipeline("a"), floats, digits, "static", "both", 4, QAT, raw_input=True).model
    assert all(layer.act_bits == 4 for layer in raw.layers.values())


def test_larger_budgets_attack_only_what_smaller_ones_left_standing(floats, digits):
    model = floats["standard"].model
    attacks = [rb.Attack("pgd", "linf", e, steps=3) for e in (0.1, 0.03, 0.06)] + [rb.Attack("pgd", "l2", 0.5, steps=3)]
    row = rb.evaluate(model, digits, attacks, limit=80)
    assert list(row) == ["clean", "PGD-linf 0.1", "PGD-linf 0.03", "PGD-linf 0.06", "PGD-l2 0.5"]  # as given
    assert row["clean"] >= row["PGD-linf 0.03"] >= row["PGD-linf 0.06"] >= row["PGD-linf 0.1"]
    alone = rb.evaluate(model, digits, [rb.Attack("pgd", "linf", 0.06, steps=3)], limit=80)["PGD-linf 0.06"]
    assert row["PGD-linf 0.06"] <= alone  # the union with the smaller budget's examples
