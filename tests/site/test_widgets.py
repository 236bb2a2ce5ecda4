import os

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import pytest

from qfail.site.widgets import STATIC_ENV, skip_hidden_axes, static_pages, switcher


def _outputs(widget):
    if isinstance(widget, W.Output):
        return [widget]
    return [o for child in getattr(widget, "children", ()) for o in _outputs(child)]


def test_precomputes_every_panel_and_links_in_js():
    calls = []

    def render(bits, part):
        calls.append((bits, part))
        plt.figure(); plt.plot([bits])
        return f"{part}@{bits}"

    box = switcher({"bits": [2, 4, 8], "part": ["weights", "both"]}, render, initial={"bits": 4}, precompute=True)
    assert sorted(calls) == sorted((b, p) for b in (2, 4, 8) for p in ("weights", "both"))
    assert len(_outputs(box)) == 6  # (what they capture is checked on an executed notebook, test_runner)
    slider, buttons = box.children[0].children
    assert slider.index == 1
    stack = box.children[1]
    assert stack.selected_index == 1
    links = [w for w in W.widgets.widget._instances.values() if isinstance(w, W.widget_link.Link)]
    assert any(l.source == (slider, "index") and l.target == (stack, "selected_index") for l in links)
    assert sum(l.source == (buttons, "index") for l in links) == 3  # one per inner stack
    assert not plt.get_fignums()  # figures were closed after capture


def test_lazy_mode_renders_on_demand():
    calls = []
    box = switcher({"eps": [0.0, 0.1, 0.2]}, lambda eps: calls.append(eps), precompute=False)
    assert calls == [0.0]
    box.children[0].children[0].index = 2
    assert calls == [0.0, 0.2]


def test_a_panel_draws_the_same_numbers_in_any_order_and_leaves_the_generators_as_they_were():
    """All panels (the book) or one at a time in the reader's order (a live kernel): each panel
    draws the same random numbers, and the cells after the widget draw what they would without it."""
    import random

    import torch

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    def panel(shift):
        drawn[shift] = draws()

    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    expected = draws()
    for precompute, order in ((True, []), (False, [2, 1])):
        drawn = {}
        torch.manual_seed(0), np.random.seed(0), random.seed(0)
        box = switcher({"shift": [0, 1, 2]}, panel, precompute=precompute)
        for index in order:  # a reader's clicks
            box.children[0].children[0].index = index
        assert drawn == {0: expected, 1: expected, 2: expected}
        assert draws() == expected  # the next cell's draws


def test_precompute_follows_the_static_pages_setting(monkeypatch):
    calls = []
    monkeypatch.delenv(STATIC_ENV, raising=False)
    switcher({"eps": [0.0, 0.1]}, lambda eps: calls.append(eps))
    assert calls == [0.0]  # a live kernel: only the panel on show
    with static_pages():
        switcher({"eps": [0.0, 0.1]}, lambda eps: calls.append(eps))
    assert calls == [0.0, 0.0, 0.1]  # a saved page: every panel
    with static_pages():
        with static_pages(on=False):  # inside a static block too
            switcher({"eps": [0.0, 0.1]}, lambda eps: calls.append(eps))
        assert os.environ[STATIC_ENV] == "1"
    assert calls == [0.0, 0.0, 0.1, 0.0]
    assert STATIC_ENV not in os.environ


def _reply(kc, msg_id: str) -> list[dict]:
    """The iopub messages of request ``msg_id`` up to its idle status."""
    messages = []
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages
        messages.append(msg)


def _run(kc, code: str) -> str:
    msg_id = kc.execute(code)
    messages = _reply(kc, msg_id)
    errors = [m["content"]["evalue"] for m in messages if m["msg_type"] == "error"]
    assert not errors, errors
    return "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")


def test_a_live_kernel_computes_a_panel_when_the_browser_moves_the_slider():
    """Drive the switcher as a browser would: a comm ``update`` of the slider's ``index``."""
    from jupyter_client.manager import KernelManager

    from qfail.site.kernel import unix_socket_prefix

    env = {k: v for k, v in os.environ.items() if k != STATIC_ENV}
    # Unix sockets, as the chapter runs use: no TCP port for the other test worker's browser to take
    sockets = {"transport": "ipc", "ip": unix_socket_prefix()} if os.name == "posix" else {}
    km = KernelManager(kernel_name="python3", **sockets)
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        model_id = _run(kc, "from qfail.site.widgets import STATIC_ENV, static_pages, switcher\n"
                            "calls = []\n"
                            "box = switcher({'eps': [0.0, 0.1, 0.2]}, lambda eps: calls.append(eps) or f'panel {eps}')\n"
                            "print(box.children[0].children[0].model_id)").strip()
        assert _run(kc, "print(calls)").strip() == "[0.0]"
        update = kc.session.msg("comm_msg", {"comm_id": model_id, "data": {
            "method": "update", "state": {"index": 2}, "buffer_paths": []}})
        kc.shell_channel.send(update)
        shown = [m["content"]["data"].get("text/plain", "") for m in _reply(kc, update["header"]["msg_id"])
                 if m["msg_type"] == "display_data"]
        assert shown == ["'panel 0.2'"]  # rendered into the panel's Output, in answer to the move
        assert _run(kc, "print(calls)").strip() == "[0.0, 0.2]"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_bad_controls():
    with pytest.raises(ValueError, match="controls is empty"):
        switcher({}, print)
    with pytest.raises(ValueError, match=r"initial bits=3 is not allowed; choose one of \[2, 4\]"):
        switcher({"bits": [2, 4]}, print, initial={"bits": 3})


def _thumbnails():
    fig, axes = plt.subplots(2, 4, figsize=(6, 3))
    axes[0, 0].plot([1, 3, 2])
    axes[0, 0].set_title("a line")
    for k, ax in enumerate(axes.flat[1:]):
        ax.axis("off")
        ax.imshow(np.arange(64.0).reshape(8, 8) * (k + 1), cmap="gray_r")
        ax.set_title(f"FP {k} → Q {k + 1}", fontsize=8)
    return fig


def test_hiding_switched_off_axes_draws_the_same_pixels():
    from IPython.core.pylabtools import print_figure

    plain = _thumbnails()
    expected = print_figure(plain, "png", bbox_inches="tight")
    lighter = _thumbnails()
    skip_hidden_axes(lighter)
    assert [ax.xaxis.get_visible() for ax in lighter.axes] == [True] + [False] * 7
    assert print_figure(lighter, "png", bbox_inches="tight") == expected
    plt.close("all")
