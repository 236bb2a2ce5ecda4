"""Soundness of the bounds (sampled and property-based), the falsifier and branch and bound."""
import importlib
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from qfail import verify
from qfail.quant import QuantConfig, int8_dynamic, quantize_model
from qfail.quant.int8 import per_call_scale

bounds_module = importlib.import_module("qfail.verify.bounds")  # the module (verify.bounds is its function)


def _mlp(seed: int, sizes=(4, 32, 32, 2)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _variants(net: nn.Sequential, calib: torch.Tensor) -> dict:
    return {
        "fp": net,
        "static 4-bit": quantize_model(net, QuantConfig(), (4, 4), calibration=[calib]),
        "static 2-bit per-tensor": quantize_model(net, QuantConfig(weight_granularity="per_tensor"), (2, 2),
                                                  calibration=[calib]),
        "dynamic 3-bit": quantize_model(net, QuantConfig(act_mode="dynamic"), (3, 3)),
        "int8 dynamic": int8_dynamic(net),
    }


def _float64_bounds(monkeypatch, prog, lo, hi, method, spec=None):
    """The bounds with every product in float64 (no input is wide enough for float32 products)."""
    with monkeypatch.context() as m:
        m.setattr(bounds_module, "FLOAT32_WIDTH", 10 ** 9)
        return verify.bounds(prog, lo, hi, method, spec)


def _outputs(model, pts):
    with torch.no_grad():
        if per_call_scale(model):  # torch.ao's dynamic Linear (its class is named Linear): one scale per call
            return torch.cat([model(p.unsqueeze(0)) for p in pts])
        return model(pts)


@pytest.mark.parametrize("method", verify.BOUND_METHODS)
def test_bounds_contain_1e5_sampled_outputs_per_box_family(method):
    net = _mlp(0)
    gen = torch.Generator().manual_seed(1)
    calib = torch.randn(512, 4, generator=gen)
    centres = torch.randn(20, 4, generator=gen)
    radius = torch.tensor([0.02, 0.1, 0.5, 2.0]).repeat_interleave(5).unsqueeze(1)
    lo, hi = centres - radius, centres + radius
    for name, model in _variants(net, calib).items():
        l, u = verify.bounds(verify.extract(model), lo, hi, method)
        assert (l <= u).all()
        per_box = 5000 if name != "int8 dynamic" else 200  # 20 boxes x 5000 = 1e5 points
        pts = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(len(lo), per_box, 4, generator=gen)
        pts[:, 0], pts[:, 1] = lo, hi  # corners too
        out = _outputs(model, pts.reshape(-1, 4)).reshape(len(lo), per_box, -1).double()
        assert (out >= l.unsqueeze(1)).all() and (out <= u.unsqueeze(1)).all(), name


def test_crown_is_never_looser_than_ibp_and_ibp_is_exact_for_one_layer():
    net = _mlp(2, (4, 64, 64, 3))
    lo = torch.randn(50, 4)
    hi = lo + 0.3
    prog = verify.extract(net)
    li, ui = verify.bounds(prog, lo, hi, "ibp")
    lc, uc = verify.bounds(prog, lo, hi, "crown")
    assert (lc >= li).all() and (uc <= ui).all()
    assert (uc - lc).mean() < 0.5 * (ui - li).mean()
    single = nn.Sequential(nn.Linear(4, 3))
    l1, u1 = verify.bounds(verify.extract(single), lo, hi, "ibp")
    corners = torch.stack(torch.meshgrid(*[torch.tensor([0.0, 1.0])] * 4, indexing="ij"), -1).reshape(-1, 4)
    with torch.no_grad():
        vals = single(lo.unsqueeze(1) + corners * (hi - lo).unsqueeze(1))
    assert torch.allclose(l1, vals.min(1).values.double(), atol=1e-5)
    assert torch.allclose(u1, vals.max(1).values.double(), atol=1e-5)


def test_forward_pass_for_the_second_layer_equals_back_substitution(monkeypatch):
    """On a narrow input CROWN bounds the second affine layer by carrying linear bounds forward;
    the bounds must be those of back-substitution, for every kind of network."""
    net = _mlp(3, (4, 64, 64, 3))
    gen = torch.Generator().manual_seed(2)
    calib = torch.randn(512, 4, generator=gen)
    lo = torch.randn(40, 4, generator=gen)
    hi = lo + torch.rand(40, 1, generator=gen)
    spec = verify.margin_spec(torch.randint(0, 3, (40,), generator=gen), 3)
    for name, model in _variants(net, calib).items():
        prog = verify.extract(model)
        assert bounds_module._forward_is_cheaper(prog.steps, [i for i, s in enumerate(prog.steps)
                                                             if isinstance(s, verify.program.Affine)][1])
        forward = [verify.bounds(prog, lo, hi, "crown", s) for s in (None, spec)]
        with monkeypatch.context() as m:
            m.setattr(bounds_module, "_forward_is_cheaper", lambda steps, k: False)
            backward = [verify.bounds(prog, lo, hi, "crown", s) for s in (None, spec)]
        for f, b in zip(forward, backward):
            assert torch.allclose(f[0], b[0], rtol=0, atol=1e-12) and torch.allclose(f[1], b[1], rtol=0, atol=1e-12), name


@pytest.mark.parametrize("method", verify.BOUND_METHODS)
def test_bounds_hold_for_real_boxes_the_networks_read_in_float32(method):
    """Moon's boxes are state +- eps std in float64: their ends, and most points inside, are no
    float32 values, and a network receives each point rounded to float32, perhaps just outside the
    box. The bounds must hold there too (verify_consistency's semantics), on boxes down to 1e-7
    wide, where that rounding is a large part of the box."""
    gen = torch.Generator().manual_seed(3)
    net = _mlp(3, (4, 32, 32, 2))
    centres = torch.randn(100, 4, generator=gen, dtype=torch.float64) * 2
    radius = 10 ** (-7 + 4 * torch.rand(100, 1, generator=gen, dtype=torch.float64))
    lo, hi = centres - radius, centres + radius
    assert (lo.float().double() != lo).all()
    inside = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(100, 8, 4, generator=gen, dtype=torch.float64)
    pts = torch.cat([lo.unsqueeze(1), hi.unsqueeze(1), inside], 1)
    for name, model in _variants(net, torch.randn(512, 4, generator=gen)).items():
        low, up = verify.bounds(verify.extract(model), lo, hi, method)
        out = _outputs(model, pts.reshape(-1, 4).float()).reshape(100, 10, -1).double()
        assert (out >= low.unsqueeze(1)).all() and (out <= up.unsqueeze(1)).all(), name


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([2, 3, 4, 8]), width=st.floats(1e-4, 3.0),
       mode=st.sampled_from(["static", "dynamic"]))
