"""Adversarial examples in pixel units: FGSM, PGD (L-infinity and L2) and transfer attacks.

Inputs live in [0, 1] (``qfail.data`` never normalises), so ``eps`` is a budget in pixel units
and every example is clipped back into the valid range. Attacks take the gradient of the
cross-entropy with respect to the *input only* (``torch.autograd.grad``), with the model in eval
mode and its parameters frozen for the attack's duration, so BatchNorm statistics and parameter
gradients are left untouched (and a fake-quantized layer reuses its quantized weight instead of
quantizing it again for every step).

On a fake-quantized model the input gradient passes through the rounding by the
straight-through estimator: a white-box attack on a quantized model is an attack on its STE
surrogate. A weak white-box result can therefore be gradient masking by the rounding rather
than robustness; ``transfer`` crafts the examples on another model (usually the FP one) and
only *evaluates* the target, which tells the two apart (Athalye et al., 2018).

``autoattack`` runs AutoAttack's parameter-free attacks (Croce & Hein, 2020) from torchattacks:
APGD-CE, then APGD-T and the gradient-free Square attack on the inputs that survived. Square
needs no gradient at all, so it is blind to whatever the STE does to the gradient.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from qfail.checks import check_choice, check_range

__all__ = ["NORMS", "ATTACKS", "fgsm", "pgd", "attack", "transfer", "adversarial_examples", "accuracy_on",
           "robust_accuracy", "autoattack", "correct_on"]

NORMS = ("linf", "l2")
ATTACKS = ("fgsm", "pgd")


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, with_fooled: bool = False):
    """The input gradient of the cross-entropy (and, ``with_fooled``, whether ``x`` is misclassified)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    grad = torch.autograd.grad(F.cross_entropy(logits, y), x)[0]
    return (grad, logits.detach().argmax(1) != y) if with_fooled else grad


def _l2_normalise(g: torch.Tensor) -> torch.Tensor:
    norm = g.flatten(1).norm(dim=1).clamp(min=1e-12)
    return g / norm.view(-1, *([1] * (g.dim() - 1)))


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    norm_ = delta.flatten(1).norm(dim=1).clamp(min=1e-12)
    factor = (eps / norm_).clamp(max=1.0)
    return delta * factor.view(-1, *([1] * (delta.dim() - 1)))


def _check(eps: float, norm: str) -> None:
    check_choice("norm", norm, NORMS)
    check_range("eps", eps, 0.0, 1e3)


@contextlib.contextmanager
def _fixed(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode with no parameter requiring a gradient, both restored on exit."""
    was = model.training
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in trainable:
            p.requires_grad_(True)
        model.train(was)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """One gradient step of size ``eps`` (Goodfellow et al., 2015); L2: the fast gradient method."""
    _check(eps, norm)
    with _fixed(model):
        g = _input_grad(model, x, y)
    step = g.sign() if norm == "linf" else _l2_normalise(g)
    return (x + eps * step).clamp(0.0, 1.0).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf", steps: int = 10,
        step_size: float | None = None, random_start: bool = True, seed: int = 0,
        stop_on_success: bool = False) -> torch.Tensor:
    """Projected gradient descent (Madry et al., 2018) inside the ``norm`` ball of radius ``eps``.

    Args:
        step_size: per-step move; default 2.5 * eps / steps (Madry et al.'s rule).
        random_start: start from a uniform point of the L-inf ball, or a random direction and
            radius in the L2 ball; the draw comes from ``seed`` (never the global RNG).
        stop_on_success: keep an input's first iterate that ``model`` misclassifies and stop
            moving it. For evaluation: the attack is at least as strong as the last iterate
            (an input counts as broken if any iterate broke it) and costs only what the inputs
            still standing need. Each input's path is unchanged as long as the model treats
            inputs independently (eval mode, static activation ranges); a model whose ranges
            come from the batch (dynamic quantization) sees a smaller batch as inputs fall.
    """
    _check(eps, norm)
    check_range("steps", steps, 1, 10_000, integer=True)
    alpha = 2.5 * eps / steps if step_size is None else check_range("step_size", step_size, 0.0, 1e3)
    x = x.detach()
    delta = torch.zeros_like(x)
    if random_start and eps > 0:
        gen = torch.Generator().manual_seed(seed)
        if norm == "linf":
            delta = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x) * eps
        else:
            direction = _l2_normalise(torch.randn(x.shape, generator=gen)).to(x)
            radius = torch.rand(len(x), generator=gen).to(x).view(-1, *([1] * (x.dim() - 1)))
            delta = direction * radius * eps
    adv = (x + delta).clamp(0.0, 1.0)
    active = torch.arange(len(x), device=x.device)  # the inputs still moving
    with _fixed(model):
        for _ in range(steps):
            if not len(active):
                break
            every = len(active) == len(x)  # then no gather and no scatter: on a small model they cost a fifth
            xa, ya, adva = (x, y, adv) if every else (x[active], y[active], adv[active])
            if stop_on_success:
                g, fooled = _input_grad(model, adva, ya, with_fooled=True)
            else:
                g, fooled = _input_grad(model, adva, ya), None
            step = g.sign() if norm == "linf" else _l2_normalise(g)
            moved = (xa + _project(adva + alpha * step - xa, eps, norm)).clamp(0.0, 1.0)
            if fooled is None:
                adv = moved
                continue
            adv[active[~fooled]] = moved[~fooled]
            active = active[~fooled]
    return adv.detach()


def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str, eps: float, norm: str = "linf",
           seed: int = 0, **pgd_options) -> torch.Tensor:
    """``fgsm`` or ``pgd`` by name (the form chapters and sweeps use)."""
    check_choice("attack", name, ATTACKS)
    if name == "fgsm":
        return fgsm(model, x, y, eps, norm)
    return pgd(model, x, y, eps, norm, seed=seed, **pgd_options)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with _fixed(model):
        pred = model(x).argmax(1)
    return pred


def transfer(source: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str = "pgd",
             eps: float = 0.1, norm: str = "linf", seed: int = 0, **pgd_options) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples crafted on ``source`` and the ``target``'s predictions on them.

    The target is only run forward under ``torch.no_grad``: no gradient of it is ever taken.
    """
    adv = attack(source, x, y, name, eps, norm, seed, **pgd_options)
    return adv, _predict(target, adv)


def adversarial_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str, eps: float,
                         norm: str = "linf", batch_size: int = 256, seed: int = 0,
                         device: str | torch.device = "cpu", **pgd_options) -> torch.Tensor:
    """``attack`` over ``x`` in batches (batch ``i`` seeded ``seed + i``), on ``device``; kept on the CPU."""
    return torch.cat([attack(model, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device), name, eps, norm,
                             seed + i, **pgd_options).cpu()
                      for i in range(0, len(y), batch_size)]) if len(y) else x.clone()


