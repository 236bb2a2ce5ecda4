"""The teaching page's chapter times come from book/expected-seconds.json (qfail.site.chapter_times)."""
from __future__ import annotations

import json

import pytest

from qfail.site import book, chapter_times, execute


@pytest.mark.parametrize(("seconds", "said"), [(8.7, "about 10 seconds"), (53.7, "about 55 seconds"),
                                                (60.0, "about a minute"), (77.9, "about 1¼ minutes"),
                                                (130.1, "about 2¼ minutes"), (153, "about 2½ minutes")])
def test_seconds_read_as_a_planner_would_say_them(seconds, said):
    assert chapter_times.about(seconds) == said


def test_every_chapter_has_a_time_and_nothing_else_does():
    chapters = {p.stem for p in execute.toc_chapters(book.ROOT)}
    assert set(json.loads((book.ROOT / chapter_times.EXPECTED).read_text())) == chapters
    assert set(chapter_times.substitutions(book.ROOT)) == {f"cold_{c}" for c in chapters}


def test_a_missing_times_file_is_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected-seconds.json is missing"):
        chapter_times.substitutions(tmp_path)
    with pytest.raises(ValueError, match="seconds=-1 is not allowed"):
        chapter_times.about(-1)