def test_property_bounds_are_sound(seed, bits, width, mode):
    gen = torch.Generator().manual_seed(seed)
    net = _mlp(seed % 7, (3, 16, 2))
    model = quantize_model(net, QuantConfig(act_mode=mode), (bits, bits),
                           calibration=[torch.randn(64, 3, generator=gen)] if mode == "static" else None)
    lo = torch.randn(4, 3, generator=gen) * 2
    hi = lo + width * torch.rand(4, 3, generator=gen)
    prog = verify.extract(model)
    pts = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(4, 500, 3, generator=gen)
    out = _outputs(model, pts.reshape(-1, 3)).reshape(4, 500, -1).double()
    for method in verify.BOUND_METHODS:
        l, u = verify.bounds(prog, lo, hi, method)
        assert (out >= l.unsqueeze(1)).all() and (out <= u.unsqueeze(1)).all()


def test_program_reproduces_the_network():
    net = _mlp(3)
    x = torch.randn(100, 4)
    for name, model in _variants(net, x).items():
        if name == "int8 dynamic":
            continue
        with torch.no_grad():
            assert torch.allclose(verify.extract(model)(x), model(x), atol=1e-5), name


def test_falsifier_counterexamples_are_real_disagreements():
    net = _mlp(4)
    q = quantize_model(net, QuantConfig(), (2, 2), calibration=[torch.randn(256, 4)])
    lo = torch.randn(64, 4)
    hi = lo + 1.0
    found, cex = verify.falsify((net, verify.extract(net)), (q, verify.extract(q)), lo, hi)
    assert found.any()
    pts = cex[found].float()
    assert ((pts >= lo[found]) & (pts <= hi[found])).all()
    with torch.no_grad():
        assert (net(pts).argmax(1) != q(pts).argmax(1)).all()  # plain forward passes
    assert torch.isnan(cex[~found]).all()


