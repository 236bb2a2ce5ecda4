"""The rendering pipeline: the book builds with warnings as errors, and its widgets work offline.

The chapters are executed with small parameters by the runner and staged into a copy of the
book (execution off), so this checks Sphinx/MyST-NB, the vendored scripts and the widget state
without the full-size computation (``make book`` does that).
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest

from qfail.site import book, chapter_times, execute, runner
from qfail.verdict import MIME

pytestmark = pytest.mark.book
SMALL = {"primer": {"epochs": "3", "qat_epochs": "1", "bit_widths": "2,4,8", "bits": "2"},
         "moon": {"rl_updates": "5", "episodes": "2", "bit_widths": "8,2", "qat_updates": "1", "qat_seeds": "2",
                  "eps_values": "0.03,0.1", "eps": "0.03", "verified_states": "30", "grid_cells": "4", "bits": "8"},
         "hu": {"epochs": "2", "methods": "standard,qat", "settings": "int8", "bits": "2", "size": "8",
                "shifts": "gaussian_noise,rotate", "severities": "1,5", "mc_samples": "2", "retrain_epochs": "1"},
         "li": {"depth": "8", "width": "0.25", "epochs": "2", "adv_steps": "2", "pipelines": "a,b,e,f,g", "ptq_methods": "pwlq",
                "ptq_bits": "4", "ptq_parts": "weights,activations", "qat_parts": "activations", "qat_epochs": "1",
                "pgd_steps": "2", "limit": "40"},
         "frank_distill": {"query_budgets": "100,300", "epochs": "3"},
         "frank_pairs": {"seeds": "0", "models": "cnn", "queries": "500", "rounds": "2", "retain_epochs": "1",
                         "random_draws": "1"},
         "frank_analyses": {"queries": "500", "rounds": "2", "retain_epochs": "1", "corruptions": "gaussian_noise,rotate",
                            "severities": "1,3", "examples": "4"},
         "at_scale": {"train_inputs": "2000", "test_inputs": "300", "epochs": "2", "shifts": "rotate,stripe",
                      "shifted_inputs": "100", "attacked_inputs": "100", "pgd_steps": "2", "queries": "200", "student_epochs": "1", "rounds": "1",
                      "bit_widths": "2,8"}}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SMALL_RUN_CELL_SECONDS = 300  # no cell of a small run takes a minute: a kernel that stops answering fails the run


EMULATION_SLOWDOWN = 20  # QEMU's Haswell ran the small runs about 11 times slower (773 s against 70 s)


def _run_all(out: Path, static_widgets: bool = True, timeout: int = SMALL_RUN_CELL_SECONDS) -> dict[str, Path]:
    """Every chapter at its small parameters, two at a time (each kernel uses one thread)."""
    with execute.chapter_pool(2) as pool:
        futures = {name: pool.submit(runner.run_chapter, name, params, out, timeout=timeout,
                                     static_widgets=static_widgets)
                   for name, params in SMALL.items()}
        return {name: future.result() for name, future in futures.items()}


@contextlib.contextmanager
def _emulated_kernels(qemu: str, cpu: str, folder: Path):
    """Chapter kernels started by ``qemu -cpu cpu`` (a kernel spec named python3 found first)."""
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [qemu, "-cpu", cpu, sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": f"Python 3 ({cpu})", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(folder))
        yield


@pytest.fixture(scope="module")
def executed(tmp_path_factory, request) -> dict[str, Path]:
    """The small runs; with ``--emulate-cpu MODEL``, on that CPU and without widget panels (for
    ``-k recorded_verdict_tables``: the tables hold on another CPU)."""
    cpu = request.config.getoption("emulate_cpu")
    if cpu is None:
        return _run_all(tmp_path_factory.mktemp("runs"))
    with _emulated_kernels(request.getfixturevalue("qemu"), cpu, tmp_path_factory.mktemp("kernels")):
        return _run_all(tmp_path_factory.mktemp("runs"), static_widgets=False,
                        timeout=SMALL_RUN_CELL_SECONDS * EMULATION_SLOWDOWN)


@pytest.fixture(scope="module")
def site(tmp_path_factory, executed) -> Path:
    tmp = tmp_path_factory.mktemp("book")
    root = book.stage_book(tmp / "src", executed)
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jb), "build", str(root), "-W", "--keep-going"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert book.place_widget_fonts(root / "_build" / "html", root / "book" / "_assets") == 1  # notebooks/
    return root / "_build" / "html"


RECORDED = Path(__file__).with_name("small-run-verdicts.json")


def _verdict_tables(path: Path) -> list[list[dict]]:
    """The rows of every verdict table a run printed, as the reader sees them (the scorecard's JSON)."""
    return [o["data"][MIME]["rows"] for cell in nbformat.read(path, as_version=4).cells
            for o in cell.get("outputs", []) if MIME in o.get("data", {})]


def _first_difference(chapter: str, recorded: list[list[dict]], printed: list[list[dict]]) -> str:
    if len(recorded) != len(printed):
        return f"{chapter}: {len(printed)} verdict tables printed, {len(recorded)} recorded"
    for t, (old, new) in enumerate(zip(recorded, printed, strict=True)):
        if len(old) != len(new):
            return f"{chapter}: table {t + 1} has {len(new)} rows, {len(old)} recorded"
        for r, (a, b) in enumerate(zip(old, new, strict=True)):
            for column in sorted(a.keys() | b.keys()):
                if a.get(column) != b.get(column):
                    return f"{chapter}, table {t + 1}, row {r + 1}, {column!r}: recorded {a.get(column)!r}, printed {b.get(column)!r}"
    return ""


def test_small_runs_print_the_recorded_verdict_tables(executed, request, tmp_path, monkeypatch):
    """The same tables, digit for digit, as the machine that recorded them printed: every machine
    (AVX2 or AVX-512, any hash seed) and every run. ``--record-tables`` records them again from
    a second run with an empty cache (every model retrained) and no widget panels, after checking
    that it prints what the first run printed, so the tables depend on neither."""
    printed = {name: _verdict_tables(path) for name, path in executed.items()}
    assert all(printed.values()), [name for name, tables in printed.items() if not tables]
    if request.config.getoption("record_tables"):
        monkeypatch.setenv("QFAIL_CACHE", str(tmp_path / "cache"))
        again = {name: _verdict_tables(path) for name, path in _run_all(tmp_path / "again", static_widgets=False).items()}
        assert again == printed, next(filter(None, (_first_difference(n, again[n], printed[n]) for n in SMALL)))
        partial = RECORDED.with_suffix(".partial")
        partial.write_text(json.dumps(printed, indent=1, ensure_ascii=False) + "\n")
        partial.replace(RECORDED)
    recorded = json.loads(RECORDED.read_text())
    assert recorded.keys() == printed.keys(), sorted(recorded.keys() ^ printed.keys())
    differences = [d for n in SMALL if (d := _first_difference(n, recorded[n], printed[n]))]
    assert not differences, ("; ".join(differences) + ". Where a change meant to move them: "
                             "pytest tests/site/test_book.py --record-tables")


def test_a_chapter_runs_with_the_given_parameters(executed):
    """The runner injects the parameters, and saves the figures and the widget state beside them."""
    nb = nbformat.read(executed["primer"], as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "bit_widths = [2, 4, 8]" in injected[0].source and "bits = 2" in injected[0].source
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert list(executed["primer"].parent.glob("primer-fig*.png"))
    assert nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]


def test_no_small_run_prints_to_stderr(executed):
    """A warning in a chapter is read by its readers: none may reach an output (a verdict's
    payload with Infinity in it once printed jupyter_client's into Frank & Ardis's pairs)."""
    printed = {name: [o["text"][:300] for c in nbformat.read(path, as_version=4).cells for o in c.get("outputs", [])
                      if o.get("output_type") == "stream" and o.get("name") == "stderr"]
               for name, path in executed.items()}
    assert not any(printed.values()), {name: texts for name, texts in printed.items() if texts}


def test_pages_exist_with_widget_state_and_local_scripts(site):
    page = (site / "notebooks" / "primer.html").read_text()
    assert 'application/vnd.jupyter.widget-state+json' in page
    assert page.count('src="../_static/embed-amd.js') == 1 and page.count('src="../_static/require.min.js') == 1
    assert "cdn.jsdelivr" not in page and "cdnjs" not in page
    assert (site / "_static" / "mathjax" / "tex-mml-chtml.js").exists()
    assert "embed-amd.js" not in (site / "book" / "intro.html").read_text()  # only widget pages load it
    assert "Bibliography" in (site / "book" / "references.html").read_text() or \
        "Frank" in (site / "book" / "references.html").read_text()


def test_the_teaching_page_states_each_chapters_time_from_the_reference_build(site):
    page = (site / "book" / "teaching.html").read_text()
    assert "{{" not in page and "cold_" not in page
    for name, said in chapter_times.substitutions(book.ROOT).items():
        assert said in page, name


def test_every_chapters_launch_links_open_a_notebook_that_exists(site):
    """Colab opens the twin the build wrote into the site (published on gh-pages); Binder the one
    its postBuild writes beside the chapter (tests/site/test_launch.py)."""
    for chapter in SMALL:
        page = (site / "notebooks" / f"{chapter}.html").read_text()
        colab = re.findall(r'href="https://colab\.research\.google\.com/github/qfail/qfail/blob/gh-pages/([^"]+)"', page)
        binder = re.findall(r'href="https://mybinder\.org/v2/gh/qfail/qfail/main\?urlpath=tree/([^"]+)"', page)
        assert colab == [f"_launch/notebooks/{chapter}.ipynb"] and binder == [f"notebooks/{chapter}.ipynb"], chapter
        twin = site / colab[0]
        assert twin.is_file() and "qfail-install" in twin.read_text()


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module's pages (each test opens its own page)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield chromium
        chromium.close()


_VISIBLE_IMAGES = """() => Array.from(document.querySelectorAll('.jupyter-widgets img'))
    .filter(img => img.offsetParent !== null).map(img => img.src.slice(-200))"""


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (tests/setup_system.sh)")
def test_widgets_respond_in_browser_without_network(server, browser):
    requests: list[str] = []
    page = browser.new_page()

    def route(r):
        requests.append(r.request.url)
        if r.request.url.startswith(server):
            r.continue_()
        else:
            r.abort()

    page.route("**/*", route)
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    page.goto(f"{server}/notebooks/primer.html", wait_until="load")
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.wait_for(state="visible", timeout=30_000)
    _wait_until_drawn(page)
    assert "Loading widget" not in page.inner_text("body")
    readout = page.locator(".widget-slider .widget-readout").first
    assert readout.inner_text().strip() == "2"
    before = page.evaluate(_VISIBLE_IMAGES)
    assert len(before) == 1
    handle.focus()
    page.keyboard.press("ArrowRight")
    after = _next_state(page, _VISIBLE_IMAGES, before)
    assert readout.inner_text().strip() == "4"
    assert len(after) == 1 and after != before
    page.locator("mjx-container").first.wait_for(state="attached", timeout=30_000)  # MathJax typesets after load
    math = page.locator("mjx-container").count()
    page.close()
    outside = [u for u in requests if not u.startswith(server) and not u.startswith("data:")]
    assert not outside, f"requests left the site: {outside[:5]}"
    assert not missing, f"files missing from the site: {missing[:5]}"
    assert math > 0, "MathJax (served locally) did not typeset the formulas"


def _wait_until_drawn(page) -> None:
    """Until the widgets have replaced their loading placeholders and show a panel image."""
    page.wait_for_function(f"() => !document.body.innerText.includes('Loading widget') && ({_VISIBLE_IMAGES})().length > 0",
                           timeout=30_000)


def _next_state(page, script: str, before):
    """What ``script`` (a JS function) returns once that is non-empty and differs from ``before``:
    a control swaps its panel in the browser, so wait for the swap rather than a fixed time."""
    page.wait_for_function(f"(before) => {{ const now = ({script})(); "
                           "return now.length > 0 && JSON.stringify(now) !== JSON.stringify(before); }",
                           arg=before, timeout=10_000)
    return page.evaluate(script)


_VISIBLE_PANEL = """() => Array.from(document.querySelectorAll('.jupyter-widgets .widget-output'))
    .filter(o => o.offsetParent !== null && o.innerText.trim().length > 0).map(o => o.innerText).join('|')"""


@contextlib.contextmanager
def _widget_page(server: str, browser, path: str):
    """A page at ``path`` (no request leaves the site), once its widgets are drawn; on leaving,
    no request may have failed with a 4xx/5xx."""
    page = browser.new_page()
    missing: list[str] = []
    page.on("response", lambda r: missing.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server) else r.abort())
    page.goto(f"{server}/{path}", wait_until="load")
    page.locator(".widget-slider .noUi-handle, .widget-toggle-buttons button").first.wait_for(
        state="visible", timeout=30_000)
    _wait_until_drawn(page)
    try:
        yield page
        assert not missing, missing  # every script, style sheet and icon font is served by the site
    finally:
        page.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (tests/setup_system.sh)")
