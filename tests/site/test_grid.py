"""Sweeps over parameter grids on a local Ray (``python -m qfail sweep``)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from qfail.site import grid, runner

# Ray is imported by the fixture, not here: both test workers collect every file, and importing it takes a second
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="the sweep needs qfail[scale]; make test installs it")
SMALL_RUN_CELL_SECONDS = 300  # a primer cell at these sizes takes seconds: a kernel that stops answering fails the run

TOY_PARAMETERS = """
seed: int = 0  # {≥ 0} seed
fail: bool = False  # stop with an error
scales: list[int] = [1, 2]  # {≥ 1} a list-valued parameter
"""
TOY_CELL = """
import pandas as pd
from qfail import verdict

assert not fail, "asked to fail"
value = seed + sum(scales)
rows = pd.DataFrame([verdict.finding("the value is positive", "positive", verdict.Estimate(value, value - 1, value + 1, "toy"),
                                     verdict.Rule("above 0", low=0.0), "—")])
verdict.show(rows, "Toy", "A toy chapter", "toy")
"""


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module's sweeps (starting one takes 4 s): each sweep joins it."""
    import ray

    with grid.ray_session(workers=2):
        assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2
        yield ray
    assert not ray.is_initialized()  # stopped by the session that started it


@pytest.fixture()
def toy(toy_chapter) -> Path:
    return toy_chapter("toy", TOY_PARAMETERS, TOY_CELL)


def test_scalars_split_on_commas_lists_on_semicolons(toy):
    points = grid.grid_points("toy", {"seed": "0,1", "scales": "1,2;3"}, toy)
    assert points == [{"seed": 0, "scales": [1, 2]}, {"seed": 0, "scales": [3]},
                      {"seed": 1, "scales": [1, 2]}, {"seed": 1, "scales": [3]}]
    assert grid.grid_points("toy", {"scales": "1,2"}, toy) == [{"scales": [1, 2]}]  # one list, one point
    assert len({grid.run_key("toy", p) for p in points}) == 4


def test_every_point_is_checked_before_anything_runs(toy):
    with pytest.raises(runner.ParameterError, match="unknown parameter 'sead'"):
        grid.grid_points("toy", {"sead": "0,1"}, toy)
    with pytest.raises(runner.ParameterError, match="seed"):
        grid.grid_points("toy", {"seed": "0,-1"}, toy)
    with pytest.raises(runner.ParameterError, match="empty value"):
        grid.grid_points("toy", {"seed": "0,,1"}, toy)


def test_a_failing_run_reports_one_line_the_others_combine_and_a_second_sweep_resumes(toy, tmp_path, local_ray):
    out = tmp_path / "sweeps"
    axes = {"seed": "0,1", "fail": "False,True"}
    outcomes = grid.sweep("toy", axes, out, workers=2, progress=False, notebook_dir=toy)
    assert local_ray.is_initialized()  # the sweep joined the module's Ray and left it running
    failed = [o for o in outcomes if o.status == "failed"]
    assert [o.status for o in outcomes].count("done") == 2 and len(failed) == 2
    assert all(o.error == "chapter 'toy' failed: AssertionError: asked to fail" for o in failed)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(o.key for o in outcomes if o.status == "done")
    table = json.loads((out / outcomes[0].key / "verdicts.json").read_text())
    assert table[0]["estimates"][0]["value"] == 3  # seed 0 + 1 + 2
    combined = grid.combined_table("toy", [o for o in outcomes if o.status == "done"], out)  # as the report does
    assert len(combined) == 1 and combined.runs.iloc[0] == 2 and combined.interval.iloc[0] == "t over 2 seeds"
    assert combined["mean"].iloc[0] == 3.5 and combined.low.iloc[0] < 3 and combined.high.iloc[0] > 4
    assert (out / "toy-sweep.html").read_text().count("<img") == 1
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.ipynb")}
    again = grid.sweep("toy", axes, out, workers=2, progress=False, notebook_dir=toy)
    assert sorted(o.status for o in again) == ["failed", "failed", "skipped", "skipped"]  # only the failed run again
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.ipynb")} == stamps  # nothing complete re-executed


@pytest.mark.book
def test_a_chapter_runs_on_a_ray_worker_and_reports_its_own_interval(tmp_path, local_ray):
    """A real chapter (torch, the pinned kernels, widgets) in a Ray worker; one seed, so each
    finding keeps the run's own interval (the toy sweep above combines seeds)."""
    out = tmp_path / "sweeps"
    axes = {"seed": "0", "bits": "2", "epochs": "2", "qat_epochs": "1", "bit_widths": "2,4,8"}
    [outcome] = grid.sweep("primer", axes, out, workers=2, progress=False, timeout=SMALL_RUN_CELL_SECONDS)
    assert outcome.status == "done", outcome.error
    table = grid.combined_table("primer", [outcome], out)
    assert set(table.bits) == {2} and (table.runs == 1).all()
    assert (table.interval == "the run's own interval").all() and (table.low <= table["mean"]).all()
    assert set(table.finding) >= {"INT8 storage is about 4x smaller than float32"}
    assert (out / "primer-sweep.html").read_text().count("<img") == 1
