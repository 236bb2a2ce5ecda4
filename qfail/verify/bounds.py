"""Sound output bounds for ReLU networks, quantized or not: IBP and CROWN over input boxes.

Bounds over an input box [lo, hi] (a batch of boxes at once):

* ``ibp``: interval bound propagation (Gowal et al., 2018) in centre/radius form. Rounding is
  monotone, so a static quantizer maps [l, u] to [Q(l), Q(u)] exactly. A dynamic quantizer's
  scale depends on the input itself; every value it sees lies inside its own range, so its
  error is at most half the largest scale the box allows. On a wide input (from
  ``FLOAT32_WIDTH`` features on) an affine step's two products run in float32, their rounding
  bounded (:func:`_ibp_affine_float32`): 0.4-0.6x the time, bounds 0.5 % wider on boxes of
  radius 0.01 (5 % at 0.001).
* ``crown``: linear relaxations back-substituted to the input (CROWN, Zhang et al., 2018), for
  every hidden layer and for the output spec (here: the decision margins). A quantizer is
  relaxed by x - h <= Q(x) <= x + h (h: half a step) or by its constant range, whichever is
  tighter. Bounds from both methods are intersected, so CROWN is never looser than IBP.

Both are sound for the network *as it runs in float32*: after every affine step the bounds
widen by the worst-case float32 summation error (Higham's gamma_n), and static quantizers are
evaluated by the network's own float32 code on the rounded-outward bounds. Where the network's
float32 arithmetic could overflow on a box (to inf, and from there to nan), that box's bounds are
(-inf, inf) (:mod:`qfail.verify.overflow`).

Shape legend: ``N`` boxes, ``d`` input features, ``K`` outputs, ``S`` spec rows.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from qfail.checks import check_choice
from qfail.verify.overflow import may_overflow, unbounded_where
from qfail.verify.program import UNIT_ROUNDOFF_32, Affine, Program, ReLU, Step, gamma32

__all__ = ["BOUND_METHODS", "bounds", "margin_spec", "certified_actions"]

BOUND_METHODS = ("ibp", "crown")


def _down32(x: torch.Tensor) -> torch.Tensor:
    y = x.float()
    return torch.where(y.double() > x, torch.nextafter(y, torch.full_like(y, -np.inf)), y)


def _up32(x: torch.Tensor) -> torch.Tensor:
    y = x.float()
    return torch.where(y.double() < x, torch.nextafter(y, torch.full_like(y, np.inf)), y)


def _ibp_step(step: Step, lo: torch.Tensor, hi: torch.Tensor,
              float32_products: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(step, Affine):
        if float32_products and step.weight.shape[1] >= FLOAT32_WIDTH:
            return _ibp_affine_float32(step, lo, hi)
        mid, rad = (hi + lo) * 0.5, (hi - lo) * 0.5
        c = mid @ step.weight.T + step.bias
        r = rad @ step.weight.abs().T + step.slack(lo, hi)
        return c - r, c + r
    if isinstance(step, ReLU):
        return lo.clamp(min=0), hi.clamp(min=0)
    if step.mode == "static":  # monotone: the ends of the interval round to the ends of the image
        return step.apply(_down32(lo)).double(), step.apply(_up32(hi)).double()
    h = step.max_step(lo, hi) / 2 * (1 + 1e-6) + 1e-12
    return lo - h, hi + h


def _ibp_affine_float32(step: Affine, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IBP through a wide affine step with both of its products in float32, their rounding
    bounded soundly: on 784-256-256-10, 0.4-0.6x the time of float64 products.

    With u = 2^-24, S = |W32| |mid32| and R = |W32| rad32 (exact, per output), W x + b over the
    box (and the network's own float32 result, where ``Affine.float32``) lies within
    fl(W32 mid32) + b +- (R + e), e the sum of:

    * the box: lo, hi, their centre and radius rounded to float32 (to nearest) move the box's
      ends by at most 2.01 u (|mid32| + rad32) per input;
    * W rounded to float32: at most u (S + R);
    * the centre's float32 product: within gamma_n S;
    * the network's own float32 rounding, where it is bounded (``Affine.float32``): gamma_s
      (S + R + |b|);
    * below float32's normal range (rounded inputs, products that underflow): under
      2^-147 (sum |W| + n), allowed 2^-140 (sum |W| + n); the float64 sums: 2^-52 |b|.

    With g twice Higham's gamma for n + 3, (1 + g)(1 + gamma_s) R + (1 + g)(g + gamma_s) S covers
    every relative term, and it is one product: that factor times |W32| (rad32 + kappa |mid32|),
    kappa = (g + gamma_s) / (1 + gamma_s), plus this product's own rounding."""
    n = step.weight.shape[1]
    w32, w32_abs, w_abs_sums = step.weight_float32()
    g, gamma_s = gamma32(n + 3), step.rounding_gamma()
    # lo and hi are float64 (bounds() converts them): their float32 copies are ours to reuse
    lo32, hi32 = lo.float(), hi.float()
    rad32 = (hi32 - lo32).mul_(0.5)
    mid32 = hi32.add_(lo32).mul_(0.5)
    centre32 = mid32 @ w32.T
    kappa = torch.tensor((g + gamma_s) / (1 + gamma_s), dtype=torch.float64)
    kappa32 = float(_up32(kappa))  # rounded up: the float32 kappa is at least kappa
    spread32 = rad32.add_(mid32.abs_(), alpha=kappa32) @ w32_abs.T  # >= R + kappa S, to the roundings below
    # beyond float32's range a product overflows to inf or nan: then the float64 products take over
    # (one sum tests every entry, ten times faster here than isfinite().all())
    if not math.isfinite(float(centre32.sum() + spread32.sum())):
        return _ibp_step(step, lo, hi)
    # the two roundings of rad32 + kappa |mid32| (relative u each) and the product's (Higham's gamma_n)
    product_rounding = 1 / ((1 - gamma32(n) / 2) * (1 - UNIT_ROUNDOFF_32) ** 2)
    factor = (1 + g) * (1 + gamma_s) * product_rounding * (1 + 1e-9)
    centre = centre32.double().add_(step.bias)
    radius = spread32.double().mul_(factor).add_(2.0 ** -140 * (w_abs_sums + n) + (gamma_s + 2.0 ** -52) * step.bias.abs())
    return centre - radius, centre.add_(radius)