def test_scorecard_lists_every_chapters_findings_in_browser(server, browser, executed):
    """The scorecard page shows one row per verdict row of the chapters, each linking to its chapter."""
    import json

    from qfail.site.scorecard import verdict_tables

    expected = sum(len(t["rows"]) for p in executed.values() for t in verdict_tables(json.loads(p.read_text())))
    works = {t["work"] for p in executed.values() for t in verdict_tables(json.loads(p.read_text()))}
    assert works == {"Primer", "Moon", "Hu et al.", "Li et al.", "Frank & Ardis"}
    page = browser.new_page()
    page.goto(f"{server}/book/scorecard.html", wait_until="load")
    rows = page.locator("table tbody tr")
    assert rows.count() == expected
    text = page.inner_text("table")
    assert all(w in text for w in works) and "[" in text  # intervals
    links = page.locator("table tbody tr a")
    href = links.first.get_attribute("href")
    assert links.count() == expected and "notebooks/" in href and "#" in href
    page.goto(f"{server}/book/intro.html", wait_until="load")
    assert page.locator("a[href*='scorecard']").count() >= 1  # linked from the introduction
    page.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (tests/setup_system.sh)")
def test_every_chapter_has_objectives_and_exercises_whose_solutions_open(server, browser):
    """Each chapter page: a learning-objectives box, at least four exercises, and a solution that is
    folded until its title is clicked. The glossary and teaching pages are in the book."""
    page = browser.new_page()
    for chapter in SMALL:
        page.goto(f"{server}/notebooks/{chapter}.html", wait_until="load")
        assert page.locator(".admonition.objectives li").count() >= 3, chapter
        assert page.locator("div.exercise").count() >= 4, chapter
        solution = page.locator("div.solution").first
        body = solution.locator("section").first
        assert not body.is_visible(), chapter  # folded by default
        solution.locator("button.toggle-button").first.click()
        body.wait_for(state="visible", timeout=5_000)
        assert page.locator("a.reference.internal[href*='glossary']").count() >= 1, chapter
    for doc, text in (("glossary", "transitory point"), ("teaching", "A 90-minute lab")):
        page.goto(f"{server}/book/{doc}.html", wait_until="load")
        assert text in page.inner_text("main"), doc
    page.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (tests/setup_system.sh)")
