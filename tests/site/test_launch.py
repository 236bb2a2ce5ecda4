"""The launch buttons' notebooks: written by the build (Colab) and by Binder's postBuild, led by
the install cell, never committed."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from qfail.site import launch
from qfail.site.execute import toc_chapters

ROOT = Path(__file__).resolve().parents[2]


def test_a_twin_is_the_chapter_unexecuted_behind_the_install_cell(tmp_path, monkeypatch):
    url, branch = launch.repository_url(ROOT)
    [twin] = launch.write_notebooks([ROOT / "notebooks" / "primer.md"], tmp_path, url, branch)
    nb = nbformat.read(twin, as_version=4)
    first = nb.cells[0]
    assert twin == tmp_path / "primer.ipynb" and first.cell_type == "code"
    assert launch.INSTALL_TAG in first.metadata["tags"] and f"git+{url}@{branch}" in first.source
    assert nb.cells[1].cell_type == "markdown"  # then the chapter
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1  # papermill still works
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")

    def refuse(*args, **kwargs):
        raise AssertionError(f"installed although qfail imports: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    exec(compile(first.source, "install-cell", "exec"), {})  # noqa: S102 - the notebook's own cell; qfail imports here: the cell does nothing


def test_an_executed_notebook_loses_its_outputs(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1", execution_count=3, outputs=[
        nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=3)])])
    nbformat.write(nb, tmp_path / "ch.ipynb")
    twin = launch.colab_notebook(tmp_path / "ch.ipynb", "https://github.com/o/r")
    assert twin.cells[1].outputs == [] and twin.cells[1].execution_count is None


def test_binders_post_build_writes_the_notebook_of_every_chapter(tmp_path):
    """The Binder link opens notebooks/<chapter>.ipynb: postBuild's own script writes them."""
    script = re.search(r"<<'PY'\n(.*?)\nPY\n", (ROOT / "postBuild").read_text(), re.DOTALL).group(1)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("*.ipynb"))
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True)
    assert {p.name for p in (tmp_path / "notebooks").glob("*.ipynb")} == {f"{p.stem}.ipynb" for p in toc_chapters(ROOT)}


def test_no_generated_notebook_is_committed():
    listed = subprocess.run(["git", "ls-files", "notebooks/*.ipynb"], cwd=ROOT, capture_output=True, text=True, check=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    assert listed.stdout == ""


def test_the_links_name_the_repository_the_site_branch_and_the_chapter():
    links = launch.launch_links("https://github.com/qfail/qfail/", "main", "gh-pages", "notebooks/li",
                                "https://mybinder.org", "https://colab.research.google.com")
    assert links == {"binder": "https://mybinder.org/v2/gh/qfail/qfail/main?urlpath=tree/notebooks/li.ipynb",
                     "colab": "https://colab.research.google.com/github/qfail/qfail/blob/gh-pages/_launch/notebooks/li.ipynb"}


def test_a_repository_url_that_is_not_https_is_refused(tmp_path):
    (tmp_path / "_config.yml").write_text("repository:\n  url: git@github.com:qfail/qfail\n")
    with pytest.raises(ValueError, match="repository.url must be an https:// URL"):
        launch.repository_url(tmp_path)
