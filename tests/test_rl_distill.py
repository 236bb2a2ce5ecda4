"""CartPole policy training and rollouts, QAT of a policy, distillation."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qfail import rl
from qfail.data import Split
from qfail.distill import kd_divergence, kd_loss
from qfail.quant import int8_dynamic
from qfail.train import TrainConfig, fit


@pytest.fixture(scope="module")
def policy():
    return rl.train_policy(rl.RLConfig(iterations=150, seed=0))


def test_reinforce_reaches_the_cap_and_is_deterministic(policy):
    run = rl.rollout(policy, 10, seed=123)
    assert run.mean >= 475
    again = rl.rollout(policy, 10, seed=123)
    assert (run.rewards == again.rewards).all() and torch.equal(run.states, again.states)
    assert len(run.states) == run.rewards.sum() and run.states.shape[1] == 4


def test_training_is_reproducible_from_the_seed():
    config = rl.RLConfig(iterations=3, seed=5)
    a, b = rl.policy_net(seed=5), rl.policy_net(seed=5)
    assert rl.reinforce(a, config) == rl.reinforce(b, config)  # no cache involved
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    other = rl.policy_net(seed=5)
    assert rl.reinforce(other, rl.RLConfig(iterations=3, seed=6)) != rl.reinforce(rl.policy_net(seed=5), config)


def test_int8_decisions_one_at_a_time_and_table(policy):
    run = rl.rollout(policy, 2, seed=7)
    q = int8_dynamic(policy)
    table = rl.policy_table({"FP32": policy, "dynamic INT8": q}, run, episodes=2, seed=7)
    assert table.loc["FP32", "agreement with FP (%)"] == 100.0
    assert 50 <= table.loc["dynamic INT8", "agreement with FP (%)"] <= 100
    assert table.loc["dynamic INT8", "size (KB)"] < table.loc["FP32", "size (KB)"]


@pytest.mark.parametrize("method", rl.QAT_METHODS)
def test_qat_policy_trains_the_quantized_weights(policy, method):
    states = rl.rollout(policy, 1, seed=3).states
    qm = rl.qat_policy(policy, 4, states, {"test": 1}, method=method, updates=2, seed=0)
    fresh = rl.qat_policy(policy, 4, states, {"test": 1}, method=method, updates=2, seed=0)  # from the cache
    assert qm.history == fresh.history and len(qm.history) >= 1
    changed = any(not torch.equal(a, b) for a, b in zip(qm.parameters(), policy.parameters()))
    assert changed


def test_bad_rl_arguments():
    with pytest.raises(ValueError, match="method='ppo' is not allowed; choose one of 'reinforce', 'distill'"):
        rl.qat_policy(nn.Linear(4, 2), 4, torch.zeros(1, 4), {}, method="ppo")
    with pytest.raises(ValueError, match="episodes=0 is out of range"):
        rl.RLConfig(episodes=0)


def test_kd_divergence_matches_hand_computation_and_student_reaches_teacher():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    p, q = F.softmax(t / 2, 1), F.softmax(s / 2, 1)
    assert kd_divergence(s, t, 2.0).item() == pytest.approx(4 * (p * (p / q).log()).sum().item(), rel=1e-5)
    # separable toy problem: the student learns the teacher's decisions
    torch.manual_seed(0)
    x = torch.randn(512, 2)
    teacher = nn.Linear(2, 2)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[3.0, 0.0], [-3.0, 0.0]]))
        teacher.bias.zero_()
    student = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    y = teacher(x).argmax(1).detach()
    fit(student, Split(x, y), TrainConfig(epochs=30, lr=1e-2), loss_fn=kd_loss(teacher, temperature=2.0))
    with torch.no_grad():
        assert (student(x).argmax(1) == y).float().mean() > 0.97
