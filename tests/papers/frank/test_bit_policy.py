"""Bit-width policies: the budget is a hard cap for every executed policy; REINFORCE learns a bandit."""
import pytest
import torch

from qfail.papers.frank import bit_policy as P

CHOICES = P.BIT_CHOICES


@pytest.mark.parametrize("budget", [2.0, 3.0, 4.0, 4.5, 8.0])
def test_projection_keeps_every_row_within_the_budget_and_lowers_the_largest_first(budget):
    index = torch.randint(len(CHOICES), (500, 4), generator=torch.Generator().manual_seed(0))
    projected = P.project_to_budget(index, CHOICES, budget)
    bits = torch.tensor(CHOICES)[projected]
    assert (bits.float().mean(1) <= budget + 1e-9).all()
    assert (projected <= index).all()  # widths only go down
    within = torch.tensor(CHOICES)[index].float().mean(1) <= budget
    assert torch.equal(projected[within], index[within])  # rows already within the budget are untouched
    # one row by hand: (8, 8, 2) at budget 4 -> the first 8 goes down first, then the larger remaining one
    row = P.project_to_budget(torch.tensor([[5, 5, 0]]), CHOICES, 4.0)
    assert torch.tensor(CHOICES)[row].tolist() == [[5, 5, 2]]


def test_no_executed_policy_exceeds_the_budget():
    x = torch.rand(300, 1, 8, 8)
    gen = torch.Generator().manual_seed(1)
    learned = P.BitPolicy((1, 8, 8), 3, CHOICES, budget=3.5)
    with torch.no_grad():  # an untrained policy pushed towards 8 bits everywhere
        learned.net[-1].bias.view(3, len(CHOICES))[:, -1] += 10
    steps = [learned.act(x, generator=gen), learned.act(x, greedy=True), P.RandomPolicy(3, CHOICES, 3.5).act(x, generator=gen),
             P.StaticPolicy([8, 8, 8], CHOICES, 3.5).act(x)]
    for step in steps:
        assert step.bits.shape == (300, 3)
        assert (step.bits.float().mean(1) <= 3.5 + 1e-9).all()
        assert set(step.bits.unique().tolist()) <= set(CHOICES)
    assert all(sum(b) <= 3.5 * 3 for b in P.static_policies(3, CHOICES, 3.5))
    assert len(P.static_policies(2, (2, 8), 5.0)) == 3  # (2,2), (2,8), (8,2)


def test_reinforce_increases_expected_reward_on_a_bandit():
    """One layer, budget 8: the reward is 1 for 6 bits and 0 otherwise."""
    torch.manual_seed(0)
    pol = P.BitPolicy((1, 2, 2), 1, CHOICES, budget=8.0)
    opt = torch.optim.Adam(pol.parameters(), lr=0.05)
    x = torch.rand(64, 1, 2, 2)
    target = CHOICES.index(6)

    def expected() -> float:
        with torch.no_grad():
            return float(pol(x).softmax(-1)[:, 0, target].mean())

    before, baseline, gen = expected(), None, torch.Generator().manual_seed(0)
    for _ in range(60):
        _, baseline = P.reinforce_step(pol, opt, x, lambda bits: (bits[:, 0] == 6).float(), baseline, 0.0, generator=gen)
    assert before < 0.3 and expected() > 0.9


def test_bad_policy_arguments_are_one_line():
    with pytest.raises(ValueError, match=r"budget=1.0 is out of range; allowed values are in \[2, 8\]"):
        P.BitPolicy((1, 8, 8), 3, CHOICES, budget=1.0)
    with pytest.raises(ValueError, match="bits=7 is not allowed; choose one of"):
        P.StaticPolicy([7, 4, 4])
    with pytest.raises(ValueError, match=r"n_layers=21 is too many for an exhaustive search: 6\^21 assignments"):
        P.static_policies(21)
    with pytest.raises(ValueError, match="must be distinct bit-widths in increasing order"):
        P.RandomPolicy(3, (4, 2), 3.0)
