"""Parallel chapter execution: the chapters come from the table of contents and key the cache as MyST-NB does."""

import contextlib
import json
import shutil
from pathlib import Path

import pytest

from qfail import cache as cache_mod
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


def test_a_change_to_qfail_or_the_pins_drops_the_chapters_that_run_it(tmp_path, toy_chapter, monkeypatch):
    """jupyter-cache keys a chapter by its cells alone; a build after a change to the qfail code a
    chapter runs, or to the pinned versions, must not render its old outputs, and a change to code
    that no chapter runs (the scorecard) re-executes none."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    package = tmp_path / "package" / "qfail"
    shutil.copytree(cache_mod._PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache_mod, "_PACKAGE", package)
    # the imports are never run: what a chapter runs is read from its cells
    toy_chapter("robust", "seed: int = 0", "if False:\n    from qfail.papers.li import verdicts")
    toy_chapter("lazy", "seed: int = 0", "import qfail\nif False:\n    qfail.load_data\n    from qfail.papers.hu import published"
                ).rename(tmp_path / "notebooks")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n"
                                       "  - file: notebooks/robust\n  - file: notebooks/lazy\n")
    pins = tmp_path / "constraints.txt"
    pins.write_text("torch==2.15.0\n")
    cache_path = tmp_path / "_build" / ".jupyter_cache"
    chapters = execute.toc_chapters(tmp_path)

    def fill() -> None:
        cache = get_cache(cache_path)
        for path in chapters:
            cache.cache_notebook_bundle(CacheBundleIn(execute._read(path), path.as_posix()), check_validity=False,
                                        overwrite=True)

    def drop(*edited: Path, force: bool = False) -> set[str]:
        """The chapters whose entries the next build removes after ``edited`` change."""
        for path in edited:
            path.write_text(path.read_text() + "\n# edited\n")
        cache_mod.code_closure.cache_clear()
        execute.drop_stale_cache(tmp_path, cache_path, force)
        cache = get_cache(cache_path)
        kept = set()
        for path in chapters:
            with contextlib.suppress(KeyError):
                cache.match_cache_notebook(execute._read(path))
                kept.add(path.stem)
        fill()
        return {"robust", "lazy"} - kept

    try:
        assert not execute.drop_stale_cache(tmp_path, cache_path)  # a fresh clone: nothing to drop
        fill()
        assert drop() == set()  # nothing changed
        assert drop(package / "site" / "scorecard.py", package / "site" / "launch.py") == set()
        assert drop(package / "papers" / "li" / "verdicts.py") == {"robust"}
        assert drop(package / "models.py") == {"robust"}  # imported by what the chapter imports
        assert drop(package / "papers" / "hu" / "published_data" / "RQ1.csv") == {"lazy"}  # a data file it reads
        assert drop(package / "data.py") == {"robust", "lazy"}  # qfail.load_data, loaded on first use
        assert drop(package / "site" / "kernel.py") == {"robust", "lazy"}  # runs every chapter
        assert drop(pins) == {"robust", "lazy"}
        assert drop(force=True) == {"robust", "lazy"}
        (package / "papers" / "li" / "verdicts.py").write_bytes(b"")  # bytecode beside it is not source:
        (package / "papers" / "li" / "verdicts.cpython-311.pyc").write_bytes(b"bytecode")
        assert drop() == {"robust"} and drop() == set()
        stamp = cache_path.with_name(".jupyter_cache.source")
        stamp.write_text("0" * 64)  # an older build's one digest for all
        assert drop() == {"robust", "lazy"}
        stamp.unlink()  # filled before digests were recorded
        assert drop() == {"robust", "lazy"}
    finally:
        cache_mod.code_closure.cache_clear()


def test_each_chapter_runs_its_papers_code_and_none_of_the_books_own():
    """The real chapters' digests: an edit to the scorecard or the launch buttons re-executes no
    chapter, and each chapter's digest holds the module its experiments come from."""
    from qfail.cache import code_closure

    site_only = {"qfail.site.book", "qfail.site.scorecard", "qfail.site.grid", "qfail.site.launch",
                 "qfail.site.chapter_times"}
    own = {"primer": "qfail.papers.primer", "moon": "qfail.papers.moon.controller", "hu": "qfail.papers.hu.disagreements",
           "li": "qfail.papers.li.pipelines", "frank_distill": "qfail.papers.frank.stages",
           "frank_pairs": "qfail.papers.frank.pairs", "frank_analyses": "qfail.papers.frank.analyses",
           "at_scale": "qfail.papers.at_scale"}
    for path in execute.toc_chapters(ROOT):
        closure = {m for name in execute.chapter_modules(path) | set(execute._EXECUTION) for m in code_closure(name)}
        assert own[path.stem] in closure, path.stem
        assert not closure & site_only, (path.stem, sorted(closure & site_only))


def test_the_build_report_names_its_machine_and_a_previous_build_on_another(tmp_path):
    """Seconds from two CPUs side by side would read as a change in the book."""
    (tmp_path / "build-report.json").write_text(json.dumps({"build seconds": 250.0, "machine": "another CPU",
                                                            "chapters": {}}))
    text = book.build_report(tmp_path, 12.0)
    assert f"on {isa.cpu_summary()}" in text and "the previous build ran on another CPU" in text
    assert json.loads((tmp_path / "build-report.json").read_text())["machine"] == isa.cpu_summary()
    assert "previous build ran on" not in book.build_report(tmp_path, 11.0)  # the same machine again
