"""The notebooks that the book's launch buttons open, and the buttons' links (a Sphinx extension).

The chapters are MyST Markdown; Colab and Binder open ``.ipynb`` files. The build writes each
chapter's notebook twin: the chapter itself, unexecuted, led by one cell that installs qfail from
the repository when the kernel lacks it (Colab); in a checkout or on Binder the cell finds qfail
and does nothing. Nothing generated is committed:

* **Colab** opens notebooks from GitHub only, so its link points at the twin inside the built
  site, ``_launch/notebooks/<chapter>.ipynb``, on the branch the site is published from
  (``qfail_launch_branch``, default ``gh-pages``: ``ghp-import -n -p -f _build/html``).
* **Binder** builds the repository itself; its ``postBuild`` writes the twins beside the
  chapters (:func:`write_notebooks`), and the link opens ``notebooks/<chapter>.ipynb`` there.

The repository URL has one home: ``repository.url`` in ``_config.yml``, which the theme's buttons
and the install cell both read.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["repository_url", "install_source", "colab_notebook", "write_notebooks", "launch_links", "setup"]

INSTALL_TAG = "qfail-install"
LAUNCH_DIR = "_launch"


def repository_url(root: Path) -> tuple[str, str]:
    """``repository.url`` (without a trailing slash) and ``repository.branch`` of ``root/_config.yml``."""
    import yaml

    repo = yaml.safe_load((root / "_config.yml").read_text()).get("repository") or {}
    return _checked(repo.get("url", "")), repo.get("branch", "main")


def _checked(url: str) -> str:
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


def colab_notebook(source: Path, url: str, branch: str = "main"):  # -> an nbformat NotebookNode
    """The chapter ``source`` (MyST Markdown, or a notebook) unexecuted, led by the install cell."""
    import jupytext
    import nbformat

    nb = jupytext.read(source)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells.insert(0, nbformat.v4.new_code_cell(install_source(url, branch), metadata={"tags": [INSTALL_TAG]}))
    nb.metadata.pop("jupytext", None)
    nb.metadata.pop("widgets", None)
    for i, cell in enumerate(nb.cells):  # stable ids: an unchanged chapter gives the same file
        cell["id"] = f"cell-{i}"
    return nb


def write_notebooks(chapters: Iterable[Path], out_dir: Path | None, url: str, branch: str = "main") -> list[Path]:
    """Write every chapter's twin (``<stem>.ipynb``) into ``out_dir`` (None: beside the chapter);
    return the paths. Each file is written whole (a temporary file renamed into place)."""
    import nbformat

    written = []
    for source in chapters:
        target = (Path(out_dir) if out_dir is not None else source.parent) / f"{source.stem}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=target.parent, suffix=".tmp", delete=False) as tmp:
            tmp.write(nbformat.writes(colab_notebook(source, url, branch)) + "\n")
        os.replace(tmp.name, target)
        written.append(target)
    return written


def launch_links(repo_url: str, branch: str, site_branch: str, docname: str, binderhub: str,
                 colab: str) -> dict[str, str]:
    """Binder and Colab URLs for the chapter ``docname`` (``notebooks/<chapter>``)."""
    org, repo = _checked(repo_url).split("/")[-2:]
    return {"binder": f"{binderhub.rstrip('/')}/v2/gh/{org}/{repo}/{branch}?urlpath=tree/{docname}.ipynb",
            "colab": f"{colab.rstrip('/')}/github/{org}/{repo}/blob/{site_branch}/{LAUNCH_DIR}/{docname}.ipynb"}


def _chapters(app) -> list[str]:  # app: a Sphinx application
    return sorted(d for d in app.env.found_docs if d.startswith("notebooks/"))


def _rewrite_buttons(app, pagename, templatename, context, doctree) -> None:
    """Point the theme's Binder and Colab buttons at the notebooks that exist (see the module)."""
    if not pagename.startswith("notebooks/"):
        return
    options = app.config.html_theme_options
    launch = options.get("launch_buttons", {})
    links = launch_links(options.get("repository_url", ""), options.get("repository_branch", "main"),
                         app.config.qfail_launch_branch, pagename, launch.get("binderhub_url", ""),
                         launch.get("colab_url", ""))
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []) if group.get("label") == "launch-buttons" else []:
            kind = "binder" if "binder" in button.get("url", "") else "colab" if "colab" in button.get("url", "") else None
            if kind:
                button["url"] = links[kind]


def _write_twins(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    options = app.config.html_theme_options
    url, branch = _checked(options.get("repository_url", "")), options.get("repository_branch", "main")
    for docname in _chapters(app):
        write_notebooks([Path(app.env.doc2path(docname))], Path(app.outdir) / LAUNCH_DIR / "notebooks", url, branch)


def setup(app) -> dict:  # app: a Sphinx application
    """Sphinx extension: rewrite the launch buttons, write ``_launch/notebooks/*.ipynb`` into the site."""
    app.add_config_value("qfail_launch_branch", "gh-pages", "html")
    app.connect("html-page-context", _rewrite_buttons, priority=502)  # after the theme's (501)
    app.connect("build-finished", _write_twins)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
