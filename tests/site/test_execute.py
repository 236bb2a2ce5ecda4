"""Parallel chapter execution: the chapters come from the table of contents and key the cache as MyST-NB does."""

import pytest

from qfail.site import execute, runner
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
