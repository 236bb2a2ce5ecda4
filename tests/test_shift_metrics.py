"""Distribution shifts (shape, range, determinism, identity at 0) and disagreement metrics."""
import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from qfail import metrics, shift


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 8, 8, generator=gen)


@pytest.mark.parametrize("name", list(shift.SHIFTS))
def test_each_shift_keeps_shape_range_and_is_deterministic(images, name):
    for severity in (1, 3, 5):
        out = shift.shift(images, name, severity, seed=3)
        assert out.shape == images.shape and out.dtype == images.dtype
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, shift.shift(images, name, severity, seed=3))
    assert torch.equal(shift.shift(images, name, 0), images)
    assert not torch.equal(shift.shift(images, name, 5, seed=3), images)


def test_severity_grows_the_change_and_flat_batches_work(images):
    for name in ("gaussian_noise", "contrast", "rotate", "posterize"):
        dist = [float((shift.shift(images, name, s, seed=1) - images).abs().mean()) for s in (1, 5)]
        assert dist[1] > dist[0], name
    flat = images.reshape(6, 64)
    assert torch.equal(shift.shift(flat, "rotate", 2, seed=4), shift.shift(images, "rotate", 2, seed=4).reshape(6, 64))
    big = torch.rand(2, 3, 32, 32)
    assert shift.shift(big, "elastic", 3).shape == big.shape


@pytest.mark.parametrize("name", ["canny_edges", "dotted_line", "fog", "glass_blur", "motion_blur", "shear",
                                  "spatter", "stripe", "zigzag"])
@pytest.mark.parametrize("side", [8, 16, 28])
def test_mnist_c_corruptions_grow_with_severity(digits, name, side):
    """Each severity moves the images further from the clean ones (mean absolute change)."""
    import torchvision.transforms.v2.functional as TF

    x = TF.resize(digits.test.x[:40], [side, side], antialias=True)
    dist = [float((shift.shift(x, name, s, seed=1) - x).abs().mean()) for s in (1, 2, 3, 4, 5)]
    assert all(a < b for a, b in itertools.pairwise(dist)), dist
    assert set(shift.MNIST_C) <= set(shift.SHIFTS) and len(shift.MNIST_C) == 15


def test_bad_shift_arguments_are_one_line(images):
    with pytest.raises(ValueError, match="shift='frost' is not allowed; choose one of 'gaussian_noise'"):
        shift.shift(images, "frost", 1)
    with pytest.raises(ValueError, match="severity=6 is not allowed; choose one of 0..5"):
        shift.shift(images, "brightness", 6)
    with pytest.raises(ValueError, match="square images"):
        shift.shift(torch.rand(2, 10), "rotate", 1)


def test_disagreement_counts_and_ci_covers_the_true_rate():
    a = torch.tensor([0, 1, 2, 3])
    r = metrics.disagreement(a, torch.tensor([0, 1, 0, 0]))
    assert (r.count, r.total, r.value) == (2, 4, 0.5) and r.low < 0.5 < r.high
    logits = torch.eye(4)[a]
    assert metrics.disagreement(logits, a).count == 0
    gen = torch.Generator().manual_seed(0)
    covered = 0
    for _ in range(200):  # Wilson 95% CIs cover a known 10% rate about 95% of the time
        flips = torch.rand(400, generator=gen) < 0.1
        covered += metrics.disagreement(torch.zeros(400, dtype=torch.long), flips.long()).low <= 0.1 <= \
            metrics.disagreement(torch.zeros(400, dtype=torch.long), flips.long()).high
    assert covered >= 180


def test_uncertainty_scores_by_hand():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]])
    s = metrics.uncertainty_scores(p)
    assert np.allclose(s["Margin"], [1 - 0.5, 1 - 0.0])
    assert np.allclose(s["LC"], [0.3, 0.6])
    assert np.allclose(s["Gini"], [1 - (0.49 + 0.04 + 0.01), 1 - (0.16 + 0.16 + 0.04)])
    assert np.allclose(s["Entropy"], [-(p[0] * p[0].log()).sum().item(), -(p[1] * p[1].log()).sum().item()])


def test_separation_agrees_with_sklearn_and_finds_a_perfect_score():
    rng = np.random.default_rng(0)
    labels = rng.random(2000) < 0.1
    noisy = labels + rng.normal(0, 0.8, 2000)
    out = metrics.separation(noisy, labels)
    assert out["AUROC (all)"] == pytest.approx(roc_auc_score(labels, noisy))
    assert 0.7 < out["AUROC"] <= 1 and 0 <= out["TNR@95TPR"] <= 1
    perfect = metrics.separation(labels.astype(float), labels)
    assert perfect["AUROC (all)"] == 1.0 and perfect["AUROC"] == 1.0
    assert np.isnan(metrics.separation(noisy, np.zeros(2000, bool))["AUROC"])


def test_resampled_auroc_is_ranking_each_resample_anew_to_the_last_bit():
    """Ties (scores rounded to a coarse grid) and repeats (bootstrap draws) are where counting per
    group of equal values could part from ranks; an empty class gives NaN, not a number."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(0)
    n = 3000
    labels = rng.random(n) < 0.1
    scores = {"coarse": np.round(labels + rng.normal(0, 0.8, n), 1), "fine": labels * 0.5 + rng.normal(0, 1, n)}
    draws = [np.arange(n)] + [rng.integers(0, n, n) for _ in range(20)] + [np.flatnonzero(~labels)]
    got = metrics.resampled_auroc(scores, labels, draws)
    for name, v in scores.items():
        for k, idx in enumerate(draws[:-1]):
            y = labels[idx]
            n_pos, n_neg = int(y.sum()), int((~y).sum())
            assert got[name][k] == (rankdata(v[idx])[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        assert got[name][0] == pytest.approx(roc_auc_score(labels, v), abs=1e-12)
        assert np.isnan(got[name][-1])
    assert len(np.unique(got["coarse"][:-1])) > 10  # the resamples differ


def test_mc_dropout_variance_needs_dropout_and_is_seeded():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="no nn.Dropout"):
        metrics.mc_dropout_variance(nn.Linear(4, 2), x)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    v = metrics.mc_dropout_variance(net, x, seed=1)
    assert v.shape == (10,) and (v > 0).all() and np.allclose(v, metrics.mc_dropout_variance(net, x, seed=1))
    net.eval()
    metrics.mc_dropout_variance(net, x)
    assert not net.training


def test_mc_dropout_runs_a_cnns_features_once_with_the_same_masks():
    from qfail.models import build_model

    net = build_model("cnn", (1, 8, 8), seed=0, dropout=0.25)
    x = torch.rand(50, 1, 8, 8)
    torch.manual_seed(0)
    fast = metrics.mc_dropout_variance(net, x, samples=5, seed=3)
    whole = lambda m: ((lambda x: x), m)  # the path every other model takes
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "split_before_dropout", whole)
        slow = metrics.mc_dropout_variance(net, x, samples=5, seed=3)
    assert np.allclose(fast, slow, rtol=1e-5, atol=1e-9) and (fast > 0).all()
