"""Figures shared by chapters (small, so that precomputed widget panels stay light)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import torch

from qfail.checks import FULL_PRECISION
from qfail.quant import choose_qparams, dequantize, qrange

__all__ = ["weight_grid", "accuracy_vs_bits"]

_STYLE = {"static": "-o", "dynamic": "--s", "qat": ":^", "pwlq": "-.d"}


def weight_grid(ax: plt.Axes, w: torch.Tensor, bits: int, title: str | None = None) -> None:
    """Histogram of ``w`` with the levels of a symmetric per-tensor ``bits``-bit grid."""
    flat = w.detach().flatten()
    ax.hist(flat.numpy(), bins=80, color="0.6", histtype="stepfilled")  # one polygon, not 80 bars: drawn faster
    if bits != FULL_PRECISION:
        r = qrange(bits, "symmetric")
        scale, zp = choose_qparams(flat.min(), flat.max(), bits, "symmetric")
        levels = dequantize(torch.arange(r.q_min, r.q_max + 1, dtype=torch.float32), scale, zp)
        shown = levels[:: max(1, len(levels) // 64)].numpy()  # at most ~64 lines stay readable
        ax.vlines(shown, 0, 1, transform=ax.get_xaxis_transform(), color="tab:red", lw=0.6, alpha=0.7)
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    ax.set_title(title or f"{bits}-bit grid ({2 ** bits} levels)")


def accuracy_vs_bits(ax: plt.Axes, table: pd.DataFrame, part: str, highlight: int | None = None) -> None:
    """Accuracy against bit-width for each method, for one quantized part; FP as a line."""
    fp = table.loc[table.method == "float", "accuracy"].iloc[0]
    ax.axhline(fp, color="k", lw=1, label=f"float {fp:.1f}%")
    for method, rows in table[(table.part == part)].groupby("method", sort=False):
        ax.plot(rows.bits, rows.accuracy, _STYLE.get(method, "-o"), label=method, ms=4)
        if highlight is not None and (rows.bits == highlight).any():
            ax.plot([highlight], rows.loc[rows.bits == highlight, "accuracy"], "o", ms=11,
                    mfc="none", mec="tab:red", mew=2)
    ax.set_xlabel("bits")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 101)
    ax.set_title(f"quantized: {part}")
    ax.legend(fontsize=7, loc="lower right")


STATUS_COLOURS = {"certified": "#4c9a5b", "refuted": "#c8553d", "unknown": "#b8b8b8"}


def status_map(ax, status, cells: int, extent: tuple[float, float, float, float], title: str = "",
               labels: tuple[str, str] = ("", "")) -> None:
    """Cells of a 2-D grid coloured by verification status (row-major, first axis vertical)."""
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(STATUS_COLOURS)
    codes = np.array([names.index(s) for s in status]).reshape(cells, cells)
    ax.imshow(codes, origin="lower", extent=(extent[2], extent[3], extent[0], extent[1]), aspect="auto",
              cmap=ListedColormap(list(STATUS_COLOURS.values())), vmin=0, vmax=len(names) - 1,
              interpolation="nearest")
    ax.set_xlabel(labels[1])
    ax.set_ylabel(labels[0])
    ax.set_title(title)
    share = {n: 100 * float((np.asarray(status) == n).mean()) for n in names}
    ax.legend(handles=[Patch(color=c, label=f"{n} {share[n]:.0f}%") for n, c in STATUS_COLOURS.items()],
              loc="upper right", fontsize=8, framealpha=0.9)


def rate_heatmap(ax, rates: pd.DataFrame, title: str = "", vmax: float | None = None):
    """Disagreements per 1,000 inputs: shifts as rows, severities as columns, in-distribution first.

    ``rates`` holds one method and setting of ``disagreements.rate_table``.
    """
    import numpy as np

    clean = rates[rates["shift"] == "none"]
    shifted = rates[rates["shift"] != "none"]
    grid = shifted.pivot(index="shift", columns="severity", values="rate") * 1e3
    grid = grid.reindex(list(dict.fromkeys(shifted["shift"])))  # the order the sets were made in
    values = np.column_stack([np.full(len(grid), clean["rate"].iloc[0] * 1e3), grid.to_numpy()])
    image = ax.imshow(values, cmap="magma_r", aspect="auto", vmin=0, vmax=vmax)
    ax.set_xticks(range(values.shape[1]), ["ID"] + [str(c) for c in grid.columns])
    ax.set_yticks(range(len(grid)), [s.replace("_", " ") for s in grid.index], fontsize=8)
    ax.set_xlabel("severity")
    ax.set_title(title, fontsize=10)
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6,
                color="white" if v > 0.6 * (vmax or values.max() or 1) else "black")
    return image


def prediction_strip(axes, images, fp_pred, q_pred, labels) -> None:
    """One image per axis, titled 'FP a / Q b' in red where the two disagree."""
    for ax, img, a, b, y in zip(axes, images, fp_pred, q_pred, labels):
        ax.imshow(img.squeeze(0).numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"FP {int(a)} / Q {int(b)}", fontsize=8, color="tab:red" if a != b else "black")
        ax.set_xlabel(f"label {int(y)}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])


def rate_series(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """One series for :func:`interval_bars` from a ``disagreements.summary_table``: the per-1,000
    rate ``name`` ("ID" or "shifted") with its interval, as columns mid, low and high."""
    return table[[f"{name} per 1k", f"{name} low", f"{name} high"]].set_axis(["mid", "low", "high"], axis=1)


def interval_bars(ax, series: dict[str, pd.DataFrame], groups: list[str], ylabel: str = "") -> None:
    """Grouped bars with asymmetric error bars: one bar per series in each group.

    Each series is a frame with columns ``mid``, ``low`` and ``high`` in group order.
    """
    import numpy as np

    width = 0.8 / len(series)
    for k, (label, t) in enumerate(series.items()):
        mid = t["mid"].to_numpy()
        ax.bar(np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width, mid, width, capsize=2, label=label,
               yerr=[mid - t["low"].to_numpy(), t["high"].to_numpy() - mid])
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, ncols=min(len(series), 4))
