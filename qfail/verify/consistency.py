"""Decision consistency: does a quantized network decide as its original everywhere in a box?

``verify_consistency`` decides, box by box, whether a quantized network takes the same decision
(argmax) as its full-precision original everywhere in the box: certified (both networks' bounds
prove the same action), refuted (a concrete input where they differ, found by the falsifier and
checked with plain forward passes of the real modules), or unknown when the branch-and-bound
budget runs out.

Shape legend: ``N`` boxes, ``d`` input features.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from qfail.checks import check_choice, check_range
from qfail.quant.int8 import decide
from qfail.verify.bounds import BOUND_METHODS, _down32, _up32, certified_actions
from qfail.verify.program import Program, extract

if TYPE_CHECKING:  # pandas is imported where a table is built
    import pandas as pd

__all__ = ["falsify", "float32_inside", "verify_consistency", "Consistency", "grid_boxes", "consistency_sweep"]


def float32_inside(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 box inside [lo, hi]: the smallest float32 >= lo and the largest <= hi, per
    coordinate. The networks read float32 inputs, so these are the inputs of the box they can
    receive; a row with low > high somewhere holds none."""
    return _up32(lo), _down32(hi)  # the bounds' outward roundings, turned inward


def falsify(fp: tuple[nn.Module, Program], q: tuple[nn.Module, Program], lo: torch.Tensor, hi: torch.Tensor,
            samples: int = 32, steps: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Search each box for an input where the two networks decide differently.

    Random points, then projected sign-gradient ascent on min(margin_FP(a), -margin_Q(a)) for
    every action a (positive exactly where FP takes a and Q does not), through the STE. The
    search runs in float32, as the networks do, over the float32 inputs of the box
    (:func:`float32_inside`), so a counterexample is exactly an input the networks receive. A box
    that holds no float32 input (a coordinate fixed at a value float32 cannot hold, such as 0.1)
    gets none: branch and bound leaves it unknown unless its bounds decide it. Every candidate is
    re-checked with plain forward passes of the *real* modules.

    Returns (found (N,) bool, counterexamples (N, d) as float64; rows without one are NaN).
    """
    (fp_model, fp_prog), (q_model, q_prog) = fp, q
    n, d = lo.shape
    k = fp_prog.out_features
    gen = torch.Generator().manual_seed(seed)
    lo, hi = lo.double(), hi.double()
    pts = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * torch.rand(n, samples, d, generator=gen, dtype=torch.float64)
    pts = torch.cat([((lo + hi) / 2).unsqueeze(1), pts], 1)  # (N, S+1, d)
    lo32, hi32 = float32_inside(lo, hi)
    inhabited = (lo32 <= hi32).all(1)
    l_rep = lo32.repeat_interleave((samples + 1) * k, 0)
    h_rep = hi32.repeat_interleave((samples + 1) * k, 0)
    x = pts.unsqueeze(2).expand(-1, -1, k, -1).reshape(-1, d).float()  # one start per action
    x = torch.minimum(torch.maximum(x, l_rep), h_rep)
    action = torch.arange(k).repeat(n * (samples + 1))
    step = (h_rep - l_rep) / 8
    best = torch.full((len(x),), -np.inf)
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
    # only candidates the emulation rates as (nearly) disagreeing go to the real modules
    promising = (best.reshape(n, -1).gather(1, order) >= -1e-4).flatten() & inhabited.repeat_interleave(k)
    differ = torch.zeros(n * k, dtype=torch.bool)
    if promising.any():
        pts_ = chosen[promising]
        differ[promising] = decide(fp_model, pts_) != decide(q_model, pts_)
    differ = differ.reshape(n, k)
    found = differ.any(1)
    first = differ.float().argmax(1)
    cex = chosen.reshape(n, k, d)[torch.arange(n), first].double()
    cex[~found] = np.nan
    return found, cex


@dataclass
class Consistency:
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
                       method: str = "crown", budget: int = 64, falsify_samples: int = 32, seed: int = 0) -> Consistency:
    """Does ``q_model`` take ``fp_model``'s decision everywhere in each box [lo_i, hi_i]?

    Branch and bound: bound both networks on every open box; a box where both provably take the
    same action is closed; where they provably differ, or the falsifier finds a disagreement,
    the root box is refuted; otherwise the box is split in two along its widest side (relative
    to the root) until ``budget`` sub-boxes per root have been bounded (then: unknown).

    A box is a set of real inputs, and at a real x the networks decide what they decide on
    float32(x), the input they receive (``decide`` rounds it). The bounds enclose the networks on
    those inputs (a static input quantizer takes the box's ends rounded outward to float32; an
    affine step's error allowance counts the input's rounding), so a clash proves the decisions
    differ at every x of the box, and the box's centre is reported as its counterexample; the
    falsifier's counterexamples are float32 points of the box.
    """
    check_choice("method", method, BOUND_METHODS)
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
    verdict = Consistency(status.astype(str), cex, used, time.perf_counter() - start)
    verdict.summary = {"method": method, "budget": budget, **verdict.fractions()}
    return verdict




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
                      seed: int = 0) -> pd.DataFrame:
    """Verify every model on boxes ``centre +- r * scale`` for each r in ``radii``.

    Besides the certified / refuted / unknown shares, ``FP stable (%)`` is the share of boxes in
    which the FP decision itself provably never changes: near the FP decision boundary no
    quantized network can agree everywhere unless its boundary coincides exactly. CROWN proves it
    whatever ``method`` verifies the models, so that this column and "certified where FP stable"
    share their boxes between an IBP and a CROWN run (IBP's looser proof would keep only the
    easier boxes, and the share certified among them would rise for that reason alone).
    """
    import pandas as pd

    fp_prog = extract(fp_model)
    rows = []
    for r in radii:
        lo, hi = centres - r * scale, centres + r * scale
        stable = certified_actions(fp_prog, lo, hi, "crown") >= 0
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