def _relaxation(step: Step, lo: torch.Tensor, hi: torch.Tensor):
    """Element-wise linear bounds a_l x + c_l <= f(x) <= a_u x + c_u valid on [lo, hi]."""
    if isinstance(step, ReLU):
        active, dead = lo >= 0, hi <= 0
        unstable = ~(active | dead)
        denom = torch.where(unstable, hi - lo, torch.ones_like(lo))
        a_u = torch.where(active, 1.0, torch.where(unstable, hi / denom, 0.0))
        c_u = torch.where(unstable, -hi * lo / denom, 0.0)
        a_l = torch.where(active, 1.0, torch.where(unstable, (hi > -lo).double(), 0.0))
        return a_l, torch.zeros_like(lo), a_u, c_u
    q_lo, q_hi = _ibp_step(step, lo, hi)
    if step.mode == "static":
        h = step.step / 2 * (1 + 1e-6) + 1e-6 * (torch.maximum(lo.abs(), hi.abs()) + step.step)
        linear_ok = (lo >= step.clip[0] - step.step / 2) & (hi <= step.clip[1] + step.step / 2)
    else:
        h = step.max_step(lo, hi) / 2 * (1 + 1e-6) + 1e-12
        h = h.expand_as(lo)
        linear_ok = torch.ones_like(lo, dtype=torch.bool)
    use_linear = linear_ok & (q_hi - q_lo > 2 * h)
    one, zero = torch.ones_like(lo), torch.zeros_like(lo)
    a = torch.where(use_linear, one, zero)
    return a, torch.where(use_linear, -h, q_lo), a, torch.where(use_linear, h, q_hi)


FLOAT32_WIDTH = 128  # CROWN computes its widest product in float32 from this input width on


