import pytest
import torch
from torch import nn

import qfail
from qfail.quant import QuantConfig, QuantLayer, fold_batchnorm, quantizable_layers, quantize_model


def test_layer_bits_dict_sets_the_named_layers(trained_cnn):
    names = quantizable_layers(trained_cnn)
    assert names == ["features.0", "features.4", "classifier.1"]
    qm = quantize_model(trained_cnn, QuantConfig(act_mode="dynamic"), {"features.4": (3, 5)})
    assert qm.layer_bits == {"features.0": (32, 32), "features.4": (3, 5), "classifier.1": (32, 32)}
    layer = qm.layers["features.4"]
    assert isinstance(layer, QuantLayer)
    assert len(layer.quantized_weight()[0].unique()) <= 2 ** 3
    qm.set_layer_bits([(8, 8), (4, 4), (2, 6)])
    assert [(q.weight_bits, q.act_bits) for q in qm.layers.values()] == [(8, 8), (4, 4), (2, 6)]
    assert qm.first_layer is qm.layers["features.0"]  # the layer that reads the image


def test_only_named_layer_changes_output(trained_cnn, digits, float32_bound):
    """Quantizing one layer touches exactly that layer: the float layers see float tensors."""
    x = digits.test.x[:32]
    qm = quantize_model(trained_cnn, QuantConfig(act_mode="dynamic"), {"classifier.1": (2, 32)})
    seen = {}
    for name, layer in qm.layers.items():
        layer.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, i[0]))
    out = qm(x)
    with qm.full_precision():
        ref = qm(x)
    # the float convolutions computed exactly what the float model computes ...
    # (up to float32 rounding: BatchNorm is folded into the convolutions, which reorders the sums)
    float_features = trained_cnn.eval().features(x).flatten(1)
    bound = float32_bound(trained_cnn.features, x).flatten(1)
    assert ((seen["classifier.1"] - float_features).abs() <= bound).all()
    # ... and only the named layer changed the output
    assert not torch.allclose(out, ref)
    assert ((ref - trained_cnn.eval()(x)).abs() <= float32_bound(trained_cnn, x)).all()


def test_full_precision_switch_needs_no_copy(trained_cnn, digits):
    qm = quantize_model(trained_cnn, QuantConfig(), (2, 2), calibration=[digits.train.x[:128]])
    before = [p.data_ptr() for p in qm.parameters()]
    with qm.full_precision():
        fp = qm(digits.test.x[:64])
    assert [p.data_ptr() for p in qm.parameters()] == before
    torch.testing.assert_close(fp, trained_cnn.eval()(digits.test.x[:64]), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(qm(digits.test.x[:64]), fp)
    assert all(q.enabled for q in qm.layers.values())


def test_fold_batchnorm_preserves_function(digits):
    model = qfail.build_model("resnet", (1, 8, 8), seed=0, depth=8, width=0.5)
    model.train()
    model(torch.rand(64, 1, 8, 8))  # non-trivial running statistics
    model.eval()
    x = torch.rand(16, 1, 8, 8)
    ref = model(x)
    import copy
    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), ref, rtol=1e-4, atol=1e-5)


def test_weight_only_and_activation_only_are_policies(trained_cnn, digits):
    x = digits.test.x[:16]
    wonly = quantize_model(trained_cnn, QuantConfig(act_mode="dynamic"), (4, 32))
    aonly = quantize_model(trained_cnn, QuantConfig(act_mode="dynamic"), (32, 4))
    for layer in wonly.layers.values():
        assert torch.equal(layer.quantize_input(x.new_ones(2, 3)), x.new_ones(2, 3))
    for layer in aonly.layers.values():
        assert layer.quantized_weight() is layer.layer.weight


def test_sample_act_bits_per_input(trained_cnn, digits):
    qm = quantize_model(trained_cnn, QuantConfig(act_mode="dynamic"), (32, 8))
    x = digits.test.x[:4]
    bits = torch.tensor([[2, 2, 2], [8, 8, 8], [2, 2, 2], [8, 8, 8]])
    qm.set_sample_act_bits(bits)
    mixed = qm(x)
    qm.set_sample_act_bits(None)
    qm.set_layer_bits((32, 2))
    low = qm(x)
    qm.set_layer_bits((32, 8))
    high = qm(x)
    torch.testing.assert_close(mixed[0], low[0])
    torch.testing.assert_close(mixed[1], high[1])
    with pytest.raises(ValueError, match=r"bits must have shape \(B, 3\)"):
        qm.set_sample_act_bits(torch.ones(4, 2))


def test_qat_improves_low_bit_accuracy(trained_cnn, digits):
    from qfail.quant import qat_config

    qm = quantize_model(trained_cnn, qat_config(), (2, 2), calibration=[digits.train.x[:256]])
    before = qfail.accuracy(qm, digits.val)
    qfail.fit(qm, digits.train, qfail.TrainConfig(epochs=3, lr=1e-3))
    assert qfail.accuracy(qm, digits.val) > before + 10


