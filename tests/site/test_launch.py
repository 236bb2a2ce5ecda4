"""The launch buttons' notebooks: committed, in step with the chapters, and led by the install cell."""
from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat
import pytest

from qfail.site import launch
from qfail.site.execute import toc_chapters

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("md", toc_chapters(ROOT), ids=lambda p: p.stem)
def test_each_chapter_has_its_notebook_twin_up_to_date(md):
    twin = md.with_suffix(".ipynb")
    assert twin.exists(), f"{twin.name} is missing: run `python -m qfail book` and commit it"
    expected = nbformat.writes(launch.colab_notebook(md, launch.repository_url(ROOT))) + "\n"
    assert twin.read_text() == expected, f"{twin.name} is stale: run `python -m qfail book` and commit it"


def test_the_twins_are_tracked_by_git():
    listed = subprocess.run(["git", "ls-files", "notebooks"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = set(listed.stdout.split())
    assert {f"notebooks/{md.stem}.ipynb" for md in toc_chapters(ROOT)} <= tracked


def test_the_install_cell_names_the_configured_repository_and_is_a_no_op_where_qfail_imports(monkeypatch):
    nb = nbformat.reads((ROOT / "notebooks" / "primer.ipynb").read_text(), as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and launch.INSTALL_TAG in first.metadata["tags"]
    assert f"git+{launch.repository_url(ROOT)}@main" in first.source
    assert nb.cells[1].cell_type == "markdown"  # then the chapter, unchanged

    def refuse(*args, **kwargs):
        raise AssertionError(f"installed although qfail imports: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    exec(compile(first.source, "install-cell", "exec"), {})


def test_the_parameters_cell_survives_for_papermill():
    nb = nbformat.reads((ROOT / "notebooks" / "li.ipynb").read_text(), as_version=4)
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1


def test_a_repository_url_that_is_not_https_is_refused(tmp_path):
    (tmp_path / "_config.yml").write_text("repository:\n  url: git@github.com:qfail/qfail\n")
    with pytest.raises(ValueError, match="repository.url must be an https:// URL"):
        launch.repository_url(tmp_path)
