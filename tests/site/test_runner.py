"""The papermill runner: parameter validation (no kernel needed) and runs of toy chapters (a real
chapter's small run is checked in test_book, on the run it renders)."""
import subprocess
import sys

import jupytext
import pytest

from qfail.site import runner


@pytest.mark.parametrize("given, message", [
    ({"bitz": "4"}, "unknown parameter 'bitz' for chapter 'primer'; allowed: seed, dataset, size, model,"),
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
    assert runner.coerce_parameters("primer", {"bit_widths": "8", "bits": "8"}) == {"bit_widths": [8], "bits": 8}
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
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "bits" in proc.stderr and "2, 3, 4, 5, 6, 8" in proc.stderr


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize("given", ["0", "-5", "1.5", "soon"])
def test_cli_rejects_a_time_limit_that_is_not_whole_seconds(command, given, capsys):
    from qfail.__main__ import _parser

    with pytest.raises(SystemExit) as stop:
        _parser().parse_args([command, "primer", "--timeout", given])
    assert stop.value.code == 2
    assert f"argument --timeout: a whole number of seconds >= 1, got '{given}'" in capsys.readouterr().err
    assert _parser().parse_args([command, "primer", "--timeout", "90"]).timeout == 90


def test_error_inside_chapter_is_one_line_and_leaves_nothing(tmp_path, toy_chapter):
    nbs = toy_chapter("broken", "seed: int = 0  # {≥ 0} seed", 'raise ValueError(f"seed={seed} broke the chapter")')
    out = tmp_path / "out"
    with pytest.raises(runner.ChapterError, match=r"chapter 'broken' failed: ValueError: seed=3 broke the chapter$"):
        runner.run_chapter("broken", {"seed": "3"}, out, notebook_dir=nbs)
    assert list(out.iterdir()) == []  # no half-executed notebook, no temporary folder


def test_a_cell_over_the_time_limit_fails_the_run_in_one_line(tmp_path, toy_chapter):
    """A kernel that never answers (or a cell that never ends) fails the run instead of holding it."""
    nbs = toy_chapter("slow", "seconds: int = 60  # {≥ 0} how long the cell sleeps", "import time\ntime.sleep(seconds)")
    out = tmp_path / "out"
    with pytest.raises(runner.ChapterError, match=r"^chapter 'slow' failed: a cell ran longer than timeout=2 s$"):
        runner.run_chapter("slow", {}, out, notebook_dir=nbs, timeout=2)
    assert list(out.iterdir()) == []


def test_outputs_that_trail_their_cell_fail_the_run_instead_of_going_missing(tmp_path, toy_chapter, monkeypatch):
    """A cell's last output message (its kernel going idle) held up on the way: nbclient would drop
    whatever had not arrived, with a warning; the run fails in one line instead."""
    import asyncio

    import zmq

    from qfail.site import kernel

    plain = kernel.SlicedChannel.get_msg

    async def held_up(self, timeout=None):
        msg = await plain(self, timeout)
        if self.socket.type == zmq.SUB and msg["content"].get("execution_state") == "idle":
            await asyncio.sleep(3)
        return msg

    monkeypatch.setattr(kernel.SlicedChannel, "get_msg", held_up)
    monkeypatch.setattr(kernel, "OUTPUT_SECONDS", 1)
    monkeypatch.setitem(kernel.CLIENT_OPTIONS, "iopub_timeout", 1)
    nbs = toy_chapter("late", "seed: int = 0  # {≥ 0} seed", "print(seed)")
    with pytest.raises(runner.ChapterError, match=r"^chapter 'late' failed: a cell's outputs did not arrive within 1 s"):
        runner.run_chapter("late", {}, tmp_path / "out", notebook_dir=nbs, static_widgets=False)


def test_a_literal_parameter_passes_without_papermills_unknown_parameter_warning(tmp_path, toy_chapter, caplog):
    """papermill's own guess at the parameters cell skips ``Literal[...]`` lines; qfail checked them."""
    nbs = toy_chapter("choice", 'mode: Literal["a", "b"] = "a"  # which', "print(mode)")
    chapter = nbs / "choice.md"  # the annotation needs its import, in a cell before the parameters
    chapter.write_text(chapter.read_text().replace("```{code-cell}", "```{code-cell} ipython3\nfrom typing import Literal\n```\n\n```{code-cell}", 1))
    with caplog.at_level("WARNING", logger="papermill"):
        runner.run_chapter("choice", {"mode": "b"}, tmp_path / "out", notebook_dir=nbs)
    assert "Passed unknown parameter" not in caplog.text


def _violations(p: runner.Parameter, rule: str, declared: dict[str, runner.Parameter]) -> list:
    """Values of parameter ``p`` that break ``rule`` (and only need the other defaults)."""
    import re

    import torch

    scalar = p.default[0] if isinstance(p.default, list) and p.default else p.default
    number = isinstance(scalar, (int, float)) and not isinstance(scalar, bool)
    m = re.fullmatch(r"(≥|>|≤|<)\s*(\S+)", rule)
    if m:
        ref = m.group(2)
        of_list = re.fullmatch(r"(min|max)\((\w+)\)", ref)  # min(NAME) or max(NAME) of a list parameter
        if of_list:
            bound = float((min if of_list.group(1) == "min" else max)(declared[of_list.group(2)].default))
        else:
            bound = float(declared[ref].default if ref in declared else ref)  # a number or another parameter
        step = 1 if isinstance(scalar, int) else 0.5
        bad = {"≥": bound - step, ">": bound, "≤": bound + step, "<": bound}[m.group(1)]
        bad = int(bad) if isinstance(scalar, int) else bad
    elif rule.startswith("in "):
        bad = 10_007 if number else "no-such-value"
    elif rule == "unique":
        return [[scalar, scalar]]
    elif rule.startswith("has "):
        return [[v for v in p.default if repr(v) != rule[4:].strip()][:1] or ["other"]]
    elif rule.startswith("len "):
        return [p.default[:-1]]
    elif re.fullmatch(r"\d+n\+\d+", rule):
        bad = int(rule.split("n+")[1]) + 1
    elif rule == "data":
        bad = "mnist"
    elif rule == "device":
        bad = "tpu" if torch.cuda.is_available() else "cuda"
    else:
        raise AssertionError(f"no violating value for rule {rule!r}")
    return [[bad]] if isinstance(p.default, list) else [bad]


def test_every_declared_constraint_rejects_a_violating_value_before_a_kernel(tmp_path, monkeypatch):
    """Walk every chapter's parameters; each constraint, fed a value that breaks it, stops the run."""
    monkeypatch.setenv("QFAIL_DATA", str(tmp_path))  # no torchvision files here: 'data' must fail
    checked = 0
    for chapter in runner.chapters():
        declared = runner.declared_parameters(jupytext.read(runner.NOTEBOOK_DIR / f"{chapter}.md"))
        runner.coerce_parameters(chapter, {})  # the defaults meet every constraint
        for p in declared.values():
            for rule in p.constraints:
                for bad in _violations(p, rule, declared):
                    with pytest.raises(runner.ParameterError, match=rf"parameter {p.name}=") as err:
                        runner.run_chapter(chapter, {p.name: bad}, tmp_path / "out")
                    assert "\n" not in str(err.value)
                    checked += 1
    assert checked >= 100 and not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("chapter, given, message", [
    ("primer", {"epochs": "0"}, "parameter epochs=0 is not allowed for chapter 'primer'; expected ≥ 1"),
    ("moon", {"eps": "0.05"}, "expected one of 0.01, 0.03, 0.1 (the values of eps_values)"),
    ("hu", {"setting": "w4a8"}, "parameter setting=w4a8 is not allowed for chapter 'hu'; expected one of 'int8'"),
    ("hu", {"methods": "standard,pgd"}, "element 'pgd') is not allowed for chapter 'hu'; expected one of 'standard'"),
    ("hu", {"methods": "qat"}, "expected a list that includes 'standard'"),
    ("hu", {"severities": "0,6"}, "element 0) is not allowed for chapter 'hu'; expected ≥ 1"),
    ("li", {"depth": "21"}, "expected of the form 6n+2 and ≥ 8 (8, 14, 20, ...)"),  # the examples meet both rules
    ("li", {"linf_eps": "0.1,0.2"}, "expected exactly 3 values"),
    ("li", {"fraction": "1.5"}, "expected ≤ 1"),
    ("frank_pairs", {"models": "cnn,vgg"}, "element 'vgg') is not allowed for chapter 'frank_pairs'; expected one of"),
    ("frank_distill", {"query_budgets": "5"}, "expected ≥ 10"),
    ("frank_pairs", {"choices": "8", "budget": "4"}, "budget=4.0 is not allowed for chapter 'frank_pairs'; expected ≥ min(choices) (= 8)"),
    ("frank_analyses", {"choices": "2,3"}, "budget=4.0 is not allowed for chapter 'frank_analyses'; expected ≤ max(choices) (= 3)"),
    ("frank_analyses", {"choices": "1,8"}, "parameter choices=[1, 8] (element 1) is not allowed"),  # itself, not the budget
    ("frank_distill", {"teacher": "knn"}, "expected one of 'mlp', 'forest', 'svm'"),
])
def test_constraint_messages_name_the_parameter_and_the_allowed_values(chapter, given, message):
    with pytest.raises(runner.ParameterError) as err:
        runner.coerce_parameters(chapter, given)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_data_set_is_refused_with_the_ones_present_and_where_the_others_go(tmp_path, monkeypatch):
    monkeypatch.setenv("QFAIL_DATA", str(tmp_path))
    with pytest.raises(runner.ParameterError) as err:
        runner.coerce_parameters("hu", {"dataset": "mnist"})
    assert str(err.value).startswith("parameter dataset=mnist is not allowed for chapter 'hu'; expected a data set "
                                     "whose files are present: here 'digits', 'fashion_mnist' (")
    assert f"$QFAIL_DATA, now {tmp_path};" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").touch()  # what data_present looks for
    with pytest.raises(runner.ParameterError, match="here 'digits', 'mnist', 'fashion_mnist' "):
        runner.coerce_parameters("hu", {"dataset": "cifar10"})
    assert runner.coerce_parameters("hu", {"dataset": "mnist"}) == {"dataset": "mnist"}
