"""Sound output bounds for ReLU networks, quantized or not, and a decision-consistency verifier.

A network is first *extracted* into a :class:`Program`, a list of three kinds of steps:
``Affine`` (a Linear layer with its weights exactly as the network uses them, i.e. already
quantized), ``ReLU``, and ``ActQuant`` (activation rounding). Three networks extract:
a plain ``nn.Sequential`` MLP, qfail's :class:`~qfail.quant.QuantizedModel` over one, and the
``Sequential`` that ``torch.ao`` dynamic INT8 quantization returns.

Bounds over an input box [lo, hi] (a batch of boxes at once):

* ``ibp``: interval bound propagation (Gowal et al., 2018) in centre/radius form. Rounding is
  monotone, so a static quantizer maps [l, u] to [Q(l), Q(u)] exactly. A dynamic quantizer's
  scale depends on the input itself; every value it sees lies inside its own range, so its
  error is at most half the largest scale the box allows.
* ``crown``: linear relaxations back-substituted to the input (CROWN, Zhang et al., 2018), for
  every hidden layer and for the output spec (here: the decision margins). A quantizer is
  relaxed by x - h <= Q(x) <= x + h (h: half a step) or by its constant range, whichever is
  tighter. Bounds from both methods are intersected, so CROWN is never looser than IBP.

Both are sound for the network *as it runs in float32*: after every affine step the bounds
widen by the worst-case float32 summation error (Higham's gamma_n), and static quantizers are
evaluated by the network's own float32 code on the rounded-outward bounds.

``verify_consistency`` decides, box by box, whether a quantized network takes the same decision
(argmax) as its full-precision original everywhere in the box: certified (both networks' bounds
prove the same action), refuted (a concrete input where they differ, found by the falsifier and
checked with plain forward passes of the real modules), or unknown when the branch-and-bound
budget runs out.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ._validate import check_choice, check_range
from .quant.model import QuantizedModel, QuantLayer
from .quant.int8 import decide

if TYPE_CHECKING:  # pandas is imported where a table is built
    import pandas as pd

__all__ = ["Affine", "ReLU", "ActQuant", "Program", "extract", "bounds", "margin_spec", "certified_actions",
           "falsify", "verify_consistency", "Verdict", "METHODS", "moon_inn", "inn_ablation", "grid_boxes", "consistency_sweep"]

METHODS = ("ibp", "crown")
_U32 = 2.0 ** -24  # unit roundoff of float32


@dataclass
class Affine:
    """y = W x + b, with W and b as the network uses them (float64 copies)."""

    weight: torch.Tensor
    bias: torch.Tensor
    float32: bool = True  # widen by float32 rounding error (False: bounds in exact arithmetic)

    def slack(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Worst-case float32 error of computing W x + b for x in [lo, hi] (per output)."""
        if not self.float32:
            return torch.zeros(lo.shape[0], self.weight.shape[0], dtype=lo.dtype)
        n = self.weight.shape[1]
        gamma = 2 * (n + 2) * _U32 / (1 - (n + 2) * _U32)  # twice Higham's gamma_{n+2}, for blocked sums
        mag = torch.maximum(lo.abs(), hi.abs())
        return gamma * (mag @ self.weight.abs().T + self.bias.abs())


@dataclass
class ReLU:
    pass