def test_counterexamples_are_float32_inputs_inside_boxes_float32_cannot_represent():
    """The networks read float32: a counterexample is one of those inputs, inside the float64 box
    (a box edge rounded to float32 can fall outside it)."""
    net = _mlp(4)
    q = quantize_model(net, QuantConfig(), (2, 2), calibration=[torch.randn(256, 4)])
    lo = torch.randn(64, 4, dtype=torch.float64) + 1e-9  # edges between float32 values
    hi = lo + 1.0
    found, cex = verify.falsify((net, verify.extract(net)), (q, verify.extract(q)), lo, hi)
    assert found.any()
    pts = cex[found]
    assert torch.equal(pts.float().double(), pts)  # exactly float32 values
    assert ((pts >= lo[found]) & (pts <= hi[found])).all()
    with torch.no_grad():
        assert (net(pts.float()).argmax(1) != q(pts.float()).argmax(1)).all()
    lo32, hi32 = verify.consistency.float32_inside(lo, hi)
    assert (lo32.double() >= lo).all() and (hi32.double() <= hi).all()
    assert (torch.nextafter(lo32, torch.tensor(-np.inf)).double() < lo).all()  # the smallest such value
    assert (torch.nextafter(hi32, torch.tensor(np.inf)).double() > hi).all()
    narrow = torch.tensor([[1.0 + 2 ** -30]], dtype=torch.float64)  # no float32 between its edges
    low, high = verify.consistency.float32_inside(narrow, narrow)
    assert (low > high).all()


def test_branch_and_bound_decides_and_respects_budget():
    net = _mlp(5)
    q8 = quantize_model(net, QuantConfig(), (8, 8), calibration=[torch.randn(256, 4)])
    lo, hi = verify.grid_boxes(torch.zeros(4), (0, 1), ((-2, 2), (-2, 2)), 8)
    v = verify.verify_consistency(net, q8, lo, hi, budget=8)
    assert set(v.status) <= {"certified", "refuted", "unknown"}
    assert (v.boxes <= 8).all() and (v.boxes >= 1).all()
    assert sum(v.fractions().values()) == pytest.approx(1.0)
    assert (v.status == "certified").any()
    refuted = torch.from_numpy(v.status == "refuted")
    with torch.no_grad():
        pts = v.counterexample[refuted].float()
        assert (net(pts).argmax(1) != q8(pts).argmax(1)).all()
    # a network is consistent with itself: every box certified, none refuted
    same = verify.verify_consistency(net, net, lo, hi, budget=4096)
    assert not (same.status == "refuted").any()


def test_the_fp_stable_boxes_are_the_same_whichever_method_verifies():
    """The sweep's FP-stability column is a property of the FP network and the boxes (CROWN's
    proof), so an IBP run and a CROWN run compare their certified shares on the same boxes; IBP
    alone proves fewer of them stable on these boxes."""
    net = _mlp(5)
    q4 = quantize_model(net, QuantConfig(), (4, 4), calibration=[torch.randn(256, 4)])
    centres, scale = torch.randn(60, 4, generator=torch.Generator().manual_seed(0)).double(), torch.ones(4).double()
    sweeps = {m: verify.consistency_sweep(net, {"4-bit": q4}, centres, [0.3], scale, method=m, budget=4)
              for m in ("ibp", "crown")}
    prog = verify.extract(net)
    crown = 100 * float((verify.certified_actions(prog, centres - 0.3, centres + 0.3, "crown") >= 0).double().mean())
    ibp = 100 * float((verify.certified_actions(prog, centres - 0.3, centres + 0.3, "ibp") >= 0).double().mean())
    assert sweeps["ibp"]["FP stable (%)"].item() == sweeps["crown"]["FP stable (%)"].item() == crown
    assert ibp < crown


