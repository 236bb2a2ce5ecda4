"""qfail benchmarks, measured in one run on this machine (``make bench``).

1. Fake quantization of 4M float32 values: qfail vs torch's fused ops
   (``torch.fake_quantize_per_tensor_affine`` / ``per_channel_affine``), 4 and 8 bits,
   inference (no autograd) and forward+backward, and forward+backward on one activation of a
   chapter's ResNet (qfail computes the fused op's bits, vectorized). Goal: qfail/torch <= 1.1.
1b. The same against ``torch.compile`` of the formula: compile time, per-call times on three
   tensor sizes and the calls that would repay the compile.
2. Real INT8 (``qfail.quant.int8_dynamic``, x86 engine) vs FP32 on a Linear-heavy MLP
   1024-4096-4096-10, batch 64. Goal: >= 3.9x smaller, >= 2x faster.

Timings are medians over repeated calls after warm-up; this is a shared 2-core machine, so
differences under ~10% are noise.
"""
from __future__ import annotations  # noqa: I001 - qfail is imported first, on purpose (qfail.isa)

import qfail  # noqa: F401 - first: before numpy and torch load, it pins their kernels (qfail.isa)
import os
import statistics
import time
import warnings

import torch
from torch import nn

from qfail import machine
from qfail.quant import choose_qparams, fake_quantize, int8_dynamic, latency_ms, qrange, serialized_size


def paired_ms(ours, ref, repeats: int = 30, warmup: int = 5) -> tuple[float, float]:
    """Medians of interleaved calls, so both sides see the same machine state (allocator, load)."""
    for _ in range(warmup):
        ours(), ref()
    a, b = [], []
    for _ in range(repeats):
        for fn, acc in ((ours, a), (ref, b)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(a), 1e3 * statistics.median(b)


def fake_quant_rows() -> list[tuple]:
    torch.manual_seed(0)
    x = torch.randn(1024, 4096)  # 4.19M values
    rows = []
    for bits in (8, 4):
        r = qrange(bits, "asymmetric")
        s, z = choose_qparams(x.min(), x.max(), bits)
        s_f, z_i = float(s), int(z)
        with torch.no_grad():
            ours, ref = paired_ms(lambda: fake_quantize(x, s, z, r.q_min, r.q_max),
                                  lambda: torch.fake_quantize_per_tensor_affine(x, s_f, z_i, r.q_min, r.q_max))
        rows.append((f"per-tensor {bits}-bit, inference", ours, ref))
        # per output channel, symmetric
        rs = qrange(bits, "symmetric")
        amax = x.abs().amax(dim=1)
        sc, zc = choose_qparams(-amax, amax, bits, "symmetric")
        zc_i = zc.to(torch.int32)
        with torch.no_grad():
            ours, ref = paired_ms(lambda: fake_quantize(x, sc[:, None], zc[:, None], rs.q_min, rs.q_max),
                                  lambda: torch.fake_quantize_per_channel_affine(x, sc, zc_i, 0, rs.q_min, rs.q_max))
        rows.append((f"per-channel {bits}-bit, inference", ours, ref))
        xg = x.clone().requires_grad_(True)
        g = torch.ones_like(x)

        def ours_fb():
            fake_quantize(xg, s, z, r.q_min, r.q_max).backward(g)

        def ref_fb():
            torch.fake_quantize_per_tensor_affine(xg, s_f, z_i, r.q_min, r.q_max).backward(g)

        rows.append((f"per-tensor {bits}-bit, forward+backward", *paired_ms(ours_fb, ref_fb, 15)))
    # what a chapter's PGD step and QAT quantize: one ResNet activation, channels-last, batch 200
    act = torch.randn(200, 8, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    r = qrange(4, "asymmetric")
    s, z = choose_qparams(act.min().detach(), act.max().detach(), 4)
    g = torch.ones_like(act)
    rows.append(("activation 200x8x16x16, 4-bit, fwd+bwd",
                 *paired_ms(lambda: fake_quantize(act, s, z, r.q_min, r.q_max).backward(g),
                            lambda: torch.fake_quantize_per_tensor_affine(act, s, z.int(), r.q_min, r.q_max).backward(g),
                            100)))
    return rows


def compiled_rows() -> tuple[float, list[tuple]]:
    """torch.compile'd fake quantization: its one-off compile time, then per-call ms against
    qfail's on the 4.19M tensor, a CNN activation of a chapter (batch 200, 8x16x16) and a
    controller's (batch 8, 64 units). Compiling pays for a chapter only when its calls, times the
    saving per call, exceed the compile time (and every new shape costs a recompile)."""
    r = qrange(8, "asymmetric")
    q_min, q_max = r.q_min, r.q_max

    def formula(x, s, z):  # qfail's function of x: torch's kernels' x * (1/s) (qfail.quant.primitives)
        return (torch.clamp(torch.round(x * torch.reciprocal(s)) + z, q_min, q_max) - z) * s

    import torch._inductor.config

    torch._inductor.config.force_disable_caches = True  # time a first compile, not a cache hit
    warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")  # says the line above again
    torch.manual_seed(0)
    big = torch.randn(1024, 4096)
    s, z = choose_qparams(big.min(), big.max(), 8)
    compiled = torch.compile(formula, dynamic=True)
    with torch.no_grad():
        start = time.perf_counter()
        compiled(big, s, z)
        compile_s = time.perf_counter() - start
        rows = []
        for name, x in (("4.19M values", big), ("activation 200x8x16x16", torch.randn(200, 8, 16, 16)),
                        ("activation 8x64", torch.randn(8, 64))):
            compiled(x, s, z)  # a new shape: dynamic=True should not recompile, but warm it anyway
            repeats = 30 if x.numel() > 10**6 else 300
            ours, ref = paired_ms(lambda: fake_quantize(x, s, z, q_min, q_max), lambda: compiled(x, s, z), repeats)
            rows.append((name, ours, ref))
    return compile_s, rows


def int8_rows() -> tuple[float, float, float, float]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 10)).eval()
    q = int8_dynamic(mlp, engine="x86")
    x = torch.randn(64, 1024)
    return (serialized_size(mlp), serialized_size(q), latency_ms(mlp, x, repeats=30, engine="x86"),
            latency_ms(q, x, repeats=30, engine="x86"))


