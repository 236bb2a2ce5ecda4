import pytest
import torch

from qfail.quant import PACT, Observer, fake_quantize_tensor, pact_quantize, pwlq_quantize


def test_observers_range(gen):
    x = torch.randn(10_000, generator=gen)
    x[0] = 50.0  # one outlier
    mm = Observer("minmax"); mm.update(x)
    pc = Observer("percentile", percentile=99.9); pc.update(x)
    ms = Observer("mse"); ms.update(x)
    assert mm.range()[1] == 50.0
    assert pc.range()[1] < 5.0  # the outlier is clipped away
    lo, hi = ms.range(bits=4)
    assert hi < 50.0 and lo < 0


def test_observer_needs_data():
    with pytest.raises(RuntimeError, match="no data"):
        Observer().range()


def test_pact_forward_and_alpha_gradient():
    pact = PACT(init_alpha=1.0)
    x = torch.tensor([-1.0, 0.2, 0.5, 1.5, 3.0], requires_grad=True)
    y = pact(x, 2)  # 3 steps of 1/3 on [0, 1]
    torch.testing.assert_close(y, torch.tensor([0.0, 1 / 3, 2 / 3, 1.0, 1.0]))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert pact.alpha.grad.item() == 2.0  # two elements at or above alpha


def _pact_equations(x, alpha, bits, grad):
    """PACT's eqs. 1-3 written out: the output, dy/dx and dy/dalpha (what qfail's masks must equal)."""
    y = torch.minimum(torch.clamp(x, min=0.0), alpha)
    scale = alpha / (2.0 ** bits - 1)
    return (torch.round(y / scale) * scale, grad * ((x >= 0) & (x <= alpha)),
            (grad * (x >= alpha)).sum().reshape(alpha.shape))


@pytest.mark.parametrize("alpha", [2.5, 1e-3, 0.0, -1.0])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pact_is_its_equations_bit_for_bit(gen, alpha, bits):
    """Outputs and both gradients, on channels-last activations with values planted at 0, -0 and
    alpha and beside them; alpha <= 0 (which training could reach) takes the comparisons."""
    x = torch.randn(32, 8, 6, 6, generator=gen) * 2
    a = torch.tensor(alpha)
    edges = torch.tensor([0.0, -0.0, alpha])
    x.view(-1)[:9] = torch.cat([edges, torch.nextafter(edges, edges + 1), torch.nextafter(edges, edges - 1)])
    x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(x.shape, generator=gen)
    xg, ag = x.clone().requires_grad_(True), a.clone().requires_grad_(True)
    out = pact_quantize(xg, ag, bits)
    out.backward(grad)
    ref, ref_x, ref_alpha = _pact_equations(x, a, bits, grad)
    for ours, expected in ((out.detach(), ref), (xg.grad, ref_x), (ag.grad, ref_alpha)):
        assert torch.equal(ours.view(torch.int32), expected.view(torch.int32))
    with torch.no_grad():  # the path without a graph (and without masks) gives the same output
        assert torch.equal(pact_quantize(x, a, bits).view(torch.int32), ref.view(torch.int32))
    alone = x.clone().requires_grad_(True)  # a gradient for x only: no mask for alpha
    pact_quantize(alone, a, bits).backward(grad)
    assert torch.equal(alone.grad.view(torch.int32), ref_x.view(torch.int32))


def test_pact_alpha_learns_to_cover_data():
    torch.manual_seed(0)
    pact = PACT(init_alpha=0.5)
    opt = torch.optim.SGD(pact.parameters(), lr=0.05)
    x = torch.rand(2000) * 2
    for _ in range(100):
        loss = (pact(x, 8) - x).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    assert pact.alpha.item() > 1.5


def test_pwlq_beats_uniform_on_bell_shaped_weights(gen):
    w = torch.distributions.StudentT(3.0).sample((64, 288))  # heavy-tailed, as trained weights are
    uniform = (fake_quantize_tensor(w, 4, "symmetric", axis=0) - w).pow(2).mean()
    pw = (pwlq_quantize(w, 4) - w).pow(2).mean()
    assert pw < 0.8 * uniform


def test_pwlq_levels_and_passthrough(gen):
    w = torch.randn(2, 500, generator=gen)
    q = pwlq_quantize(w, 3)
    assert all(len(q[i].unique()) <= 2 ** 3 + 2 ** 3 for i in range(2))  # centre + two tails
    assert pwlq_quantize(w, 32) is w
    with pytest.raises(ValueError, match="granularity='per_row' is not allowed"):
        pwlq_quantize(w, 4, "per_row")
