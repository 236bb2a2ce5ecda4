import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qfail.quant import choose_qparams, dequantize, fake_quantize, fake_quantize_tensor, qrange, quantize
from qfail.quant.primitives import integer_levels

BITS = [2, 3, 4, 8, 16]


def _qparams(x, bits, scheme, axis=None):
    dims = tuple(d for d in range(x.dim()) if d != axis) if axis is not None else tuple(range(x.dim()))
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    return choose_qparams(lo, hi, bits, scheme)


@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from(BITS), scheme=st.sampled_from(["symmetric", "asymmetric"]),
       seed=st.integers(0, 10_000), spread=st.floats(1e-3, 1e3))
def test_error_at_most_half_a_step_inside_range(bits, scheme, seed, spread):
    x = torch.randn(257, generator=torch.Generator().manual_seed(seed)) * spread
    s, z = _qparams(x, bits, scheme)
    r = qrange(bits, scheme)
    lo, hi = (r.q_min - z) * s, (r.q_max - z) * s
    inside = (x >= lo) & (x <= hi)
    err = (fake_quantize(x, s, z, r.q_min, r.q_max) - x).abs()
    tol = s / 2 + 8 * torch.finfo(torch.float32).eps * x.abs()  # float32 rounding of x / s at 16 bits
    assert torch.all(err[inside] <= tol[inside])
    if scheme == "asymmetric":
        # min-max asymmetric: rounding the zero point shifts the grid by < s/2, so even the
        # extremes it clips end up within half a step
        assert torch.all(err <= tol)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_idempotent_and_zero_exact(bits, scheme, gen):
    x = torch.randn(1000, generator=gen) * 3 + 1
    s, z = _qparams(x, bits, scheme)
    r = qrange(bits, scheme)
    once = fake_quantize(x, s, z, r.q_min, r.q_max)
    twice = fake_quantize(once, s, z, r.q_min, r.q_max)
    torch.testing.assert_close(twice, once, rtol=0, atol=0)
    zero = fake_quantize(torch.zeros(3), s, z, r.q_min, r.q_max)
    assert torch.all(zero == 0)
    assert float(z) == round(float(z)) and r.q_min <= float(z) <= r.q_max


def test_matches_dequant_of_quant(gen):
    x = torch.randn(5000, generator=gen)
    s, z = _qparams(x, 4, "asymmetric")
    torch.testing.assert_close(fake_quantize(x, s, z, 0, 15), dequantize(quantize(x, s, z, 0, 15), s, z),
                               rtol=0, atol=0)


def test_matches_dequant_of_quant_per_channel_and_far_outside_the_range(gen):
    """The no-grad path clamps before adding the zero point back; it must equal the textbook
    formula bit for bit, zero points and huge values included."""
    x = torch.randn(64, 300, generator=gen) * torch.logspace(-3, 3, 300)
    x[:, :4] = torch.tensor([1e30, -1e30, 3e38, -3e38])
    lo, hi = x[:, 4:].amin(1, keepdim=True) * 0.3, x[:, 4:].amax(1, keepdim=True) * 0.2
    for bits in (2, 4, 8):
        s, z = choose_qparams(lo, hi, bits)
        r = qrange(bits, "asymmetric")
        torch.testing.assert_close(fake_quantize(x, s, z, r.q_min, r.q_max),
                                   dequantize(quantize(x, s, z, r.q_min, r.q_max), s, z), rtol=0, atol=0)


@pytest.mark.parametrize("bits", [4, 8])
def test_without_autograd_it_is_torchs_arithmetic_on_rounding_ties_too(gen, bits):
    """The no-grad path (evaluation, verification) is the function that the autograd path and
    torch's kernels compute, per tensor and per channel, on inputs at (k + 1/2) s too, where
    x / s and x * (1 / s) round apart for about one scale in ten."""
    r = qrange(bits, "asymmetric")
    scales = torch.rand(200, 1, generator=gen) * 0.1 + 1e-3  # one grid per row
    zeros = torch.zeros(200, 1)
    x = (torch.arange(r.q_min - 3.0, r.q_max + 3) + 0.5) * scales  # every row's ties, and some clipped
    assert not torch.equal(torch.round(x / scales), torch.round(x * (1 / scales)))  # the case is exercised
    for row in range(0, 200, 20):  # per tensor: the fused op and INT8's quantize_per_tensor
        xs, s = x[row], scales[row, 0]
        ref = torch.fake_quantize_per_tensor_affine(xs, float(s), 0, r.q_min, r.q_max)
        assert torch.equal(fake_quantize(xs, s, zeros[row, 0], r.q_min, r.q_max), ref)
        codes = torch.quantize_per_tensor(xs, float(s), 0, torch.quint8).int_repr().float().clamp(r.q_min, r.q_max)
        assert torch.equal(quantize(xs, s, zeros[row, 0], r.q_min, r.q_max), codes)
    ref = torch.fake_quantize_per_channel_affine(x, scales.flatten(), zeros.flatten().int(), 0, r.q_min, r.q_max)
    assert torch.equal(fake_quantize(x, scales, zeros, r.q_min, r.q_max), ref)
    assert torch.equal(fake_quantize(x.clone().requires_grad_(True), scales, zeros, r.q_min, r.q_max).detach(), ref)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("after_relu", [False, True])