def main() -> None:
    machine.configure(threads=2)  # both cores; a chapter runs on one, two at a time. Both sides of a ratio share it
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("1. fake quantization of 4.19M float32 values (ms per call; goal qfail/torch <= 1.10)")
    print(f"{'case':40s} {'qfail':>8s} {'torch':>8s} {'ratio':>7s}")
    for name, ours, ref in fake_quant_rows():
        print(f"{name:40s} {ours:8.2f} {ref:8.2f} {ours / ref:7.2f}")
    compile_s, rows = compiled_rows()
    print(f"\n1b. torch.compile'd fake quantization (8-bit, inference): compiled once in {compile_s:.1f} s")
    print(f"{'tensor':40s} {'qfail':>8s} {'compiled':>8s} {'ratio':>7s} {'calls to repay':>15s}")
    for name, ours, ref in rows:
        repay = f"{compile_s / ((ours - ref) / 1e3):15,.0f}" if ours > ref else f"{'never':>15s}"
        print(f"{name:40s} {ours:8.3f} {ref:8.3f} {ours / ref:7.2f} {repay}")
    fp_size, q_size, fp_ms, q_ms = int8_rows()
    print("\n2. real INT8 (dynamic, x86) vs FP32, MLP 1024-4096-4096-10, batch 64 (goal >= 3.9x smaller, >= 2x faster)")
    print(f"{'':10s} {'size (MB)':>10s} {'latency (ms)':>13s}")
    print(f"{'FP32':10s} {fp_size / 2**20:10.2f} {fp_ms:13.2f}")
    print(f"{'INT8':10s} {q_size / 2**20:10.2f} {q_ms:13.2f}")
    print(f"INT8 is {fp_size / q_size:.2f}x smaller and {fp_ms / q_ms:.2f}x faster (FP32 on MKL's "
          f"{os.environ.get('MKL_CBWR', 'own')} branch, as the book runs it; "
          "MKL_CBWR=AUTO make bench: the CPU's fastest)")


if __name__ == "__main__":
    main()
