"""Run a chapter with parameters: jupytext text notebook -> papermill -> executed notebook.

Papermill injects whatever it is given and enforces no types, so parameters are checked here
first, in full and before a kernel starts, against the chapter's cell tagged ``parameters``.
Each line declares a name, a type, a default and, in braces at the start of its comment, the
constraints a value must meet::

    bits: Literal[2, 3, 4, 8] = 4   # bit-width shown first
    epochs: int = 30                # {≥ 1} training epochs
    eps: float = 0.03               # {in eps_values} radius the widgets show first
    dataset: str = "digits"         # {in DATASETS; data} the data set (its files must be present)

Types: ``int``, ``float``, ``str``, ``bool``, ``list[int]``, ``list[float]``, ``list[str]`` and
``Literal[...]`` (the allowed values). Constraints (written without ``=``, which papermill's own parser would trip on), separated by ``;`` (for a list they apply to
every element): ``≥ a``, ``> a``, ``≤ b``, ``< b`` (a number, another parameter's name, or ``min(NAME)`` / ``max(NAME)`` of a list parameter); ``in NAME`` (another parameter's value, or
a constant of :data:`CONSTANTS`), ``in [a, b]`` (a literal list); ``len n``; ``6n+2``
(``k*n+r`` in general); ``unique``; ``has 'x'`` (a list includes ``'x'``); ``data`` (the data set's files are present); ``device``
(a device this machine has). A list must not be empty unless its default is. A wrong name or
value gives a one-line ``ParameterError`` naming it and what is allowed; an error raised while
the notebook runs is reported as its one-line ``Type: message``. The executed notebook is written
to a temporary folder and moved into place only when every cell ran.
"""
from __future__ import annotations

import ast
import base64
import importlib
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ParameterError", "Parameter", "NOTEBOOK_DIR", "CELL_SECONDS", "CONSTANTS", "chapters",
           "declared_parameters", "coerce_parameters", "check_constraints", "run_chapter", "ChapterError"]

# Names a constraint may use for a set of allowed values (``in DATASETS``), read only when needed.
CONSTANTS = {"DATASETS": ("qfail.data", "DATASETS"), "NATURAL_SHIFTS": ("qfail.data", "NATURAL_SHIFTS"),
             "SHIFTS": ("qfail.shift", "SHIFTS"), "TRAINING_METHODS": ("qfail.train", "TRAINING_METHODS"),
             "MODELS": ("qfail.models", "MODELS"), "SETTINGS": ("qfail.papers.hu.disagreements", "SETTINGS"),
             "PIPELINES": ("qfail.papers.li.pipelines", "PIPELINES"), "PARTS": ("qfail.sweep", "PARTS"),
             "TEACHERS": ("qfail.distill", "TEACHERS")}

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
CELL_SECONDS = 1800  # how long a cell may run before its run fails, unless a caller says otherwise


class ParameterError(ValueError):
    """A parameter that the chapter does not declare, or a value of the wrong kind."""


class ChapterError(RuntimeError):
    """A chapter that failed while running; the message is the notebook's own error line."""


@dataclass(frozen=True)
class Parameter:
    """One line of a chapter's parameters cell."""

    name: str
    annotation: str
    default: Any
    help: str
    constraints: tuple[str, ...] = field(default=())

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
        where = f"; {'; '.join(self.constraints)}" if self.constraints else ""
        return f"{self.name} ({kind}{where}; default {self.default!r}) {self.help}".rstrip()


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
        constraints: tuple[str, ...] = ()
        m = re.match(r"\{([^}]*)\}\s*(.*)", help_text)
        if m:
            constraints = tuple(c.strip() for c in m.group(1).split(";") if c.strip())
            help_text = m.group(2)
        params[node.target.id] = Parameter(node.target.id, ast.get_source_segment(source, node.annotation),
                                           ast.literal_eval(node.value), help_text, constraints)
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
        return [_coerce(inner, v, chapter) for v in value]
    raise ParameterError(f"parameter {p.name} has an unsupported annotation {p.annotation!r}")


def _constant(name: str) -> tuple:
    module, attr = CONSTANTS[name]
    return tuple(getattr(importlib.import_module(module), attr))


def _papermill_guess_filter(record: logging.LogRecord) -> bool:
    """Drop papermill's "Passed unknown parameter" warning: its own guess at the parameters cell
    skips ``Literal[...]`` annotations, and qfail has checked every parameter before it runs."""
    return not record.getMessage().startswith("Passed unknown parameter")