@torch.no_grad()
def correct_on(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512,
               device: str | torch.device = "cpu") -> torch.Tensor:
    """Per input, whether ``model`` classifies it correctly (a bool tensor on the CPU)."""
    return torch.cat([_predict(model, x[i:i + batch_size].to(device)).cpu() == y[i:i + batch_size]
                      for i in range(0, len(y), batch_size)]) if len(y) else torch.zeros(0, dtype=torch.bool)


def accuracy_on(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512,
                device: str | torch.device = "cpu") -> float:
    """Accuracy (%) of ``model`` on fixed inputs (adversarial ones made elsewhere, say)."""
    return 100.0 * int(correct_on(model, x, y, batch_size, device).sum()) / max(len(y), 1)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str, eps: float,
                    norm: str = "linf", source: nn.Module | None = None, batch_size: int = 256, seed: int = 0,
                    device: str | torch.device = "cpu", **pgd_options) -> float:
    """Accuracy (%) of ``model`` on adversarial examples, crafted on ``source`` if one is given."""
    crafter: Callable = model if source is None else source
    adv = adversarial_examples(crafter, x, y, name, eps, norm, batch_size, seed, device, **pgd_options)
    return accuracy_on(model, adv, y, device=device)


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf", steps: int = 20,
               targets: int = 1, queries: int = 50, seed: int = 0, device: str | torch.device = "cpu") -> torch.Tensor:
    """The worst example of APGD-CE, APGD-T (``targets`` target classes) and Square (``queries``
    queries), each run on the inputs the previous ones did not break, as AutoAttack does.

    The budgets are far smaller than AutoAttack's "standard" version (100 steps, 9 targets, 5,000
    queries): the chapters run on a CPU, and measured on a robust 4-bit PACT ResNet, APGD-CE with
    20 steps does most of the work (Square with 200 queries added little at four times its cost).
    APGD-T's first target is the most likely wrong class. torchattacks is installed by ``make``.
    """
    _check(eps, norm)
    check_range("steps", steps, 1, 10_000, integer=True)
    check_range("targets", targets, 1, 1_000, integer=True)
    check_range("queries", queries, 1, 1_000_000, integer=True)
    try:
        import torchattacks
    except ImportError as err:  # pragma: no cover - the book's install has it
        raise ImportError("autoattack needs torchattacks: pip install --no-deps torchattacks==3.5.1") from err
    norm_name = {"linf": "Linf", "l2": "L2"}[norm]
    apgdt = torchattacks.APGDT(model, norm=norm_name, eps=eps, steps=steps, seed=seed)
    apgdt.n_target_classes = targets
    chain = [torchattacks.APGD(model, norm=norm_name, eps=eps, steps=steps, loss="ce", seed=seed), apgdt,
             torchattacks.Square(model, norm=norm_name, eps=eps, n_queries=queries, seed=seed)]
    x, y = x.detach().to(device), y.to(device)
    adv = x.clone()
    with _fixed(model):
        alive = _predict(model, adv) == y
        for atk in chain:
            if not alive.any():
                break
            idx = alive.nonzero().flatten()
            found = atk(x[idx], y[idx]).detach()
            broken = _predict(model, found) != y[idx]
            adv[idx[broken]] = found[broken]
            alive[idx[broken]] = False
    return adv.cpu()