def test_two_nested_controls_respond_in_browser(server, browser):
    """The Moon chapter's bits x eps switcher: each slider swaps what is visible."""
    with _widget_page(server, browser, "notebooks/moon.html") as page:
        handles = page.locator(".widget-slider .noUi-handle")
        assert handles.count() == 2
        readouts = page.locator(".widget-slider .widget-readout")
        assert [readouts.nth(i).inner_text().strip() for i in range(2)] == ["8", "0.03"]
        start_images, start_text = page.evaluate(_VISIBLE_IMAGES), page.evaluate(_VISIBLE_PANEL)
        assert len(start_images) == 1 and "0.03" in start_text
        handles.nth(1).focus()
        page.keyboard.press("ArrowRight")  # eps 0.03 -> 0.1: same maps, other table rows
        eps_text = _next_state(page, _VISIBLE_PANEL, start_text)
        assert readouts.nth(1).inner_text().strip() == "0.1"
        assert "0.1" in eps_text
        handles.nth(0).focus()
        page.keyboard.press("ArrowRight")  # bits 8 -> 2: other maps
        _next_state(page, _VISIBLE_IMAGES, start_images)
        assert readouts.nth(0).inner_text().strip() == "2"


def _swaps_panel(page, seen: list, act) -> None:
    """Run ``act`` (a click or a key press); exactly one panel image shows, and a new one."""
    act()
    now = _next_state(page, _VISIBLE_IMAGES, seen[-1])
    assert len(now) == 1 and now not in seen
    seen.append(now)


