"""Build the Jupyter Book (1.x) offline: vendored browser assets, then ``jupyter-book build``.

The rendered pages must work with no network, so the scripts that MyST-NB and Sphinx would load
from CDNs are fetched once from the npm registry (pinned versions below), unpacked into
``book/_assets`` (ignored by git) and served from the site's own ``_static`` folder:
RequireJS and ``@jupyter-widgets/html-manager`` for widgets, MathJax 3 for formulas. The folder
is deliberately not called ``_static``: Jupyter Book 1 would add every script in a ``_static``
folder to every page, loading the widget manager twice.
"""
from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["ROOT", "ASSETS", "NPM_ASSETS", "fetch_assets", "place_widget_fonts", "build_book", "build_report", "stage_book"]

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "book" / "_assets"

# npm package -> {file inside the package tarball: destination under ASSETS}
NPM_ASSETS: dict[str, dict[str, str]] = {
    "requirejs@2.3.7": {"require.js": "require.min.js"},
    "@jupyter-widgets/html-manager@1.0.14": {"dist/embed-amd.js": "embed-amd.js",
                                             **{f"dist/*.{ext}": "widget-fonts/" for ext in ("woff2", "woff", "ttf", "eot", "svg")}},
    "mathjax@3.2.2": {"es5/tex-mml-chtml.js": "mathjax/tex-mml-chtml.js",
                      "es5/output/chtml/fonts/woff-v2/": "mathjax/output/chtml/fonts/woff-v2/"},
}


def _stamp() -> str:
    return json.dumps(NPM_ASSETS, sort_keys=True)


def _destination(rel: str, src: str, target: str, dest: Path) -> Path | None:
    """Where package file ``rel`` goes for the spec ``src -> target`` (a file, a folder ending in
    "/", or a glob copied flat into the folder ``target``), or None if it does not match."""
    if "*" in src:
        return dest / target / rel.rsplit("/", 1)[-1] if fnmatch.fnmatch(rel, src) else None
    if src.endswith("/"):
        return dest / (target + rel[len(src):]) if rel.startswith(src) else None
    return dest / target if rel == src else None


