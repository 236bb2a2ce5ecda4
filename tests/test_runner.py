"""The papermill runner: parameter validation (no kernel needed) and a real small run."""
import subprocess
import sys

import jupytext
import nbformat
import pytest

from qfail import runner

SMALL = {"epochs": "3", "qat_epochs": "1", "bit_widths": "2,4,8", "bits": "4"}


@pytest.mark.parametrize("given, message", [
    ({"bitz": "4"}, "unknown parameter 'bitz' for chapter 'primer'; allowed: seed, model,"),
    ({"bits": "7"}, "parameter bits='7' is not allowed for chapter 'primer'; expected one of 2, 3, 4, 5, 6, 8"),
    ({"seed": "one"}, "parameter seed='one' is not allowed for chapter 'primer'; expected an integer"),
    ({"seed": "1.5"}, "expected an integer"),
    ({"model": "vgg"}, "expected one of 'cnn', 'mlp'"),
    ({"bit_widths": "2,x"}, "parameter bit_widths='x' is not allowed"),
    ({"bit_widths": ""}, "expected a non-empty list of int"),
])
def test_bad_parameters_fail_in_one_line(given, message):
    with pytest.raises(runner.ParameterError) as err:
        runner.coerce_parameters("primer", given)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_good_parameters_are_typed():
    values = runner.coerce_parameters("primer", {"seed": "2", "bit_widths": "2,4", "model": "mlp"})
    assert values == {"seed": 2, "bit_widths": [2, 4], "model": "mlp"}
    assert runner.coerce_parameters("primer", {"bit_widths": "8"}) == {"bit_widths": [8]}
    assert runner.coerce_parameters("moon", {"eps_values": "0.03", "eps": "0.03"}) == {"eps_values": [0.03],
                                                                                      "eps": 0.03}
    # an opt-in list (empty by default) may be given empty; other lists may not
    assert runner.coerce_parameters("hu", {"natural": "", "shifts": "rotate"}) == {"natural": [], "shifts": ["rotate"]}
    with pytest.raises(runner.ParameterError, match="shifts='' .* expected a non-empty list of str"):
        runner.coerce_parameters("hu", {"shifts": ""})


def test_unknown_chapter():
    with pytest.raises(runner.ParameterError, match="chapter='nope' does not exist; choose one of .*primer"):
        runner.coerce_parameters("nope", {})


def test_every_chapter_declares_typed_parameters():
    for chapter in runner.chapters():
        nb = jupytext.read(runner.NOTEBOOK_DIR / f"{chapter}.md")
        params = runner.declared_parameters(nb)
        assert "seed" in params or "seeds" in params, f"{chapter} has no seed parameter"
        for p in params.values():
            assert p.help, f"{chapter}: parameter {p.name} has no comment"
            runner._coerce(p, p.default, chapter)  # the defaults satisfy their own annotations


def test_cli_reports_bad_parameter_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "qfail", "run", "primer", "-p", "bits", "9"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "bits" in proc.stderr and "2, 3, 4, 5, 6, 8" in proc.stderr


def test_error_inside_chapter_is_one_line(tmp_path):
    with pytest.raises(runner.ChapterError, match=r"ValueError: bits=5 is not allowed; choose one of bit_widths"):
        runner.run_chapter("primer", {**SMALL, "bits": "5"}, tmp_path)



@pytest.mark.parametrize("given, message", [
    ({"setting": "w4a8"}, r"ValueError: setting='w4a8' is not allowed; choose one of the computed settings \['int8', 'dynamic'"),
    ({"methods": "standard,pgd"}, r"ValueError: methods='pgd' is not allowed; choose one of 'standard', 'mixup'"),
    ({"severities": "0,6"}, r"ValueError: severities=0 is not allowed; choose one of 1..5"),
])
def test_hu_rejects_bad_choices_in_one_line(tmp_path, given, message):
    with pytest.raises(runner.ChapterError, match=message):
        runner.run_chapter("hu", given, tmp_path)


@pytest.mark.parametrize("given, message", [
    ({"pipelines": "a,f"}, r"ValueError: pipelines='f' is not allowed; choose one of 'a', 'b', 'c', 'd', 'e'"),
    ({"ptq_methods": "dynamic"}, r"ValueError: ptq_methods='dynamic' is not allowed; choose one of 'static', 'pwlq'"),
    ({"linf_eps": "0.1,0.2"}, r"ValueError: linf_eps=\[0.1, 0.2\] must hold three budgets"),
    ({"focus_bits": "3"}, r"ValueError: focus_bits=3 is not allowed; choose one of the computed bit-widths \[2, 4, 8\]"),
    ({"size": "8"}, r"size"),
])
def test_li_rejects_bad_choices_in_one_line(tmp_path, given, message):
    with pytest.raises((runner.ChapterError, ValueError), match=message):
        runner.run_chapter("li", given, tmp_path)


@pytest.mark.parametrize("chapter, given, message", [
    ("frank_pairs", {"models": "cnn,vgg"}, r"ValueError: models='vgg' is not allowed; choose one of 'mlp', 'cnn'"),
    ("frank_pairs", {"budget": "9"}, r"ValueError: budget=9.0 is out of range; allowed values are in \[2, 8\]"),
    ("frank_analyses", {"corruptions": "fog"}, r"ValueError: corruptions='fog' is not allowed; choose one of 'gaussian_noise'"),
    ("frank_distill", {"query_budgets": "5"}, r"ValueError: query_budgets=5 is out of range"),
    ("frank_distill", {"teacher": "knn"}, r"teacher"),
])
def test_frank_chapters_reject_bad_input_in_one_line(tmp_path, chapter, given, message):
    with pytest.raises((runner.ChapterError, ValueError), match=message):
        runner.run_chapter(chapter, given, tmp_path)


def test_primer_runs_with_small_parameters(tmp_path):
    path = runner.run_chapter("primer", SMALL, tmp_path)
    nb = nbformat.read(path, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "bit_widths = [2, 4, 8]" in injected[0].source
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert list(tmp_path.glob("primer-fig*.png"))
    assert nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
