"""A chapter over a grid of parameters, one papermill run per point, on Ray: ``python -m qfail sweep``.

    python -m qfail sweep primer -p seed 0,1,2 -p bits 2,4 -o sweeps          # 6 runs, local Ray
    python -m qfail sweep li -p seed 0,1 -p pipelines "a,b;a,b,e" --address ray://head:10001

**Grid syntax.** Every ``-p NAME VALUES`` gives the values of one axis; the grid is their
product. For a scalar parameter the values are separated by commas (``-p seed 0,1,2``). For a
list-valued parameter the comma already separates the items of one list, so the alternatives are
separated by semicolons (``-p bit_widths "2,4;2,4,8"`` is two points; ``-p bit_widths 2,4`` is
one). Semicolons work for scalars too. Every point is checked against the chapter's parameters
cell before anything starts (:func:`qfail.site.runner.coerce_parameters`).

**Where it runs.** A local Ray started here with ``workers`` CPUs (no server to set up), or the
cluster at ``address`` (``--address`` or ``$RAY_ADDRESS``); the nodes need qfail installed (same
pins). Each run asks Ray for one CPU, or one GPU where its ``device`` parameter is ``cuda`` (or ``auto``
on a cluster with GPUs; a driver without CUDA cannot pass ``cuda`` itself, so use ``auto``). The
executed notebook comes back to this machine, so no shared file system is needed.

**Resuming.** A run's folder is named by a hash of the chapter and its parameters
(``<out>/<chapter>-<hash>``) and holds ``parameters.json``, the executed ``<chapter>.ipynb`` and
``verdicts.json`` (the verdict rows, :mod:`qfail.verdict`), written last and whole: a folder with
``verdicts.json`` is complete and is skipped, so an interrupted sweep resumes where it stopped.
A failing run reports its one-line error and leaves no folder; the others go on.

**Report.** ``<out>/<chapter>-sweep.html`` (and ``.csv``): every finding at every point of the
grid but the seed, with the mean over seeds and a t interval over them (or the single run's own
interval where there is one seed), how many seeds reproduced it, and a figure.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from qfail.site import runner

__all__ = ["grid_points", "run_key", "Outcome", "run_point", "ray_session", "sweep", "combined_table", "write_report"]


def _declared(chapter: str, notebook_dir: Path = runner.NOTEBOOK_DIR) -> dict[str, runner.Parameter]:
    import jupytext

    return runner.declared_parameters(jupytext.read(runner._notebook_path(chapter, Path(notebook_dir))))


def grid_points(chapter: str, axes: dict[str, str], notebook_dir: Path = runner.NOTEBOOK_DIR) -> list[dict[str, Any]]:
    """Every point of the grid ``{name: values text}``, typed and checked, in axis order."""
    declared = _declared(chapter, notebook_dir)
    values: dict[str, list[str]] = {}
    for name, text in axes.items():
        if name not in declared:
            raise runner.ParameterError(f"unknown parameter {name!r} for chapter {chapter!r}; "
                                        f"allowed: {', '.join(declared)}")
        listed = declared[name].annotation.replace(" ", "").startswith("list[")
        parts = [p.strip() for p in re.split(";" if listed else "[,;]", text)]
        if not all(parts):
            raise runner.ParameterError(f"parameter {name!r}: empty value in {text!r} (scalars: 0,1,2; "
                                        f"lists: 2,4;2,4,8)")
        values[name] = parts
    points = [dict(zip(values, combo)) for combo in itertools.product(*values.values())]
    return [runner.coerce_parameters(chapter, point, Path(notebook_dir)) for point in points]


def run_key(chapter: str, parameters: dict[str, Any]) -> str:
    """The folder name of one run: the chapter and a hash of its typed parameters."""
    text = json.dumps({"chapter": chapter, "parameters": parameters}, sort_keys=True)
    return f"{chapter}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass
class Outcome:
    """What became of one point: ``done`` (ran now), ``skipped`` (complete before) or ``failed``."""

    key: str
    parameters: dict[str, Any]
    status: str
    error: str | None = None


def run_point(chapter: str, parameters: dict[str, Any], notebook_dir: Path = runner.NOTEBOOK_DIR,
              timeout: int = runner.CELL_SECONDS) -> dict[str, Any]:
    """Run one point in a temporary folder; return the executed notebook (text) and its verdict
    tables, or the one-line error (also when a cell runs longer than ``timeout`` seconds). Runs on
    a Ray worker, or here."""
    from qfail.site.scorecard import verdict_tables

    with tempfile.TemporaryDirectory(prefix="qfail-sweep-") as tmp:
        try:
            path = runner.run_chapter(chapter, parameters, Path(tmp), Path(notebook_dir), timeout=timeout)
        except (runner.ChapterError, runner.ParameterError) as err:
            return {"error": str(err)}
        except Exception as err:  # noqa: BLE001 - a worker must report, not die
            return {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
        text = path.read_text()
    return {"notebook": text, "verdicts": verdict_tables(json.loads(text))}


def _store(folder: Path, chapter: str, parameters: dict[str, Any], result: dict[str, Any]) -> None:
    """Write a completed run whole: into a temporary folder, renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    (tmp / "parameters.json").write_text(json.dumps(parameters, indent=1, sort_keys=True))
    (tmp / f"{chapter}.ipynb").write_text(result["notebook"])
    (tmp / "verdicts.json").write_text(json.dumps(result["verdicts"], indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def _device(parameters: dict[str, Any], declared: dict[str, runner.Parameter]) -> str:
    return str(parameters.get("device", declared["device"].default if "device" in declared else "cpu"))


@contextlib.contextmanager
def ray_session(workers: int | None = None, address: str | None = None) -> Iterator[None]:
    """Use the Ray this process already joined, else join the cluster at ``address`` (or
    ``$RAY_ADDRESS``), else start a local Ray with ``workers`` CPUs (default: all); on leaving,
    stop only what was started here."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    local = {"num_cpus": workers or os.cpu_count(), "object_store_memory": 256 * 1024 ** 2}
    ray.init(address=address, **({} if address else local),
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def sweep(chapter: str, axes: dict[str, str], out: str | Path = "sweeps", workers: int | None = None,
          address: str | None = None, progress: bool = True, notebook_dir: Path = runner.NOTEBOOK_DIR,
          timeout: int = runner.CELL_SECONDS) -> list[Outcome]:
    """Run every point of the grid not already complete under ``out``; return one outcome per point.

    A local Ray gets ``workers`` CPUs (default: all); ``address`` (or ``$RAY_ADDRESS``) joins a
    cluster instead. A run whose cell takes longer than ``timeout`` seconds fails with that error.
    Ends by writing the report (:func:`write_report`).
    """
    points = grid_points(chapter, axes, notebook_dir)
    declared = _declared(chapter, notebook_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outcomes = {run_key(chapter, p): Outcome(run_key(chapter, p), p, "skipped") for p in points}
    todo = [o for o in outcomes.values() if not (out / o.key / "verdicts.json").exists()]
    if todo:
        import ray

        with ray_session(workers, address):
            remote = ray.remote(run_point)
            gpus = ray.cluster_resources().get("GPU", 0)
            pending = {}
            for o in todo:
                device = _device(o.parameters, declared)
                if device.startswith("cuda") and not gpus:
                    o.status, o.error = "failed", f"device={device!r} but the Ray cluster has no GPU; use 'cpu' or 'auto'"
                    continue
                wants = {"num_gpus": 1} if device.startswith("cuda") or (device == "auto" and gpus) else {"num_cpus": 1}
                pending[remote.options(**wants).remote(chapter, o.parameters, Path(notebook_dir), timeout)] = o
            while pending:
                # a second at a time: Ray's wait does not return when a signal handler raises
                # (Ctrl-C, a test's time limit), so the signal surfaced only once a run had ended
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                if not ready:
                    continue
                o = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except Exception as err:  # noqa: BLE001 - a lost worker fails its run, not the sweep
                    result = {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
                if "error" in result:
                    o.status, o.error = "failed", result["error"]
                else:
                    _store(out / o.key, chapter, o.parameters, result)
                    o.status = "done"
                if progress:
                    print(f"{o.key} {o.status}: {json.dumps(o.parameters)}" + (f": {o.error}" if o.error else ""),
                          flush=True)
    write_report(chapter, [o for o in outcomes.values() if o.status != "failed"], out)
    return list(outcomes.values())


def _runs(chapter: str, outcomes: list[Outcome], out: Path) -> pd.DataFrame:
    """One row per (run, finding): the grid point, the row's numbers and its verdict."""
    rows = []
    for o in outcomes:
        for table in json.loads((out / o.key / "verdicts.json").read_text()):
            estimates = table.get("estimates") or [None] * len(table["rows"])
            for row, est in zip(table["rows"], estimates):
                est = est or {}
                rows.append({**{k: json.dumps(v) if isinstance(v, list) else v for k, v in o.parameters.items()},
                             "run": o.key, "finding": row["finding"], "verdict": row["verdict"],
                             "value": est.get("value"), "low": est.get("low"), "high": est.get("high"),
                             "unit": est.get("unit", "")})
    return pd.DataFrame(rows)


def combined_table(chapter: str, outcomes: list[Outcome], out: str | Path) -> pd.DataFrame:
    """Every finding at every grid point but the seed: mean over seeds, 95 % interval over them
    (a t interval; the run's own interval where there is one seed) and the verdicts' tally."""
    from qfail.verdict import t_interval

    runs = _runs(chapter, outcomes, Path(out))
    if runs.empty:
        return runs
    axes = [c for c in runs.columns if c not in ("run", "finding", "verdict", "value", "low", "high", "unit", "seed")]
    table = []
    for key, group in runs.groupby([*axes, "finding"], sort=False, dropna=False):
        values = group.value.dropna().astype(float)
        if len(values) >= 2:
            est = t_interval(values.tolist(), what="seeds")
            mean, low, high, basis = est.value, est.low, est.high, f"t over {len(values)} seeds"
        elif len(values) == 1:
            mean, low, high, basis = values.iloc[0], group.low.iloc[0], group.high.iloc[0], "the run's own interval"
        else:
            mean = low = high = float("nan")
            basis = "no number"
        tally = group.verdict.value_counts()
        table.append({**dict(zip([*axes, "finding"], key if isinstance(key, tuple) else (key,))),
                      "runs": len(group), "mean": mean, "low": low, "high": high, "unit": group.unit.iloc[0],
                      "interval": basis,
                      "verdicts": ", ".join(f"{n} {v}" for v, n in tally.items())})
    return pd.DataFrame(table)


def _figure(table: pd.DataFrame) -> str:
    """The findings' means and intervals at every grid point, one panel per finding (PNG, base64)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    findings = list(dict.fromkeys(table.finding))
    axes_cols = [c for c in table.columns if c not in ("finding", "runs", "mean", "low", "high", "unit", "interval",
                                                        "verdicts")]
    fig, axes = plt.subplots(len(findings), 1, figsize=(8, 1.6 + 1.2 * len(findings)), squeeze=False)
    for ax, f in zip(axes[:, 0], findings):
        sub = table[table.finding == f].reset_index(drop=True)
        labels = [", ".join(f"{c}={r[c]}" for c in axes_cols) or "all" for _, r in sub.iterrows()]
        mean = sub["mean"].astype(float)
        err = [(mean - sub.low.astype(float)).clip(lower=0), (sub.high.astype(float) - mean).clip(lower=0)]
        ax.errorbar(range(len(sub)), mean, yerr=err, fmt="o", capsize=3)
        ax.set_xticks(range(len(sub)), labels, fontsize=7)
        ax.set_title(f[:90], fontsize=8)
        ax.set_ylabel(sub.unit.iloc[0] or "value", fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def write_report(chapter: str, outcomes: list[Outcome], out: str | Path) -> Path | None:
    """``<out>/<chapter>-sweep.html`` and ``.csv`` from the completed runs of ``outcomes``."""
    out = Path(out)
    table = combined_table(chapter, outcomes, out)
    if table.empty:
        return None
    table.to_csv(out / f"{chapter}-sweep.csv", index=False)
    html = (f"<html><head><meta charset='utf-8'><title>{chapter}: sweep</title></head><body>"
            f"<h1>{chapter}: {len(outcomes)} runs</h1>"
            f"{table.to_html(index=False, float_format=lambda v: f'{v:.2f}')}"
            f"<p><img alt='findings over the grid' src='data:image/png;base64,{_figure(table)}'></p></body></html>")
    path = out / f"{chapter}-sweep.html"
    path.write_text(html)
    return path
