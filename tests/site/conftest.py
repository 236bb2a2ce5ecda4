"""The book tests' shared run: every chapter once, at small parameters, for the whole session.

Under ``make test``'s two pytest workers the first worker to need the run executes it and the
other waits for its record (pytest-xdist's pattern for a once-per-session fixture): one worker
then runs the chapters again (test_book) while the other builds and browses the pages
(test_pages).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from filelock import FileLock

from qfail.site import runner
from qfail.site.execute import chapter_pool

SMALL = {"primer": {"epochs": "3", "qat_epochs": "1", "bit_widths": "2,4,8", "bits": "2"},
         "moon": {"rl_updates": "5", "episodes": "2", "bit_widths": "8,2", "qat_updates": "1", "eps_values": "0.03,0.1",
                  "eps": "0.03", "verified_states": "30", "grid_cells": "4", "bits": "8"},
         "hu": {"epochs": "2", "methods": "standard,qat", "settings": "int8", "bits": "2", "size": "8",
                "shifts": "gaussian_noise,rotate", "severities": "1,5", "mc_samples": "2", "retrain_epochs": "1"},
         "li": {"depth": "8", "width": "0.25", "epochs": "2", "adv_steps": "2", "pipelines": "a,b,e,f,g", "ptq_methods": "pwlq",
                "ptq_bits": "4", "ptq_parts": "weights,activations", "qat_parts": "activations", "qat_epochs": "1",
                "pgd_steps": "2", "limit": "40"},
         "frank_distill": {"query_budgets": "100,300", "epochs": "3"},
         "frank_pairs": {"seeds": "0", "models": "cnn", "queries": "500", "rounds": "2", "retain_epochs": "1",
                         "random_draws": "1"},
         "frank_analyses": {"queries": "500", "rounds": "2", "retain_epochs": "1", "corruptions": "gaussian_noise,rotate",
                            "severities": "1,3", "examples": "4"},
         "at_scale": {"train_inputs": "2000", "test_inputs": "300", "epochs": "2", "shifts": "rotate,stripe",
                      "shifted_inputs": "100", "attacked_inputs": "100", "pgd_steps": "2", "queries": "200", "student_epochs": "1", "rounds": "1",
                      "bit_widths": "2,8"}}


def run_small_chapters(out: Path, static_widgets: bool = True) -> dict[str, Path]:
    """Every chapter at its small parameters, two at a time (each kernel uses one thread)."""
    with chapter_pool(2) as pool:
        futures = {name: pool.submit(runner.run_chapter, name, params, out, static_widgets=static_widgets)
                   for name, params in SMALL.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="session")
def run_small():
    """:func:`run_small_chapters`, for a test that runs the chapters again."""
    return run_small_chapters


@pytest.fixture(scope="session")
def executed(tmp_path_factory) -> dict[str, Path]:
    """The session's run of every chapter (name -> executed notebook), shared by the workers."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    record = shared / "small-runs.json"
    with FileLock(f"{record}.lock"):
        if not record.is_file():
            runs = run_small_chapters(shared / "small-runs")
            record.write_text(json.dumps({name: str(path) for name, path in runs.items()}))
    return {name: Path(path) for name, path in json.loads(record.read_text()).items()}
