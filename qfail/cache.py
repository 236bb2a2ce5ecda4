"""On-disk cache of computed results (trained weights, tables), keyed by their full config.

A result is stored under ``<cache_dir>/<kind>-<key>.qfc`` where ``key`` hashes the JSON of its
configuration together with a fingerprint of qfail's own source: change a hyper-parameter or
the training code and the entry is rebuilt; rebuild the book unchanged and nothing retrains.

File format: a magic line, one JSON line (kind, config, key, payload length and SHA-256), then
the payload written by ``torch.save`` (loaded back with ``weights_only=True``). Writes go to a
temporary file that is renamed into place, so a crash never leaves a half-written entry. A
file that fails any check (magic, key, length, checksum, unpickling) is reported with a
warning, deleted, and rebuilt -- never silently loaded.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

__all__ = ["cache_dir", "cache_key", "cached", "CacheCorrupt"]

_MAGIC = b"QFAILCACHE1\n"
_PACKAGE = Path(__file__).resolve().parent
# Modules whose code cannot change a cached result: editing them must not retrain anything.
_PRESENTATION = {"widgets.py", "runner.py", "__main__.py", "plots.py", "book.py"}


class CacheCorrupt(RuntimeError):
    """A cache file that exists but cannot be trusted."""


def cache_dir() -> Path:
    """``$QFAIL_CACHE``, else ``.cache/qfail`` in the source checkout, else ~/.cache/qfail."""
    if "QFAIL_CACHE" in os.environ:
        return Path(os.environ["QFAIL_CACHE"])
    root = _PACKAGE.parent
    if (root / "pyproject.toml").exists():
        return root / ".cache" / "qfail"
    return Path.home() / ".cache" / "qfail"


@lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        if path.name not in _PRESENTATION:
            digest.update(path.relative_to(_PACKAGE).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(kind: str, config: Mapping[str, Any]) -> str:
    text = json.dumps({"kind": kind, "config": config, "code": _code_fingerprint()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _path(kind: str, key: str) -> Path:
    return cache_dir() / f"{kind}-{key}.qfc"


def _read(path: Path, key: str) -> Any:
    blob = path.read_bytes()
    if not blob.startswith(_MAGIC):
        raise CacheCorrupt("bad magic header")
    header_end = blob.find(b"\n", len(_MAGIC))
    if header_end < 0:
        raise CacheCorrupt("truncated header")
    try:
        header = json.loads(blob[len(_MAGIC):header_end])
    except json.JSONDecodeError as err:
        raise CacheCorrupt(f"unreadable header ({err.msg})") from None
    payload = blob[header_end + 1:]
    if header.get("key") != key:
        raise CacheCorrupt("key mismatch")
    if header.get("length") != len(payload):
        raise CacheCorrupt(f"length {len(payload)} != {header.get('length')} (truncated?)")
    if header.get("sha256") != hashlib.sha256(payload).hexdigest():
        raise CacheCorrupt("checksum mismatch")
    try:
        return torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "do not trust"
        raise CacheCorrupt(f"payload does not load ({type(err).__name__})") from None


def _write(path: Path, kind: str, key: str, config: Mapping[str, Any], value: Any) -> None:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    payload = buffer.getvalue()
    header = json.dumps({"kind": kind, "key": key, "config": config, "length": len(payload),
                         "sha256": hashlib.sha256(payload).hexdigest()}, sort_keys=True, default=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + header.encode() + b"\n" + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached(kind: str, config: Mapping[str, Any], build: Callable[[], Any], *, refresh: bool = False) -> Any:
    """Return the stored result for ``(kind, config)``, building and storing it if needed.

    ``build`` must return what ``torch.load(weights_only=True)`` can read back: tensors,
    numbers, strings, lists, tuples and dicts of those (state dicts included).
    """
    key = cache_key(kind, config)
    path = _path(kind, key)
    if path.exists() and not refresh:
        try:
            return _read(path, key)
        except (CacheCorrupt, OSError) as err:
            warnings.warn(f"cache entry {path.name} is corrupt ({err}); rebuilding it", stacklevel=2)
            path.unlink(missing_ok=True)
    value = build()
    _write(path, kind, key, config, value)
    return value