_BOUND = re.compile(r"(≥|>|≤|<)\s*(\S+)")  # a comparison rule: "≥ 8", "< eps"
_COMPARE = {"≥": lambda v, b: v >= b, ">": lambda v, b: v > b, "≤": lambda v, b: v <= b, "<": lambda v, b: v < b}


def _violation(rule: str, value: Any, values: dict[str, Any], others: tuple[str, ...] = (),
               choices: tuple = ()) -> str | None:
    """What ``value`` (one element) must be under ``rule``, or None if it complies. ``others``, the
    parameter's other rules, narrow the examples a ``kn+r`` rule lists to values they allow too;
    ``choices``, its ``Literal`` values, are what the ``data`` rule says are present here."""
    m = _BOUND.fullmatch(rule)
    if m:
        ref = m.group(2)
        of_list = re.fullmatch(r"(min|max)\((\w+)\)", ref)  # the least or greatest element of a list parameter
        if of_list and of_list.group(2) in values:
            bound = (min if of_list.group(1) == "min" else max)(values[of_list.group(2)])
        else:
            bound = values[ref] if ref in values else ast.literal_eval(ref)  # a number, or another parameter's value
        shown = f"{bound:g}" if ref not in values and not of_list else f"{ref} (= {bound:g})"
        return None if _COMPARE[m.group(1)](value, bound) else f"{m.group(1)} {shown}"
    m = re.fullmatch(r"in\s+(.+)", rule)
    if m:
        ref = m.group(1).strip()
        if ref.startswith("["):
            allowed = tuple(ast.literal_eval(ref))
        elif ref in values:
            allowed = tuple(values[ref]) if isinstance(values[ref], list) else (values[ref],)
        elif ref in CONSTANTS:
            allowed = _constant(ref)
        else:
            raise ParameterError(f"constraint 'in {ref}' names no parameter or constant")
        shown = ", ".join(map(repr, allowed))
        return None if value in allowed else f"one of {shown}" + (f" (the values of {ref})" if ref in values else "")
    m = re.fullmatch(r"(\d+)n\+(\d+)", rule)
    if m:
        k, r = int(m.group(1)), int(m.group(2))
        if value >= r and (value - r) % k == 0:
            return None
        bounds = [o for o in others if _BOUND.fullmatch(o)]
        allowed = [v for v in range(r, r + 1000 * k, k) if not any(_violation(b, v, values) for b in bounds)][:3]
        return f"of the form {k}n+{r}" + "".join(f" and {b}" for b in bounds) + \
            (f" ({', '.join(map(str, allowed))}, ...)" if allowed else " (no such value)")
    if rule == "data":
        from qfail.data import data_present, default_data_root

        if data_present(value):
            return None
        present = ", ".join(repr(c) for c in choices if data_present(c)) or "none"
        return f"a data set whose files are present: here {present} (torchvision's sets need their files under " \
            f"$QFAIL_DATA, now {default_data_root()}; Fashion-MNIST comes with Debian's dataset-fashion-mnist)"
    if rule == "device":
        import torch

        name = str(value).split(":")[0]
        if name not in ("cpu", "cuda", "auto"):
            return "one of 'cpu', 'cuda', 'auto'"
        return None if name != "cuda" or torch.cuda.is_available() else "'cpu' or 'auto' (this machine has no CUDA)"
    raise ParameterError(f"unknown constraint {rule!r}")


