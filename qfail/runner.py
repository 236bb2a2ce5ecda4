"""Run a chapter with parameters: jupytext text notebook -> papermill -> executed notebook.

Papermill injects whatever it is given and enforces no types, so parameters are checked here
first, against the names, annotations and defaults of the chapter's cell tagged
``parameters``::

    bits: Literal[2, 3, 4, 8] = 4   # bit-width shown first
    seed: int = 0                   # seed of every random choice

Supported annotations: ``int``, ``float``, ``str``, ``bool``, ``list[int]``, ``list[float]``,
``list[str]`` and ``Literal[...]`` (which lists the allowed values). A wrong name or value gives
a one-line ``ParameterError`` naming it and what is allowed; an error raised while the notebook
runs is reported as its one-line ``Type: message``.
"""
from __future__ import annotations

import ast
import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ParameterError", "Parameter", "NOTEBOOK_DIR", "chapters", "declared_parameters", "coerce_parameters",
           "run_chapter", "ChapterError"]

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


class ParameterError(ValueError):
    """A parameter that the chapter does not declare, or a value of the wrong kind."""


class ChapterError(RuntimeError):
    """A chapter that failed while running; the message is the notebook's own error line."""


@dataclass(frozen=True)
class Parameter:
    name: str
    annotation: str
    default: Any
    help: str

    @property
    def allowed(self) -> tuple | None:
        m = re.fullmatch(r"Literal\[(.*)\]", self.annotation.strip())
        if not m:
            return None
        value = ast.literal_eval(f"({m.group(1)},)")
        return tuple(value)

    def describe(self) -> str:
        allowed = self.allowed
        kind = ", ".join(map(repr, allowed)) if allowed is not None else self.annotation
        return f"{self.name} ({kind}; default {self.default!r}) {self.help}".rstrip()


def chapters(notebook_dir: Path = NOTEBOOK_DIR) -> list[str]:
    return sorted(p.stem for p in notebook_dir.glob("*.md"))


def _notebook_path(chapter: str, notebook_dir: Path) -> Path:
    path = notebook_dir / f"{chapter}.md"
    if not path.exists():
        raise ParameterError(f"chapter={chapter!r} does not exist; choose one of {', '.join(chapters(notebook_dir))}")
    return path


def _parameters_cell(nb) -> Any:
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"the notebook must have exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def declared_parameters(nb) -> dict[str, Parameter]:
    """Parse ``name: annotation = default  # help`` lines of the parameters cell."""
    source = _parameters_cell(nb).source
    lines = source.splitlines()
    params: dict[str, Parameter] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name) or node.value is None:
            raise ParameterError(f"parameters cell line {node.lineno}: write 'name: type = value  # help'")
        line = lines[node.end_lineno - 1]
        help_text = line.split("#", 1)[1].strip() if "#" in line[node.value.end_col_offset:] else ""
        params[node.target.id] = Parameter(node.target.id, ast.get_source_segment(source, node.annotation),
                                           ast.literal_eval(node.value), help_text)
    return params


def _parse_text(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(p: Parameter, raw: Any, chapter: str) -> Any:
    value = _parse_text(raw) if isinstance(raw, str) else raw
    ann = p.annotation.replace(" ", "")
    allowed = p.allowed

    def bad(expected: str) -> ParameterError:
        return ParameterError(f"parameter {p.name}={raw!r} is not allowed for chapter {chapter!r}; "
                              f"expected {expected}")

    if allowed is not None:
        if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
            raise bad("one of " + ", ".join(map(repr, allowed)))
        return value
    if ann == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            raise bad("True or False")
        return value
    if ann == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if ann == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if ann == "str":
        return raw if isinstance(raw, str) else str(value)
    m = re.fullmatch(r"list\[(int|float|str)\]", ann)
    if m:
        if isinstance(raw, str):  # "2,4,8", "[2, 4]" or a single "8"
            value = [_parse_text(v.strip()) for v in raw.strip("[]").split(",") if v.strip()]
        if isinstance(value, tuple):
            value = list(value)
        may_be_empty = p.default == []  # a list whose default is empty (an opt-in extra) may stay empty
        if not isinstance(value, list) or (not value and not may_be_empty):
            raise bad(f"a non-empty list of {m.group(1)}, e.g. 2,4,8")
        inner = Parameter(p.name, m.group(1), None, "")
        return [_coerce(inner, v if not isinstance(v, str) or m.group(1) == "str" else v, chapter) for v in value]
    raise ParameterError(f"parameter {p.name} has an unsupported annotation {p.annotation!r}")


def coerce_parameters(chapter: str, given: dict[str, Any], notebook_dir: Path = NOTEBOOK_DIR) -> dict[str, Any]:
    """Check ``given`` against the chapter's declared parameters; return typed values."""
    import jupytext

    nb = jupytext.read(_notebook_path(chapter, notebook_dir))
    declared = declared_parameters(nb)
    out = {}
    for name, raw in given.items():
        if name not in declared:
            raise ParameterError(f"unknown parameter {name!r} for chapter {chapter!r}; "
                                 f"allowed: {', '.join(declared)}")
        out[name] = _coerce(declared[name], raw, chapter)
    return out


def _save_figures(nb, out_dir: Path, chapter: str) -> list[Path]:
    paths = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                path = out_dir / f"{chapter}-fig{len(paths) + 1:02d}.png"
                path.write_bytes(base64.b64decode(data["image/png"]))
                paths.append(path)
    return paths


def run_chapter(chapter: str, parameters: dict[str, Any] | None = None, out_dir: str | Path = "runs",
                notebook_dir: Path = NOTEBOOK_DIR, timeout: int = 1800) -> Path:
    """Execute ``chapter`` with ``parameters``; write ``<out_dir>/<chapter>.ipynb`` and its figures.

    Returns the executed notebook's path. Raises ``ParameterError`` before anything runs for a bad
    parameter, ``ChapterError`` (one line) if a cell fails.
    """
    import jupytext
    import nbformat
    import papermill

    values = coerce_parameters(chapter, parameters or {}, notebook_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{chapter}.ipynb"
    nb = jupytext.read(_notebook_path(chapter, notebook_dir))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    try:
        papermill.execute_notebook(nb, str(target), parameters=values, cwd=str(notebook_dir),
                                   kernel_name="python3", progress_bar=False, execution_timeout=timeout)
    except papermill.PapermillExecutionError as err:
        raise ChapterError(f"chapter {chapter!r} failed: {err.ename}: {err.evalue}") from None
    _save_figures(nbformat.read(target, as_version=4), out_dir, chapter)
    return target
