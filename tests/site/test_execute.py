"""Parallel chapter execution: the chapters come from the table of contents and key the cache as MyST-NB does."""

import json

import pytest

from qfail import isa
from qfail.site import book, execute, runner
from qfail.site.book import ROOT


def test_toc_chapters_are_the_notebooks_in_toc_order():
    chapters = [p.stem for p in execute.toc_chapters(ROOT)]
    assert chapters[0] == "primer" and set(chapters) == set(runner.chapters())


def test_a_failing_chapter_stops_with_one_line(tmp_path, toy_chapter):
    toy_chapter("broken", "seed: int = 0  # {≥ 0} seed", 'raise ValueError(f"seed={seed} broke the chapter")'
                ).rename(tmp_path / "notebooks")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: notebooks/broken\n")
    with pytest.raises(runner.ChapterError, match=r"^chapter 'broken' failed: .*seed=0 broke the chapter$"):
        execute.execute_chapters(tmp_path, tmp_path / "cache", workers=1)
    # a chapter that ran is found in the cache the way MyST-NB looks it up: nothing runs twice
    (tmp_path / "notebooks" / "broken.md").write_text((tmp_path / "notebooks" / "broken.md").read_text().replace(
        'raise ValueError(f"seed={seed} broke the chapter")', "print(seed)"))
    assert list(execute.execute_chapters(tmp_path, tmp_path / "cache", workers=1)) == ["broken"]
    assert execute.execute_chapters(tmp_path, tmp_path / "cache", workers=1) == {}


def test_a_change_to_qfail_or_the_pins_empties_the_execution_cache(tmp_path):
    """jupyter-cache keys a chapter by its cells alone; a build after a change to qfail's code or
    the pinned versions must not render the old outputs."""
    (tmp_path / "qfail" / "site").mkdir(parents=True)
    module, pins = tmp_path / "qfail" / "site" / "a.py", tmp_path / "constraints.txt"
    module.write_text("x = 1\n")
    pins.write_text("torch==2.15.0\n")
    cache = tmp_path / "_build" / ".jupyter_cache"

    def fill() -> None:
        cache.mkdir(exist_ok=True)
        (cache / "global.db").write_text("executed chapters")

    assert not execute.drop_stale_cache(tmp_path, cache)  # a fresh clone: nothing to drop
    fill()
    assert not execute.drop_stale_cache(tmp_path, cache) and (cache / "global.db").exists()  # nothing changed
    module.write_text("x = 2\n")
    assert execute.drop_stale_cache(tmp_path, cache) and not cache.exists()
    fill()
    (tmp_path / "qfail" / "site" / "a.cpython-311.pyc").write_bytes(b"bytecode")  # not source
    assert not execute.drop_stale_cache(tmp_path, cache)
    pins.write_text("torch==2.16.0\n")
    assert execute.drop_stale_cache(tmp_path, cache)
    fill()
    assert execute.drop_stale_cache(tmp_path, cache, force=True)
    fill()
    cache.with_name(".jupyter_cache.source").unlink()  # filled before digests were recorded
    assert execute.drop_stale_cache(tmp_path, cache)


def test_the_build_report_names_its_machine_and_a_previous_build_on_another(tmp_path):
    """Seconds from two CPUs side by side would read as a change in the book."""
    (tmp_path / "build-report.json").write_text(json.dumps({"build seconds": 250.0, "machine": "another CPU",
                                                            "chapters": {}}))
    text = book.build_report(tmp_path, 12.0)
    assert f"on {isa.cpu_summary()}" in text and "the previous build ran on another CPU" in text
    assert json.loads((tmp_path / "build-report.json").read_text())["machine"] == isa.cpu_summary()
    assert "previous build ran on" not in book.build_report(tmp_path, 11.0)  # the same machine again
