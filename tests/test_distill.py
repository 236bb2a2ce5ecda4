"""Knowledge distillation: the KD divergence and a student that reaches its teacher."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qfail.data import Split
from qfail.distill import kd_divergence, kd_loss
from qfail.train import TrainConfig, fit


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
