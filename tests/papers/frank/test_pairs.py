"""Black-box distillation, network-policy pairs and the failure analyses."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import qfail
from qfail import distill
from qfail.data import DataSplits, Split
from qfail.papers.frank import analyses, pairs, stages


def test_black_box_exposes_no_parameters_or_gradients_and_counts_queries():
    clf = LogisticRegression(max_iter=200).fit(np.random.rand(40, 4), np.arange(40) % 2)
    box = distill.BlackBox(clf.predict_proba, budget=10)
    assert not isinstance(box, torch.nn.Module)
    assert [a for a in dir(box) if not a.startswith("_")] == ["budget", "queries", "query"]
    with pytest.raises(AttributeError):
        box.__dict__  # noqa: B018  (slots only: nothing else to reach)
    x = torch.rand(6, 1, 2, 2, requires_grad=True)
    p = box.query(x)
    assert p.shape == (6, 2) and not p.requires_grad and p.grad_fn is None and box.queries == 6
    with pytest.raises(distill.QueryBudgetExceeded, match="query of 6 inputs refused: 6 of the budget of 10 already spent"):
        box.query(x)
    assert box.queries == 6


def test_student_reaches_the_black_box_on_a_separable_problem():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.2, 0.2, 0.8, 0.8], [0.8, 0.8, 0.2, 0.2], [0.2, 0.8, 0.2, 0.8]])

    def split(n):
        y = torch.randint(3, (n,), generator=gen)
        return Split((centres[y] + 0.05 * torch.randn(n, 4, generator=gen)).clamp(0, 1).view(n, 1, 2, 2), y)

    data = DataSplits("toy", split(300), split(100), split(200), 3, ("toy",))
    clf = LogisticRegression(max_iter=500).fit(data.train.x.view(300, -1).numpy(), data.train.y.numpy())
    transfer = distill.query_transfer_set(distill.BlackBox(clf.predict_proba, budget=300), data, 300)
    student = distill.distill_black_box(transfer, lambda: qfail.build_model("mlp", (1, 2, 2), 3, seed=0, hidden=(16,)),
                                        {"toy": 1}, qfail.TrainConfig(epochs=40, lr=1e-2))
    teacher_acc = 100 * (clf.predict(data.test.x.view(200, -1).numpy()) == data.test.y.numpy()).mean()
    assert teacher_acc == 100 and qfail.accuracy(student.model, data.test) >= teacher_acc - 1


def test_teacher_is_fitted_once_per_data_kind_and_seed(digits):
    first = distill.sklearn_teacher(digits, "forest", 0)
    assert distill.sklearn_teacher(digits, "forest", 0) is first
    assert distill.sklearn_teacher(digits, "forest", 1) is not first
    with pytest.raises(ValueError, match="teacher='knn' is not allowed; choose one of 'mlp', 'forest', 'svm'"):
        distill.sklearn_teacher(digits, "knn")


def test_every_scikit_learn_inside_answers_probabilities_without_a_warning(digits):
    """A chapter prints what the teacher's fit warns; SVC's own probability=True is deprecated."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        for kind in ("svm", "forest"):
            p = distill.sklearn_teacher(digits, kind, 2).predict_proba(digits.test.x[:50].flatten(1).numpy())
            assert p.shape == (50, 10) and np.allclose(p.sum(1), 1)


def test_a_network_can_be_the_black_boxs_inside(digits):
    inside = distill.network_teacher(digits, "cnn", seed=0, epochs=2)
    box = distill.BlackBox(inside.predict_proba, budget=100)
    p = box.query(digits.test.x[:100])
    assert p.shape == (100, 10) and torch.allclose(p.sum(1), torch.ones(100), atol=1e-5)
    assert (p.argmax(1) == digits.test.y[:100]).float().mean() > 0.5
    assert distill.teacher(digits, "forest", 0) is distill.sklearn_teacher(digits, "forest", 0)
    with pytest.raises(ValueError, match="teacher='lenet' is not allowed; choose one of 'mlp', 'forest', 'svm', 'cnn', 'resnet'"):
        distill.teacher(digits, "lenet")


def test_transfer_inputs_use_real_images_first_then_seeded_copies(digits):
    x = distill.transfer_inputs(digits.train, len(digits.train) + 50, seed=3)
    assert torch.equal(x[:len(digits.train)], digits.train.x) and len(x) == len(digits.train) + 50
    assert torch.equal(x, distill.transfer_inputs(digits.train, len(digits.train) + 50, seed=3))
    assert x.min() >= 0 and x.max() <= 1


@pytest.fixture(scope="module")
def small_pairs():
    s = stages.setup("digits", None, "cnn", "mlp", 600, epochs=5, seed=0)
    return s, stages.train_pairs(s, pairs.PairConfig(rounds=3, retain_epochs=1, budget=3.0))


def test_pairs_train_evaluate_and_cross(small_pairs):
    s, trained = small_pairs
    assert set(trained) == {"robust", "detrimental"}
    for kind, pair in trained.items():
        assert pair.config.kind == kind and len(pair.history) == 3 and pair.policy_evaluations == 3 * 600
        correct = {}
        row = pairs.evaluate_pair(pair.network, trained["robust" if kind == "detrimental" else "detrimental"].policy,
                                  s.data.test, correct=correct)
        assert row["mean bits"] <= 3.0 + 1e-9 and row["FP acc"] > 50
        assert row["drop"] == pytest.approx(row["FP acc"] - row["Q acc"])
        assert [100 * correct[k].mean() for k in ("FP", "Q")] == pytest.approx([row["FP acc"], row["Q acc"]])
    scores = stages.student_scores(s)
    assert 100 * scores["correct"].mean() == pytest.approx(scores["accuracy (%)"])
    assert 100 * scores["teacher correct"].mean() == pytest.approx(scores["teacher accuracy (%)"])
    again = stages.train_pairs(s, pairs.PairConfig(rounds=3, retain_epochs=1, budget=3.0))  # from the cache
    for kind in trained:
        for a, b in zip(trained[kind].network.parameters(), again[kind].network.parameters()):
            assert torch.equal(a, b)