def fetch_assets(dest: Path = ASSETS) -> Path:
    """Download the pinned npm packages once and copy the files the pages need into ``dest``."""
    stamp = dest / ".versions.json"
    if stamp.exists() and stamp.read_text() == _stamp():
        return dest
    if shutil.which("npm") is None:
        raise RuntimeError("npm is needed once to fetch the book's offline scripts; install Node.js/npm")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for spec, files in NPM_ASSETS.items():
            out = subprocess.run(["npm", "pack", spec, "--silent", "--pack-destination", tmp],
                                 check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            with tarfile.open(Path(tmp) / out) as tar:
                members = tar.getmembers()
                for src, target in files.items():
                    for m in members:
                        rel = m.name.split("/", 1)[1]  # strip the tarball's "package/" prefix
                        path = _destination(rel, src, target, dest) if m.isfile() else None
                        if path is not None:
                            path.parent.mkdir(parents=True, exist_ok=True)
                            path.write_bytes(tar.extractfile(m).read())
    stamp.write_text(_stamp())
    return dest


def _student_config(root: Path) -> Path:
    """``_config.yml`` with every exercise's solution left out, reading the same execution cache."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text())
    config.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
    config.setdefault("execute", {})["cache"] = str(root / "_build" / ".jupyter_cache")
    path = root / "_build" / "_config.student.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def build_book(root: Path = ROOT, force: bool = False, strict: bool = True, solutions: bool = True) -> float:
    """Build ``root`` with jupyter-book; return the wall time in seconds.

    The chapters are executed first, in parallel, into the execution cache
    (:func:`qfail.site.execute.execute_chapters`); jupyter-book then renders from the cache.

    Without ``solutions`` the book goes to ``_build/student/html`` with every exercise's solution
    left out (sphinx-exercise's ``hide_solutions``), for students. ``force`` re-executes every
    chapter; a change to the pins or to the qfail code a chapter runs re-executes that chapter
    (:func:`~qfail.site.execute.drop_stale_cache`). Either way every page is rendered again (Sphinx
    would otherwise skip the chapters whose source did not change). Warnings are errors when ``strict``.
    """
    from qfail.site.execute import cached_notebooks, drop_stale_cache, execute_chapters
    from qfail.site.scorecard import write_scorecard
    from qfail.site.widgets import static_pages

    force = drop_stale_cache(root, root / "_build" / ".jupyter_cache", force) or force
    start = time.perf_counter()
    report = root / "_build" / "build-report.json"
    previous = json.loads(report.read_text()).get("chapters", {}) if report.exists() else {}
    with ThreadPoolExecutor(1) as pool:  # npm's download waits on the network while the chapters run
        assets = pool.submit(fetch_assets, root / "book" / "_assets")
        execute_chapters(root, root / "_build" / ".jupyter_cache", previous=previous)
        assets.result()
    write_scorecard(cached_notebooks(root, root / "_build" / ".jupyter_cache"), root / "book" / "scorecard.md")
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), "--keep-going"]
    html = root / "_build" / "html"
    if not solutions:
        cmd += ["--config", str(_student_config(root)), "--path-output", str(root / "_build" / "student")]
        html = root / "_build" / "student" / "_build" / "html"
    if strict:
        cmd.append("-W")
    if force:
        cmd.append("--all")
    with static_pages():  # should MyST-NB execute a chapter itself, its widgets still work offline
        subprocess.run(cmd, check=True, cwd=root)
    place_widget_fonts(html, root / "book" / "_assets")
    seconds = time.perf_counter() - start
    print(build_report(root / "_build", seconds))
    return seconds


def build_report(build: Path, total: float) -> str:
    """A table of the seconds each chapter took to execute, beside the previous build's.

    The times are jupyter-cache's (the run that filled the cache entry a page was rendered
    from; a chapter whose code did not change keeps its old time). The report is written to
    ``<build>/build-report.json``, which the next build reads for the "previous" column, with
    the CPU it ran on (:func:`qfail.isa.cpu_summary`): a previous build on another CPU is named.
    """
    import json

    from jupyter_cache import get_cache

    from qfail.isa import cpu_summary

    path = build / "build-report.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    cache_path = build / ".jupyter_cache"
    chapters = {}
    if cache_path.exists():
        for record in get_cache(cache_path).list_cache_records():
            name = Path(record.uri).stem
            seconds = record.data.get("execution_seconds")
            if seconds is not None and record.created.timestamp() >= chapters.get(name, (0, 0))[0]:
                chapters[name] = (record.created.timestamp(), float(seconds))
    report = {"build seconds": round(total, 1), "machine": cpu_summary(),
              "chapters": {k: round(v[1], 1) for k, v in sorted(chapters.items())}}
    path.write_text(json.dumps(report, indent=1))
    before = previous.get("chapters", {})
    lines = [f"{'chapter':<16} {'seconds':>8} {'previous':>9}"]
    for name, seconds in report["chapters"].items():
        old = before.get(name)
        lines.append(f"{name:<16} {seconds:>8.1f} {'' if old is None else f'{old:.1f}':>9}")
    lines.append(f"{'executed, sum':<16} {sum(report['chapters'].values()):>8.1f}")
    lines.append(f"{'this build':<16} {total:>8.1f} {previous.get('build seconds', ''):>9}")
    lines.append(f"on {report['machine']}")
    if previous.get("machine", report["machine"]) != report["machine"]:
        lines.append(f"the previous build ran on {previous['machine']}: its seconds are another machine's")
    return "\n".join(lines)


def place_widget_fonts(html: Path, assets: Path = ASSETS) -> int:
    """Put the widget manager's icon fonts where it looks for them; return the pages served.

    ``embed-amd.js`` resolves its fonts against the URL of its AMD module, which RequireJS
    places beside the page (``<page dir>/@jupyter-widgets/html-manager/dist/``); the controls'
    style sheet asks one level up (``<page dir>/@jupyter-widgets/``). Every folder with a widget
    page gets both copies (a few hundred KB) instead of 404s for button icons.
    """
    fonts = sorted((assets / "widget-fonts").glob("*"))
    folders = {page.parent for page in Path(html).rglob("*.html") if "embed-amd.js" in page.read_text()}
    for folder in folders:
        for target in (folder / "@jupyter-widgets", folder / "@jupyter-widgets" / "html-manager" / "dist"):
            target.mkdir(parents=True, exist_ok=True)
            for font in fonts:
                shutil.copy(font, target / font.name)
    return len(folders)


def stage_book(dest: Path, executed: dict[str, Path], root: Path = ROOT) -> Path:
    """A copy of the book in ``dest`` whose chapters are already-executed notebooks.

    Used by tests to check the rendering pipeline (Sphinx with -W, widgets, offline assets) on
    chapters run with small parameters: ``executed`` maps a chapter name to its ``.ipynb``;
    chapters not listed are dropped from the table of contents.
    """
    import yaml

    from qfail.site.scorecard import write_scorecard

    dest = Path(dest)
    shutil.copytree(root / "book", dest / "book", ignore=shutil.ignore_patterns("_assets"))
    fetch_assets(root / "book" / "_assets")
    shutil.copytree(root / "book" / "_assets", dest / "book" / "_assets")
    (dest / "notebooks").mkdir(exist_ok=True)
    for chapter, path in executed.items():
        shutil.copy(path, dest / "notebooks" / f"{chapter}.ipynb")
    write_scorecard([json.loads(Path(p).read_text()) for p in executed.values()], dest / "book" / "scorecard.md")
    config = yaml.safe_load((root / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    # here the chapters *are* the notebooks: the launch twins' exclusion must not drop them
    config["exclude_patterns"] = [p for p in config["exclude_patterns"] if p != "notebooks/*.ipynb"]
    (dest / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    toc = yaml.safe_load((root / "_toc.yml").read_text())

    def keep(entries: list) -> list:
        kept = []
        for entry in entries:
            if entry.get("file", "").startswith("notebooks/") and entry["file"].split("/", 1)[1] not in executed:
                continue
            for key in ("sections", "chapters", "parts"):
                if key in entry:
                    entry[key] = keep(entry[key])
            if "chapters" in entry and not entry["chapters"]:
                continue
            kept.append(entry)
        return kept

    for key in ("parts", "chapters"):
        if key in toc:
            toc[key] = keep(toc[key])
    (dest / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    return dest
