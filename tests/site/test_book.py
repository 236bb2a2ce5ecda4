"""The chapters' small runs (tests/site/conftest.py) print the same verdict tables when run
again, and a failing cell fails the book build. Their pages are checked in test_pages.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from qfail.site import book

pytestmark = pytest.mark.book


def _verdict_outputs(path: Path) -> list[str]:
    """The rendered outputs of every cell that builds or shows a verdict table."""
    import nbformat

    out = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and "verdict" in cell.source:
            for o in cell.get("outputs", []):
                data = o.get("data", {})
                text = data.get("text/html") or data.get("text/markdown") or data.get("text/plain") or o.get("text", "")
                text = "".join(text) if isinstance(text, list) else text
                text = re.sub(r"T_[0-9a-f]{5}", "T_", text)  # pandas' Styler names each table at random
                out.append(text)
    return out


def test_two_fresh_runs_print_identical_verdict_tables(executed, run_small, tmp_path, monkeypatch):
    """Same parameters, an empty cache (every model retrained): the same verdict tables, digit for
    digit. The second run renders no widget panel, so the tables must not depend on them either."""
    monkeypatch.setenv("QFAIL_CACHE", str(tmp_path / "cache"))
    again = run_small(tmp_path / "again", static_widgets=False)
    for name in executed:
        first = _verdict_outputs(executed[name])
        assert first and first == _verdict_outputs(again[name]), name


def test_a_chapter_runs_with_the_given_parameters(executed):
    """The runner injects the parameters, and saves the figures and the widget state beside them."""
    nb = nbformat.read(executed["primer"], as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "bit_widths = [2, 4, 8]" in injected[0].source and "bits = 2" in injected[0].source
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert list(executed["primer"].parent.glob("primer-fig*.png"))
    assert nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]


def test_a_failing_cell_fails_the_build(tmp_path):
    """No silently broken chapter: the real _config.yml makes a raising cell stop the build."""
    import yaml

    shutil.copy(book.ROOT / "_config.yml", tmp_path / "_config.yml")
    config = yaml.safe_load((tmp_path / "_config.yml").read_text())
    for key in ("html_static_path", "bibtex_reference_style"):  # no assets or bibliography needed here
        config["sphinx"]["config"].pop(key)
    config.pop("bibtex_bibfiles")
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: broken\n")
    (tmp_path / "broken.md").write_text(
        "---\njupytext:\n  text_representation:\n    format_name: myst\nkernelspec:\n  name: python3\n"
        "  display_name: Python 3\n---\n# Broken\n\n```{code-cell} ipython3\nraise ValueError('boom')\n```\n")
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jb), "build", str(tmp_path), "-W"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "boom" in proc.stdout + proc.stderr
