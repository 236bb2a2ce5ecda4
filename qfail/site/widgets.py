"""Widgets that still respond in the static book, with no kernel behind them.

Every panel a control can show is rendered up front into an ipywidgets ``Output``; the panels
sit in a ``Stack`` whose ``selected_index`` is tied to the control's ``index`` with ``jslink``.
The link runs in the browser, and the executed notebook saves all widget state into the page,
so moving the slider in the rendered HTML swaps panels without Python (ipywidgets docs: "Javascript
links persist when embedding widgets in html web pages without a kernel").

Several controls nest: the first control selects among Stacks, each indexed by the second, and
so on; every inner Stack is linked to its control. In a live kernel (Jupyter, Binder, Colab) the
same call renders only the initial panel and computes the others on demand, when a control moves.
Which of the two happens follows ``$QFAIL_STATIC_WIDGETS``: the book's build and
``python -m qfail run`` set it (:func:`static_pages`) for the kernels they start, because their
notebooks are saved and read later with no kernel behind them. Either way every panel is drawn
from the random generators as they stood before the widget, and leaves them so: a panel shows the
same thing in the book and live, and the cells after it compute the same numbers.
"""
from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

__all__ = ["switcher", "static_pages", "skip_hidden_axes", "STATIC_ENV"]

STATIC_ENV = "QFAIL_STATIC_WIDGETS"


@contextlib.contextmanager
def static_pages(on: bool = True) -> Iterator[None]:
    """Kernels started inside this block precompute every panel (their notebook is saved), or,
    with ``on=False``, none (only a live kernel's controls render them)."""
    before = os.environ.get(STATIC_ENV)
    os.environ[STATIC_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[STATIC_ENV]
        else:
            os.environ[STATIC_ENV] = before


def _control(name: str, values: Sequence[Any], labels: Sequence[str] | None):
    import ipywidgets as W

    labels = [str(v) for v in values] if labels is None else list(labels)
    options = list(zip(labels, range(len(values))))
    style = {"description_width": "initial"}
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return W.SelectionSlider(options=options, value=0, description=name, style=style,
                                 continuous_update=True, layout=W.Layout(width="420px"))
    return W.ToggleButtons(options=options, value=0, description=name, style=style)


def skip_hidden_axes(fig) -> None:
    """Hide the axis artists of every Axes switched off with ``axis("off")``: the same pixels.

    An Axes that is off draws no axis, yet matplotlib still lays out its ticks whenever it places
    the Axes' title (``_update_title_position`` asks each axis for its bounding box), twice per
    saved figure. Thumbnails are mostly that: hiding the axes saves about a sixth of a panel.
    """
    for ax in fig.axes:
        if not ax.axison:
            ax.xaxis.set_visible(False)
            ax.yaxis.set_visible(False)


@contextlib.contextmanager
def _random_state_kept() -> Iterator[None]:
    """Python's, numpy's and torch's global generators as they were before, inside and after.

    A panel then draws the same numbers whichever panels were drawn before it (the book draws all,
    a live reader in the order of their clicks), and the cells after a widget draw the same numbers
    however many panels it drew (all in the book, one in a live kernel).
    """
    import random

    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _render_into(out, render: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display
    from matplotlib.figure import Figure

    with out, _random_state_kept():
        result = render(**kwargs)
        figures = [plt.figure(num) for num in plt.get_fignums()]
        if isinstance(result, Figure):
            figures.append(result)
        for figure in figures:
            skip_hidden_axes(figure)
        if result is not None:
            display(result)
        for num in plt.get_fignums():  # show figures the renderer left open, then free them
            display(plt.figure(num))
            plt.close(num)


def switcher(controls: Mapping[str, Sequence[Any]], render: Callable[..., Any], *,
             labels: Mapping[str, Sequence[str]] | None = None, initial: Mapping[str, Any] | None = None,
             precompute: bool | None = None):
    """A box of controls over precomputed panels ``render(**{name: value, ...})``.

    Args:
        controls: ordered ``{name: values}``; each name is a keyword of ``render``.
        render: draws one panel: it may return something to ``display`` (a figure, a
            DataFrame, HTML) and/or leave matplotlib figures open; both are shown.
        labels: optional display labels per control.
        initial: the value each control shows first (default: its first value).
        precompute: render every combination now (needed for a saved page). ``None``: when
            ``$QFAIL_STATIC_WIDGETS`` is 1 (the book, ``python -m qfail run``); otherwise the
            panels are computed when a control first selects them.

    Returns:
        an ``ipywidgets.VBox`` (controls on top, the panel below) ready to display.

    Example:
        >>> box = switcher({"bits": [2, 4, 8]}, lambda bits: f"{bits} bits")  # doctest: +SKIP
    """
    import ipywidgets as W

    if precompute is None:
        precompute = os.environ.get(STATIC_ENV) == "1"
    if not controls:
        raise ValueError("controls is empty; pass at least one {name: values}")
    names = list(controls)
    for name in names:
        if len(controls[name]) == 0:
            raise ValueError(f"control {name!r} has no values")
    labels = labels or {}
    start = {n: 0 for n in names}
    for name, value in (initial or {}).items():
        if name not in controls or value not in list(controls[name]):
            allowed = list(controls.get(name, []))
            raise ValueError(f"initial {name}={value!r} is not allowed; choose one of {allowed}")
        start[name] = list(controls[name]).index(value)
    widgets = {n: _control(n, list(controls[n]), labels.get(n)) for n in names}
    for name, w in widgets.items():
        w.index = start[name]

    outputs: dict[tuple[int, ...], Any] = {}
    rendered: set[tuple[int, ...]] = set()  # kernel-side Output.outputs stays empty in a live kernel

    def build(prefix: tuple[int, ...]):
        depth = len(prefix)
        if depth == len(names):
            out = W.Output()
            outputs[prefix] = out
            return out
        children = [build(prefix + (i,)) for i in range(len(controls[names[depth]]))]
        stack = W.Stack(children=children, selected_index=start[names[depth]])
        W.jslink((widgets[names[depth]], "index"), (stack, "selected_index"))
        return stack

    root = build(())

    def fill(index: tuple[int, ...]) -> None:
        if index not in rendered:
            rendered.add(index)
            _render_into(outputs[index], render, {n: controls[n][i] for n, i in zip(names, index)})

    if precompute:
        for index in itertools.product(*(range(len(controls[n])) for n in names)):
            fill(index)
    else:
        fill(tuple(start[n] for n in names))

        def on_change(_change) -> None:
            fill(tuple(widgets[n].index for n in names))

        for w in widgets.values():
            w.observe(on_change, names="index")
    return W.VBox([W.HBox(list(widgets.values())), root])