def check_constraints(chapter: str, declared: dict[str, Parameter], values: dict[str, Any]) -> None:
    """Raise a one-line ``ParameterError`` for the first value that breaks a declared constraint.

    A parameter whose rules name another (``≥ min(choices)``, ``in bit_widths``) is checked after
    the others, so that a bad ``choices`` is reported as itself, not as the budget it bounds."""
    def names_another(p: Parameter) -> bool:
        return any(re.search(rf"\b{re.escape(n)}\b", rule) for rule in p.constraints for n in declared if n != p.name)

    for p in sorted(declared.values(), key=names_another):
        value = values[p.name]
        items = value if isinstance(value, list) else [value]
        for rule in p.constraints:
            if rule == "unique":
                if len(set(items)) != len(items):
                    raise ParameterError(f"parameter {p.name}={value!r} is not allowed for chapter {chapter!r}; "
                                         "expected no repeated values")
                continue
            m = re.fullmatch(r"has\s+(.+)", rule)
            if m:
                needed = ast.literal_eval(m.group(1))
                if needed not in items:
                    raise ParameterError(f"parameter {p.name}={value!r} is not allowed for chapter {chapter!r}; "
                                         f"expected a list that includes {needed!r}")
                continue
            m = re.fullmatch(r"len\s+(\d+)", rule)
            if m:
                if len(items) != int(m.group(1)):
                    raise ParameterError(f"parameter {p.name}={value!r} is not allowed for chapter {chapter!r}; "
                                         f"expected exactly {m.group(1)} values")
                continue
            for item in items:
                need = _violation(rule, item, values, tuple(o for o in p.constraints if o != rule), p.allowed or ())
                if need is not None:
                    shown = value if not isinstance(value, list) else f"{value!r} (element {item!r})"
                    raise ParameterError(f"parameter {p.name}={shown} is not allowed for chapter {chapter!r}; "
                                         f"expected {need}")


def coerce_parameters(chapter: str, given: dict[str, Any], notebook_dir: Path = NOTEBOOK_DIR) -> dict[str, Any]:
    """Check ``given`` against the chapter's declared parameters (types and constraints, with
    the defaults filling in the rest); return the typed values that were given."""
    import jupytext

    nb = jupytext.read(_notebook_path(chapter, notebook_dir))
    declared = declared_parameters(nb)
    out = {}
    for name, raw in given.items():
        if name not in declared:
            raise ParameterError(f"unknown parameter {name!r} for chapter {chapter!r}; "
                                 f"allowed: {', '.join(declared)}")
        out[name] = _coerce(declared[name], raw, chapter)
    check_constraints(chapter, declared, {p.name: p.default for p in declared.values()} | out)
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
                notebook_dir: Path = NOTEBOOK_DIR, timeout: int = CELL_SECONDS, static_widgets: bool = True) -> Path:
    """Execute ``chapter`` with ``parameters``; write ``<out_dir>/<chapter>.ipynb`` and its figures.

    ``static_widgets``: precompute every widget panel, so that the saved notebook's widgets work
    without a kernel (``False`` where only the printed outputs matter).

    Returns the executed notebook's path. Raises ``ParameterError`` before anything runs for a bad
    parameter, ``ChapterError`` (one line) if a cell fails or runs longer than ``timeout`` seconds.
    """
    import jupytext
    import nbformat
    import papermill
    from nbclient.exceptions import CellTimeoutError

    from qfail.site.kernel import CLIENT_OPTIONS, OUTPUT_SECONDS
    from qfail.site.widgets import static_pages

    values = coerce_parameters(chapter, parameters or {}, notebook_dir)
    papermill_log = logging.getLogger("papermill")
    if _papermill_guess_filter not in papermill_log.filters:
        papermill_log.addFilter(_papermill_guess_filter)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{chapter}.ipynb"
    nb = jupytext.read(_notebook_path(chapter, notebook_dir))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    # a failed or interrupted run leaves nothing in out_dir: execute elsewhere, move on success
    with tempfile.TemporaryDirectory(prefix=f".{chapter}-", dir=out_dir) as tmp:
        executed = Path(tmp) / target.name
        try:
            with static_pages(static_widgets):
                # the kernel is stopped, not asked to exit, once its last cell has answered: a
                # kernel that loaded torch takes a second to tear down, and nothing is left to save
                papermill.execute_notebook(nb, str(executed), parameters=values, cwd=str(notebook_dir),
                                           kernel_name="python3", progress_bar=False, execution_timeout=timeout,
                                           shutdown_kernel="immediate", **CLIENT_OPTIONS)
        except papermill.PapermillExecutionError as err:
            raise ChapterError(f"chapter {chapter!r} failed: {err.ename}: {err.evalue}") from None
        except CellTimeoutError as err:
            what = (f"a cell's outputs did not arrive within {OUTPUT_SECONDS} s of its end" if "IOPub" in str(err)
                    else f"a cell ran longer than timeout={timeout} s")
            raise ChapterError(f"chapter {chapter!r} failed: {what}") from None
        figures = _save_figures(nbformat.read(executed, as_version=4), Path(tmp), chapter)
        for old in out_dir.glob(f"{chapter}-fig*.png"):
            old.unlink()
        for path in [*figures, executed]:
            shutil.move(str(path), out_dir / path.name)
    return target
