"""Robust and detrimental network-policy pairs under dynamic PTQ (Frank & Ardis, stages B and C).

A *pair* is a network whose activations are quantized per input (dynamic min-max ranges) at the
widths a ``BitPolicy`` picks for that input, under a mean-bits budget. Training alternates:

- a network epoch through the STE, on the black box's answers (KD, temperature ``temperature``):
  robust ``KD(FP) + lam * KD(Q)``; detrimental ``KD(FP) - lam * min(KD(Q), cap)``, bounded by
  ``cap`` so that pushing the quantized network away never outweighs keeping the float one;
- a policy epoch of REINFORCE: the reward of an input is the quantized network's probability of
  the teacher's label (robust) or one minus it (detrimental).

Stage C (``retain_epochs``) then trains the network on ``KD(FP)`` alone, so the float
accuracy that the comparison rests on is retained. ``evaluate_pair`` runs any network with any
policy (the cross pairs), ``static_search`` is the exhaustive baseline over static policies,
and ``dynamic_gain`` asks whether the failure needs the per-input choice at all.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from torch import nn

from qfail.cache import cached
from qfail.checks import check_bits, check_choice, check_range
from qfail.data import DataSplits, Split, minibatches
from qfail.distill import kd_divergence, teacher_log_probs
from qfail.papers.frank.bit_policy import (
    BIT_CHOICES,
    BitPolicy,
    PolicyStep,
    RandomPolicy,
    ShuffledPolicy,
    StaticPolicy,
    check_space,
    reinforce_step,
    static_policies,
)
from qfail.quant import QuantConfig, QuantizedModel, quantize_model
from qfail.train import Trained, adam, resolve_device, seed_everything

__all__ = ["KINDS", "POLICY_INPUTS", "PairConfig", "Pair", "dynamic_network", "early_features", "make_policy",
           "train_pair", "train_pair_cached", "run_policy",
           "evaluate_pair", "static_search", "search_baselines", "dynamic_gain"]

KINDS = ("robust", "detrimental")
POLICY_INPUTS = ("pixels", "features")


@dataclass(frozen=True)
class PairConfig:
    """One pair's training run (every field is part of the cache key)."""

    kind: str = "robust"
    budget: float = 4.0  # mean activation bits over the layers, per input
    choices: tuple[int, ...] = BIT_CHOICES
    rounds: int = 20  # alternations of a network epoch and a policy epoch
    net_lr: float = 1e-3
    policy_lr: float = 3e-3
    lam: float = 1.0  # weight of the quantized KD term
    cap: float = 5.0  # the detrimental term is -lam * min(KD(Q), cap)
    entropy: float = 0.01  # REINFORCE entropy bonus
    temperature: float = 1.0
    retain_epochs: int = 4  # stage C: KD(FP) only
    batch_size: int = 64
    weight_bits: int = 32  # weights stay float unless set (the source quantizes activations per input)
    policy_input: str = "pixels"  # what the policy sees: the input, or the network's first-layer "features"
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_range("rounds", self.rounds, 0, 10_000, integer=True)
        check_range("lam", self.lam, 0.0, 100.0)
        check_range("cap", self.cap, 0.0, 100.0)
        check_range("retain_epochs", self.retain_epochs, 0, 1000, integer=True)
        check_bits("weight_bits", self.weight_bits)
        check_choice("policy_input", self.policy_input, POLICY_INPUTS)
        check_space(self.choices, self.budget)


@dataclass
class Pair:
    """A trained network-policy pair: the dynamically quantized network and its bit policy."""

    config: PairConfig
    network: QuantizedModel
    policy: BitPolicy
    history: pd.DataFrame  # per round: KD(FP), KD(Q), mean reward, mean bits
    seconds: float
    policy_evaluations: int  # network evaluations the policy's training used


def dynamic_network(student: nn.Module, weight_bits: int = 32) -> QuantizedModel:
    """A copy of ``student`` whose activations are quantized per input (BatchNorm folded)."""
    return quantize_model(copy.deepcopy(student).eval(), QuantConfig(act_mode="dynamic"), (weight_bits, 8))


