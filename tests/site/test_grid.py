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


def test_a_failing_run_reports_one_line_and_the_others_complete(toy, tmp_path, local_ray):
    out = tmp_path / "sweeps"
    outcomes = grid.sweep("toy", {"seed": "0,1", "fail": "False,True"}, out, workers=2, progress=False,
                          notebook_dir=toy)
    assert local_ray.is_initialized()  # the sweep joined the module's Ray and left it running
    failed = [o for o in outcomes if o.status == "failed"]
    assert [o.status for o in outcomes].count("done") == 2 and len(failed) == 2
    assert all(o.error == "chapter 'toy' failed: AssertionError: asked to fail" for o in failed)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(o.key for o in outcomes if o.status == "done")
    table = json.loads((out / outcomes[0].key / "verdicts.json").read_text())
    assert table[0]["estimates"][0]["value"] == 3  # seed 0 + 1 + 2


@pytest.mark.book
def test_a_primer_sweep_on_two_workers_combines_seeds_and_resumes(tmp_path, local_ray):
    out = tmp_path / "sweeps"
    axes = {"seed": "0,1", "bits": "2", "epochs": "2", "qat_epochs": "1", "bit_widths": "2,4,8"}
    first = grid.sweep("primer", axes, out, workers=2, progress=False, timeout=SMALL_RUN_CELL_SECONDS)
    assert [o.status for o in first] == ["done"] * 2
    table = grid.combined_table("primer", first, out)
    assert set(table.bits) == {2} and (table.runs == 2).all()  # each row: one finding over the two seeds
    assert (table.interval == "t over 2 seeds").all() and (table.low <= table["mean"]).all()
    assert set(table.finding) >= {"INT8 storage is about 4x smaller than float32"}
    assert (out / "primer-sweep.html").read_text().count("<img") == 1
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.ipynb")}
    again = grid.sweep("primer", axes, out, workers=2, progress=False, timeout=SMALL_RUN_CELL_SECONDS)
    assert [o.status for o in again] == ["skipped"] * 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.ipynb")} == stamps  # nothing re-executed
