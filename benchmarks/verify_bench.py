"""Interval bounds: qfail.verify vs a straightforward reference, and auto_LiRPA where it runs.

auto_LiRPA (the reference verifier, Xu et al. 2020) does not install with the pinned torch
(PyPI's 0.3 needs torch<1.13 and numpy<2): the script tries and says why. Its figures in the peer
notes were timed beside a plain float32 centre/radius IBP, so that IBP is timed here too and
auto_LiRPA's time on this machine is estimated as its ratio to the plain IBP times the plain
IBP's time here. The reference here is a plain, per-box float64 implementation of the same
bounds: IBP in lower/upper form (W+ l + W- u) and CROWN by back-substitution one box at a time.
Bounds must contain the reference's up to its float64 rounding (qfail in exact-arithmetic mode,
i.e. without its allowance for the network's float32 rounding, but with the allowance for its own
float32 products); timings are medians over repeated runs.
"""
from __future__ import annotations  # noqa: I001 - qfail is imported first, on purpose (qfail.isa)

import qfail  # noqa: F401 - first: before numpy and torch load, it pins their kernels (qfail.isa)
import itertools
import statistics
import time

import torch
from torch import nn

from qfail import machine, verify
from run_all import paired_ms


def _mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def reference_ibp(net: nn.Sequential, lo: torch.Tensor, hi: torch.Tensor):
    for m in net:
        if isinstance(m, nn.Linear):
            w, b = m.weight.detach().double(), m.bias.detach().double()
            wp, wn = w.clamp(min=0), w.clamp(max=0)
            lo, hi = lo @ wp.T + hi @ wn.T + b, hi @ wp.T + lo @ wn.T + b
        else:
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
    return lo, hi


def _relu_relax(l, u):
    a_u = torch.where(l >= 0, 1.0, torch.where(u <= 0, 0.0, u / (u - l).clamp(min=1e-300)))
    c_u = torch.where((l < 0) & (u > 0), -u * l / (u - l).clamp(min=1e-300), 0.0)
    a_l = torch.where(l >= 0, 1.0, torch.where(u <= 0, 0.0, (u > -l).double()))
    return a_l, a_u, c_u


def reference_crown_one(layers, lo, hi):
    """CROWN for one box (vectors lo, hi): layers = [(W, b), ...] with ReLU between."""
    pre = []  # pre-activation bounds of every hidden layer

    def back(k, spec):
        out = []
        for sign in (1.0, -1.0):
            lam, const = sign * spec, torch.zeros(spec.shape[0], dtype=torch.float64)
            for j in range(k, -1, -1):
                w, b = layers[j]
                const = const + lam @ b
                lam = lam @ w
                if j > 0:
                    a_l, a_u, c_u = _relu_relax(*pre[j - 1])
                    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
                    const = const + neg @ c_u
                    lam = pos * a_l + neg * a_u
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            out.append(lam @ mid - lam.abs() @ rad + const)
        return out[0], -out[1]

    for k in range(len(layers) - 1):
        eye = torch.eye(layers[k][0].shape[0], dtype=torch.float64)
        pre.append(back(k, eye))
        if k == 0:  # a single affine layer: interval arithmetic is exact, as in qfail
            w, b = layers[0]
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            pre[0] = (mid @ w.T + b - rad @ w.abs().T, mid @ w.T + b + rad @ w.abs().T)
        else:  # intersect with IBP from the previous bounds, as qfail does
            w, b = layers[k]
            pl, pu = pre[k - 1][0].clamp(min=0), pre[k - 1][1].clamp(min=0)
            mid, rad = (pu + pl) / 2, (pu - pl) / 2
            il, iu = mid @ w.T + b - rad @ w.abs().T, mid @ w.T + b + rad @ w.abs().T
            pre[k] = (torch.maximum(pre[k][0], il), torch.minimum(pre[k][1], iu))
    return back(len(layers) - 1, torch.eye(layers[-1][0].shape[0], dtype=torch.float64))


def reference_crown(net, lo, hi):
    layers = [(m.weight.detach().double(), m.bias.detach().double()) for m in net if isinstance(m, nn.Linear)]
    outs = [reference_crown_one(layers, l, h) for l, h in zip(lo, hi)]
    l_ibp, u_ibp = reference_ibp(net, lo, hi)
    return (torch.maximum(torch.stack([o[0] for o in outs]), l_ibp),
            torch.minimum(torch.stack([o[1] for o in outs]), u_ibp))


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def auto_lirpa_status() -> str:
    try:
        import auto_LiRPA  # noqa: F401
        return "importable (not timed by this script yet)"
    except Exception as err:  # noqa: BLE001 - ImportError, or its numpy-2 / torch-2 incompatibilities
        return f"not usable here: {type(err).__name__}: {str(err).splitlines()[0][:90]}"


