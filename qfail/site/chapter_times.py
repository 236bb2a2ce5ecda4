"""Chapter times in the book's prose, from the reference machine's last fresh build.

``book/expected-seconds.json`` holds the seconds each chapter took in a fresh build on the
reference machine (2 cores, no cache), which is also the order in which a fresh clone schedules
them (:mod:`qfail.site.execute`). This Sphinx extension makes each a MyST substitution,
``{{ cold_<chapter> }}``, so that the teaching page cannot drift from the file: after a fresh
``make book`` there, copy the ``chapters`` of ``_build/build-report.json`` into it.
"""
from __future__ import annotations

import json
from pathlib import Path

EXPECTED = Path("book") / "expected-seconds.json"
_QUARTERS = ("", "¼", "½", "¾")


def about(seconds: float) -> str:
    """``78`` -> ``"about 1¼ minutes"``: to the nearest 5 seconds under a minute, to the nearest
    quarter minute above (a reader plans a lab with it; the next build's times differ anyway)."""
    if seconds < 0:
        raise ValueError(f"seconds={seconds} is not allowed; expected ≥ 0")
    rounded = 5 * round(seconds / 5)
    if rounded < 60:
        return f"about {max(rounded, 5)} seconds"
    whole, quarter = divmod(round(seconds / 15), 4)
    return "about a minute" if (whole, quarter) == (1, 0) else f"about {whole}{_QUARTERS[quarter]} minutes"


def substitutions(root: Path) -> dict[str, str]:
    """``{"cold_li": "about 2¼ minutes", ...}`` for every chapter in ``root``'s expected seconds."""
    path = root / EXPECTED
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the book's chapter times come from it")
    return {f"cold_{chapter}": about(seconds) for chapter, seconds in json.loads(path.read_text()).items()}


def _substitute(app, config) -> None:  # app, config: Sphinx's
    config.myst_substitutions = {**config.myst_substitutions, **substitutions(Path(app.srcdir))}


def setup(app) -> dict:  # app: a Sphinx application
    """Sphinx extension: the chapter times as MyST substitutions (needs myst's ``substitution``)."""
    app.connect("config-inited", _substitute)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
