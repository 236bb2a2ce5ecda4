"""Where a network-policy pair fails: layer-wise quantization, activation histograms, corruptions
and transitory points (the analyses of Frank & Ardis's figures 2-4).

- ``quantized_layers`` switches quantization on for the named layers only;
  ``layer_wise`` uses it for the three protocols: the layers *up to* ``l``, *from* ``l`` on,
  and ``l`` alone.
- ``activation_samples`` records what each quantized layer receives, in float and as the
  quantized network's fake-quantized values, for histograms.
- ``corruption_curves`` measures float and quantized accuracy under ``qfail.shift`` corruptions.
- ``transitory_points`` lists the inputs whose prediction flips from float to quantized, with
  their float margin and the widths the policy gave them; ``transitory_across_severity``
  follows them through each corruption's degrees.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import pandas as pd
import torch

from qfail.checks import check_choice
from qfail.data import Split
from qfail.papers.frank.pairs import evaluate_pair, run_policy
from qfail.quant import QuantizedModel
from qfail.shift import SHIFTS, shift

__all__ = ["LAYER_PROTOCOLS", "quantized_layers", "layer_wise", "activation_samples", "corruption_curves",
           "transitory_points", "transitory_across_severity"]

LAYER_PROTOCOLS = ("up to", "from", "only")


@contextlib.contextmanager
def quantized_layers(network: QuantizedModel, names: Sequence[str]) -> Iterator[QuantizedModel]:
    """Quantize only the layers ``names`` inside the block (the others run in float)."""
    for name in names:
        check_choice("layer", name, network.layer_names)
    states = {n: q.enabled for n, q in network.layers.items()}
    for n, q in network.layers.items():
        q.enabled = n in names
    try:
        yield network
    finally:
        for n, q in network.layers.items():
            q.enabled = states[n]


def _selected(names: list[str], i: int, protocol: str) -> list[str]:
    return {"up to": names[:i + 1], "from": names[i:], "only": [names[i]]}[protocol]


def layer_wise(network: QuantizedModel, policy, split: Split, device: str | torch.device = "cpu") -> pd.DataFrame:
    """Quantized accuracy (%) under each protocol for each layer, at the policy's own widths."""
    names = list(network.layer_names)
    rows = []
    for protocol in LAYER_PROTOCOLS:
        for i, name in enumerate(names):
            with quantized_layers(network, _selected(names, i, protocol)):
                result = evaluate_pair(network, policy, split, device=device)
            rows.append({"protocol": protocol, "layer": name, "position": i + 1, "Q acc": result["Q acc"],
                         "drop": result["drop"]})
    return pd.DataFrame(rows)


@torch.no_grad()
def activation_samples(network: QuantizedModel, policy, x: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """Per layer: the float network's input values (``fp``) and the values the quantized network
    feeds the layer after fake quantization (``q``), flattened."""
    seen: dict[str, dict[str, torch.Tensor]] = {n: {} for n in network.layer_names}
    mode = {"now": "fp"}

    def hook(name):
        def record(layer, inputs):
            value = inputs[0] if mode["now"] == "fp" else layer.quantize_input(inputs[0])
            seen[name][mode["now"]] = value.detach().flatten().cpu()
        return record

    handles = [q.register_forward_pre_hook(hook(n)) for n, q in network.layers.items()]
    try:
        with network.full_precision():
            network(x)
        mode["now"] = "q"
        run_policy(network, policy.act(x, greedy=True), x)
    finally:
        for h in handles:
            h.remove()
    return seen


def corruption_curves(network: QuantizedModel, policy, split: Split, corruptions: Sequence[str],
                      severities: Sequence[int] = (1, 2, 3, 4, 5), seed: int = 0,
                      device: str | torch.device = "cpu") -> pd.DataFrame:
    """Float and quantized accuracy (%) per corruption and severity (0 = clean)."""
    for name in corruptions:
        check_choice("corruption", name, tuple(SHIFTS))
    clean = evaluate_pair(network, policy, split, device=device)
    rows = []
    for name in corruptions:
        rows.append({"corruption": name, "severity": 0, **clean})
        for s in severities:
            shifted = Split(shift(split.x, name, s, seed), split.y)
            rows.append({"corruption": name, "severity": s, **evaluate_pair(network, policy, shifted, device=device)})
    return pd.DataFrame(rows)


@torch.no_grad()
def transitory_points(network: QuantizedModel, policy, split: Split) -> pd.DataFrame:
    """One row per input: label, float and quantized predictions, the float margin p1 - p2, the
    executed widths per layer, and ``flips`` (float right, quantized wrong)."""
    with network.full_precision():
        p_fp = network(split.x).softmax(1)
    step = policy.act(split.x, greedy=True)
    q_pred = run_policy(network, step, split.x).argmax(1)
    top2 = p_fp.topk(2, dim=1).values
    fp_pred = p_fp.argmax(1)
    frame = pd.DataFrame({"label": split.y.numpy(), "FP pred": fp_pred.numpy(), "Q pred": q_pred.numpy(),
                          "FP margin": (top2[:, 0] - top2[:, 1]).numpy(), "mean bits": step.bits.float().mean(1).numpy()})
    for i, name in enumerate(network.layer_names):
        frame[f"bits {name}"] = step.bits[:, i].numpy()
    frame["flips"] = (fp_pred == split.y).numpy() & (q_pred != split.y).numpy()
    return frame


def transitory_across_severity(network: QuantizedModel, policy, split: Split, corruptions: Sequence[str],
                               severities: Sequence[int] = (1, 2, 3, 4, 5), seed: int = 0) -> pd.DataFrame:
    """Transitory points per corruption and severity (0 = clean), followed from the clean set:
    how many there are, how many of the clean set's are still transitory, and how many are new."""
    for name in corruptions:
        check_choice("corruption", name, tuple(SHIFTS))
    clean = transitory_points(network, policy, split).flips.to_numpy()
    rows = []
    for name in corruptions:
        for s in (0, *severities):
            shifted = split if s == 0 else Split(shift(split.x, name, s, seed), split.y)
            flips = transitory_points(network, policy, shifted).flips.to_numpy()
            rows.append({"corruption": name, "severity": s, "transitory": int(flips.sum()),
                         "still transitory (of the clean ones)": int((flips & clean).sum()),
                         "new": int((flips & ~clean).sum()), "clean transitory": int(clean.sum())})
    return pd.DataFrame(rows)