def early_features(network: QuantizedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> the float output of the network's first quantizable layer, flattened (no gradient):
    what the network itself makes of an input, for a policy to condition on."""
    first = network.first_layer

    @torch.no_grad()
    def features(x: torch.Tensor) -> torch.Tensor:
        with network.full_precision():
            return first(x).flatten(1)

    return features


def make_policy(network: QuantizedModel, input_shape: Sequence[int], config: PairConfig) -> BitPolicy:
    """The bit policy of a pair, seeing the pixels or the network's early features."""
    n_layers = len(network.layer_names)
    if config.policy_input == "pixels":
        return BitPolicy(input_shape, n_layers, config.choices, config.budget)
    observe = early_features(network)
    probe = observe(torch.zeros(1, *input_shape, device=next(network.parameters()).device))
    return BitPolicy(probe.shape[1:], n_layers, config.choices, config.budget, observe=observe)


def run_policy(network: QuantizedModel, step: PolicyStep, x: torch.Tensor) -> torch.Tensor:
    """Logits of ``network`` on ``x`` with the step's per-input widths."""
    network.set_sample_act_bits(step.bits)
    try:
        return network(x)
    finally:
        network.set_sample_act_bits(None)


def _teacher(batch: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities, top label) of the black box's answers: rewards follow the teacher's
    answer, not the true label."""
    log_p = teacher_log_probs(batch)
    return log_p, log_p.argmax(1)


def _network_epoch(pair_net: QuantizedModel, policy: BitPolicy, transfer: Split, config: PairConfig,
                   opt: torch.optim.Optimizer, gen: torch.Generator, device: torch.device,
                   quantized_term: bool = True) -> tuple[float, float]:
    pair_net.train()
    kd_fp_sum = kd_q_sum = 0.0
    for batch in minibatches(transfer, config.batch_size, shuffle=True, generator=gen):
        batch = batch.to(device)
        x = batch.x
        log_t, _ = _teacher(batch)
        with pair_net.full_precision():
            kd_fp = kd_divergence(pair_net(x), log_t, config.temperature)
        loss = kd_fp
        if quantized_term:
            with torch.no_grad():
                step = policy.act(x, generator=gen)
            kd_q = kd_divergence(run_policy(pair_net, step, x), log_t, config.temperature)
            bounded = kd_q if config.kind == "robust" else -kd_q.clamp(max=config.cap)
            loss = kd_fp + config.lam * bounded
            kd_q_sum += kd_q.item() * len(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        kd_fp_sum += kd_fp.item() * len(x)
    pair_net.eval()
    return kd_fp_sum / len(transfer), kd_q_sum / len(transfer)


def _policy_epoch(pair_net: QuantizedModel, policy: BitPolicy, transfer: Split, config: PairConfig,
                  opt: torch.optim.Optimizer, baseline: float | None, gen: torch.Generator,
                  device: torch.device) -> tuple[float, float | None, float]:
    rewards, bits = [], []
    for batch in minibatches(transfer, config.batch_size, shuffle=True, generator=gen):
        batch = batch.to(device)
        x = batch.x
        _, label = _teacher(batch)

        def reward(widths: torch.Tensor) -> torch.Tensor:
            bits.append(widths.float().mean())
            # this turn's x and label: reinforce_step calls reward before the loop moves on
            p = run_policy(pair_net, PolicyStep(widths), x).softmax(1).gather(1, label[:, None]).squeeze(1)  # noqa: B023
            return p if config.kind == "robust" else 1 - p

        mean, baseline = reinforce_step(policy, opt, x, reward, baseline, config.entropy, generator=gen)
        rewards.append(mean)
    return sum(rewards) / len(rewards), baseline, float(torch.stack(bits).mean())


def train_pair(student: nn.Module, transfer: Split, config: PairConfig,
               device: str | torch.device = "cpu") -> Pair:
    """Stages B and C from a distilled ``student`` on the black box's answers."""
    device = resolve_device(device)
    gen = seed_everything(config.seed)
    start = time.perf_counter()
    net = dynamic_network(student, config.weight_bits).to(device)
    policy = make_policy(net, transfer.x.shape[1:], config).to(device)
    net_opt = adam(net.parameters(), lr=config.net_lr)
    pol_opt = adam(policy.parameters(), lr=config.policy_lr)
    rows, baseline = [], None
    for r in range(config.rounds):
        kd_fp, kd_q = _network_epoch(net, policy, transfer, config, net_opt, gen, device)
        reward, baseline, mean_bits = _policy_epoch(net, policy, transfer, config, pol_opt, baseline, gen, device)
        rows.append({"round": r + 1, "KD(FP)": kd_fp, "KD(Q)": kd_q, "mean reward": reward, "mean bits": mean_bits})
    for _ in range(config.retain_epochs):  # stage C
        _network_epoch(net, policy, transfer, config, net_opt, gen, device, quantized_term=False)
    return Pair(config, net.eval(), policy.eval(), pd.DataFrame(rows), time.perf_counter() - start,
                config.rounds * len(transfer))


def train_pair_cached(student: Trained, transfer: DataSplits, config: PairConfig,
                      device: str | torch.device = "cpu") -> Pair:
    """``train_pair`` on ``transfer.train``, stored under the student's key, the data and the config."""
    def build() -> dict:
        pair = train_pair(student.model, transfer.train, config, device)
        return {"network": {k: v.cpu() for k, v in pair.network.state_dict().items()},
                "policy": {k: v.cpu() for k, v in pair.policy.state_dict().items()},
                "history": pair.history.to_dict("list"), "seconds": pair.seconds,
                "evaluations": pair.policy_evaluations}

    key = {"student": student.key, "data": list(transfer.fingerprint), "pair": asdict(config)}
    stored = cached("pair", key, build, code=__name__)
    device = resolve_device(device)
    net = dynamic_network(student.model, config.weight_bits)
    net.load_state_dict(stored["network"])
    net = net.to(device)
    policy = make_policy(net, transfer.input_shape, config)
    policy.load_state_dict(stored["policy"])
    return Pair(config, net.to(device).eval(), policy.to(device).eval(), pd.DataFrame(stored["history"]),
                stored["seconds"], stored["evaluations"])


@torch.no_grad()
def evaluate_pair(network: QuantizedModel, policy, split: Split, seed: int = 0, batch_size: int = 512,
                  device: str | torch.device = "cpu", correct: dict | None = None) -> dict[str, float]:
    """FP and quantized accuracy (%), their drop, and the mean width the policy executed.

    Learned policies act greedily (their most likely widths, projected); random ones draw
    from ``seed``. A dict passed as ``correct`` receives the per-input correctness (bool arrays)
    of the float network (``FP``) and of the quantized one under the policy (``Q``).
    """
    device = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    fp_right, q_right, bits = [], [], []
    for i in range(0, len(split), batch_size):
        x, y = split.x[i:i + batch_size].to(device), split.y[i:i + batch_size].to(device)
        with network.full_precision():
            fp_right.append((network(x).argmax(1) == y).cpu())
        step = policy.act(x, greedy=True, generator=gen)
        q_right.append((run_policy(network, step, x).argmax(1) == y).cpu())
        bits.append(step.bits.float())
    fp_c, q_c = torch.cat(fp_right), torch.cat(q_right)
    if correct is not None:
        correct.update({"FP": fp_c.numpy(), "Q": q_c.numpy()})
    fp, q, n = int(fp_c.sum()), int(q_c.sum()), len(split)
    return {"FP acc": 100 * fp / n, "Q acc": 100 * q / n, "drop": 100 * (fp - q) / n,
            "mean bits": float(torch.cat(bits).mean())}


def static_search(network: QuantizedModel, split: Split, budget: float = 4.0,
                  choices: Sequence[int] = BIT_CHOICES, device: str | torch.device = "cpu") -> pd.DataFrame:
    """Every static per-layer policy within the budget, worst first: the exhaustive baseline."""
    n_layers = len(network.layer_names)
    rows = [{"bits": bits, **evaluate_pair(network, StaticPolicy(bits, choices, budget), split, device=device)}
            for bits in static_policies(n_layers, choices, budget)]
    return pd.DataFrame(rows).sort_values("drop", ascending=False, ignore_index=True)


def search_baselines(network: QuantizedModel, learned: BitPolicy, select: Split, score: Split, policy_evaluations: int,
                     budget: float = 4.0, choices: Sequence[int] = BIT_CHOICES, random_draws: int = 5, seed: int = 0,
                     device: str | torch.device = "cpu") -> pd.DataFrame:
    """The worst accuracy drop each search finds on ``network``, and the network evaluations it cost.

    Every search picks its worst case on ``select`` (validation) and is scored on ``score``
    (test), so no search is scored on the inputs it chose on. Uniform: the budget's width
    everywhere (rounded down to a choice; nothing to select). Random: the worst of
    ``random_draws`` seeded random per-input policies, and the worst of as many draws as the
    learned policy's training cost. Exhaustive: every static policy within the budget, where
    that is affordable (``bit_policy.MAX_STATIC_POLICIES``). Learned: the trained policy, whose
    cost is its REINFORCE training plus one scoring pass.
    """
    n_layers, n_select, n_score = len(network.layer_names), len(select), len(score)
    uniform = max(c for c in choices if c <= budget)

    def worst_random(draws: int) -> float:
        drops = [evaluate_pair(network, RandomPolicy(n_layers, choices, budget), select, seed + k, device=device)["drop"]
                 for k in range(draws)]
        best = max(range(draws), key=drops.__getitem__)
        return evaluate_pair(network, RandomPolicy(n_layers, choices, budget), score, seed + best, device=device)["drop"]

    equal_cost = max(1, min(policy_evaluations // max(n_select, 1), 500))
    try:
        exhaustive = static_search(network, select, budget, choices, device)
        chosen = exhaustive["bits"].iloc[0]
        worst = {"search": f"exhaustive static ({len(exhaustive)} policies)",
                 "worst drop": evaluate_pair(network, StaticPolicy(chosen, choices, budget), score, device=device)["drop"],
                 "network evaluations": len(exhaustive) * n_select + n_score, "policy": str(chosen)}
    except ValueError as too_many:
        worst = {"search": "exhaustive static (not run)", "worst drop": float("nan"), "network evaluations": 0,
                 "policy": str(too_many)}
    return pd.DataFrame([
        {"search": f"uniform {uniform} bits", "worst drop": evaluate_pair(network, StaticPolicy(
            [uniform] * n_layers, choices, budget), score, device=device)["drop"], "network evaluations": n_score},
        {"search": f"random (worst of {random_draws})", "worst drop": worst_random(random_draws),
         "network evaluations": random_draws * n_select + n_score},
        {"search": f"random at the learned policy's cost (worst of {equal_cost})", "worst drop": worst_random(equal_cost),
         "network evaluations": equal_cost * n_select + n_score},
        worst,
        {"search": "learned (REINFORCE)", "worst drop": evaluate_pair(network, learned, score, device=device)["drop"],
         "network evaluations": policy_evaluations + n_score},
    ])


@torch.no_grad()
def dynamic_gain(network: QuantizedModel, policy: BitPolicy, select: Split, score: Split, budget: float = 4.0,
                 choices: Sequence[int] = BIT_CHOICES, seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """Is the failure *dynamic*? The policy's drop against the same widths on the wrong inputs
    and against the worst static assignment (chosen on ``select``, scored on ``score``).

    ``dynamic gain`` is drop(policy) minus drop(worst static): above 0 only if choosing the
    widths per input breaks the network more than the worst fixed choice does.
    """
    own = evaluate_pair(network, policy, score, device=device)["drop"]
    shuffled = evaluate_pair(network, ShuffledPolicy(policy, seed), score, device=device)["drop"]
    statics = static_search(network, select, budget, choices, device)
    chosen = statics["bits"].iloc[0]
    static = evaluate_pair(network, StaticPolicy(chosen, choices, budget), score, device=device)["drop"]
    bits = policy.act(score.x.to(resolve_device(device)), greedy=True).bits
    assignments, counts = torch.unique(bits, dim=0, return_counts=True)
    return {"drop (π_D)": own, "drop (π_D shuffled)": shuffled, "worst static (on validation)": str(tuple(chosen)),
            "drop (worst static)": static, "dynamic gain": own - static, "distinct assignments": len(assignments),
            "inputs off the commonest assignment (%)": 100 * (1 - float(counts.max()) / len(bits))}
