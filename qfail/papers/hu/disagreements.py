"""Where a model and its quantized self disagree: deployment settings, shifted test sets, counts.

The study of Hu et al. (2022) in qfail's terms. A trained model is *deployed* with one of the
source's four settings (or a low-bit one), then the original and the deployed model label the
in-distribution test set and every shift x severity of it; a disagreement is an input whose two
top-1 labels differ. ``predict_sets`` runs all of that once per model and caches the result;
the table functions only count.

Deployment settings (``deploy``):

* ``int8``: full-integer static INT8 through torch.ao (FX graph mode), calibrated on 100
  training images (TFLite's ``8-bit`` conversion with a representative data set);
* ``dynamic``: INT8 weights (per channel) and activations quantized on the fly with each
  input's own range (TFLite's dynamic-range mode, which the source calls ``16-bit``); torch's
  ``quantize_dynamic`` skips convolutions, so qfail's fake quantization runs it instead;
* ``w8``: weight-only INT8, per-channel affine, float activations (CoreML ``nbits=8``);
* ``fp16``: weights rounded to float16, float activations (CoreML ``nbits=16``);
* ``w{b}a{b}``: static fake quantization of weights and activations at b bits (2..8), to
  amplify what INT8 shows.
"""
from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from torch import nn

from qfail.cache import cached
from qfail.checks import check_choice, check_range
from qfail.data import DataSplits, Split
from qfail.metrics import disagreement, mc_dropout_variance, proportion, resampled_auroc, separation, uncertainty_scores
from qfail.quant import QuantConfig, int8_static, quantize_model
from qfail.shift import SHIFTS, shift
from qfail.train import TrainConfig, Trained, fit, predict_logits, resolve_device

__all__ = ["SETTINGS", "SETTING_LABELS", "check_setting", "deploy", "deployed_logits", "EvalSet", "evaluation_sets", "Predictions", "margin_advantage",
           "predict_sets", "rate_table", "natural_rates", "summary_table", "score_table", "retrain_with_disagreements"]

SETTINGS = ("int8", "dynamic", "w8", "fp16")
SETTING_LABELS = {"int8": "static INT8", "dynamic": "dynamic-range INT8", "w8": "weight-only INT8",
                  "fp16": "weight-only FP16"}
_LOW_BIT = re.compile(r"^w(\d+)a(\d+)$")
CALIBRATION_IMAGES = 100
RETRAIN_ARMS = ("with the disagreements", "with random shifted inputs", "with no added input")
ID = ("none", 0)  # the in-distribution set in (shift, severity) form


def check_setting(name: str) -> str:
    """A deployment setting name, or a one-line error listing the allowed ones."""
    match = _LOW_BIT.match(name) if isinstance(name, str) else None
    if name in SETTINGS or (match and match[1] == match[2] and 2 <= int(match[1]) <= 8):
        return name
    raise ValueError(f"setting={name!r} is not allowed; choose one of {', '.join(map(repr, SETTINGS))} "
                     f"or 'w{{b}}a{{b}}' with b in 2..8 (e.g. 'w4a4')")


def label(setting: str) -> str:
    """How a deployment setting is named in tables and figures."""
    check_setting(setting)
    if setting in SETTING_LABELS:
        return SETTING_LABELS[setting]
    return f"static {_LOW_BIT.match(setting)[1]}-bit"


def _fp16_weights(model: nn.Module) -> nn.Module:
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for m in out.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(m.weight.half().float())
    return out


def deploy(model: nn.Module, setting: str, calibration: torch.Tensor) -> nn.Module:
    """A quantized copy of ``model`` (left unchanged) under ``setting``; see the module docstring.

    ``calibration`` is a batch of training images; static settings use its first 100.
    """
    check_setting(setting)
    model = model.eval()
    calib = [calibration[:CALIBRATION_IMAGES].cpu()]
    if setting == "int8":
        return int8_static(model.cpu(), calib)
    if setting == "dynamic":
        return quantize_model(model, QuantConfig(act_mode="dynamic"), (8, 8)).eval()
    if setting == "w8":
        return quantize_model(model, QuantConfig(weight_scheme="asymmetric"), (8, 32)).eval()
    if setting == "fp16":
        return _fp16_weights(model)
    bits = int(_LOW_BIT.match(setting)[1])
    return quantize_model(model, QuantConfig(), (bits, bits), calibration=calib).eval()


