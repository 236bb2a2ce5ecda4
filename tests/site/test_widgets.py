import ipywidgets as W
import matplotlib.pyplot as plt
import pytest

from qfail.site.widgets import switcher


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

    box = switcher({"bits": [2, 4, 8], "part": ["weights", "both"]}, render, initial={"bits": 4})
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


def test_bad_controls():
    with pytest.raises(ValueError, match="controls is empty"):
        switcher({}, print)
    with pytest.raises(ValueError, match=r"initial bits=3 is not allowed; choose one of \[2, 4\]"):
        switcher({"bits": [2, 4]}, print, initial={"bits": 3})