# auto_LiRPA's times over a plain float32 centre/radius IBP's, both timed on one machine (peer notes:
# plain IBP 0.36 / 5.0 ms; auto_LiRPA IBP 1.07 / 7.6 ms, CROWN 60 ms / 3.8-4.1 s). auto_LiRPA does not
# install here, so its time on this machine is estimated as that ratio times the plain IBP's here.
AUTO_LIRPA_OVER_PLAIN = {"4-64-64-2": {"ibp": 1.07 / 0.36, "crown": 60 / 0.36},
                         "784-256-256-10": {"ibp": 7.6 / 5.0, "crown": 3950 / 5.0}}


def plain_float32_ibp(net: nn.Sequential, lo: torch.Tensor, hi: torch.Tensor):
    """Centre/radius IBP in float32 with no rounding allowance, the same arithmetic as auto_LiRPA's
    IBP: the same-machine anchor for its figures."""
    mid, rad = (hi + lo) * 0.5, (hi - lo) * 0.5
    for m in net:
        if isinstance(m, nn.Linear):
            mid, rad = mid @ m.weight.T + m.bias, rad @ m.weight.abs().T
        else:
            lo, hi = (mid - rad).clamp(min=0), (mid + rad).clamp(min=0)
            mid, rad = (hi + lo) * 0.5, (hi - lo) * 0.5
    return mid - rad, mid + rad


def main() -> None:
    machine.configure(threads=2)  # as a chapter runs, on both cores (both sides of every ratio share it)
    print(f"3. interval bounds, 1000 boxes (auto_LiRPA: {auto_lirpa_status()})")
    print(f"{'network':16s} {'method':6s} {'qfail ms':>9s} {'ref ms':>9s} {'ratio':>6s} {'max |diff|':>11s} "
          f"{'width vs exact IBP':>18s} {'auto_LiRPA ms (est.)':>20s} {'ratio':>6s}")
    for sizes, radius in (((4, 64, 64, 2), 0.05), ((784, 256, 256, 10), 0.01)):
        name = "-".join(map(str, sizes))
        net = _mlp(sizes)
        gen = torch.Generator().manual_seed(0)
        centre = torch.rand(1000, sizes[0], generator=gen, dtype=torch.float64)
        lo, hi = centre - radius, centre + radius
        prog = verify.extract(net, float32=False)
        exact_ibp = reference_ibp(net, lo, hi)
        exact_width = float((exact_ibp[1] - exact_ibp[0]).mean())
        lo32, hi32 = lo.float(), hi.float()
        for method in verify.BOUND_METHODS:
            ref_fn = (lambda: reference_ibp(net, lo, hi)) if method == "ibp" else (lambda: reference_crown(net, lo, hi))
            ours = verify.bounds(prog, lo, hi, method)
            ref = exact_ibp if method == "ibp" else ref_fn()
            diff = max(float((ours[0] - ref[0]).abs().max()), float((ours[1] - ref[1]).abs().max()))
            width = float((ours[1] - ours[0]).mean())
            if method == "ibp":  # interleaved with the plain IBP: this shared machine's speed drifts
                with torch.no_grad():
                    ms_ours, ms_plain = paired_ms(lambda: verify.bounds(prog, lo, hi, "ibp"),
                                                  lambda: plain_float32_ibp(net, lo32, hi32))
            else:  # against the plain IBP's time above (interleaved with CROWN it runs slower)
                ms_ours = median_ms(lambda: verify.bounds(prog, lo, hi, method), 3)
            ms_ref = median_ms(ref_fn, 20 if method == "ibp" else 1)
            ms_lirpa = AUTO_LIRPA_OVER_PLAIN[name][method] * ms_plain
            print(f"{name:16s} {method:6s} {ms_ours:9.1f} {ms_ref:9.1f} {ms_ours / ms_ref:6.2f} {diff:11.1e} "
                  f"{width / exact_width:18.4f} {ms_lirpa:20.1f} {ms_ours / ms_lirpa:6.2f}")
        print(f"{'':16s} (plain float32 IBP here: {ms_plain:.2f} ms)")
    print("ref: the float64 reference above (exact IBP; CROWN one box at a time). auto_LiRPA (est.): its time over a "
          "plain float32 IBP's on the peer machine (IBP 1.07 / 7.6 ms, CROWN 60 ms / 3.8-4.1 s against 0.36 / 5.0 ms) "
          "times the plain IBP's here; ratio: qfail over that")


if __name__ == "__main__":
    main()