def _concretize_through(weight: torch.Tensor, lam: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Lower bound of ``lam @ weight @ x`` over each box, the (rows, input) coefficients computed
    in float32: on an image-wide input this is CROWN's costliest product (float32 halves its time
    and memory), and its rounding error is bounded soundly.

    With C = lam W the bound is C mid - |C| rad. The first term is lam (W mid), in float64. For
    the second, C32 = fl32(lam) fl32(W) differs from C by at most g |lam| |W| per entry (g: twice
    Higham's gamma for the inner dimension plus the rounding of lam and W to float32), so
    sum |C| rad <= sum |C32| rad32 + g |lam| (|W| rad) (rad32: rad rounded up), the first sum
    bounded from above by :func:`_sum_up`."""
    mid, rad = (hi + lo) * 0.5, (hi - lo) * 0.5
    n = weight.shape[0]
    gamma = gamma32(n + 3)
    centre = (lam @ (mid @ weight.T).unsqueeze(-1)).squeeze(-1)
    error = gamma * (lam.abs() @ (rad @ weight.abs().T).unsqueeze(-1)).squeeze(-1)
    c32 = lam.float() @ weight.float()
    return centre - _sum_up(c32.abs_().mul_(_up32(rad).unsqueeze(1))) - error


def _sum_up(terms: torch.Tensor, block: int = 64) -> torch.Tensor:
    """An upper bound, in float64, of the exact sum over the last axis of non-negative float32
    products (each rounded by at most 2^-24 relative): float32 sums over blocks of at most
    ``block`` terms (each within twice Higham's gamma of exact), then a float64 sum of the blocks."""
    d = terms.shape[-1]
    size = max(b for b in range(1, block + 1) if d % b == 0)
    if size < 8:
        return torch.sum(terms, -1, dtype=torch.float64) * (1 + 2.0 ** -22)
    partial = terms.view(*terms.shape[:-1], d // size, size).sum(-1)
    slack = gamma32(size + 2)
    return partial.double().sum(-1) * (1 + slack)


def _back_substitute(steps: list[Step], bounds_in: list[tuple[torch.Tensor, torch.Tensor]],
                     spec: torch.Tensor | None, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of ``spec @ output(steps)`` over the box; spec (N, m, d_out), or
    ``None`` for the identity (bounds of every output, without multiplying by an identity)."""
    n = len(lo)
    last = steps[-1]
    if spec is None:  # start one step in: the identity through the last affine step is the step itself
        if not isinstance(last, Affine):
            raise ValueError("spec=None needs a program that ends with an affine step")
        w = last.weight.expand(n, -1, -1)
        lam = torch.cat([w, -w], 1)  # lower bounds of y and of -y, in one pass
        slack = last.slack(*bounds_in[-1])
        const = torch.cat([last.bias - slack, -last.bias - slack], 1)
        steps, bounds_in = steps[:-1], bounds_in[:-1]
    else:
        lam = torch.cat([spec, -spec], 1)
        const = torch.zeros(lam.shape[:2], dtype=lam.dtype)
    for k in range(len(steps) - 1, -1, -1):
        step, (l_in, u_in) = steps[k], bounds_in[k]
        if isinstance(step, Affine):
            const = const + lam @ step.bias
            if step.float32:  # the network's own float32 rounding (none in exact arithmetic)
                const = const - (lam.abs() @ step.slack(l_in, u_in).unsqueeze(-1)).squeeze(-1)
            if k == 0 and step.weight.shape[1] >= FLOAT32_WIDTH:
                low = _concretize_through(step.weight, lam, lo, hi) + const
                m = low.shape[1] // 2
                return low[:, :m], -low[:, m:]
            lam = lam @ step.weight
        else:
            a_l, c_l, a_u, c_u = _relaxation(step, l_in, u_in)
            # pos a_l + neg a_u, written as lam a_l + neg (a_u - a_l): fewer passes over lam
            neg = lam.clamp(max=0)
            const = const + (neg @ (c_u - c_l).unsqueeze(-1)).squeeze(-1)
            if bool(c_l.any()):  # a ReLU's lower line passes through 0
                const = const + (lam @ c_l.unsqueeze(-1)).squeeze(-1)
            lam = lam.mul(a_l.unsqueeze(1)).add_(neg.mul_((a_u - a_l).unsqueeze(1)))
    mid, rad = ((hi + lo) * 0.5).unsqueeze(-1), ((hi - lo) * 0.5).unsqueeze(-1)
    low = (lam @ mid).squeeze(-1) - (lam.abs() @ rad).squeeze(-1) + const
    m = low.shape[1] // 2
    return low[:, :m], -low[:, m:]


def bounds(program: Program, lo: torch.Tensor, hi: torch.Tensor, method: str = "ibp",
           spec: torch.Tensor | None = None, chunk: int = 2 ** 22) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of the outputs (or of ``spec @ outputs``) over each box.

    Args:
        program: from :func:`extract`.
        lo, hi: (N, d) box corners.
        method: ``ibp`` or ``crown``.
        spec: optional (N, m, d_out) linear specification, e.g. from :func:`margin_spec`.
        chunk: CROWN processes boxes in groups so that no back-substitution tensor exceeds this
            many elements. The default (16 MB in float32) measured fastest on the 784-wide
            benchmark: larger groups spend their time faulting in fresh pages for every buffer.
    """
    check_choice("method", method, BOUND_METHODS)
    lo, hi = lo.double(), hi.double()
    if lo.shape != hi.shape or lo.dim() != 2 or lo.shape[1] != program.in_features:
        raise ValueError(f"lo and hi must both have shape (N, {program.in_features}); got {tuple(lo.shape)} "
                         f"and {tuple(hi.shape)}")
    if lo.numel() and bool((hi - lo).min() < 0):  # (half the time of (lo > hi).any() on an image-wide box)
        raise ValueError("lo must be <= hi in every coordinate")
    if method == "crown":
        widest = max(s.weight.shape[0] * s.weight.shape[1] for s in program.steps if isinstance(s, Affine))
        size = max(1, chunk // widest)
        parts = [_crown(program, lo[i:i + size], hi[i:i + size], None if spec is None else spec[i:i + size])
                 for i in range(0, len(lo), size)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    io = [(lo, hi)]
    for step in program.steps:
        io.append(_ibp_step(step, *io[-1], float32_products=True))
    out_lo, out_hi = io[-1]
    if spec is not None:
        out_lo, out_hi = _spec_interval(spec.double(), out_lo, out_hi)
    return unbounded_where(may_overflow(program.steps, io), out_lo, out_hi)


def _spec_interval(spec, lo, hi):
    mid, rad = ((hi + lo) * 0.5).unsqueeze(-1), ((hi - lo) * 0.5).unsqueeze(-1)
    c, r = (spec @ mid).squeeze(-1), (spec.abs() @ rad).squeeze(-1)
    return c - r, c + r


def _affine_indices(steps: list[Step]) -> list[int]:
    return [i for i, s in enumerate(steps) if isinstance(s, Affine)]


def _is_second_affine(steps: list[Step], k: int) -> bool:
    """Whether step ``k`` is the second affine step, preceded only by activation quantizers before
    the first one: then every value in between is bounded by element-wise lines in the first affine
    step's output (``_elementwise_lines``)."""
    affine = _affine_indices(steps)
    return len(affine) >= 2 and affine[1] == k and not any(isinstance(s, ReLU) for s in steps[:affine[0]])


def _forward_is_cheaper(steps: list[Step], k: int) -> bool:
    """Whether step ``k`` is the second affine step (``_is_second_affine``) and the input is narrow.

    Then linear bounds carried forward from the input (``_forward_second_affine``) are those of
    back-substitution: every element-wise relaxation has a slope >= 0, so the choice of its
    lower or upper line is the same for every row, and a leading quantizer's relaxation (slope 0
    or 1) only moves the box the first affine step sees. Forward, the per-box work is on
    (d1, d0) coefficients instead of (2 d2, d1) ones: a win for a narrow input (a controller's
    state, not an image)."""
    return _is_second_affine(steps, k) and \
        4 * steps[_affine_indices(steps)[0]].weight.shape[1] <= steps[k].weight.shape[0]


def _elementwise_lines(steps: list[Step], io: list[tuple[torch.Tensor, torch.Tensor]], k: int,
                       lo: torch.Tensor, hi: torch.Tensor):
    """For the second affine step ``k``: the box the first affine step sees (a leading quantizer's
    output lies in [a lo + c_l, a hi + c_u], its slope a being 0 or 1), and lines
    a_low v + c_low <= z <= a_up v + c_up, per box and neuron, that bound step k's input z by
    v = W x, W the first step's weight (its bias and float32 rounding are in c_low, c_up).
    Every element-wise relaxation has a slope >= 0, so lower lines compose with lower lines."""
    f = _affine_indices(steps)[0]
    for j in range(f):
        a, c_l, _, c_u = _relaxation(steps[j], *io[j])
        lo, hi = a * lo + c_l, a * hi + c_u
    first = steps[f]
    slack = first.slack(*io[f])
    a_low = a_up = torch.ones_like(slack)  # (N, d1)
    c_low, c_up = first.bias - slack, first.bias + slack
    for j in range(f + 1, k):
        a_l, c_l, a_u, c_u = _relaxation(steps[j], *io[j])
        a_low, c_low = a_l * a_low, a_l * c_low + c_l
        a_up, c_up = a_u * a_up, a_u * c_up + c_u
    return lo, hi, a_low, c_low, a_up, c_up


def _forward_second_affine(steps: list[Step], io: list[tuple[torch.Tensor, torch.Tensor]], k: int,
                           lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of step ``k``'s output from linear lower and upper bounds of every value in terms of
    the first affine step's input, carried forward: A_L x + c_L <= z <= A_U x + c_U (see
    ``_forward_is_cheaper``)."""
    lo, hi, a_low, c_low, a_up, c_up = _elementwise_lines(steps, io, k, lo, hi)
    first, last = steps[_affine_indices(steps)[0]], steps[k]
    n = len(lo)
    a_low, a_up = a_low.unsqueeze(-1) * first.weight, a_up.unsqueeze(-1) * first.weight  # (N, d1, d0)
    pos, neg = last.weight.clamp(min=0), last.weight.clamp(max=0)
    slack = last.slack(*io[k])

    def left(w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:  # w @ a[i] for every box, as one matrix product
        d_in, d0 = a.shape[1:]
        return (w @ a.transpose(0, 1).reshape(d_in, n * d0)).reshape(-1, n, d0).transpose(0, 1)

    coef_low, coef_up = left(pos, a_low) + left(neg, a_up), left(pos, a_up) + left(neg, a_low)  # (N, d2, d0)
    const_low = c_low @ pos.T + c_up @ neg.T + last.bias - slack
    const_up = c_up @ pos.T + c_low @ neg.T + last.bias + slack
    mid, rad = ((hi + lo) * 0.5).unsqueeze(1), ((hi - lo) * 0.5).unsqueeze(1)
    low = (coef_low * mid).sum(-1) - (coef_low.abs() * rad).sum(-1) + const_low
    up = (coef_up * mid).sum(-1) + (coef_up.abs() * rad).sum(-1) + const_up
    return low, up


def _wide_second_affine(steps: list[Step], io: list[tuple[torch.Tensor, torch.Tensor]], k: int,
                        lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of step ``k``'s output on a wide input (an image): back-substitution to the input,
    with the one costly part, |L W| rad for the (d2, d0) coefficients L W of every box, in float32
    (``_spreads``) and its rounding bounded soundly.

    With P = W2+, M = W2- and the lines of ``_elementwise_lines``, the lower bound's coefficients on
    v = W x are L = P diag(a_low) + M diag(a_up) and the upper bound's U = P diag(a_up) + M diag(a_low);
    everything but the spreads is a (N, d1) x (d1, d2) product in float64."""
    lo, hi, a_low, c_low, a_up, c_up = _elementwise_lines(steps, io, k, lo, hi)
    first, last = steps[_affine_indices(steps)[0]], steps[k]
    pos, neg = last.weight.clamp(min=0), last.weight.clamp(max=0)
    mid, rad = (hi + lo) * 0.5, _up32((hi - lo) * 0.5)
    v, t = mid @ first.weight.T, rad.double() @ first.weight.abs().T  # W mid and |W| rad, (N, d1)
    slack = last.slack(*io[k])
    low = (a_low * v + c_low) @ pos.T + (a_up * v + c_up) @ neg.T + last.bias - slack
    up = (a_up * v + c_up) @ pos.T + (a_low * v + c_low) @ neg.T + last.bias + slack
    abs_low = (a_low * t) @ pos.T - (a_up * t) @ neg.T  # |L| |W| rad
    abs_gap = ((a_up - a_low) * t) @ last.weight.abs().T  # |U - L| |W| rad
    spread_low, spread_up, inner = _spreads(first.weight, last.weight, a_low, a_up, rad)
    # one allowance for both sides: widening them unequally would move the interval's centre, and
    # with it the next ReLU's choice of lower line (hi > -lo) near a tie, away from exact CROWN's
    allowance = gamma32(inner) * (abs_low + abs_gap)
    return low - spread_low - allowance, up + spread_up + allowance


def _packed_columns(mask: torch.Tensor) -> torch.Tensor:
    """Per row, the indices of its True columns first, cut to the largest count of any row (shorter
    rows are padded with False columns)."""
    count = max(1, int(mask.sum(1).max())) if mask.numel() else 1
    return torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :count]


def _spreads(w1: torch.Tensor, w2: torch.Tensor, a_low: torch.Tensor, a_up: torch.Tensor, rad: torch.Tensor):
    """Upper bounds, in float64, of sum_i |(L W1)_ji| rad_i and of the same for U (see
    ``_wide_second_affine``; rad holds float32 values), and the inner size of their float32 products.

    Two savings make this about half of two full products: L is zero on the columns where both
    slopes are (dead ReLUs), so each box multiplies only its live columns; and U = L + |W2| diag(a_up
    - a_low) differs from L only on relaxed (unstable) columns, so U W1 is L W1 plus a product over
    those. Each entry's rounding (the inputs to float32, the product and sum, the correction's add)
    is within gamma32(inner) of (|L| + |U - L|) |W1| rad, which the caller adds."""
    live = _packed_columns((a_low != 0) | (a_up != 0))  # (N, k)
    relaxed = _packed_columns(a_up != a_low)
    w1_32, w2_32, rad = w1.float(), w2.float(), rad.unsqueeze(1)
    pos, neg = w2_32.clamp(min=0).T, w2_32.clamp(max=0).T  # (d1, d2)
    rows = pos[live].mul_(a_low.gather(1, live).float().unsqueeze(-1))
    rows.addcmul_(neg[live], a_up.gather(1, live).float().unsqueeze(-1))  # pos and neg never overlap: exact
    low = torch.bmm(rows.mT, w1_32[live].mul_(rad))  # (N, d2, d0): (L W1) * rad
    gap = (a_up - a_low).gather(1, relaxed).float().unsqueeze(-1)
    up = torch.bmm((w2_32.abs().T[relaxed] * gap).mT, w1_32[relaxed].mul_(rad)).add_(low)  # (U W1) * rad
    spread_low, spread_up = _sum_up(low.abs_()), _sum_up(up.abs_())
    return spread_low, spread_up, live.shape[1] + relaxed.shape[1] + 6


def _crown(program: Program, lo: torch.Tensor, hi: torch.Tensor, spec: torch.Tensor | None):
    steps = program.steps
    io = [(lo, hi)]  # io[k]: bounds of the input of step k
    for k, step in enumerate(steps):
        ibp_lo, ibp_hi = _ibp_step(step, *io[-1])
        earlier_affine = any(isinstance(s, Affine) for s in steps[:k])
        if isinstance(step, Affine) and earlier_affine and k < len(steps) - 1:
            if _forward_is_cheaper(steps, k):
                c_lo, c_hi = _forward_second_affine(steps, io, k, lo, hi)
            elif _is_second_affine(steps, k) and steps[_affine_indices(steps)[0]].weight.shape[1] >= FLOAT32_WIDTH:
                c_lo, c_hi = _wide_second_affine(steps, io, k, lo, hi)
            else:
                c_lo, c_hi = _back_substitute(steps[:k + 1], io, None, lo, hi)
            ibp_lo, ibp_hi = torch.maximum(ibp_lo, c_lo), torch.minimum(ibp_hi, c_hi)
        io.append((ibp_lo, ibp_hi))
    out_lo, out_hi = io[-1]
    if spec is None:
        ibp_lo, ibp_hi = out_lo, out_hi
    else:
        spec = spec.double()
        ibp_lo, ibp_hi = _spec_interval(spec, out_lo, out_hi)
    c_lo, c_hi = _back_substitute(steps, io[:-1], spec, lo, hi)
    return unbounded_where(may_overflow(steps, io), torch.maximum(ibp_lo, c_lo), torch.minimum(ibp_hi, c_hi))


def margin_spec(actions: torch.Tensor, classes: int) -> torch.Tensor:
    """(N, K-1, K) rows e_a - e_j for every j != a: all positive <=> argmax is a."""
    eye = torch.eye(classes, dtype=torch.float64)
    rows = [eye[a].expand(classes - 1, -1) - eye[[j for j in range(classes) if j != a]] for a in range(classes)]
    return torch.stack(rows)[actions]


def certified_actions(program: Program, lo: torch.Tensor, hi: torch.Tensor, method: str = "crown") -> torch.Tensor:
    """For each box, the action the network provably takes everywhere in it, or -1."""
    centre = ((lo.double() + hi.double()) / 2)
    guess = program(centre).argmax(1)
    margin_lo, _ = bounds(program, lo, hi, method, margin_spec(guess, program.out_features))
    # ties go to the lowest index in argmax, so a proof needs strict margins
    return torch.where((margin_lo > 0).all(1), guess, torch.full_like(guess, -1))