def test_static_activation_grid_follows_every_change_of_its_range(trained_cnn, digits):
    """The kept (scale, zero point) of a static layer are what choose_qparams gives for the range
    it has now: after a QAT step moves it, after load_state_dict, at other bits, after a move."""
    from qfail.quant import choose_qparams

    x = digits.train.x[:64]
    qm = quantize_model(trained_cnn, qfail.quant.qat_config(), (8, 4), calibration=[x])
    layer = qm.layers["features.4"]

    def kept_is_fresh(bits):
        scale, zp = choose_qparams(layer.act_lo, layer.act_hi, bits, layer.config.act_scheme)
        kept = layer._static_grid(bits)
        return torch.equal(kept[0], scale) and torch.equal(kept[1], zp)

    qm.eval()(x)
    assert kept_is_fresh(4)
    before = layer._static_grid(4)[0].clone()
    qm.train()
    loss = nn.functional.cross_entropy(qm(x), digits.train.y[:64])  # a training forward moves the range (EMA)
    loss.backward()
    assert kept_is_fresh(4) and not torch.equal(layer._static_grid(4)[0], before)
    state = {k: v.clone() for k, v in qm.state_dict().items()}
    layer.act_hi.mul_(2)
    assert kept_is_fresh(4)
    qm.load_state_dict(state)
    assert kept_is_fresh(4) and kept_is_fresh(2) and kept_is_fresh(4)
    old_lo = layer.act_lo
    qm.to(torch.float64).to(torch.float32)  # new buffers with new version counters, maybe at freed addresses
    assert layer.act_lo is not old_lo and kept_is_fresh(4)
    lo, hi = torch.tensor(-1.0), torch.tensor(3.0)  # other ranges whose version counters equal the kept ones
    for fresh, current in ((lo, layer.act_lo), (hi, layer.act_hi)):
        while fresh._version < current._version:
            fresh.add_(0.0)
    assert (lo._version, hi._version) == (layer.act_lo._version, layer.act_hi._version)
    layer.act_lo, layer.act_hi = lo, hi
    assert kept_is_fresh(4)


def test_static_needs_calibration(trained_cnn, digits):
    qm = quantize_model(trained_cnn, QuantConfig(), (8, 8))
    with pytest.raises(RuntimeError, match="calibrate"):
        qm(digits.test.x[:2])


@pytest.mark.parametrize("kwargs, message", [
    ({"act_mode": "lazy"}, "act_mode='lazy' is not allowed; choose one of 'static', 'dynamic', 'pact'"),
    ({"weight_granularity": "per_group"}, "weight_granularity='per_group' is not allowed"),
    ({"observer": "kl"}, "observer='kl' is not allowed; choose one of 'minmax', 'percentile', 'mse'"),
    ({"weight_method": "log"}, "weight_method='log' is not allowed"),
])
def test_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        QuantConfig(**kwargs)


def test_layer_bits_raises(trained_cnn):
    with pytest.raises(ValueError, match="layer_bits names unknown layer"):
        quantize_model(trained_cnn, QuantConfig(act_mode="dynamic"), {"fc9": (8, 8)})
    with pytest.raises(ValueError, match="layer_bits has 2 entries but the model has 3"):
        quantize_model(trained_cnn, QuantConfig(act_mode="dynamic"), [(8, 8), (8, 8)])
    with pytest.raises(ValueError, match=r"weight_bits=7\.5 is not allowed"):
        quantize_model(trained_cnn, QuantConfig(act_mode="dynamic"), (7.5, 8))


def test_without_rounding_keeps_the_clipping_and_drops_the_rounding():
    """BPDA's surrogate: PACT's clipping stays, the rounding goes, and everything is restored after."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(64, 4)  # non-negative, like images: PACT's lower clip at 0 does not bind on the input
    wide = quantize_model(net, QuantConfig(act_mode="pact", pact_init_alpha=100.0), (2, 2))
    with wide.without_rounding():  # a clipping level that never binds: the float network
        smooth = wide(x)
    with wide.full_precision():
        assert torch.allclose(smooth, wide(x))
    narrow = quantize_model(net, QuantConfig(act_mode="pact", pact_init_alpha=0.2), (2, 2))
    with narrow.without_rounding():
        clipped = narrow(x)
        expected = net[2](torch.minimum(net[1](net[0](torch.minimum(x.clamp(min=0), torch.tensor(0.2)))).clamp(min=0),
                                        torch.tensor(0.2)))
    assert torch.allclose(clipped, expected, atol=1e-6)
    assert not torch.allclose(clipped, narrow(x))  # the rounding is back
    assert all(q.rounding for q in narrow.layers.values())