def test_search_baselines_select_on_validation_and_score_on_test(small_pairs):
    s, trained = small_pairs
    d = trained["detrimental"]
    val, test = s.data.val, s.data.test
    table = pairs.search_baselines(d.network, d.policy, val, test, d.policy_evaluations, 3.0, random_draws=2)
    assert table["search"].tolist()[0] == "uniform 3 bits" and len(table) == 5
    chosen_on_val = pairs.static_search(d.network, val, 3.0)
    exhaustive = table[table.search.str.startswith("exhaustive")].iloc[0]
    scored = pairs.evaluate_pair(d.network, pairs.StaticPolicy(chosen_on_val["bits"].iloc[0], pairs.BIT_CHOICES, 3.0), test)
    assert exhaustive["worst drop"] == scored["drop"]  # picked on validation, scored on test
    assert exhaustive["network evaluations"] == len(chosen_on_val) * len(val) + len(test)
    learned = table[table.search == "learned (REINFORCE)"].iloc[0]
    assert learned["network evaluations"] == d.policy_evaluations + len(test)


def test_dynamic_gain_compares_the_policy_with_its_shuffle_and_the_worst_static(small_pairs):
    s, trained = small_pairs
    d = trained["detrimental"]
    row = pairs.dynamic_gain(d.network, d.policy, s.data.val, s.data.test, 3.0)
    assert row["dynamic gain"] == pytest.approx(row["drop (π_D)"] - row["drop (worst static)"])
    assert row["distinct assignments"] >= 1 and 0 <= row["inputs off the commonest assignment (%)"] < 100
    static = pairs.StaticPolicy([2, 3, 4], pairs.BIT_CHOICES, 3.0)
    # a static policy shuffled across inputs is the same policy
    assert pairs.evaluate_pair(d.network, pairs.ShuffledPolicy(static, 1), s.data.test) == \
        pairs.evaluate_pair(d.network, static, s.data.test)


def test_layer_wise_quantization_touches_exactly_the_named_layers(small_pairs):
    _, trained = small_pairs
    net = trained["robust"].network
    names = list(net.layer_names)
    seen = {}
    hooks = [q.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, m.enabled)) for n, q in net.layers.items()]
    with analyses.quantized_layers(net, [names[1]]):
        net(torch.rand(2, 1, 8, 8))
    for h in hooks:
        h.remove()
    assert seen == {n: n == names[1] for n in names}
    assert all(q.enabled for q in net.layers.values())  # restored
    with pytest.raises(ValueError, match="layer='conv9' is not allowed"), analyses.quantized_layers(net, ["conv9"]):
        pass


def test_analyses_shapes(small_pairs):
    s, trained = small_pairs
    d = trained["detrimental"]
    test = s.data.test.subset(50)
    lw = analyses.layer_wise(d.network, d.policy, test)
    assert len(lw) == 3 * len(d.network.layer_names)
    full = pairs.evaluate_pair(d.network, d.policy, test)["Q acc"]
    assert lw[(lw.protocol == "up to")].iloc[-1]["Q acc"] == full == lw[(lw.protocol == "from")].iloc[0]["Q acc"]
    acts = analyses.activation_samples(d.network, d.policy, test.x)
    assert all(v["fp"].shape == v["q"].shape for v in acts.values())
    curves = analyses.corruption_curves(d.network, d.policy, test, ["gaussian_noise"], [1, 5])
    assert curves.severity.tolist() == [0, 1, 5]
    points = analyses.transitory_points(d.network, d.policy, test)
    assert len(points) == 50 and (points.flips == ((points["FP pred"] == points.label) & (points["Q pred"] != points.label))).all()


def test_transfer_set_keeps_the_teacher_answers_beside_the_labels(digits):
    inside = distill.sklearn_teacher(digits, "mlp", 0)
    transfer = distill.query_transfer_set(distill.BlackBox(inside.predict_proba, budget=1500), digits, 1500)
    train = transfer.train
    assert train.y.dtype == torch.long and train.teacher.shape == (1500, 10)
    assert torch.equal(train.y[:len(digits.train)], digits.train.y)  # real labels for the real images
    assert torch.equal(train.y[len(digits.train):], train.teacher[len(digits.train):].argmax(1))
    part = transfer.train_fraction(0.5, seed=0).train
    batch = next(iter(qfail.data.minibatches(part, 64, shuffle=True, generator=torch.Generator().manual_seed(0))))
    assert batch.teacher.shape == (64, 10) and torch.allclose(batch.teacher.sum(1), torch.ones(64), atol=1e-5)
    with pytest.raises(ValueError, match="no teacher answers"):
        distill.teacher_log_probs(digits.train)


def test_a_policy_can_see_the_networks_early_features(small_pairs):
    s, _ = small_pairs
    config = pairs.PairConfig(rounds=1, retain_epochs=0, budget=3.0, policy_input="features", kind="detrimental")
    pair = pairs.train_pair(s.student.model, s.transfer.train, config)
    features = pairs.early_features(pair.network)(s.data.test.x[:5])
    assert pair.policy.net[1].in_features == features.shape[1] != s.data.test.x[0].numel()
    row = pairs.evaluate_pair(pair.network, pair.policy, s.data.test)
    assert row["mean bits"] <= 3.0 + 1e-9
    with pytest.raises(ValueError, match="policy_input='logits' is not allowed; choose one of 'pixels', 'features'"):
        pairs.PairConfig(policy_input="logits")
