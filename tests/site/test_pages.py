"""The rendered book: the chapters' small runs (tests/site/conftest.py) staged into a copy of
the book (execution off) and built with warnings as errors; its pages, launch links and widgets,
checked in a headless Chromium without network. ``make book`` does the full-size computation.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qfail.site import book

pytestmark = pytest.mark.book
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory, executed) -> Path:
    """The small runs staged into a copy of the book and built (execution off)."""
    tmp = tmp_path_factory.mktemp("book")
    root = book.stage_book(tmp / "src", executed)
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jb), "build", str(root), "-W", "--keep-going"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert book.place_widget_fonts(root / "_build" / "html", root / "book" / "_assets") == 1  # notebooks/
    return root / "_build" / "html"


def test_pages_exist_with_widget_state_and_local_scripts(site):
    page = (site / "notebooks" / "primer.html").read_text()
    assert 'application/vnd.jupyter.widget-state+json' in page
    assert page.count('src="../_static/embed-amd.js') == 1 and page.count('src="../_static/require.min.js') == 1
    assert "cdn.jsdelivr" not in page and "cdnjs" not in page
    assert (site / "_static" / "mathjax" / "tex-mml-chtml.js").exists()
    assert "embed-amd.js" not in (site / "book" / "intro.html").read_text()  # only widget pages load it
    assert "Bibliography" in (site / "book" / "references.html").read_text() or \
        "Frank" in (site / "book" / "references.html").read_text()


def test_every_chapters_launch_links_open_a_notebook_that_exists(site, executed):
    """Colab opens the twin the build wrote into the site (published on gh-pages); Binder the one
    its postBuild writes beside the chapter (tests/site/test_launch.py)."""
    for chapter in executed:
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


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (tests/setup_browser.sh)")
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


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (tests/setup_browser.sh)")
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


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (tests/setup_browser.sh)")
def test_every_chapter_has_objectives_and_exercises_whose_solutions_open(server, browser, executed):
    """Each chapter page: a learning-objectives box, at least four exercises, and a solution that is
    folded until its title is clicked. The glossary and teaching pages are in the book."""
    page = browser.new_page()
    for chapter in executed:
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


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (tests/setup_browser.sh)")
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


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (tests/setup_browser.sh)")
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


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (tests/setup_browser.sh)")
def test_pair_layer_and_corruption_buttons_respond_in_browser(server, browser):
    """The Frank & Ardis analyses switcher: three rows of buttons, each swaps the panel."""
    with _widget_page(server, browser, "notebooks/frank_analyses.html") as page:
        seen = [page.evaluate(_VISIBLE_IMAGES)]
        assert len(seen[0]) == 1
        for name in ("robust", "features.4", "rotate"):
            _swaps_panel(page, seen, page.get_by_role("button", name=name, exact=True).click)
