"""The chapters' prose types no result: numbers and verdicts in the text come from computed cells.

A papermill rerun with other parameters must not contradict its own text, so the Markdown cells
of every chapter may not contain a measured or reported number (a decimal, a percentage, a count
of points) or a verdict. Parameters and method constants live in code spans or math, which are
skipped; the 95 % confidence level is allowed.
"""
import re
from pathlib import Path

import jupytext
import pytest

CHAPTERS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.md"))
FORBIDDEN = {
    "a decimal number": re.compile(r"(?<![\w.])\d+\.\d+"),
    "a percentage": re.compile(r"(?<![\w.])(?!95\s?%)\d+(?:\.\d+)?\s?%"),
    "a count of points": re.compile(r"\b\d+(?:\.\d+)?(?:\s?(?:to|-|–|--)\s?\d+)?\s+points?\b"),
    "a verdict": re.compile(r"\b(?:reproduced|reproduces|does not reproduce|do not reproduce)\b", re.IGNORECASE),
}


def prose(path: Path) -> list[str]:
    """The chapter's Markdown lines, without code spans, math, labels and directives."""
    lines = []
    for cell in jupytext.read(path).cells:
        if cell.cell_type != "markdown":
            continue
        text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$|``.*?``|`[^`]*`", "", cell.source, flags=re.DOTALL)
        lines += [line for line in text.splitlines() if not line.startswith(("(", ":::", "```", "{"))]
    return lines


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_typed_results_in_prose(path):
    found = [f"{kind}: {line.strip()[:100]!r}" for line in prose(path) for kind, pattern in FORBIDDEN.items()
             if pattern.search(line)]
    assert not found, "\n".join(found)


def test_the_check_catches_typed_numbers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("---\njupytext:\n  text_representation:\n    format_name: myst\n---\n# T\n\n"
                    "The drop is 24.39 points, and 98 % agree; the finding is reproduced. `eps=0.03` is fine.\n")
    kinds = {kind for line in prose(page) for kind, p in FORBIDDEN.items() if p.search(line)}
    assert kinds == set(FORBIDDEN)
