import warnings

import pytest
import torch

from qfail.cache import _path, cache_key, cached


def _build(counter):
    def build():
        counter.append(1)
        return {"w": torch.arange(5.0), "note": "ok"}
    return build


def test_builds_once_then_loads():
    calls = []
    a = cached("t", {"x": 1}, _build(calls))
    b = cached("t", {"x": 1}, _build(calls))
    assert calls == [1] and torch.equal(a["w"], b["w"]) and b["note"] == "ok"
    cached("t", {"x": 2}, _build(calls))
    assert len(calls) == 2
    assert cache_key("t", {"x": 1}) != cache_key("t", {"x": 2})


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_entry_is_rebuilt_with_a_warning(damage):
    calls = []
    config = {"damage": damage}
    cached("t", config, _build(calls))
    path = _path("t", cache_key("t", config))
    blob = path.read_bytes()
    path.write_bytes({"truncate": blob[:-7], "flip": blob[:-3] + bytes([blob[-3] ^ 0xFF]) + blob[-2:],
                      "garbage": b"not a cache file", "empty": b""}[damage])
    with pytest.warns(UserWarning, match="is corrupt .*rebuilding"):
        value = cached("t", config, _build(calls))
    assert len(calls) == 2 and torch.equal(value["w"], torch.arange(5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached("t", config, _build(calls))  # the rebuilt entry is good
    assert len(calls) == 2


def test_failed_build_leaves_nothing_behind():
    config = {"fails": True}

    def build():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached("t", config, build)
    path = _path("t", cache_key("t", config))
    assert not path.exists()
    assert not list(path.parent.glob(".*.tmp"))


def test_interrupted_write_leaves_no_partial_file(monkeypatch):
    import qfail.cache as cache_mod

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        cached("t", {"disk": "full"}, lambda: {"w": torch.ones(3)})
    path = _path("t", cache_key("t", {"disk": "full"}))
    assert not path.exists() and not list(path.parent.glob(".*.tmp"))
