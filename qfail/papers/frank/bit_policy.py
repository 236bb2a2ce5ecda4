"""Input-conditioned bit-width policies under a per-input bit budget (Frank & Ardis's "dynamic PTQ").

A policy maps each input to one activation bit-width per quantizable layer. ``BitPolicy`` is a
small network giving a categorical distribution over ``choices`` for every layer; ``StaticPolicy``
and ``RandomPolicy`` are the baselines. Every policy's *executed* widths go through
``project_to_budget``, which lowers the largest widths first (HAQ's "action wall") until the mean
over layers is at most ``budget``: the budget is a hard constraint for every input, never a
penalty that a policy could outbid.

``BitPolicy`` learns by REINFORCE with a moving-average baseline and an entropy bonus: the
projection is part of the environment, so the gradient uses the log-probability of the sampled
widths and the reward of the executed ones.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from qfail.checks import check_bits, check_range

__all__ = ["BIT_CHOICES", "check_space", "project_to_budget", "PolicyStep", "BitPolicy", "StaticPolicy", "RandomPolicy", "ShuffledPolicy",
           "static_policies", "MAX_STATIC_POLICIES", "reinforce_step"]

BIT_CHOICES = (2, 3, 4, 5, 6, 8)


def check_space(choices: Sequence[int], budget: float) -> torch.Tensor:
    """The widths as a tensor, once ``choices`` and ``budget`` are checked (one-line errors)."""
    if list(choices) != sorted(set(choices)) or not choices:
        raise ValueError(f"choices={list(choices)} must be distinct bit-widths in increasing order")
    for b in choices:
        check_bits("choices", b, (2, 3, 4, 5, 6, 7, 8, 16))
    check_range("budget", budget, choices[0], choices[-1])
    return torch.tensor(choices)


def project_to_budget(index: torch.Tensor, choices: Sequence[int], budget: float) -> torch.Tensor:
    """Choice indices (B, L) lowered until each row's mean width is at most ``budget``.

    Each pass lowers, in every row still over budget, the largest width (the first such layer)
    by one choice; a row at the smallest width everywhere is within any allowed budget.
    """
    widths = check_space(choices, budget).numpy()
    out = index.numpy().copy()  # a few passes over a (B, L) table: numpy's small-array ops cost less here
    cap = budget * out.shape[1] + 1e-9
    while True:
        bits = widths[out]
        rows = np.flatnonzero(bits.sum(1) > cap)
        if not len(rows):
            return torch.from_numpy(out)
        out[rows, bits[rows].argmax(1)] -= 1


@dataclass
class PolicyStep:
    """One decision for a batch: executed widths (B, L), and for learned policies the
    log-probability (B,) and entropy (B,) of the sampled indices."""
    bits: torch.Tensor
    log_prob: torch.Tensor | None = None
    entropy: torch.Tensor | None = None

    @property
    def mean_bits(self) -> float:
        return float(self.bits.float().mean())


class BitPolicy(nn.Module):
    """x -> per-layer categorical over ``choices`` (a small MLP on the flattened input).

    With ``observe`` the MLP sees ``observe(x)`` instead of the pixels, for example the network's
    own early activations (``pairs.early_features``): features that say more about where the
    network is fragile than raw pixels do. ``input_shape`` is then the shape of those features.
    """

    def __init__(self, input_shape: Sequence[int], n_layers: int, choices: Sequence[int] = BIT_CHOICES,
                 budget: float = 4.0, hidden: int = 64,
                 observe: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.register_buffer("widths", check_space(choices, budget))
        self.choices, self.budget, self.n_layers = tuple(choices), float(budget), n_layers
        self.observe = observe
        n_in = int(torch.tensor(input_shape).prod())
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_layers * len(self.choices)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = x if self.observe is None else self.observe(x).detach()
        return self.net(seen).view(len(x), self.n_layers, len(self.choices))

    def act(self, x: torch.Tensor, greedy: bool = False, generator: torch.Generator | None = None) -> PolicyStep:
        """Sample (or take the most likely) widths and project them onto the budget."""
        dist = torch.distributions.Categorical(logits=self(x))
        if greedy:
            index = dist.probs.argmax(-1)
        else:
            flat = dist.probs.detach().reshape(-1, len(self.choices)).cpu()
            index = torch.multinomial(flat, 1, generator=generator).view(len(x), self.n_layers).to(x.device)
        executed = project_to_budget(index.cpu(), self.choices, self.budget)
        return PolicyStep(self.widths.cpu()[executed], dist.log_prob(index).sum(1), dist.entropy().sum(1))


class StaticPolicy:
    """The same widths for every input (projected onto the budget like any other)."""

    def __init__(self, bits: Sequence[int], choices: Sequence[int] = BIT_CHOICES, budget: float = 4.0) -> None:
        for b in bits:
            if b not in choices:
                raise ValueError(f"bits={b} is not allowed; choose one of {list(choices)}")
        index = torch.tensor([[list(choices).index(b) for b in bits]])
        self.bits = torch.tensor(choices)[project_to_budget(index, choices, budget)][0]

    def act(self, x: torch.Tensor, greedy: bool = True, generator: torch.Generator | None = None) -> PolicyStep:
        return PolicyStep(self.bits.expand(len(x), -1).clone())


class RandomPolicy:
    """Uniformly random widths per input and layer, projected onto the budget."""

    def __init__(self, n_layers: int, choices: Sequence[int] = BIT_CHOICES, budget: float = 4.0) -> None:
        self.n_layers, self.choices, self.budget = n_layers, tuple(choices), budget
        check_space(choices, budget)

    def act(self, x: torch.Tensor, greedy: bool = False, generator: torch.Generator | None = None) -> PolicyStep:
        index = torch.randint(len(self.choices), (len(x), self.n_layers), generator=generator)
        return PolicyStep(torch.tensor(self.choices)[project_to_budget(index, self.choices, self.budget)])


class ShuffledPolicy:
    """Another policy's per-input widths dealt to the wrong inputs: the same assignments, permuted
    across the batch (seeded). Against the policy itself it prices the per-input choice."""

    def __init__(self, policy, seed: int = 0) -> None:  # policy: any object with ``act``
        self.policy, self.seed = policy, seed

    def act(self, x: torch.Tensor, greedy: bool = True, generator: torch.Generator | None = None) -> PolicyStep:
        step = self.policy.act(x, greedy=True, generator=generator)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        return PolicyStep(step.bits[order])


MAX_STATIC_POLICIES = 50_000


def static_policies(n_layers: int, choices: Sequence[int] = BIT_CHOICES, budget: float = 4.0) -> list[tuple[int, ...]]:
    """Every per-layer assignment of ``choices`` whose mean is within ``budget`` (exhaustive search).

    Raises ValueError when there are more than ``MAX_STATIC_POLICIES`` assignments to scan
    (a ResNet-18 has 21 layers: 6^21 of them).
    """
    check_space(choices, budget)
    if len(choices) ** n_layers > MAX_STATIC_POLICIES:
        raise ValueError(f"n_layers={n_layers} is too many for an exhaustive search: {len(choices)}^{n_layers} "
                         f"assignments, allowed at most {MAX_STATIC_POLICIES:,}")
    return [bits for bits in itertools.product(choices, repeat=n_layers) if sum(bits) <= budget * n_layers + 1e-9]


def reinforce_step(policy: BitPolicy, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                   reward: Callable[[torch.Tensor], torch.Tensor], baseline: float | None,
                   entropy_coef: float = 0.01, momentum: float = 0.9,
                   generator: torch.Generator | None = None) -> tuple[float, float]:
    """One REINFORCE update on a batch; returns (mean reward, new baseline).

    ``reward(bits)`` scores the executed widths (B, L) per input, (B,), without gradients.
    """
    step = policy.act(x, generator=generator)
    with torch.no_grad():
        r = reward(step.bits).to(step.log_prob.device).float()
    mean = float(r.mean())
    base = mean if baseline is None else baseline
    loss = -((r - base) * step.log_prob).mean() - entropy_coef * step.entropy.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return mean, momentum * base + (1 - momentum) * mean