def test_autograd_path_is_torch_fused_op_bit_for_bit(gen, bits, channels_last, after_relu):
    """qfail's vectorized per-tensor STE computes torch's fused op's outputs and gradients exactly,
    on the rounding ties too (inputs planted at (k + 1/2) s and at its float neighbours), and
    after a ReLU (z = 0), where small negative values round to -0 and the op returns +0."""
    x = torch.randn(64, 8, 16, 16, generator=gen) * 2
    if after_relu:
        x = x.clamp(min=-1e-4)
    s, z = (t.reshape(()) for t in _qparams(x * 0.7, bits, "asymmetric"))  # some values clip
    assert (z == 0) == after_relu
    ties = (torch.arange(-3, 2 ** bits + 3, dtype=torch.float32) + 0.5) * s
    planted = torch.cat([ties, torch.nextafter(ties, ties + 1), torch.nextafter(ties, ties - 1), -ties * 0])
    x.view(-1)[: planted.numel()] = planted
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(x.shape, generator=gen)
    ours, ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = fake_quantize(ours, s, z, 0, 2 ** bits - 1)
    expected = torch.fake_quantize_per_tensor_affine(ref, s, z.int(), 0, 2 ** bits - 1)
    out.backward(grad)
    expected.backward(grad)
    assert torch.equal(out.detach().view(torch.int32), expected.detach().view(torch.int32))  # -0 vs +0 too
    assert torch.equal(ours.grad.view(torch.int32), ref.grad.view(torch.int32))


def test_ste_gradient_is_zero_outside_clip_range():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 0.9, 3.0], requires_grad=True)
    s, z = torch.tensor(1 / 15), torch.tensor(0.0)
    y = fake_quantize(x, s, z, 0, 15)  # represents [0, 1]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]


def test_per_channel_scales_follow_each_channel(gen):
    w = torch.randn(4, 50, generator=gen) * torch.tensor([[0.01], [0.1], [1.0], [10.0]])
    s, _ = _qparams(w, 8, "symmetric", axis=0)
    amax = w.abs().amax(dim=1)
    torch.testing.assert_close(s.flatten(), amax / 127)
    err = (fake_quantize_tensor(w, 8, "symmetric", axis=0) - w).abs().amax(dim=1)
    assert torch.all(err <= s.flatten() / 2 + 1e-9)


def test_tensor_bits_per_sample(gen):
    x = torch.rand(3, 100, generator=gen)
    bits = torch.tensor([2, 4, 8])
    out = fake_quantize_tensor(x, bits, "asymmetric", axis=0)
    for i, b in enumerate([2, 4, 8]):
        torch.testing.assert_close(out[i], fake_quantize_tensor(x[i:i + 1], b, "asymmetric", axis=0)[0])
        assert len(out[i].unique()) <= 2 ** b


def test_per_sample_bits_pass_the_gradient_inside_each_samples_grid_only(gen):
    """The general STE (bits a tensor, one per sample): the gradient is the upstream gradient where
    a sample's code lies on its own grid and exactly 0 where it was clipped, -0 and ties included."""
    bits = torch.tensor([2.0, 3.0, 8.0, 32.0]).reshape(4, 1)
    scale, zero_point = torch.tensor([[0.5], [0.25], [0.01], [1e-3]]), torch.tensor([[1.0], [3.0], [128.0], [0.0]])
    x = torch.randn(4, 300, generator=gen) * 3
    x[:, ::11] = (torch.arange(-14, 14).float() + 0.5) * scale  # ties, rounded half to even
    x.requires_grad_()
    q_min, q_max = integer_levels(bits, "asymmetric")
    out = fake_quantize(x, scale, zero_point, q_min, q_max)
    upstream = torch.randn(4, 300, generator=gen)
    upstream[:, ::7] = -0.0
    out.backward(upstream)
    code = torch.round(x.detach() * (1 / scale)) + zero_point  # torch's kernels' x * (1 / s), as every path
    inside = (code >= q_min) & (code <= q_max)
    assert 0 < inside.sum() < inside.numel()  # both cases occur
    expected = torch.where(inside, upstream, upstream * 0.0)
    assert torch.equal(x.grad.view(torch.int32), expected.view(torch.int32))
    assert torch.equal(out.detach(), (torch.clamp(code, q_min, q_max) - zero_point) * scale)
    with torch.no_grad():
        assert torch.equal(fake_quantize(x, scale, zero_point, q_min, q_max), out.detach())


def test_full_precision_is_passthrough(gen):
    x = torch.randn(10, generator=gen)
    assert fake_quantize_tensor(x, 32) is x


@pytest.mark.parametrize("bad", [1, 17, 0, 33, "8", 8.0])
def test_raises_on_bad_bits(bad):
    with pytest.raises(ValueError, match=r"bits=.* is not allowed; choose one of 2\.\.16 or 32"):
        qrange(bad, "symmetric")


def test_raises_on_bad_scheme():
    with pytest.raises(ValueError, match=r"scheme='affine' is not allowed; choose one of 'symmetric', 'asymmetric'"):
        qrange(8, "affine")