def deployed_logits(model: nn.Module, setting: str, x: torch.Tensor, calibration: torch.Tensor,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits of ``model`` deployed under ``setting`` on ``x``; static INT8 runs on torch's CPU
    kernels whatever ``device`` is, the rest on ``device``."""
    run_on = torch.device("cpu") if check_setting(setting) == "int8" else resolve_device(device)
    return predict_logits(deploy(model, setting, calibration), x, device=run_on)


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set: the test split under one shift at one severity."""

    shift: str  # "none" for the in-distribution set
    severity: int
    x: torch.Tensor


_RECENT_SETS: dict[tuple, list[EvalSet]] = {}  # the last two splits' sets, shared by every model of a chapter


def evaluation_sets(split: Split, shifts: Sequence[str], severities: Sequence[int], seed: int = 0) -> list[EvalSet]:
    """The clean split, then every shift at every severity (each with its own derived seed).

    The sets depend only on the images and the arguments, and every model of a chapter is
    evaluated on the same ones: the last two requests are kept (keyed by a hash of the images),
    so they are drawn once per split, not once per model. Treat them as read-only.
    """
    for name in shifts:
        check_choice("shift", name, tuple(SHIFTS))
    for s in severities:
        check_choice("severity", s, (1, 2, 3, 4, 5))
    key = (hashlib.sha1(split.x.contiguous().numpy().tobytes()).hexdigest(), tuple(split.x.shape), tuple(shifts),
           tuple(severities), seed)
    if key not in _RECENT_SETS:
        sets = [EvalSet(*ID, split.x)]
        for i, name in enumerate(shifts):
            for s in severities:
                sets.append(EvalSet(name, s, shift(split.x, name, s, seed=seed * 1_000 + 10 * i + s)))
        while len(_RECENT_SETS) >= 2:
            _RECENT_SETS.pop(next(iter(_RECENT_SETS)))
        _RECENT_SETS[key] = sets
    return _RECENT_SETS[key]


@dataclass
class Predictions:
    """One trained model's outputs on every evaluation set: S sets x N inputs (x K classes)."""

    sets: list[tuple[str, int]]
    labels: torch.Tensor  # (N,)
    fp_probs: torch.Tensor  # (S, N, K) softmax of the original model
    q_probs: dict[str, torch.Tensor]  # setting -> (S, N, K) softmax of the deployed model
    mc_variance: torch.Tensor | None  # (S, N) MC-dropout variance of the original, if it has dropout

    def fp_pred(self) -> torch.Tensor:
        return self.fp_probs.argmax(-1)

    def q_pred(self, setting: str) -> torch.Tensor:
        return self.q_probs[setting].argmax(-1)

    def disagrees(self, setting: str) -> torch.Tensor:
        """(S, N) boolean mask of disagreements under ``setting``."""
        return self.fp_pred() != self.q_pred(setting)


def predict_sets(trained: Trained, data: DataSplits, settings: Sequence[str],
                 shifts: Sequence[str], severities: Sequence[int], seed: int = 0, mc_samples: int = 20,
                 split: str = "test", device: str | torch.device = "cpu") -> Predictions:
    """Softmax outputs of ``trained.model`` and of each deployed copy on every evaluation set (cached).

    Static INT8 runs on torch's CPU kernels whatever ``device`` is; the rest run on ``device``.
    """
    for s in settings:
        check_setting(s)
    check_choice("split", split, ("val", "test"))
    check_range("mc_samples", mc_samples, 2, 1000, integer=True)
    device = resolve_device(device)
    model = trained.model
    key = {"model": trained.key, "data": list(data.fingerprint), "settings": list(settings), "shifts": list(shifts),
           "severities": list(severities), "seed": seed, "mc": mc_samples, "split": split}

    def build() -> dict:
        sets = evaluation_sets(getattr(data, split), shifts, severities, seed)
        x_all = torch.cat([s.x for s in sets])
        shape = (len(sets), len(sets[0].x), -1)
        out = {"fp": torch.softmax(predict_logits(model, x_all, device=device), 1).reshape(shape), "q": {}}
        for setting in settings:
            logits = deployed_logits(model, setting, x_all, data.train.x, device)
            out["q"][setting] = torch.softmax(logits.float(), 1).reshape(shape)
        has_dropout = any(isinstance(m, nn.Dropout) for m in model.modules())
        out["mc"] = (torch.from_numpy(mc_dropout_variance(model.cpu(), x_all, mc_samples, seed)).float()
                     .reshape(shape[:2]) if has_dropout else None)
        model.to(device)
        return out

    result = cached("disagreements", key, build, code=__name__)
    sets = [ID] + [(name, s) for name in shifts for s in severities]
    return Predictions(sets, getattr(data, split).y, result["fp"], result["q"], result["mc"])


def rate_table(predictions: dict[str, Predictions], confidence: float = 0.95) -> pd.DataFrame:
    """One row per training method x setting x evaluation set: disagreements with a Wilson CI,
    and the accuracy of both models (%)."""
    rows = []
    for method, p in predictions.items():
        fp_pred = p.fp_pred()
        for setting in p.q_probs:
            q_pred = p.q_pred(setting)
            for i, (name, severity) in enumerate(p.sets):
                rate = disagreement(fp_pred[i], q_pred[i], confidence)
                rows.append({"method": method, "setting": setting, "shift": name, "severity": severity,
                             "disagreements": rate.count, "inputs": rate.total, "rate": rate.value,
                             "low": rate.low, "high": rate.high,
                             "fp accuracy": 100 * (fp_pred[i] == p.labels).float().mean().item(),
                             "q accuracy": 100 * (q_pred[i] == p.labels).float().mean().item()})
    return pd.DataFrame(rows)


def natural_rates(models: dict[str, nn.Module], settings: Sequence[str], data: DataSplits, natural: Split,
                  name: str, confidence: float = 0.95, device: str | torch.device = "cpu") -> pd.DataFrame:
    """Disagreements on a natural-shift test set (``qfail.data.load_natural_shift``), in the
    columns of ``rate_table``; the set's size differs from the test split's, so it is kept apart."""
    device = resolve_device(device)
    rows = []
    for method, model in models.items():
        fp = predict_logits(model, natural.x, device=device).argmax(1)
        for setting in settings:
            q = deployed_logits(model, setting, natural.x, data.train.x, device).argmax(1)
            rate = disagreement(fp, q, confidence)
            rows.append({"method": method, "setting": setting, "shift": name, "severity": 0,
                         "disagreements": rate.count, "inputs": rate.total, "rate": rate.value, "low": rate.low,
                         "high": rate.high, "fp accuracy": 100 * (fp == natural.y).float().mean().item(),
                         "q accuracy": 100 * (q == natural.y).float().mean().item()})
    return pd.DataFrame(rows)


def summary_table(rates: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per method x setting: in-distribution rate, pooled shifted rate (both with CIs), the mean
    and max over shifted sets, and their ratio (all rates per 1,000 inputs)."""
    rows = []
    for (method, setting), g in rates.groupby(["method", "setting"], sort=False):
        clean, shifted = g[g["shift"] == ID[0]].iloc[0], g[g["shift"] != ID[0]]
        pooled = proportion(int(shifted.disagreements.sum()), int(shifted.inputs.sum()), confidence)
        rows.append({"method": method, "setting": setting,
                     "ID per 1k": 1e3 * clean.rate, "ID low": 1e3 * clean.low, "ID high": 1e3 * clean.high,
                     "shifted per 1k": 1e3 * pooled.value, "shifted low": 1e3 * pooled.low,
                     "shifted high": 1e3 * pooled.high, "max shifted per 1k": 1e3 * shifted.rate.max(),
                     "worst set": " ".join(map(str, shifted.loc[shifted.rate.idxmax(), ["shift", "severity"]])),
                     "ratio": pooled.value / clean.rate if clean.rate > 0 else float("inf")})
    return pd.DataFrame(rows)


def score_table(predictions: dict[str, Predictions], setting: str, source: str = "fp", seed: int = 0) -> pd.DataFrame:
    """How well each uncertainty score separates disagreements, pooled over every evaluation set.

    ``source`` picks whose softmax is scored: the original model's (``fp``) or the deployed
    one's (``quantized``). MC-dropout variance joins the scores when the model has dropout.
    """
    check_choice("source", source, ("fp", "quantized"))
    rows = []
    for method, p in predictions.items():
        probs = p.fp_probs if source == "fp" else p.q_probs[setting]
        is_dis = p.disagrees(setting).flatten().numpy()
        scores = uncertainty_scores(probs.flatten(0, 1))
        if p.mc_variance is not None:
            scores["MC-dropout"] = p.mc_variance.flatten().double().numpy()
        for name, values in scores.items():
            rows.append({"method": method, "score": name, "disagreements": int(is_dis.sum()),
                         **separation(values, is_dis, seed)})
    return pd.DataFrame(rows)


def margin_advantage(predictions: dict[str, Predictions], setting: str, seed: int = 0,
                     resamples: int = 200) -> pd.DataFrame:
    """Per training method: AUROC (over every input) of Margin minus the best other score, with a
    95 % bootstrap interval over the inputs (resampled jointly, so the scores stay paired).

    The scores come from the original model's softmax, pooled over every evaluation set, as in
    :func:`score_table`. Each score is ranked once (:func:`qfail.metrics.resampled_auroc`); a
    resample's AUROC only counts how often it drew each input, which keeps 4 x ``resamples``
    AUROCs cheap.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for method, p in predictions.items():
        pos = p.disagrees(setting).flatten().numpy()
        scores = uncertainty_scores(p.fp_probs.flatten(0, 1))
        names = [n for n in scores if n != "Margin"]
        draws = [np.arange(len(pos))] + [rng.integers(0, len(pos), len(pos)) for _ in range(resamples)]
        auc = resampled_auroc(scores, pos, draws)
        gaps = auc["Margin"] - np.max([auc[n] for n in names], axis=0)
        point, rest = gaps[0], np.array(gaps[1:])
        rest = rest[np.isfinite(rest)]
        low, high = (np.quantile(rest, [0.025, 0.975]) if len(rest) else (float("nan"), float("nan")))
        rows.append({"method": method, "disagreements": int(pos.sum()), "inputs": len(pos),
                     "Margin minus best other": point, "low": float(low), "high": float(high)})
    return pd.DataFrame(rows).set_index("method")


def _fine_tune(model: nn.Module, train: Split, config: TrainConfig, device: torch.device) -> nn.Module:
    tuned = copy.deepcopy(model)
    fit(tuned, train, config, device)
    return tuned.eval()


def retrain_with_disagreements(trained: Trained, data: DataSplits, settings: Sequence[str],
                               shifts: Sequence[str], severities: Sequence[int], config: TrainConfig,
                               seed: int = 0, device: str | torch.device = "cpu") -> pd.DataFrame:
    """Hu et al.'s RQ4, with a control: mine, add, fine-tune, re-deploy, recount on held-out data.

    1. Disagreements of every setting on the shifted *validation* sets are mined (their union).
    2. They join the training set with their true labels; a copy of ``trained.model`` is fine-tuned
       with ``config``. Two controls get the same fine-tuning: one with as many *random*
       shifted validation inputs (is it the disagreements, or just seeing shifted data?), one
       with no added input (is it just more training?).
    3. Each fine-tuned model is deployed again; on the shifted *test* sets each setting's
       disagreements are split into those that persist ("old"), disappear, and appear ("new").
    """
    for s in settings:
        check_setting(s)
    device = resolve_device(device)
    model = trained.model
    key = {"model": trained.key, "data": list(data.fingerprint), "settings": list(settings), "shifts": list(shifts),
           "severities": list(severities), "seed": seed, "train": asdict(config)}

    def masks(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fp = predict_logits(net, x, device=device).argmax(1)
        return {s: fp != deployed_logits(net, s, x, data.train.x, device).argmax(1) for s in settings}

    def shifted(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        sets = evaluation_sets(split, shifts, severities, seed)
        return torch.cat([s.x for s in sets]), split.y.repeat(len(sets))

    def build() -> dict:
        (x_val, y_val), (x_test, _) = shifted(data.val), shifted(data.test)
        mined = torch.stack(list(masks(model, x_val).values())).any(0)
        random = torch.randperm(len(y_val), generator=torch.Generator().manual_seed(seed))[:int(mined.sum())]

        def with_added(idx: torch.Tensor) -> Split:
            return Split(torch.cat([data.train.x, x_val[idx]]), torch.cat([data.train.y, y_val[idx]]))

        arms = {name: masks(_fine_tune(model, train, config, device), x_test)
                for name, train in zip(RETRAIN_ARMS, (with_added(mined), with_added(random), data.train))}
        return {"mined": int(mined.sum()), "before": masks(model, x_test), "arms": arms}

    result = cached("retrain", key, build, code=__name__)
    rows = []
    for arm, after in result["arms"].items():
        for setting in settings:
            b, a = result["before"][setting], after[setting]
            rows.append({"fine-tuned": arm, "setting": setting, "mined": result["mined"], "before": int(b.sum()), "after": int(a.sum()),
                         "old (persist)": int((b & a).sum()), "removed": int((b & ~a).sum()),
                         "new": int((~b & a).sum())})
    return pd.DataFrame(rows)
