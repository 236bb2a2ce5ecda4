"""Notebooks that the book's launch buttons open: ``notebooks/<chapter>.ipynb`` for Colab and Binder.

The chapters are MyST Markdown. Colab opens only ``.ipynb`` files, and only from the repository
(``colab.research.google.com/github/<org>/<repo>/blob/<branch>/<path>``), so every chapter has a
committed ``.ipynb`` twin, written from its Markdown by :func:`write_notebooks` (run by
``python -m qfail book`` and checked by the tests). The twin is the chapter itself, unexecuted,
with one cell in front that installs qfail from the repository when the kernel lacks it (Colab);
on Binder and in a checkout the cell finds qfail and does nothing. sphinx-book-theme points its
Binder and Colab buttons at the twin because it sits beside the Markdown source.

The repository URL has one home: ``repository.url`` in ``_config.yml``, read by the theme's
buttons and by the install cell here.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["repository_url", "install_source", "colab_notebook", "write_notebooks"]

INSTALL_TAG = "qfail-install"


def repository_url(root: Path) -> str:
    """``repository.url`` of ``root/_config.yml``, without a trailing slash."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text())
    url = (config.get("repository") or {}).get("url", "")
    if not url.startswith("https://"):
        raise ValueError(f"_config.yml: repository.url must be an https:// URL; got {url!r}")
    return url.rstrip("/")


def install_source(url: str, branch: str = "main") -> str:
    """The first cell of every launched notebook: install qfail from ``url`` if it is missing."""
    return (
        "# Colab, or any kernel without qfail: install it from the repository (a few minutes, once).\n"
        "import importlib.util, subprocess, sys\n"
        "if importlib.util.find_spec(\"qfail\") is None:\n"
        f"    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"--quiet\", "
        f"\"qfail[book] @ git+{url}@{branch}\"], check=True)\n"
        "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"--quiet\", \"--no-deps\", "
        "\"torchattacks==3.5.1\"], check=True)"
    )


def colab_notebook(source: Path, url: str, branch: str = "main"):  # noqa: ANN201 - an nbformat NotebookNode
    """The chapter ``source`` (MyST Markdown) as an unexecuted notebook led by the install cell."""
    import jupytext
    import nbformat

    nb = jupytext.read(source)
    cell = nbformat.v4.new_code_cell(install_source(url, branch), metadata={"tags": [INSTALL_TAG]})
    nb.cells.insert(0, cell)
    nb.metadata.pop("jupytext", None)
    for i, c in enumerate(nb.cells):  # stable ids, so that an unchanged chapter writes the same file
        c["id"] = f"cell-{i}"
    return nb


def write_notebooks(root: Path, chapters: list[Path] | None = None) -> list[Path]:
    """Write ``<chapter>.ipynb`` beside every chapter of the table of contents; return those that
    changed. Each file is written whole (a temporary file renamed into place)."""
    import nbformat
    import yaml

    from qfail.site.execute import toc_chapters

    config = yaml.safe_load((root / "_config.yml").read_text())
    url, branch = repository_url(root), (config.get("repository") or {}).get("branch", "main")
    changed = []
    for md in chapters if chapters is not None else toc_chapters(root):
        target = md.with_suffix(".ipynb")
        text = nbformat.writes(colab_notebook(md, url, branch)) + "\n"
        if target.exists() and target.read_text() == text:
            continue
        with tempfile.NamedTemporaryFile("w", dir=target.parent, suffix=".tmp", delete=False) as tmp:
            tmp.write(text)
        os.replace(tmp.name, target)
        changed.append(target)
    return changed
