"""Training and evaluation: seeded, deterministic on the CPU, cached on disk.

``fit`` trains any module (a plain model, or a :class:`~qfail.quant.QuantizedModel` for QAT)
with Adam and one of the loss recipes in ``TRAINING_METHODS``. ``train_cached`` wraps model creation and
``fit`` in :func:`qfail.cache.cached`, keyed by the model, the data and the training config.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from qfail.attack import accuracy_on, pgd
from qfail.cache import cached_entry
from qfail.checks import check_bits, check_choice, check_range
from qfail.data import DataSplits, Split, minibatches
from qfail.quant import qat_config, quantize_model

__all__ = ["TrainConfig", "TRAINING_METHODS", "adam", "seed_everything", "resolve_device", "fit", "predict_logits",
           "accuracy", "train_cached"]

TRAINING_METHODS = ("standard", "mixup", "adversarial", "qat")
LR_SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("adam", "sgd")
AUGMENTS = ("none", "crop_flip")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all of them are part of the cache key).

    Args:
        epochs: passes over the training split.
        batch_size: examples per step.
        lr: learning rate.
        lr_schedule: ``constant``; ``cosine`` (annealed to zero over the run, step by step):
            small BatchNorm nets on a thousand images end on a lucky or an unlucky epoch
            under a constant rate, and cosine removes that lottery; or ``step`` (divided by 10
            after half and after three quarters of the run: the CIFAR ResNet recipe).
        optimizer: ``adam``, or ``sgd`` with Nesterov-free ``momentum`` (the CIFAR ResNet recipe).
        augment: ``none``, or ``crop_flip``: each training image shifted by up to 4 pixels
            (zero padding, random crop) and mirrored left-right with probability 1/2, seeded.
        weight_decay: L2 penalty.
        method: ``standard`` (cross-entropy), ``mixup`` (Zhang et al. 2018), ``adversarial``
            (PGD-L-inf examples replace a share of each batch, as ART's ``AdversarialTrainer``)
            or ``qat`` (standard epochs, then quantization-aware epochs through the STE;
            ``train_cached`` only).
        mixup_alpha: Beta(alpha, alpha) mixing for ``mixup``.
        adv_eps, adv_steps, adv_step_size, adv_ratio: PGD budget (pixel units), its steps and
            step size, and the share of each batch replaced by adversarial examples.
        qat_bits, qat_fraction: bit-width (weights and activations) of QAT and the share of
            ``epochs`` run quantization-aware, so every method has the same epoch budget.
        seed: seeds initialisation-independent randomness (shuffling, mixup draws).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    lr_schedule: str = "constant"
    optimizer: str = "adam"
    momentum: float = 0.9
    augment: str = "none"
    weight_decay: float = 0.0
    method: str = "standard"
    mixup_alpha: float = 0.2
    adv_eps: float = 0.3
    adv_steps: int = 10
    adv_step_size: float = 0.1
    adv_ratio: float = 0.5
    qat_bits: int = 8
    qat_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 0, 10_000, integer=True)
        check_range("batch_size", self.batch_size, 1, 1 << 20, integer=True)
        check_range("lr", self.lr, 0.0, 10.0)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_choice("augment", self.augment, AUGMENTS)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_choice("method", self.method, TRAINING_METHODS)
        check_range("mixup_alpha", self.mixup_alpha, 1e-3, 10.0)
        check_range("adv_eps", self.adv_eps, 0.0, 1.0)
        check_range("adv_steps", self.adv_steps, 1, 1000, integer=True)
        check_range("adv_step_size", self.adv_step_size, 0.0, 1.0)
        check_range("adv_ratio", self.adv_ratio, 0.0, 1.0)
        check_bits("qat_bits", self.qat_bits, tuple(range(2, 17)))
        check_range("qat_fraction", self.qat_fraction, 0.0, 1.0)
        check_range("seed", self.seed, 0, integer=True)


@dataclass(frozen=True)
class Trained:
    """A trained model and the record that identifies it.

    Args:
        model: the trained module, in eval mode, on the requested device.
        key: the configuration it is cached under (how it is built, the data, the training) and
            the name of its cache entry, which also hashes the code that trained it; derived
            results put it into their own cache keys, so they are rebuilt when either changes.
        history: the training curve (mean loss per epoch, or whatever the trainer records).
        seconds: wall time of the run that built the cache entry (not of a cache hit).
    """

    model: nn.Module
    key: dict
    history: list = field(default_factory=list)
    seconds: float = 0.0


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for data order."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``cpu``, ``cuda`` (error if absent) or ``auto`` (cuda when available)."""
    name = str(device)
    check_choice("device", name.split(":")[0], ("cpu", "cuda", "auto"))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} is not available on this machine; allowed: 'cpu', 'auto'")
    return torch.device(name)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
          gen: torch.Generator) -> torch.Tensor:
    if config.method == "mixup":
        lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen))).beta(
            config.mixup_alpha, config.mixup_alpha))
        perm = torch.randperm(len(y), generator=gen).to(x.device)
        logits = model(lam * x + (1 - lam) * x[perm])
        return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
    if config.method == "adversarial":
        n_adv = round(config.adv_ratio * len(y))
        if n_adv:
            seed = int(torch.randint(0, 2**31, (1,), generator=gen))
            adv = pgd(model, x[:n_adv], y[:n_adv], config.adv_eps, "linf", config.adv_steps,
                      config.adv_step_size, seed=seed)
            x = torch.cat([adv, x[n_adv:]])
    return F.cross_entropy(model(x), y)


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) shifted by up to ``pad`` pixels (zero padding, random
    crop) and mirrored left-right with probability 1/2; the draws come from ``gen``."""
    if x.dim() != 4:
        raise ValueError(f"augment='crop_flip' needs images (N, C, H, W); got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = (torch.randint(0, 2 * pad + 1, (2, n), generator=gen)).to(x.device)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    return torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)


LossFn = Callable[[nn.Module, Split], torch.Tensor]  # (model, mini-batch) -> loss


def adam(params: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam, fused: its update then takes the exact square root of its vectorised operators. The
    default (foreach) update takes MKL's vector square root, whose last bits differ between CPUs
    (:mod:`qfail.isa`), and training grows them into other models."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


def fit(model: nn.Module, train: Split, config: TrainConfig, device: str | torch.device = "cpu",
        loss_fn: LossFn | None = None, progress: bool | None = None,
        after_epoch: Callable[[nn.Module, list[float]], None] | None = None) -> list[float]:
    """Train ``model`` in place; return the mean loss of each epoch.

    ``loss_fn(model, batch)`` (a mini-batch :class:`~qfail.data.Split`, teacher answers
    included) replaces the recipe named by ``config.method`` (used by
    adversarial training and distillation, which live in their own modules).
    ``after_epoch(model, history)`` runs after every epoch (the model still in training mode).
    """
    device = resolve_device(device)
    gen = seed_everything(config.seed)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        opt = adam(params, lr=config.lr, weight_decay=config.weight_decay)
    steps = max(config.epochs * -(-len(train) // config.batch_size), 1)
    schedule = {"cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps),
                "step": lambda: torch.optim.lr_scheduler.MultiStepLR(opt, [steps // 2, 3 * steps // 4], 0.1),
                "constant": lambda: None}[config.lr_schedule]()
    history = []
    # progress=None shows the bar only on a terminal (never as a widget inside notebooks)
    for _ in tqdm(range(config.epochs), desc="epochs", disable=None if progress is None else not progress,
                  leave=False):
        total, count = 0.0, 0
        for batch in minibatches(train, config.batch_size, shuffle=True, generator=gen):
            batch = batch.to(device)
            if config.augment == "crop_flip":
                batch = replace(batch, x=crop_flip(batch.x, gen))
            x, y = batch.x, batch.y
            loss = loss_fn(model, batch) if loss_fn else _loss(model, x, y, config, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if schedule is not None:
                schedule.step()
            total, count = total + loss.item() * len(y), count + len(y)
        history.append(total / max(count, 1))
        if after_epoch is not None:
            after_epoch(model, history)
    model.eval()
    return history


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits (N, K) of ``model`` on ``x`` in eval mode, returned on the CPU."""
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    out = [model(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: nn.Module, split: Split, device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy in percent."""
    return accuracy_on(model, split.x, split.y, device=resolve_device(device))


def example_passes(config: TrainConfig, n_train: int) -> int:
    """Examples sent forward and backward through the network by a run of ``config`` on
    ``n_train`` examples: one training pass each, plus ``adv_steps`` PGD passes for each
    adversarial one. The run's cost in a unit every machine counts alike (its seconds are not)."""
    sizes = [min(config.batch_size, n_train - start) for start in range(0, n_train, config.batch_size)]
    per_epoch = sum(sizes)
    if config.method == "adversarial":
        per_epoch += config.adv_steps * sum(round(config.adv_ratio * size) for size in sizes)
    return config.epochs * per_epoch


def float_phase(config: TrainConfig) -> TrainConfig:
    """The standard run that a QAT run (``method="qat"``) starts with: its float epochs.

    Under a constant learning rate this run is also the first epochs of the standard run with the
    same settings (same seed, so the same batches; the same optimizer steps), which stores it on
    the way (``train_cached``): the QAT model does not train its float half a second time.
    """
    return replace(config, method="standard", epochs=round(config.epochs * (1 - config.qat_fraction)))


def _fit_qat(model: nn.Module, data: DataSplits, config: TrainConfig, device: str | torch.device,
             loss_fn: LossFn | None, float_model: Callable[[TrainConfig], Trained]) -> tuple[nn.Module, list[float]]:
    """Float epochs (``float_phase``, through ``float_model``), then ``qat_fraction`` of the
    budget through the STE at ``qat_bits``.

    Returns the float architecture holding the QAT-trained weights (BatchNorm kept), so that
    every training method hands the same kind of model to the deployment step.
    """
    phase = float_phase(config)
    start = float_model(phase)
    model.load_state_dict(start.model.state_dict())
    model.to(resolve_device(device)).eval()
    history = list(start.history)
    bits = (config.qat_bits, config.qat_bits)
    qm = quantize_model(model, qat_config(), bits, calibration=[data.train.x[:256].to(resolve_device(device))])
    history += fit(qm, data.train, replace(config, epochs=config.epochs - phase.epochs), device, loss_fn)
    return qm.float_model(), history


def train_cached(make_model: Callable[[], nn.Module], model_key: dict, data: DataSplits, config: TrainConfig,
                 device: str | torch.device = "cpu", kind: str = "model", loss_fn: LossFn | None = None,
                 extra_key: dict | None = None, code: Sequence[str] = ()) -> Trained:
    """Build with ``make_model`` and train with ``fit``, or load the stored weights.

    The key covers ``model_key`` (how the model is built), the data fingerprint, the training
    config and ``extra_key`` (whatever ``loss_fn`` depends on), and the source of this module,
    of :mod:`qfail.models` and of the ``code`` modules (where ``loss_fn`` comes from). Training always happens on
    ``device``; the weights are stored on the CPU.
    """
    def key_of(train: TrainConfig) -> dict:
        return {"model": model_key, "data": list(data.fingerprint), "train": asdict(train), "extra": extra_key}

    code = (__name__, "qfail.models", *code)
    key = key_of(config)

    def entry_of(state: dict, history: list[float], seconds: float) -> dict:
        return {"state": {k: v.detach().cpu().clone() for k, v in state.items()}, "history": list(history),
                "seconds": seconds}

    def build() -> dict:
        start = time.perf_counter()
        model = make_model()
        if config.method == "qat":
            marks: dict[str, float] = {}

            def float_model(phase: TrainConfig) -> Trained:
                trained = train_cached(make_model, model_key, data, phase, device, kind, loss_fn, extra_key, code[2:])
                marks["float seconds"], marks["qat start"] = trained.seconds, time.perf_counter()
                return trained

            model, history = _fit_qat(model, data, config, device, loss_fn, float_model)
            # the seconds of the whole recipe: the float half as it was trained, then the QAT half
            seconds = marks["float seconds"] + time.perf_counter() - marks["qat start"]
            return entry_of(model.state_dict(), history, seconds)
        twin = float_phase(replace(config, method="qat"))  # the float half of this run's QAT twin
        on_the_way = config.method == "standard" and config.lr_schedule == "constant" and 0 < twin.epochs < config.epochs

        def store_twin(net: nn.Module, history: list[float]) -> None:
            if on_the_way and len(history) == twin.epochs:  # eval mode does not change the state
                cached_entry(kind, key_of(twin), lambda: entry_of(net.state_dict(), history, time.perf_counter() - start),
                             code=code)

        history = fit(model, data.train, config, device, loss_fn, after_epoch=store_twin)
        return entry_of(model.state_dict(), history, time.perf_counter() - start)

    result, entry = cached_entry(kind, key, build, code=code)
    model = make_model()
    model.load_state_dict(result["state"])
    # the entry's name hashes the config *and* the code: results derived from this model re-key when either changes
    record = key | {"kind": kind, "entry": entry}
    return Trained(model.to(resolve_device(device)).eval(), record, result["history"], result["seconds"])
