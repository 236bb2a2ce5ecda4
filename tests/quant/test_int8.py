import pytest
import torch

from qfail.quant import (
    ENGINES,
    fake_quant_twin,
    int8_dynamic,
    int8_static,
    latency_ms,
    quantized_engine,
    serialized_size,
)


@pytest.mark.parametrize("engine", [e for e in ("x86", "qnnpack") if e in ENGINES])
def test_static_int8_agrees_with_fake_quant(trained_cnn, digits, engine):
    calib = [digits.train.x[:256]]
    real = int8_static(trained_cnn, calib, engine=engine)
    twin = fake_quant_twin(trained_cnn, calib)
    with torch.no_grad(), quantized_engine(engine):
        a, b = real(calib[0]), twin(calib[0])
        test_a, test_b = real(digits.test.x), twin(digits.test.x)
    step = (b.max() - b.min()) / 255  # one step of the int8 output grid
    # inside the calibrated range both sides compute the same grid, up to a few rounding steps
    assert (a - b).abs().mean() < step
    assert (a - b).abs().max() < 8 * step
    assert (test_a.argmax(1) == test_b.argmax(1)).float().mean() > 0.98


def test_dynamic_int8_agrees_with_fake_quant(trained_mlp, digits):
    real = int8_dynamic(trained_mlp)
    twin = fake_quant_twin(trained_mlp, None, dynamic=True)
    with torch.no_grad():
        for x in digits.test.x[:20]:  # batch of one: per-batch == per-sample ranges
            a, b = real(x[None]), twin(x[None])
            assert (a - b).abs().max() < 0.05 * (b.abs().max() + 1)
            assert a.argmax() == b.argmax()


def test_int8_is_smaller_and_measurable(trained_mlp, digits):
    real = int8_dynamic(trained_mlp)
    assert serialized_size(real) < 0.5 * serialized_size(trained_mlp)
    assert latency_ms(real, digits.test.x[:8], repeats=3, warmup=1) > 0


def test_static_int8_needs_calibration(trained_cnn):
    with pytest.raises(ValueError, match="calibration is empty"):
        int8_static(trained_cnn, [])
    with pytest.raises(ValueError, match="engine='tpu' is not allowed"):
        int8_dynamic(trained_cnn, engine="tpu")
