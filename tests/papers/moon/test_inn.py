"""Moon's interval neural network: the published arithmetic can invert, the sound one cannot."""
import torch

from qfail.papers.moon.inn import moon_inn


def test_moon_inn_as_published_can_invert_intervals_and_sound_one_cannot():
    torch.manual_seed(0)
    layers = [(torch.randn(16, 4), torch.randn(16)), (torch.randn(2, 16), torch.randn(2))]
    x = torch.randn(200, 4)
    lo, hi = moon_inn(layers, x, 0.05)
    assert (lo > hi).any()
    lo, hi = moon_inn(layers, x, 0.05, sound=True, relu=True)
    assert (lo <= hi).all()
    # the sound INN contains every network whose weights lie in the intervals
    w1 = layers[0][0] + 0.05 * (2 * torch.rand(16, 4) - 1)
    w2 = layers[1][0] + 0.05 * (2 * torch.rand(2, 16) - 1)
    out = torch.relu(x @ w1.T + layers[0][1]) @ w2.T + layers[1][1]
    assert ((out.double() >= lo - 1e-9) & (out.double() <= hi + 1e-9)).all()