def _arrow_right(page, handle):
    return lambda: (handle.focus(), page.keyboard.press("ArrowRight"))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (tests/setup_system.sh)")
@pytest.mark.parametrize("chapter, button, slider, readout", [
    ("hu", "rotate", 0, "5"),  # shift x severity: severity 1 -> 5
    ("li", "weights", 1, "2"),  # bits x part x level: level 1 -> 2
])
def test_buttons_and_sliders_respond_in_browser(server, browser, chapter, button, slider, readout):
    """A button and a slider of the chapter's switcher each swap the panel."""
    with _widget_page(server, browser, f"notebooks/{chapter}.html") as page:
        seen = [page.evaluate(_VISIBLE_IMAGES)]
        assert len(seen[0]) == 1
        _swaps_panel(page, seen, page.get_by_role("button", name=button).click)
        _swaps_panel(page, seen, _arrow_right(page, page.locator(".widget-slider .noUi-handle").nth(slider)))
        assert page.locator(".widget-slider .widget-readout").nth(slider).inner_text().strip() == readout


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (tests/setup_system.sh)")
def test_pair_layer_and_corruption_buttons_respond_in_browser(server, browser):
    """The Frank & Ardis analyses switcher: three rows of buttons, each swaps the panel."""
    with _widget_page(server, browser, "notebooks/frank_analyses.html") as page:
        seen = [page.evaluate(_VISIBLE_IMAGES)]
        assert len(seen[0]) == 1
        for name in ("robust", "features.4", "rotate"):
            _swaps_panel(page, seen, page.get_by_role("button", name=name, exact=True).click)


def test_a_failing_cell_fails_the_build(tmp_path):
    """No silently broken chapter: the real _config.yml makes a raising cell stop the build."""
    import yaml

    shutil.copy(book.ROOT / "_config.yml", tmp_path / "_config.yml")
    config = yaml.safe_load((tmp_path / "_config.yml").read_text())
    for key in ("html_static_path", "bibtex_reference_style"):  # no assets or bibliography needed here
        config["sphinx"]["config"].pop(key)
    config.pop("bibtex_bibfiles")
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "book").mkdir()
    shutil.copy(book.ROOT / chapter_times.EXPECTED, tmp_path / chapter_times.EXPECTED)  # the config's extension reads it
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: broken\n")
    (tmp_path / "broken.md").write_text(
        "---\njupytext:\n  text_representation:\n    format_name: myst\nkernelspec:\n  name: python3\n"
        "  display_name: Python 3\n---\n# Broken\n\n```{code-cell} ipython3\nraise ValueError('boom')\n```\n")
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jb), "build", str(tmp_path), "-W"], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "boom" in proc.stdout + proc.stderr
