"""The source papers' own numbers, read from their published result files (never retyped).

Hu et al. (2022) released their result tables as tab-separated text (``results/RQ1..4``); copies
ship in ``qfail/published_data/hu``. The files are laid out for reading, not parsing: section
titles, training-method titles and table titles sit on their own lines above each block. The
parsers below walk the lines, carry the current titles along, and return long tables.

Quantizer names map onto qfail's deployment settings (see ``qfail.disagreements``):
``8-tflite`` = static INT8, ``16-tflite`` = dynamic-range INT8, ``8-coreml`` = weight-only INT8,
``16-coreml`` = weight-only FP16.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pandas as pd

__all__ = ["HU_DIR", "HU_SETTINGS", "hu_disagreements", "hu_shift_summary", "hu_metric_auroc", "hu_retraining"]

HU_DIR = Path(__file__).resolve().parent / "published_data"
HU_SETTINGS = {"8-tflite": "int8", "16-tflite": "dynamic", "8-coreml": "w8", "16-coreml": "fp16"}
_DATASETS = {"MNIST": "MNIST", "CIFAR-10": "CIFAR-10", "Cifar-10": "CIFAR-10", "IMDB": "IMDb", "WILDS": "iWildCam"}
_TRAINING = {"QA-Training": "QAT", "ADV-Training": "adversarial", "MixUp-Training": "mixup"}
_TABLES = {"ACC": "accuracy", "ACC (%)": "accuracy", "ACC(Diff)": "accuracy change", "Disagreement": "disagreements"}
_ROW = re.compile(r"^(?P<model>[A-Za-z0-9]+)-(?P<quant>ori|\d+-(?:tflite|coreml))$")


def _lines(name: str) -> list[list[str]]:
    path = HU_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall qfail (the file ships with the package)")
    return [line.rstrip("\n").split("\t") for line in path.read_text().splitlines()]


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


@lru_cache(maxsize=1)
def hu_disagreements() -> pd.DataFrame:
    """Every cell of RQ1 (standard training) and RQ2 (QAT, adversarial, Mixup) as long rows.

    Columns: dataset, training, table (accuracy / accuracy change / disagreements), model,
    quantizer (Hu's name), setting (qfail's name), shift ("ori" = the clean test set), value.
    MNIST and CIFAR-10 disagreements are counts out of 10,000 test inputs.
    """
    rows = []
    for name, default_training in (("RQ1.csv", "standard"), ("RQ2.csv", None)):
        dataset, training, table = None, default_training, None
        header: list[str] = []
        for cells in _lines(name):
            first = cells[0].strip()
            if first in _DATASETS:
                dataset = _DATASETS[first]
                if len(cells) > 2:
                    header = cells[1:]
            elif first in _TRAINING and default_training is None:
                training = _TRAINING[first]
            elif first in _TABLES:
                table = _TABLES[first]
            elif first == "" and len(cells) > 2 and cells[1].strip() == "ori":
                header = cells[1:]
            elif (match := _ROW.match(first)) and match["quant"] != "ori":
                for shift, cell in zip(header, cells[1:]):
                    value = _number(cell)
                    if value is not None and shift.strip():
                        rows.append({"dataset": dataset, "training": training, "table": table,
                                     "model": match["model"], "quantizer": match["quant"],
                                     "setting": HU_SETTINGS[match["quant"]], "shift": shift.strip(), "value": value})
    return pd.DataFrame(rows)


@lru_cache(maxsize=1)
def hu_metric_auroc() -> pd.DataFrame:
    """RQ3: AUROC (%) of Entropy, Gini, Margin and LC per dataset, model and training method."""
    rows, dataset, model = [], None, None
    methods = {"Ori": "standard", "QA": "QAT", "ADV": "adversarial", "Mixup": "mixup"}
    for cells in _lines("RQ3.csv"):
        if len(cells) < 7 or cells[2].strip() not in methods:
            continue
        dataset = cells[0].strip() or dataset
        model = cells[1].strip() or model
        values = [_number(c) for c in cells[3:7]]
        rows.append({"dataset": dataset, "model": model, "training": methods[cells[2].strip()],
                     **dict(zip(("Entropy", "Gini", "Margin", "LC"), values))})
    return pd.DataFrame(rows)


@lru_cache(maxsize=1)
def hu_retraining() -> tuple[pd.DataFrame, pd.DataFrame]:
    """RQ4: (before/after disagreement counts per model and quantizer, old/new counts per model).

    "Old" counts disagreements of the model before retraining that persist after it; "new"
    counts those that appear only after it (Hu et al.'s Table 9).
    """
    counts, changes, models = [], [], ("", "")
    for cells in _lines("RQ4.csv"):
        right = [c.strip() for c in cells[7:]]
        if len(right) < 4:
            continue
        label = right[0]
        if label == "" and right[1] and right[1] != "after":
            models = (right[1], right[3])
        elif label in ("Old", "New"):
            for model, cell in zip(models, (right[1], right[3])):
                changes.append({"model": model, "kind": label.lower(), "count": _number(cell)})
        elif "-" in label:
            tool, bits = label.split("-")  # "tflite-8" here, "8-tflite" in RQ1/RQ2
            quantizer = f"{bits}-{tool}"
            for model, after, before in ((models[0], right[1], right[2]), (models[1], right[3], right[4])):
                counts.append({"model": model, "quantizer": quantizer, "setting": HU_SETTINGS[quantizer],
                               "before": _number(before), "after": _number(after)})
    return pd.DataFrame(counts), pd.DataFrame(changes)


def hu_shift_summary(dataset: str = "MNIST") -> pd.DataFrame:
    """Per training method, model and setting: clean and mean/max shifted disagreements per 1,000,
    and the counts behind them (clean out of 10,000; shifted pooled over the shifted sets).

    The clean column is the "ori" test set; MNIST's "identity" corruption (the clean set again)
    is left out of the shifted ones.
    """
    d = hu_disagreements()
    d = d[(d.dataset == dataset) & (d.table == "disagreements")]
    if d.empty:
        raise ValueError(f"dataset={dataset!r} is not allowed; choose one of 'MNIST', 'CIFAR-10'")
    scale = 1e3 / 1e4  # counts out of 10,000 -> per 1,000
    rows = []
    for (training, model, setting), g in d.groupby(["training", "model", "setting"], sort=False):
        shifted = g[~g["shift"].isin(["ori", "identity"])]["value"]
        clean = g.loc[g["shift"] == "ori", "value"].iloc[0]
        rows.append({"training": training, "model": model, "setting": setting, "clean per 1k": clean * scale,
                     "shifted per 1k": shifted.mean() * scale, "max shifted per 1k": shifted.max() * scale,
                     "clean count": int(clean), "shifted count": int(shifted.sum()),
                     "shifted inputs": 10_000 * len(shifted)})
    return pd.DataFrame(rows)
