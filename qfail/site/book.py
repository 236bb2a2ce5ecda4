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
from pathlib import Path

__all__ = ["ROOT", "ASSETS", "NPM_ASSETS", "fetch_assets", "place_widget_fonts", "build_book", "stage_book"]

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


def build_book(root: Path = ROOT, force: bool = False, strict: bool = True) -> float:
    """Build ``root`` with jupyter-book; return the wall time in seconds.

    ``force`` drops the execution cache first (jupyter-cache keys only on code cells, so a change
    inside qfail alone would not re-execute a chapter) and rebuilds every page (Sphinx would
    otherwise skip the chapters whose source did not change). Warnings are errors when ``strict``.
    """
    fetch_assets(root / "book" / "_assets")
    if force:
        shutil.rmtree(root / "_build" / ".jupyter_cache", ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), "--keep-going"]
    if strict:
        cmd.append("-W")
    if force:
        cmd.append("--all")
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=root)
    place_widget_fonts(root / "_build" / "html", root / "book" / "_assets")
    return time.perf_counter() - start


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

    dest = Path(dest)
    shutil.copytree(root / "book", dest / "book", ignore=shutil.ignore_patterns("_assets"))
    fetch_assets(root / "book" / "_assets")
    shutil.copytree(root / "book" / "_assets", dest / "book" / "_assets")
    (dest / "notebooks").mkdir(exist_ok=True)
    for chapter, path in executed.items():
        shutil.copy(path, dest / "notebooks" / f"{chapter}.ipynb")
    config = yaml.safe_load((root / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (dest / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    toc = yaml.safe_load((root / "_toc.yml").read_text())

    def keep(entries: list) -> list:
        kept = []
        for entry in entries:
            if "file" in entry and entry["file"].startswith("notebooks/"):
                if entry["file"].split("/", 1)[1] not in executed:
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
