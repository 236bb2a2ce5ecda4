import re
import shutil
import warnings

import pytest
import torch

from qfail import cache as cache_mod
from qfail.cache import _path, cache_key, cached, cached_entry, code_closure, code_fingerprint

CODE = "qfail.train"  # the module a result is computed by; fingerprints its import closure


def _build(counter):
    def build():
        counter.append(1)
        return {"w": torch.arange(5.0), "note": "ok"}
    return build


def test_builds_once_then_loads():
    calls = []
    a = cached("t", {"x": 1}, _build(calls), code=CODE)
    b = cached("t", {"x": 1}, _build(calls), code=CODE)
    assert calls == [1] and torch.equal(a["w"], b["w"]) and b["note"] == "ok"
    cached("t", {"x": 2}, _build(calls), code=CODE)
    assert len(calls) == 2
    assert cache_key("t", {"x": 1}, CODE) != cache_key("t", {"x": 2}, CODE)
    # the entry's name comes back with the value, built or loaded, and is the cache key
    assert cached_entry("t", {"x": 1}, _build(calls), code=CODE)[1] == cache_key("t", {"x": 1}, CODE)
    assert len(calls) == 2


def test_other_threads_or_kernels_key_other_entries(monkeypatch):
    """A result computed with other arithmetic is another result: never served for this one."""
    key = cache_key("t", {"x": 1}, CODE)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    assert cache_key("t", {"x": 1}, CODE) != key
    monkeypatch.undo()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert cache_key("t", {"x": 1}, CODE) != key
    finally:
        torch.set_num_threads(threads)
    assert cache_key("t", {"x": 1}, CODE) == key


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_entry_is_rebuilt_with_a_warning(damage):
    calls = []
    config = {"damage": damage}
    cached("t", config, _build(calls), code=CODE)
    path = _path("t", cache_key("t", config, CODE))
    blob = path.read_bytes()
    path.write_bytes({"truncate": blob[:-7], "flip": blob[:-3] + bytes([blob[-3] ^ 0xFF]) + blob[-2:],
                      "garbage": b"not a cache file", "empty": b""}[damage])
    with pytest.warns(UserWarning, match="is corrupt .*rebuilding"):
        value = cached("t", config, _build(calls), code=CODE)
    assert len(calls) == 2 and torch.equal(value["w"], torch.arange(5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached("t", config, _build(calls), code=CODE)  # the rebuilt entry is good
    assert len(calls) == 2


def test_failed_build_leaves_nothing_behind():
    config = {"fails": True}

    def build():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached("t", config, build, code=CODE)
    path = _path("t", cache_key("t", config, CODE))
    assert not path.exists()
    assert not list(path.parent.glob(".*.tmp"))


def test_interrupted_write_leaves_no_partial_file(monkeypatch):
    import qfail.cache as cache_mod

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        cached("t", {"disk": "full"}, lambda: {"w": torch.ones(3)}, code=CODE)
    path = _path("t", cache_key("t", {"disk": "full"}, CODE))
    assert not path.exists() and not list(path.parent.glob(".*.tmp"))


def test_code_closure_follows_imports_and_stops_at_other_papers_and_the_site():
    train = code_closure("qfail.train")
    assert {"qfail.train", "qfail.data", "qfail.attack", "qfail.quant.model", "qfail.quant.primitives"} <= set(train)
    for module in ("qfail.papers.li.pipelines", "qfail.papers.hu.disagreements", "qfail.papers.moon.controller",
                   "qfail.papers.frank.pairs", "qfail.sweep"):
        closure = code_closure(module)
        assert set(train) <= set(closure), module
        paper = module.rsplit(".", 1)[0]
        assert not any(m.startswith("qfail.site") for m in closure), module
        assert not any(m.startswith("qfail.papers.") and not m.startswith(paper) for m in closure
                       if m != "qfail.papers"), module
        assert not any(m.endswith(".verdicts") for m in closure), module


def test_editing_one_paper_retrains_no_model_of_another(tmp_path, monkeypatch):
    """Every module that calls ``cached`` keeps its fingerprint when a file under papers/li/ changes."""
    copy = tmp_path / "qfail"
    shutil.copytree(cache_mod._PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    callers = sorted({".".join(("qfail",) + p.relative_to(copy).with_suffix("").parts)
                      for p in copy.rglob("*.py") if re.search(r"\bcached(_entry)?\(", p.read_text())
                      and p.name != "cache.py"})
    assert {"qfail.train", "qfail.sweep", "qfail.papers.frank.pairs", "qfail.papers.moon.controller"} <= set(callers)

    def prints() -> dict[str, str]:
        code_closure.cache_clear()
        code_fingerprint.cache_clear()
        return {m: code_fingerprint(m) for m in callers + ["qfail.papers.li.pipelines"]}

    monkeypatch.setattr(cache_mod, "_PACKAGE", copy)
    before = prints()
    for name in ("verdicts.py", "pipelines.py"):
        (copy / "papers" / "li" / name).write_text((copy / "papers" / "li" / name).read_text() + "\n# edited\n")
        after = prints()
        changed = {m for m in before if before[m] != after[m]}
        assert all(m.startswith("qfail.papers.li") for m in changed), changed
        assert (name == "pipelines.py") == ("qfail.papers.li.pipelines" in changed)
        before = after
    (copy / "train.py").write_text((copy / "train.py").read_text() + "\n# edited\n")
    assert all(before[m] != v for m, v in prints().items())  # shared training code retrains everything
    code_closure.cache_clear()
    code_fingerprint.cache_clear()
