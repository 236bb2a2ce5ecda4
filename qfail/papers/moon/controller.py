"""A CartPole-v1 controller trained with REINFORCE, and seeded rollouts of any controller network.

The controller is Moon's 4-128-2 MLP (a plain ``nn.Sequential`` so every quantizer in qfail and
torch.ao can wrap it). Training is REINFORCE (Williams, 1992) with a time-step baseline: each
update plays a batch of episodes in lock step, and the advantage of a step is its discounted
return minus the mean return of the batch at the same time step, normalised. That baseline
is what makes plain policy gradient reach the 500-step cap in about a hundred updates.

Rollouts for evaluation act greedily (argmax) and call the network on **one observation at a
time**, as a deployed controller would: with dynamic INT8 the activation scale is computed per
call, so batching unrelated states together would change the decisions being measured.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qfail.cache import cached_entry
from qfail.checks import check_choice, check_range
from qfail.data import Split
from qfail.distill import kd_loss
from qfail.quant.model import QuantConfig, QuantizedModel, qat_config, quantize_model
from qfail.train import TrainConfig, Trained, adam, fit, seed_everything

if TYPE_CHECKING:  # pandas is imported where a table is built
    import pandas as pd

__all__ = ["RLConfig", "Rollouts", "controller_net", "reinforce", "train_controller", "rollout", "qat_controller", "FINE_TUNE_METHODS", "input_grid_ceiling", "input_grid_table",
           "qat_seeds_table", "controller_table", "ENV_ID", "MAX_STEPS", "OBS_NAMES"]

ENV_ID = "CartPole-v1"
MAX_STEPS = 500  # CartPole-v1's episode cap: the largest reward an episode can earn
OBS_NAMES = ("cart position", "cart velocity", "pole angle", "pole angular velocity")


@dataclass(frozen=True)
class RLConfig:
    """REINFORCE hyper-parameters (all part of the cache key).

    Args:
        hidden: width of the hidden layer (Moon: 128).
        iterations: maximum number of policy updates.
        episodes: episodes played per update.
        lr: Adam learning rate.
        gamma: discount factor.
        max_steps: episode cap (CartPole-v1: 500).
        solved_after: stop once this many consecutive updates averaged ``max_steps`` and a
            greedy check on 20 held-out episodes reaches the cap in every one.
        seed: seeds the initial weights, the action draws and the environments.
    """

    hidden: int = 128
    iterations: int = 150
    episodes: int = 8
    lr: float = 5e-3
    gamma: float = 0.99
    max_steps: int = MAX_STEPS
    solved_after: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("hidden", self.hidden, 1, 4096, integer=True)
        check_range("iterations", self.iterations, 0, 100_000, integer=True)
        check_range("episodes", self.episodes, 1, 1024, integer=True)
        check_range("lr", self.lr, 0.0, 1.0)
        check_range("gamma", self.gamma, 0.0, 1.0)
        check_range("max_steps", self.max_steps, 1, 100_000, integer=True)
        check_range("solved_after", self.solved_after, 1, 1000, integer=True)
        check_range("seed", self.seed, 0, integer=True)


def controller_net(hidden: int = 128, seed: int = 0, obs_dim: int = 4, actions: int = 2) -> nn.Sequential:
    """Moon's controller: Linear(4, hidden) -> ReLU -> Linear(hidden, 2), returning logits."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, actions))


def _make_env(max_steps: int):
    import gymnasium as gym

    return gym.make(ENV_ID, max_episode_steps=max_steps)