@dataclass
class ActQuant:
    """Activation rounding at a layer input.

    ``static``: fixed scale/zero point; ``apply`` is the network's own float32 quantizer.
    ``dynamic``: scale from each input's own range (per sample); only ``bits``/``scheme`` matter.
    """

    mode: str
    bits: int
    scheme: str = "asymmetric"
    apply: Callable[[torch.Tensor], torch.Tensor] | None = None
    step: float = 0.0  # static: the scale s
    clip: tuple[float, float] = (-np.inf, np.inf)  # static: values that round without clamping

    def levels(self) -> int:
        return 2 ** self.bits - 1

    def max_step(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """(N, 1) the largest scale any input of the box can get (dynamic mode)."""
        top = hi.max(dim=1, keepdim=True).values.clamp(min=0)
        bottom = lo.min(dim=1, keepdim=True).values.clamp(max=0)
        if self.scheme == "symmetric":
            return torch.maximum(top, -bottom) / (2 ** (self.bits - 1) - 1)
        return (top - bottom) / self.levels()


Step = Affine | ReLU | ActQuant


@dataclass
class Program:
    """A network as a list of steps, plus an STE-differentiable forward pass for the falsifier."""

    steps: list[Step]
    in_features: int
    out_features: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        for step in self.steps:
            if isinstance(step, Affine):
                x = x @ step.weight.T + step.bias
            elif isinstance(step, ReLU):
                x = torch.relu(x)
            elif step.mode == "static":
                q = step.apply(x.detach().float()).to(x.dtype)
                x = x + (q - x).detach()  # straight-through: exact value, identity gradient
            else:
                x = x + (_dynamic_round(x.detach(), step) - x).detach()
        return x


def _dynamic_round(x: torch.Tensor, step: ActQuant) -> torch.Tensor:
    from .quant.primitives import fake_quantize_tensor

    return fake_quantize_tensor(x.float(), step.bits, step.scheme, axis=0).to(x.dtype)


def _static_quant(layer: QuantLayer) -> ActQuant:
    from .quant.primitives import _levels, choose_qparams

    scale, zp = choose_qparams(layer.act_lo, layer.act_hi, layer.act_bits, layer.config.act_scheme)
    q_min, q_max = _levels(layer.act_bits, layer.config.act_scheme)
    s, z = float(scale), float(zp)
    def apply(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # no range tracking, whatever mode the model is in
            return layer.quantize_input(t)

    return ActQuant("static", layer.act_bits, layer.config.act_scheme, apply=apply, step=s,
                    clip=((q_min - z) * s, (q_max - z) * s))


@torch.no_grad()
def extract(model: nn.Module, float32: bool = True) -> Program:
    """The :class:`Program` of a Sequential MLP, a QuantizedModel over one, or its dynamic INT8 copy.

    ``float32=False`` drops the float32 rounding allowance (bounds then hold in exact arithmetic,
    which is what other verifiers compute; used to compare with them).
    """
    from torch.ao.nn.quantized import dynamic as nnqd

    net = model.net if isinstance(model, QuantizedModel) else model
    if not isinstance(net, nn.Sequential):
        raise ValueError(f"model={type(net).__name__} is not supported; allowed: nn.Sequential of "
                         "Linear/ReLU, a QuantizedModel over one, or its torch.ao dynamic INT8 copy")
    if isinstance(model, QuantizedModel) and model.config.act_mode == "pact":
        raise ValueError("act_mode='pact' is not supported by extract(); allowed: 'static', 'dynamic'")
    steps: list[Step] = []
    for module in net:
        if isinstance(module, QuantLayer):
            if module.enabled and module.act_bits != 32:
                if module.config.act_mode == "static":
                    steps.append(_static_quant(module))
                else:
                    steps.append(ActQuant("dynamic", module.act_bits, module.config.act_scheme))
            w = module.quantized_weight() if module.enabled else module.layer.weight
            steps.append(Affine(w.detach().double().clone(), _bias(module.layer.bias, w.shape[0])))
        elif isinstance(module, nnqd.Linear):
            # quantized::linear_dynamic rounds the input to uint8 with reduce_range (7 bits) on x86;
            # modelling it with 7 bits is sound for 8 as well (the error bound only grows)
            steps.append(ActQuant("dynamic", 7, "asymmetric"))
            steps.append(Affine(module.weight().dequantize().double(), _bias(module.bias(), module.out_features)))
        elif isinstance(module, nn.Linear):
            steps.append(Affine(module.weight.detach().double().clone(), _bias(module.bias, module.out_features)))
        elif isinstance(module, nn.ReLU):
            steps.append(ReLU())
        elif not isinstance(module, (nn.Identity, nn.Flatten, nn.Dropout)):
            raise ValueError(f"layer {type(module).__name__} is not supported; allowed: Linear, ReLU, Identity, "
                             "Flatten, Dropout")
    affines = [s for s in steps if isinstance(s, Affine)]
    for affine in affines:
        affine.float32 = float32
    if not affines:
        raise ValueError("model has no Linear layer")
    return Program(steps, affines[0].weight.shape[1], affines[-1].weight.shape[0])


def _bias(bias: torch.Tensor | None, out: int) -> torch.Tensor:
    return torch.zeros(out, dtype=torch.float64) if bias is None else bias.detach().double().clone()


# ----- interval propagation ----------------------------------------------------------------------
def _down32(x: torch.Tensor) -> torch.Tensor:
    y = x.float()
    return torch.where(y.double() > x, torch.nextafter(y, torch.full_like(y, -np.inf)), y)


def _up32(x: torch.Tensor) -> torch.Tensor:
    y = x.float()
    return torch.where(y.double() < x, torch.nextafter(y, torch.full_like(y, np.inf)), y)


def _ibp_step(step: Step, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(step, Affine):
        mid, rad = (hi + lo) / 2, (hi - lo) / 2
        c = mid @ step.weight.T + step.bias
        r = rad @ step.weight.abs().T + step.slack(lo, hi)
        return c - r, c + r
    if isinstance(step, ReLU):
        return lo.clamp(min=0), hi.clamp(min=0)
    if step.mode == "static":  # monotone: the ends of the interval round to the ends of the image
        return step.apply(_down32(lo)).double(), step.apply(_up32(hi)).double()
    h = step.max_step(lo, hi) / 2 * (1 + 1e-6) + 1e-12
    return lo - h, hi + h


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
    for step, (l_in, u_in) in zip(reversed(steps), reversed(bounds_in)):
        if isinstance(step, Affine):
            slack = step.slack(l_in, u_in).unsqueeze(-1)  # (N, d_out, 1)
            const = const + lam @ step.bias - (lam.abs() @ slack).squeeze(-1)
            lam = lam @ step.weight
        else:
            a_l, c_l, a_u, c_u = _relaxation(step, l_in, u_in)
            pos, neg = lam.clamp(min=0), lam.clamp(max=0)
            const = const + (pos @ c_l.unsqueeze(-1)).squeeze(-1) + (neg @ c_u.unsqueeze(-1)).squeeze(-1)
            lam = pos * a_l.unsqueeze(1) + neg * a_u.unsqueeze(1)
    mid, rad = ((hi + lo) / 2).unsqueeze(-1), ((hi - lo) / 2).unsqueeze(-1)
    low = (lam @ mid).squeeze(-1) - (lam.abs() @ rad).squeeze(-1) + const
    m = low.shape[1] // 2
    return low[:, :m], -low[:, m:]


def bounds(program: Program, lo: torch.Tensor, hi: torch.Tensor, method: str = "ibp",
           spec: torch.Tensor | None = None, chunk: int = 2 ** 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of the outputs (or of ``spec @ outputs``) over each box.

    Args:
        program: from :func:`extract`.
        lo, hi: (N, d) box corners.
        method: ``ibp`` or ``crown``.
        spec: optional (N, m, d_out) linear specification, e.g. from :func:`margin_spec`.
        chunk: CROWN processes boxes in groups so that no back-substitution tensor exceeds this
            many elements.
    """
    check_choice("method", method, METHODS)
    lo, hi = lo.double(), hi.double()
    if lo.shape != hi.shape or lo.dim() != 2 or lo.shape[1] != program.in_features:
        raise ValueError(f"lo and hi must both have shape (N, {program.in_features}); got {tuple(lo.shape)} "
                         f"and {tuple(hi.shape)}")
    if bool((lo > hi).any()):
        raise ValueError("lo must be <= hi in every coordinate")
    if method == "crown":
        widest = max(s.weight.shape[0] * s.weight.shape[1] for s in program.steps if isinstance(s, Affine))
        size = max(1, chunk // widest)
        parts = [_crown(program, lo[i:i + size], hi[i:i + size], None if spec is None else spec[i:i + size])
                 for i in range(0, len(lo), size)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    io = [(lo, hi)]
    for step in program.steps:
        io.append(_ibp_step(step, *io[-1]))
    out_lo, out_hi = io[-1]
    if spec is None:
        return out_lo, out_hi
    return _spec_interval(spec.double(), out_lo, out_hi)


def _spec_interval(spec, lo, hi):
    mid, rad = ((hi + lo) / 2).unsqueeze(-1), ((hi - lo) / 2).unsqueeze(-1)
    c, r = (spec @ mid).squeeze(-1), (spec.abs() @ rad).squeeze(-1)
    return c - r, c + r


def _crown(program: Program, lo: torch.Tensor, hi: torch.Tensor, spec: torch.Tensor | None):
    steps = program.steps
    io = [(lo, hi)]  # io[k]: bounds of the input of step k
    for k, step in enumerate(steps):
        ibp_lo, ibp_hi = _ibp_step(step, *io[-1])
        earlier_affine = any(isinstance(s, Affine) for s in steps[:k])
        if isinstance(step, Affine) and earlier_affine and k < len(steps) - 1:
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
    return torch.maximum(ibp_lo, c_lo), torch.minimum(ibp_hi, c_hi)


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


# ----- falsifier ---------------------------------------------------------------------------------
def falsify(fp: tuple[nn.Module, Program], q: tuple[nn.Module, Program], lo: torch.Tensor, hi: torch.Tensor,
            samples: int = 32, steps: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Search each box for an input where the two networks decide differently.

    Random points, then projected sign-gradient ascent on min(margin_FP(a), -margin_Q(a)) for
    every action a (positive exactly where FP takes a and Q does not), through the STE. Every
    candidate is re-checked with plain forward passes of the *real* modules.

    Returns (found (N,) bool, counterexamples (N, d); rows without one are NaN).
    """
    (fp_model, fp_prog), (q_model, q_prog) = fp, q
    n, d = lo.shape
    k = fp_prog.out_features
    gen = torch.Generator().manual_seed(seed)
    lo, hi = lo.double(), hi.double()
    pts = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(n, samples, d, generator=gen, dtype=torch.float64)
    pts = torch.cat([((lo + hi) / 2).unsqueeze(1), pts], 1)  # (N, S+1, d)
    x = pts.unsqueeze(2).expand(-1, -1, k, -1).reshape(-1, d).clone()  # one start per action
    action = torch.arange(k).repeat(n * (samples + 1))
    l_rep = lo.repeat_interleave((samples + 1) * k, 0)
    h_rep = hi.repeat_interleave((samples + 1) * k, 0)
    step = (h_rep - l_rep) / 8
    best = torch.full((len(x),), -np.inf, dtype=torch.float64)
    best_x = x.clone()

    def objective(z_fp: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
        own = action.unsqueeze(1)
        others = torch.ones_like(z_fp, dtype=torch.bool).scatter(1, own, False)
        m_fp = z_fp.gather(1, own).squeeze(1) - z_fp.masked_fill(~others, -np.inf).max(1).values
        m_q = z_q.gather(1, own).squeeze(1) - z_q.masked_fill(~others, -np.inf).max(1).values
        return torch.minimum(m_fp, -m_q)

    for it in range(steps + 1):
        x.requires_grad_(True)
        score = objective(fp_prog(x), q_prog(x))
        better = score.detach() > best
        best = torch.where(better, score.detach(), best)
        best_x = torch.where(better.unsqueeze(1), x.detach(), best_x)
        if it == steps:
            break
        (grad,) = torch.autograd.grad(score.sum(), x)
        x = torch.minimum(torch.maximum(x.detach() + step * grad.sign(), l_rep), h_rep)
    # confirm the best candidate of every box (and of every action) with the real modules
    cand = best_x.reshape(n, (samples + 1) * k, d)
    order = best.reshape(n, -1).argsort(1, descending=True)[:, :k]
    chosen = cand.gather(1, order.unsqueeze(-1).expand(-1, -1, d)).reshape(-1, d)
    # the real modules run in float32: round into the box so the counterexample stays inside it
    chosen = torch.minimum(torch.maximum(chosen.float().double(), lo.repeat_interleave(k, 0)), hi.repeat_interleave(k, 0))
    # only candidates the emulation rates as (nearly) disagreeing go to the real modules
    promising = (best.reshape(n, -1).gather(1, order) >= -1e-4).flatten()
    differ = torch.zeros(n * k, dtype=torch.bool)
    if promising.any():
        pts_ = chosen[promising]
        differ[promising] = decide(fp_model, pts_) != decide(q_model, pts_)
    differ = differ.reshape(n, k)
    found = differ.any(1)
    first = differ.float().argmax(1)
    cex = chosen.reshape(n, k, d)[torch.arange(n), first]
    cex[~found] = np.nan
    return found, cex


# ----- branch and bound --------------------------------------------------------------------------
@dataclass
class Verdict:
    """Per-box outcome of :func:`verify_consistency`."""

    status: np.ndarray  # "certified" | "refuted" | "unknown"
    counterexample: torch.Tensor  # (N, d), NaN rows where none
    boxes: np.ndarray  # sub-boxes bounded per root box
    seconds: float
    summary: dict = field(default_factory=dict)

    def fractions(self) -> dict[str, float]:
        n = max(len(self.status), 1)
        return {s: float((self.status == s).sum()) / n for s in ("certified", "refuted", "unknown")}


def verify_consistency(fp_model: nn.Module, q_model: nn.Module, lo: torch.Tensor, hi: torch.Tensor,
                       method: str = "crown", budget: int = 64, falsify_samples: int = 32, seed: int = 0) -> Verdict:
    """Does ``q_model`` take ``fp_model``'s decision everywhere in each box [lo_i, hi_i]?

    Branch and bound: bound both networks on every open box; a box where both provably take the
    same action is closed; where they provably differ, or the falsifier finds a disagreement,
    the root box is refuted; otherwise the box is split in two along its widest side (relative
    to the root) until ``budget`` sub-boxes per root have been bounded (then: unknown).
    """
    check_choice("method", method, METHODS)
    check_range("budget", budget, 1, 10 ** 7, integer=True)
    start = time.perf_counter()
    fp_prog, q_prog = extract(fp_model), extract(q_model)
    lo, hi = lo.double(), hi.double()
    n = len(lo)
    width0 = (hi - lo).clamp(min=1e-12)
    status = np.array(["open"] * n, dtype=object)
    cex = torch.full_like(lo, np.nan)
    used = np.zeros(n, dtype=int)
    f_lo, f_hi, root = lo, hi, torch.arange(n)
    while len(root):
        used += np.bincount(root.numpy(), minlength=n)
        a_fp = certified_actions(fp_prog, f_lo, f_hi, method)
        a_q = certified_actions(q_prog, f_lo, f_hi, method)
        closed = (a_fp >= 0) & (a_q == a_fp)
        clash = (a_fp >= 0) & (a_q >= 0) & (a_q != a_fp)
        open_ = ~(closed | clash)
        found = torch.zeros(len(root), dtype=torch.bool)
        points = torch.full_like(f_lo, np.nan)
        if clash.any():
            found[clash], points[clash] = True, ((f_lo + f_hi) / 2)[clash]
        if open_.any():
            f, p = falsify((fp_model, fp_prog), (q_model, q_prog), f_lo[open_], f_hi[open_], falsify_samples,
                           seed=seed)
            found[open_], points[open_] = f, p
        for i in torch.nonzero(found).flatten().tolist():
            r = int(root[i])
            if status[r] == "open":
                status[r], cex[r] = "refuted", points[i]
        keep = open_ & ~found & torch.tensor([status[int(r)] == "open" for r in root], dtype=torch.bool)
        over = torch.tensor([used[int(r)] + 2 > budget for r in root], dtype=torch.bool)
        for r in root[keep & over].tolist():
            status[r] = "unknown"
        keep &= torch.tensor([status[int(r)] == "open" for r in root], dtype=torch.bool)
        f_lo, f_hi, root = f_lo[keep], f_hi[keep], root[keep]
        if not len(root):
            break
        dim = ((f_hi - f_lo) / width0[root]).argmax(1)
        mid = ((f_lo + f_hi) / 2).gather(1, dim.unsqueeze(1)).squeeze(1)
        left_hi, right_lo = f_hi.clone(), f_lo.clone()
        left_hi[torch.arange(len(root)), dim] = mid
        right_lo[torch.arange(len(root)), dim] = mid
        f_lo, f_hi, root = torch.cat([f_lo, right_lo]), torch.cat([left_hi, f_hi]), torch.cat([root, root])
    status[status == "open"] = "certified"
    verdict = Verdict(status.astype(str), cex, used, time.perf_counter() - start)
    verdict.summary = {"method": method, "budget": budget, **verdict.fractions()}
    return verdict


# ----- Moon's interval neural network, as published and corrected ---------------------------------
def moon_inn(layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor, eps: float, *, sound: bool = False,
             relu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Output interval of Moon's Interval Neural Network for point inputs ``x`` (N, d).

    Every weight and bias of ``layers`` ([(W, b), ...], as the network under test uses them) is
    widened to [w - eps, w + eps]. As published (``sound=False, relu=False``) the lower bound is
    x_lo @ W_lo^T + b_lo and the upper x_hi @ W_hi^T + b_hi, wrong whenever signs mix, and no ReLU
    is applied between layers. ``sound=True`` uses the exact interval product in centre/radius
    form (|W| r + eps |x_mid| + eps r + eps); ``relu=True`` applies ReLU between layers.
    """
    lo = hi = x.double()
    for i, (w, b) in enumerate(layers):
        w, b = w.double(), b.double()
        if sound:
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            c = mid @ w.T + b
            r = rad @ w.abs().T + eps * mid.abs().sum(1, keepdim=True) + eps * rad.sum(1, keepdim=True) + eps
            lo, hi = c - r, c + r
        else:
            lo, hi = lo @ (w - eps).T + (b - eps), hi @ (w + eps).T + (b + eps)
        if relu and i < len(layers) - 1:
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
    return lo, hi


def _linear_layers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    prog = extract(model)
    return [(s.weight, s.bias) for s in prog.steps if isinstance(s, Affine)]


def inn_ablation(fp_model: nn.Module, q_model: nn.Module, uniform_inputs: torch.Tensor, states: torch.Tensor,
                 eps: float = 0.05) -> "pd.DataFrame":
    """Moon's INN check as published, then with one defect corrected per row.

    The check (Moon): the full-precision output must lie inside the interval that the INN of the
    quantized network gives for the same point input. Columns: the share of inputs whose
    interval is inverted somewhere (lower > upper), the share passing Moon's check, and the
    share whose *decision* the interval proves (margin interval excludes 0). The last row uses
    weight intervals just wide enough to cover the actual quantization error.
    """
    import pandas as pd

    q_layers = _linear_layers(q_model)
    fp_layers = _linear_layers(fp_model)
    weight_error = max(float((wf - wq).abs().max()) for (wf, _), (wq, _) in zip(fp_layers, q_layers))
    bias_error = max(float((bf - bq).abs().max()) for (_, bf), (_, bq) in zip(fp_layers, q_layers))
    steps = [
        ("as published (eps 0.05, uniform inputs, softmax vs interval)", dict(sound=False, relu=False), "softmax",
         uniform_inputs, eps),
        ("+ sound interval products", dict(sound=True, relu=False), "softmax", uniform_inputs, eps),
        ("+ ReLU applied", dict(sound=True, relu=True), "softmax", uniform_inputs, eps),
        ("+ logits compared with logits", dict(sound=True, relu=True), "logits", uniform_inputs, eps),
        ("+ real CartPole states", dict(sound=True, relu=True), "logits", states, eps),
        (f"+ eps = actual weight error ({max(weight_error, bias_error):.2g})", dict(sound=True, relu=True), "logits",
         states, max(weight_error, bias_error)),
    ]
    rows = []
    for label, flags, units, x, e in steps:
        lo, hi = moon_inn(q_layers, x, e, **flags)
        with torch.no_grad():
            z = fp_model(x.float()).double()
        ref = torch.softmax(z, 1) if units == "softmax" else z
        inside = ((lo <= ref) & (ref <= hi)).all(1)
        margin_lo = lo[:, 1] - hi[:, 0]
        margin_hi = hi[:, 1] - lo[:, 0]
        decided = (margin_lo > 0) | (margin_hi < 0)
        rows.append({"INN variant": label, "inputs": len(x), "inverted intervals (%)": 100 * float((lo > hi).any(1).float().mean()),
                     "Moon's check passes (%)": 100 * float(inside.float().mean()),
                     # an unsound interval proves nothing
                     "decision proved (%)": 100 * float(decided.float().mean()) if flags["sound"] else float("nan")})
    return pd.DataFrame(rows)


def grid_boxes(base: torch.Tensor, dims: tuple[int, int], ranges: tuple[tuple[float, float], tuple[float, float]],
               cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes tiling a 2-D slice of the input space: coordinates ``dims`` vary over ``ranges`` in a
    ``cells`` x ``cells`` grid, every other coordinate is fixed at ``base``. Row-major, first
    dim along rows."""
    check_range("cells", cells, 1, 4096, integer=True)
    edges = [torch.linspace(a, b, cells + 1, dtype=torch.float64) for a, b in ranges]
    i, j = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
    lo = base.double().repeat(cells * cells, 1)
    hi = lo.clone()
    lo[:, dims[0]], hi[:, dims[0]] = edges[0][i.flatten()], edges[0][i.flatten() + 1]
    lo[:, dims[1]], hi[:, dims[1]] = edges[1][j.flatten()], edges[1][j.flatten() + 1]
    return lo, hi


def consistency_sweep(fp_model: nn.Module, models: dict[str, nn.Module], centres: torch.Tensor,
                      radii: list[float], scale: torch.Tensor, method: str = "crown", budget: int = 32,
                      seed: int = 0) -> "pd.DataFrame":
    """Verify every model on boxes ``centre +- r * scale`` for each r in ``radii``.

    Besides the certified / refuted / unknown shares, ``FP stable (%)`` is the share of boxes in
    which the FP decision itself provably never changes: near the FP decision boundary no
    quantized network can agree everywhere unless its boundary coincides exactly.
    """
    import pandas as pd

    fp_prog = extract(fp_model)
    rows = []
    for r in radii:
        lo, hi = centres - r * scale, centres + r * scale
        stable = certified_actions(fp_prog, lo, hi, method) >= 0
        for name, model in models.items():
            v = verify_consistency(fp_model, model, lo, hi, method=method, budget=budget, seed=seed)
            share = v.fractions()
            rows.append({"model": name, "eps": r, "certified (%)": 100 * share["certified"],
                         "refuted (%)": 100 * share["refuted"], "unknown (%)": 100 * share["unknown"],
                         "FP stable (%)": 100 * float(stable.float().mean()),
                         "certified where FP stable (%)": 100 * float((torch.from_numpy(v.status == "certified")
                                                                       & stable).sum() / stable.sum().clamp(min=1)),
                         "ms per box": 1e3 * v.seconds / len(lo), "sub-boxes per box": float(v.boxes.mean())})
    return pd.DataFrame(rows)
