"""Attacks: budgets and ranges hold, PGD is at least as strong as FGSM, transfer never differentiates the target."""
import pytest
import torch
from torch import nn

from qfail import attack
from qfail.quant import QuantConfig, quantize_model


@pytest.fixture(scope="module")
def batch(digits):
    return digits.test.x[:64], digits.test.y[:64]


@pytest.mark.parametrize("norm", attack.NORMS)
def test_examples_stay_in_the_ball_and_the_pixel_range(trained_cnn, batch, norm):
    x, y = batch
    eps = 0.1 if norm == "linf" else 0.5
    for adv in (attack.fgsm(trained_cnn, x, y, eps, norm), attack.pgd(trained_cnn, x, y, eps, norm, steps=5, seed=1)):
        delta = (adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert (size <= eps + 1e-5).all()
        assert adv.min() >= 0 and adv.max() <= 1
        assert not trained_cnn.training


def test_pgd_is_seeded_and_does_at_least_as_much_damage_as_fgsm(trained_cnn, batch):
    x, y = batch
    a = attack.pgd(trained_cnn, x, y, 0.1, steps=10, seed=3)
    assert torch.equal(a, attack.pgd(trained_cnn, x, y, 0.1, steps=10, seed=3))
    clean = attack.robust_accuracy(trained_cnn, x, y, "fgsm", 0.0)
    fgsm = attack.robust_accuracy(trained_cnn, x, y, "fgsm", 0.1)
    pgd = attack.robust_accuracy(trained_cnn, x, y, "pgd", 0.1, steps=10)
    assert pgd <= fgsm < clean


def test_attacks_reach_a_fake_quantized_model_through_the_ste(trained_cnn, batch, digits):
    x, y = batch
    qm = quantize_model(trained_cnn, QuantConfig(), (4, 4), calibration=[digits.train.x[:256]])
    assert attack.robust_accuracy(qm, x, y, "pgd", 0.1, steps=10) < attack.robust_accuracy(qm, x, y, "fgsm", 0.0)


class _NoGrad(nn.Module):
    """A target that fails if anything asks for its gradient."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled() and not x.requires_grad, "the target was differentiated"
        return self.net(x)


def test_transfer_uses_no_gradient_of_the_target(trained_cnn, trained_mlp, batch):
    x, y = batch
    target = _NoGrad(trained_mlp)
    adv, pred = attack.transfer(trained_cnn, target, x, y, "pgd", 0.1, steps=5)
    assert torch.equal(adv, attack.pgd(trained_cnn, x, y, 0.1, steps=5))
    assert pred.shape == y.shape
    assert attack.robust_accuracy(target, x, y, "pgd", 0.1, source=trained_cnn, steps=5) <= 100
    with pytest.raises(AssertionError, match="differentiated"):
        attack.pgd(target, x, y, 0.1, steps=1)


def test_bad_attack_arguments_are_one_line(trained_cnn, batch):
    x, y = batch
    with pytest.raises(ValueError, match="norm='l1' is not allowed; choose one of 'linf', 'l2'"):
        attack.pgd(trained_cnn, x, y, 0.1, norm="l1")
    with pytest.raises(ValueError, match="attack='cw' is not allowed"):
        attack.attack(trained_cnn, x, y, "cw", 0.1)
    with pytest.raises(ValueError, match="eps=-0.1 is out of range"):
        attack.fgsm(trained_cnn, x, y, -0.1)


def test_batched_examples_match_one_attack_per_batch(trained_cnn, batch):
    x, y = batch
    adv = attack.adversarial_examples(trained_cnn, x, y, "pgd", 0.1, batch_size=40, seed=5, steps=3)
    assert torch.equal(adv[:40], attack.pgd(trained_cnn, x[:40], y[:40], 0.1, steps=3, seed=5))
    assert torch.equal(adv[40:], attack.pgd(trained_cnn, x[40:], y[40:], 0.1, steps=3, seed=45))
    pred = trained_cnn(adv).argmax(1)
    assert attack.accuracy_on(trained_cnn, adv, y, batch_size=7) == pytest.approx(100 * (pred == y).float().mean().item())


def test_pgd_stop_on_success_keeps_the_first_success_and_is_at_least_as_strong():
    pgd = attack.pgd
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x, y = torch.rand(64, 1, 4, 4), torch.randint(0, 3, (64,))
    plain = pgd(model, x, y, 0.2, steps=8, seed=1)
    early = pgd(model, x, y, 0.2, steps=8, seed=1, stop_on_success=True)
    correct = lambda adv: (model(adv).argmax(1) == y)
    assert correct(early).sum() <= correct(plain).sum()
    assert (early - x).abs().max() <= 0.2 + 1e-6 and early.min() >= 0 and early.max() <= 1
    assert not torch.equal(early, plain)  # some input stopped early
    assert torch.equal(pgd(model, x, y, 0.2, steps=8, seed=1, stop_on_success=False), plain)


def test_pgd_from_the_clean_input_is_torchattacks_pgd_bit_for_bit(trained_cnn, batch):
    """The same iterates as the peer the benchmark times it against (benchmarks/attack_bench.py),
    whether every input moves at every step or some stop (those keep their first success)."""
    torchattacks = pytest.importorskip("torchattacks")
    x, y = batch
    reference = torchattacks.PGD(trained_cnn, eps=0.1, alpha=0.02, steps=7, random_start=False)(x, y)
    assert torch.equal(attack.pgd(trained_cnn, x, y, 0.1, steps=7, step_size=0.02, random_start=False), reference)
    early = attack.pgd(trained_cnn, x, y, 0.1, steps=7, step_size=0.02, random_start=False, stop_on_success=True)
    standing = trained_cnn(early).argmax(1) == y
    assert standing.any() and not standing.all()
    assert torch.equal(early[standing], reference[standing])  # never fooled: they moved at every step
