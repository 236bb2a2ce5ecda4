"""The scorecard page: every verdict row of every chapter, in one table.

The rows are read from the executed notebooks themselves (the output of
:func:`qfail.verdict.show` carries them as JSON beside the HTML the page shows), so the
scorecard is rebuilt with the chapters and can never disagree with them.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from qfail.verdict import MIME, OUTCOMES

__all__ = ["verdict_tables", "scorecard_markdown", "write_scorecard"]

_HEADER = """# Scorecard

Every finding of the four works, as the chapters judged it when this book was built: the
paper's number where it reports one, ours with its 95 % interval, the rule, the paper's own
numbers judged by the same rule, and the verdict. **Reproduced** and **not reproduced** need the
whole interval on one side of the rule's threshold; **inconclusive** means it straddles it;
**partly** means a claim over several cells holds in some and fails in others. This page is
generated from the executed chapters at every build; the link in each row leads to the
chapter's own table and the measurements behind it.

The column "interval from" says what each interval is over. Only the rows over seeds or (model,
seed) instances hold the spread between training runs. The others are over the test inputs,
episodes or states of one trained model, and another seed can move them by more than their
width. A sweep over seeds, for example `python -m qfail sweep li -p seed 0,1,2` (Ray: the
README's "Sweeps"), gives each finding an interval over the seeds instead.
"""


def verdict_tables(notebook: Mapping) -> list[dict]:
    """The verdict payloads (work, chapter, anchor, rows) in an executed notebook, in order."""
    found = []
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if MIME in data:
                found.append(dict(data[MIME]))
    return found


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def scorecard_markdown(tables: Iterable[dict]) -> str:
    """The scorecard page (MyST Markdown) from verdict payloads."""
    tables = list(tables)
    rows = [(t, r) for t in tables for r in t["rows"]]
    counts = {o: sum(r["verdict"] == o for _, r in rows) for o in OUTCOMES}
    lines = [_HEADER, f"{len(rows)} findings: " + ", ".join(f"{n} {o}" for o, n in counts.items()) + ".", ""]
    # the verdict beside its finding: the table scrolls sideways on a laptop's page, and the verdict is what it is for
    columns = ["work", "finding", "verdict", "measured here (95% interval)", "interval from", "the paper reports",
               "the paper, by this rule", "section"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for table, row in rows:
        link = f"{{ref}}`{table['chapter']} <{table['anchor']}>`"
        values = [table["work"], row["finding"], f"**{row['verdict']}**", row["measured here (95% interval)"],
                  row["interval from"], row["the paper reports"], row["the paper, by this rule"], link]
        lines.append("| " + " | ".join(_cell(v) for v in values) + " |")
    if not rows:
        lines.append("\nNo chapter of this build produced verdict rows.")
    return "\n".join(lines) + "\n"


def write_scorecard(notebooks: Iterable[Mapping], dest: Path) -> Path:
    """Write the scorecard page for ``notebooks`` (executed, in table-of-contents order) to ``dest``."""
    tables = [t for nb in notebooks for t in verdict_tables(nb)]
    dest = Path(dest)
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(scorecard_markdown(tables))
    tmp.replace(dest)  # never a half-written page
    return dest