def _lock_step(episodes: int, max_steps: int, seed: int,
               act: Callable[[torch.Tensor], tuple[torch.Tensor, Sequence]]):
    """Play ``episodes`` episodes (env seeds ``seed, seed+1, ...``) in lock step: one call of
    ``act`` on the states of all episodes still running, which returns their actions and one
    record per row. Returns per-episode lists of (states, records, rewards)."""
    envs = [_make_env(max_steps) for _ in range(episodes)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    states: list[list[torch.Tensor]] = [[] for _ in range(episodes)]
    records: list[list] = [[] for _ in range(episodes)]
    rewards: list[list[float]] = [[] for _ in range(episodes)]
    active = list(range(episodes))
    while active:
        x = torch.as_tensor(np.stack([obs[i] for i in active]), dtype=torch.float32)
        acts, rows = act(x)
        still = []
        for row, i in enumerate(active):
            states[i].append(x[row:row + 1])
            records[i].append(rows[row])
            obs[i], r, terminated, truncated, _ = envs[i].step(int(acts[row]))
            rewards[i].append(float(r))
            if not (terminated or truncated):
                still.append(i)
        active = still
    for env in envs:
        env.close()
    return states, records, rewards


def _play_batch(net: nn.Module, episodes: int, max_steps: int, seed: int, gen: torch.Generator):
    """Play ``episodes`` sampled episodes in lock step, without a graph; return per-episode
    (states, actions, rewards). The log-probabilities are recomputed afterwards in one batch."""

    def sample(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        probs = F.log_softmax(net(x), dim=1).exp()
        acts = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        return acts, acts.tolist()

    with torch.no_grad():
        return _lock_step(episodes, max_steps, seed, sample)


def _advantages(rewards: list[list[float]], gamma: float) -> list[torch.Tensor]:
    returns = []
    for rs in rewards:
        g, out = 0.0, []
        for r in reversed(rs):
            g = r + gamma * g
            out.append(g)
        returns.append(torch.tensor(out[::-1]))
    horizon = max(len(g) for g in returns)
    padded = torch.full((len(returns), horizon), float("nan"))
    for i, g in enumerate(returns):
        padded[i, :len(g)] = g
    baseline = torch.nanmean(padded, dim=0)  # mean return at each time step
    adv = [g - baseline[:len(g)] for g in returns]
    flat = torch.cat(adv)
    scale = flat.std() + 1e-8 if len(flat) > 1 else 1.0
    return [(a - flat.mean()) / scale for a in adv]


def reinforce(net: nn.Module, config: RLConfig, progress: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``net`` in place with REINFORCE; return the mean return of every update.

    Works for any module mapping observations to logits, a quantized one included (then the
    gradient flows through the straight-through estimator: RL-loss QAT). The episodes are played
    without a graph; the update's log-probabilities come from one forward pass over all its
    states, the same numbers as step by step for a network whose rows do not interact (range
    tracking of a static quantizer, if on, then sees the update's states at once).
    """
    gen = seed_everything(config.seed)
    opt = adam([p for p in net.parameters() if p.requires_grad], lr=config.lr)
    history: list[float] = []
    net.train()
    for it in range(config.iterations):
        states, actions, rewards = _play_batch(net, config.episodes, config.max_steps,
                                               seed=config.seed * 100_003 + it * config.episodes, gen=gen)
        x = torch.cat([s for per in states for s in per])
        taken = torch.tensor([a for per in actions for a in per])
        logp = F.log_softmax(net(x), dim=1).gather(1, taken.unsqueeze(1)).squeeze(1)
        loss = -(logp * torch.cat(_advantages(rewards, config.gamma))).sum() / len(taken)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(np.mean([sum(r) for r in rewards])))
        if progress:
            progress(it, history[-1])
        if (len(history) >= config.solved_after and min(history[-config.solved_after:]) >= config.max_steps
                and rollout(net, 20, seed=10**6 + it, max_steps=config.max_steps).rewards.min() >= config.max_steps):
            break
    net.eval()
    return history


def train_controller(config: RLConfig = RLConfig(), progress: Callable[[int, float], None] | None = None) -> Trained:
    """Train (or load from the cache) a CartPole controller; ``history`` holds mean returns."""

    def build() -> dict:
        net = controller_net(config.hidden, config.seed)
        history = reinforce(net, config, progress)
        return {"state": net.state_dict(), "history": history}

    result, entry = cached_entry("cartpole-controller", asdict(config), build, code=__name__)
    net = controller_net(config.hidden, config.seed)
    net.load_state_dict(result["state"])
    return Trained(net.eval(), {"controller": asdict(config), "entry": entry}, result["history"],
                   result.get("seconds", 0.0))


@dataclass
class Rollouts:
    """Greedy episodes of one controller: returns per episode, and every state it acted on."""

    rewards: np.ndarray
    states: torch.Tensor
    actions: torch.Tensor

    @property
    def mean(self) -> float:
        return float(self.rewards.mean())

    @property
    def std(self) -> float:
        return float(self.rewards.std())

    def interval(self, seed: int = 0) -> tuple[float, float]:
        """95 % percentile-bootstrap interval of the mean return over the episodes."""
        from qfail.verdict import bootstrap

        e = bootstrap(lambda i: self.rewards[i].mean(), len(self.rewards), "episodes", seed=seed)
        return e.low, e.high


@torch.inference_mode()
def rollout(net: nn.Module, episodes: int = 20, seed: int = 0, max_steps: int = MAX_STEPS) -> Rollouts:
    """Play ``episodes`` greedy episodes (env seeds ``seed, seed+1, ...``) in lock step.

    ``decide`` runs one forward pass for all running episodes, or one state per call where the
    model's output depends on the rest of its batch (torch's dynamic INT8), as deployed. States
    and actions come back episode after episode.
    """
    from qfail.quant.int8 import decide

    check_range("episodes", episodes, 1, 100_000, integer=True)
    check_range("max_steps", max_steps, 1, 100_000, integer=True)

    def greedy(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        acts = decide(net, x)
        return acts, acts.tolist()

    states, actions, rewards = _lock_step(episodes, max_steps, seed, greedy)
    return Rollouts(np.array([sum(r) for r in rewards]), torch.cat([s for per in states for s in per]),
                    torch.tensor([a for per in actions for a in per]))


FINE_TUNE_METHODS = ("reinforce", "distill")


def qat_controller(source: Trained, bits: int, states: torch.Tensor, method: str = "reinforce",
                   updates: int = 40, lr: float = 1e-3, seed: int = 0, quant: QuantConfig | None = None) -> Trained:
    """Quantization-aware fine-tuning of a controller at ``bits`` (weights and activations), cached.

    Both methods start from static PTQ calibrated on ``states`` (ranges then stay fixed) and
    train through the straight-through estimator:

    * ``reinforce``: ``updates`` REINFORCE updates of the quantized controller on the reward itself;
    * ``distill``: ``updates`` epochs of distillation to the FP controller (KD at temperature 4 plus
      cross-entropy on its greedy action), on ``states`` and, DAgger-style (Ross et al., 2011),
      on the states the quantized controller itself reaches in 10 episodes after every third epoch.
    """
    check_choice("method", method, FINE_TUNE_METHODS)
    check_range("updates", updates, 1, 100_000, integer=True)
    quant = quant or qat_config(ema_momentum=0.0)
    net = source.model

    def make() -> QuantizedModel:
        return quantize_model(net, quant, (bits, bits), calibration=[states])

    def build() -> dict:
        qm = make()
        if method == "reinforce":
            history = reinforce(qm, RLConfig(iterations=updates, lr=lr, seed=seed))
            return {"state": qm.state_dict(), "history": history}
        seen, history, loss = states, [], kd_loss(net, temperature=4.0, label_weight=0.5)
        for start in range(0, updates, 3):
            with torch.no_grad():
                labels = net(seen).argmax(1)
            epochs = min(3, updates - start)
            history += fit(qm, Split(seen, labels), TrainConfig(epochs=epochs, lr=lr, seed=seed + start), loss_fn=loss)
            seen = torch.cat([seen, rollout(qm, 10, seed=seed * 7919 + 10_000 + start).states])
        return {"state": qm.state_dict(), "history": history}

    digest = hashlib.sha256(states.numpy().tobytes()).hexdigest()[:16]
    key = {"net": source.key, "bits": bits, "states": digest, "method": method, "updates": updates, "lr": lr,
           "seed": seed, "quant": asdict(quant)}
    result, entry = cached_entry("cartpole-qat", key, build, code=__name__)
    key |= {"entry": entry}
    qm = make()
    qm.load_state_dict(result["state"])
    return Trained(qm.eval(), key, result["history"])


def _agreement(model: nn.Module, reference: Rollouts) -> float:
    """Share (%) of the reference controller's visited states on which ``model`` takes its action."""
    from qfail.quant.int8 import decide

    return 100 * float((decide(model, reference.states) == reference.actions).float().mean())


def input_grid_ceiling(model: QuantizedModel, reference: Rollouts) -> tuple[int, float]:
    """The cells of ``model``'s first input grid that ``reference``'s visited states fall in,
    and the best agreement (%) any controller reading that grid can reach: each cell's most
    frequent reference action. QAT here keeps the PTQ ranges, hence the grid, so no QAT run
    can rise above it; where PTQ already meets it, QAT has nothing left to recover."""
    with torch.no_grad():
        cells, cell = torch.unique(model.first_layer.quantize_input(reference.states), dim=0, return_inverse=True)
    counts = torch.zeros(len(cells), int(reference.actions.max()) + 1).index_put_(
        (cell, reference.actions), torch.ones(len(cell)), accumulate=True)
    return len(cells), 100 * float(counts.max(1).values.sum()) / len(cell)


def input_grid_table(ptq: dict[int, QuantizedModel], reference: Rollouts, controllers: pd.DataFrame) -> pd.DataFrame:
    """Per bit-width of ``ptq``: the first layer's input step, against the spread of the pole
    angle, the grid's :func:`input_grid_ceiling`, and the agreement of the PTQ and QAT rows of
    ``controllers`` (a :func:`controller_table` with rows ``"PTQ {b}-bit"`` and ``"QAT {b}-bit"``)."""
    import pandas as pd

    angle_std = float(reference.states[:, OBS_NAMES.index("pole angle")].std())
    rows = []
    for bits, model in ptq.items():
        step = float(model.first_layer.input_grid()[0])
        cells, ceiling = input_grid_ceiling(model, reference)
        rows.append({"bits": bits, "input step": step, "step / std of pole angle": step / angle_std,
                     "grid cells visited": cells, "agreement ceiling (%)": ceiling,
                     **{f"{kind} agreement (%)": controllers.loc[f"{kind} {bits}-bit", "agreement with FP (%)"]
                        for kind in ("PTQ", "QAT")}})
    return pd.DataFrame(rows).set_index("bits")


def qat_seeds_table(source: Trained, bits: int, reference: Rollouts, seeds: Sequence[int], episodes: int = 20,
                    eval_seed: int = 0, method: str = "reinforce", updates: int = 40) -> pd.DataFrame:
    """:func:`qat_controller` at ``bits`` once per training seed, each run scored on the same
    ``episodes`` greedy episodes (seeded by ``eval_seed``) and on ``reference``'s visited states.

    A few dozen policy-gradient updates of a nearly deterministic policy move its decision
    boundary by chance, so one QAT run's reward says little about QAT: these runs are the sample
    a verdict on QAT is judged on. The run with the chapter's own seed comes from the cache.
    """
    import pandas as pd

    check_range("episodes", episodes, 1, integer=True)
    if not seeds:
        raise ValueError("seeds is empty; give at least one QAT training seed")
    rows = []
    for seed in seeds:
        model = qat_controller(source, bits, reference.states, method=method, updates=updates, seed=seed).model
        played = rollout(model, episodes, seed=eval_seed)
        rows.append({"QAT seed": seed, "reward mean": played.mean, "reward std": played.std,
                     "agreement with FP (%)": _agreement(model, reference), "reward cap": MAX_STEPS})
    return pd.DataFrame(rows).set_index("QAT seed")


def controller_table(models: dict[str, nn.Module], reference: Rollouts, episodes: int = 20, seed: int = 0,
                 timing: dict[str, bool] | None = None) -> pd.DataFrame:
    """One row per controller: size, latency, reward over seeded greedy episodes (mean, std and a
    bootstrap interval of the mean), and agreement.

    Agreement is the share of the reference (FP) controller's visited states on which the controller
    takes the reference's action. Sizes: serialized bytes for real modules, the ideal packed
    size for fake-quantized ones (which torch cannot run in integers); latency only for modules
    that really run in their precision (``timing[name]``, default: not fake-quantized).
    """
    import pandas as pd

    from qfail.quant.int8 import latency_ms, packed_size, serialized_size

    batch_1, batch_1024 = reference.states[:1], reference.states[:1024]
    rows = []
    for name, model in models.items():
        fake = isinstance(model, QuantizedModel)
        timed = (timing or {}).get(name, not fake)
        played = rollout(model, episodes, seed=seed)
        rows.append({
            "controller": name,
            "size (KB)": (packed_size(model) if fake else serialized_size(model)) / 1024,
            "size kind": "packed (ideal)" if fake else "serialized",
            "latency batch 1 (ms)": latency_ms(model, batch_1) if timed else float("nan"),
            "latency batch 1024 (ms)": latency_ms(model, batch_1024, repeats=20) if timed else float("nan"),
            "reward mean": played.mean,
            "reward std": played.std,
            **dict(zip(("reward low", "reward high"), played.interval(seed))),
            "agreement with FP (%)": _agreement(model, reference),
        })
    return pd.DataFrame(rows).set_index("controller")

