"""Training variants, deployment settings, disagreement tables and the paper's parsed numbers."""
import pytest
import torch

import qfail
from qfail.papers.hu import disagreements as dis
from qfail.papers.hu import published
from qfail.train import TrainConfig, Trained, train_cached

SHIFTS, SEVERITIES = ["gaussian_noise", "rotate"], [1, 5]


def _make(digits):
    return lambda: qfail.build_model("cnn", digits.input_shape, seed=0, dropout=0.25)


@pytest.fixture(scope="module")
def variants(digits):
    out = {}
    for method in ("standard", "adversarial", "qat"):
        config = TrainConfig(epochs=4, method=method, adv_eps=0.2, adv_steps=3, adv_step_size=0.1)
        out[method] = train_cached(_make(digits), {"t": "dis"}, digits, config).model
    return out


def test_training_methods_share_init_and_budget_and_learn(variants, digits):
    for method, net in variants.items():
        assert qfail.accuracy(net, digits.test) > 70, method
        assert type(net) is type(variants["standard"])  # QAT hands back the float architecture
    assert not torch.equal(variants["standard"].classifier[-1].weight, variants["qat"].classifier[-1].weight)


def test_adversarial_training_is_more_robust(variants, digits):
    x, y = digits.test.x[:200], digits.test.y[:200]
    robust = {m: qfail.attack.robust_accuracy(variants[m], x, y, "pgd", 0.15, steps=5) for m in ("standard", "adversarial")}
    assert robust["adversarial"] > robust["standard"] + 10


def test_qat_float_model_is_the_wrapped_network(trained_cnn, digits):
    from qfail.quant import QuantConfig, quantize_model

    qm = quantize_model(trained_cnn, QuantConfig(fold_bn=False), (8, 8), calibration=[digits.train.x[:64]])
    plain = qm.float_model()
    assert not any(isinstance(m, qfail.quant.QuantLayer) for m in plain.modules())
    with qm.full_precision():
        assert torch.allclose(plain(digits.test.x[:32]), qm(digits.test.x[:32]))


@pytest.mark.parametrize("setting", list(dis.SETTINGS) + ["w4a4"])
def test_deploy_quantizes_without_touching_the_original(trained_cnn, digits, setting):
    before = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    deployed = dis.deploy(trained_cnn, setting, digits.train.x)
    x = digits.test.x[:64]
    fp, q = trained_cnn(x), deployed(x)
    assert q.shape == fp.shape and not torch.equal(q, fp)
    assert (q.argmax(1) == fp.argmax(1)).float().mean() > 0.8
    assert all(torch.equal(v, trained_cnn.state_dict()[k]) for k, v in before.items())


def test_fp16_rounds_weights_only_to_half(trained_cnn, digits):
    deployed = dis.deploy(trained_cnn, "fp16", digits.train.x)
    w = deployed.classifier[-1].weight
    assert torch.equal(w, w.half().float()) and not torch.equal(w, trained_cnn.classifier[-1].weight)


def test_dynamic_setting_is_per_input(trained_cnn, digits):
    deployed = dis.deploy(trained_cnn, "dynamic", digits.train.x)
    x = digits.test.x[:16]
    together = deployed(x)
    alone = torch.cat([deployed(x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(together, alone, atol=1e-6)


def test_bad_settings_are_one_line():
    for bad in ("int4", "w4a8", "w9a9", 8):
        with pytest.raises(ValueError, match=r"setting=.* is not allowed; choose one of 'int8'"):
            dis.check_setting(bad)


def test_predictions_rates_and_scores(trained_cnn, digits):
    preds = dis.predict_sets(Trained(trained_cnn, {"t": "cnn8"}), digits, ["int8", "w2a2"], SHIFTS, SEVERITIES, mc_samples=3)
    again = dis.predict_sets(Trained(trained_cnn, {"t": "cnn8"}), digits, ["int8", "w2a2"], SHIFTS, SEVERITIES, mc_samples=3)
    assert torch.equal(preds.fp_probs, again.fp_probs)  # cached, and deterministic
    assert preds.fp_probs.shape == (1 + len(SHIFTS) * len(SEVERITIES), len(digits.test), 10)
    assert preds.mc_variance is None  # trained_cnn has no dropout
    rates = dis.rate_table({"standard": preds})
    manual = int((preds.fp_pred()[0] != preds.q_pred("w2a2")[0]).sum())
    row = rates[(rates.setting == "w2a2") & (rates["shift"] == "none")].iloc[0]
    assert row.disagreements == manual and row.low <= row.rate <= row.high
    summary = dis.summary_table(rates).set_index("setting")
    assert summary.loc["w2a2", "shifted per 1k"] > summary.loc["int8", "shifted per 1k"]
    scores = dis.score_table({"standard": preds}, "w2a2")
    assert set(scores.score) == {"Margin", "Entropy", "LC", "Gini"}
    assert (scores["AUROC (all)"] > 0.5).all()


def test_retraining_reports_every_arm(digits):
    trained = train_cached(_make(digits), {"t": "retrain"}, digits, TrainConfig(epochs=3))
    table = dis.retrain_with_disagreements(trained, digits, ["w3a3"], SHIFTS, [5], TrainConfig(epochs=1))
    assert list(table["fine-tuned"]) == list(dis.RETRAIN_ARMS)
    assert (table["old (persist)"] + table["removed"] == table["before"]).all()
    assert (table["old (persist)"] + table["new"] == table["after"]).all()
    assert table.mined.iloc[0] > 0


def test_published_tables_parse_to_the_paper_numbers():
    summary = published.hu_shift_summary("MNIST").set_index(["training", "model", "setting"])
    # LeNet1, 8-bit TFLite, standard training: 14 clean disagreements, shifted mean 114.9 (of 10,000)
    assert summary.loc[("standard", "LeNet1", "int8"), "clean per 1k"] == pytest.approx(1.4)
    assert summary.loc[("standard", "LeNet1", "int8"), "shifted per 1k"] == pytest.approx(11.49, abs=0.01)
    assert summary.loc[("QAT", "LeNet1", "dynamic"), "clean per 1k"] == 0
    assert len(summary) == 4 * 2 * 4
    auc = published.hu_metric_auroc().set_index(["dataset", "model", "training"])
    assert auc.loc[("MNIST", "Lenet1", "standard"), "Margin"] == pytest.approx(94.76)
    counts, changes = published.hu_retraining()
    assert changes.set_index(["model", "kind"]).loc[("LeNet1", "new"), "count"] == 15
    assert counts.set_index(["model", "setting"]).loc[("NiN", "int8"), "before"] == 514
    with pytest.raises(ValueError, match="dataset='SVHN' is not allowed"):
        published.hu_shift_summary("SVHN")


def test_natural_shift_rates_have_the_rate_table_columns(trained_cnn, digits):
    natural = qfail.data.Split(digits.val.x[:50].flip(-1), digits.val.y[:50])  # mirrored digits as a stand-in
    table = dis.natural_rates({"standard": trained_cnn}, ["int8", "w2a2"], digits, natural, "mirrored")
    assert list(table.columns) == list(dis.rate_table({"standard": dis.predict_sets(
        Trained(trained_cnn, {"t": "cnn8"}), digits, ["int8", "w2a2"], SHIFTS, SEVERITIES, mc_samples=3)}).columns)
    assert (table.inputs == 50).all() and (table.low <= table.rate).all()