def test_bad_input_is_one_line():
    prog = verify.extract(_mlp(0))
    with pytest.raises(ValueError, match="method='deeppoly' is not allowed; choose one of 'ibp', 'crown'"):
        verify.bounds(prog, torch.zeros(1, 4), torch.ones(1, 4), "deeppoly")
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        verify.bounds(prog, torch.zeros(1, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="is not supported"):
        verify.extract(nn.Sequential(nn.Conv2d(1, 1, 3)))


def test_float32_product_on_a_wide_input_is_sound_and_as_tight(monkeypatch):
    """From FLOAT32_WIDTH inputs on, CROWN's widest product runs in float32 with its rounding
    error bounded: the bounds must contain sampled outputs and stay within 1e-4 of the float64
    ones (relative to the width), never tighter than what float64 proves minus rounding."""
    width = bounds_module.FLOAT32_WIDTH
    net = _mlp(4, (width + 16, 48, 48, 4))
    gen = torch.Generator().manual_seed(3)
    calib = torch.rand(256, width + 16, generator=gen)
    lo = torch.rand(12, width + 16, generator=gen)
    hi = lo + torch.tensor([0.001, 0.01, 0.05]).repeat_interleave(4).unsqueeze(1)
    spec = verify.margin_spec(torch.randint(0, 4, (12,), generator=gen), 4)
    for name, model in _variants(net, calib).items():
        prog = verify.extract(model)
        for s in (None, spec):
            fast = verify.bounds(prog, lo, hi, "crown", s)
            exact = _float64_bounds(monkeypatch, prog, lo, hi, "crown", s)
            scale = (exact[1] - exact[0]).abs() + 1e-9
            assert (fast[0] <= exact[0] + 1e-12).all() and (fast[1] >= exact[1] - 1e-12).all(), name
            assert ((exact[0] - fast[0]) / scale).max() < 1e-4 and ((fast[1] - exact[1]) / scale).max() < 1e-4, name
        pts = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(12, 200, width + 16, generator=gen)
        out = _outputs(model, pts.reshape(-1, width + 16)).reshape(12, 200, -1).double()
        lower, upper = verify.bounds(prog, lo, hi, "crown")
        assert (out >= lower.unsqueeze(1)).all() and (out <= upper.unsqueeze(1)).all(), name


def test_float32_ibp_on_a_wide_input_is_sound_and_close(monkeypatch):
    """From FLOAT32_WIDTH inputs on, IBP's products run in float32 with their rounding bounded:
    the bounds must contain the float64 ones and sampled outputs, at most a few percent wider."""
    width = bounds_module.FLOAT32_WIDTH
    net = _mlp(5, (width + 16, 160, 48, 4))
    gen = torch.Generator().manual_seed(4)
    calib = torch.rand(256, width + 16, generator=gen)
    lo = torch.rand(12, width + 16, generator=gen) - 0.5 * torch.rand(12, 1, generator=gen)  # some inputs below 0
    hi = lo + torch.tensor([0.001, 0.01, 0.05]).repeat_interleave(4).unsqueeze(1)
    float32_steps, float32_ibp = [], bounds_module._ibp_affine_float32

    def counted(step, lo, hi):
        float32_steps.append(step)
        return float32_ibp(step, lo, hi)

    monkeypatch.setattr(bounds_module, "_ibp_affine_float32", counted)
    for name, model in _variants(net, calib).items():
        prog = verify.extract(model)
        float32_steps.clear()
        fast = verify.bounds(prog, lo, hi, "ibp")
        assert len(float32_steps) == 2, name  # the two wide steps ran their products in float32
        exact = _float64_bounds(monkeypatch, prog, lo, hi, "ibp")
        assert (fast[0] <= exact[0]).all() and (fast[1] >= exact[1]).all(), name
        # on average: a static quantizer's bound may step once more where exact IBP sits on a level
        assert (fast[1] - fast[0]).mean() < 1.05 * (exact[1] - exact[0]).mean(), name
        pts = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(12, 200, width + 16, generator=gen)
        pts[:, 0], pts[:, 1] = lo, hi
        out = _outputs(model, pts.reshape(-1, width + 16)).reshape(12, 200, -1).double()
        assert (out >= fast[0].unsqueeze(1)).all() and (out <= fast[1].unsqueeze(1)).all(), name
    # beyond float32's range, in exact arithmetic: the float64 products take over
    prog, huge = verify.extract(net, float32=False), (lo.double() * 1e39, hi.double() * 1e39)
    float64 = _float64_bounds(monkeypatch, prog, *huge, "ibp")
    fast = verify.bounds(prog, *huge, "ibp")
    assert torch.isfinite(fast[0]).all() and torch.equal(fast[0], float64[0]) and torch.equal(fast[1], float64[1])
    low, high = verify.bounds(verify.extract(net), *huge, "ibp")  # the float32 network overflows there
    assert torch.isinf(low).all() and torch.isinf(high).all()


@pytest.mark.parametrize("float32", [False, True])
def test_float32_ibp_bounds_products_below_float32s_normal_range(monkeypatch, float32):
    """Weights of 1e-30 on hidden values of 1e-15: the second step's products fall below 2^-126,
    where Higham's relative bound does not hold; the absolute allowance must cover them."""
    width = bounds_module.FLOAT32_WIDTH
    net = _mlp(6, (width + 16, width + 16, 3))
    with torch.no_grad():
        for layer in net[::2]:
            layer.weight.mul_(1e-30)
            layer.bias.mul_(1e-30)
    x = 1e15 * torch.randn(40, width + 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    prog = verify.extract(net, float32=float32)
    fast, float64 = verify.bounds(prog, x, x, "ibp"), _float64_bounds(monkeypatch, prog, x, x, "ibp")
    assert (fast[0] <= float64[0]).all() and (fast[1] >= float64[1]).all()


@pytest.mark.parametrize("method", verify.BOUND_METHODS)
@pytest.mark.parametrize("variant", ["fp", "dynamic 3-bit"])
def test_where_float32_overflows_the_bounds_are_unbounded_and_elsewhere_finite(method, variant):
    """Weights of 1e10 on inputs up to 1e30: the float32 network overflows to inf (or nan) on some
    boxes, which bounds in float64 would leave out; those boxes get (-inf, inf), the others stay
    finite and contain every sampled output."""
    net = _mlp(7, (8, 16, 3))
    with torch.no_grad():
        for layer in net[::2]:
            layer.weight.mul_(1e10)
            layer.bias.mul_(1e10)
    model = _variants(net, torch.zeros(1, 8))[variant]
    gen = torch.Generator().manual_seed(7)
    scale = torch.tensor([1.0, 1e10, 1e20, 1e26, 1e28, 1e30]).repeat_interleave(4).double().unsqueeze(1)
    centre = scale * torch.randn(24, 8, generator=gen, dtype=torch.float64)
    lo, hi = centre - 0.01 * scale, centre + 0.01 * scale
    low, high = verify.bounds(verify.extract(model), lo, hi, method)
    pts = lo + (hi - lo) * torch.rand(50, 24, 8, generator=gen, dtype=torch.float64)
    out = torch.stack([_outputs(model, p.float()).double() for p in torch.cat([lo[None], hi[None], pts])])
    broke = ~torch.isfinite(out).all(0).all(1)  # boxes where some float32 output is inf or nan
    unbounded = torch.isinf(low).all(1) & torch.isinf(high).all(1)
    assert broke.any() and (unbounded[broke]).all()  # the failure happens, and is covered
    assert torch.isfinite(low[:8]).all() and torch.isfinite(high[:8]).all()  # ordinary scales: finite
    finite = ~unbounded
    assert ((out[:, finite] >= low[finite]) & (out[:, finite] <= high[finite])).all()
