"""Figures shared by chapters (small, so that precomputed widget panels stay light)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import torch

from ._validate import FULL_PRECISION
from .quant import choose_qparams, dequantize, qrange

__all__ = ["weight_grid", "accuracy_vs_bits"]

_STYLE = {"static": "-o", "dynamic": "--s", "qat": ":^", "pwlq": "-.d"}


def weight_grid(ax: plt.Axes, w: torch.Tensor, bits: int, title: str | None = None) -> None:
    """Histogram of ``w`` with the levels of a symmetric per-tensor ``bits``-bit grid."""
    flat = w.detach().flatten()
    ax.hist(flat.numpy(), bins=80, color="0.6")
    if bits != FULL_PRECISION:
        r = qrange(bits, "symmetric")
        scale, zp = choose_qparams(flat.min(), flat.max(), bits, "symmetric")
        levels = dequantize(torch.arange(r.q_min, r.q_max + 1, dtype=torch.float32), scale, zp)
        for level in levels[:: max(1, len(levels) // 64)]:  # at most ~64 lines stay readable
            ax.axvline(level.item(), color="tab:red", lw=0.6, alpha=0.7)
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
