"""On-disk cache of computed results (trained weights, tables), keyed by their full config.

A result is stored under ``<cache_dir>/<kind>-<key>.qfc`` where ``key`` hashes the JSON of its
configuration, a fingerprint of the source code that computes it (the module that calls
:func:`cached` and every qfail module it imports, transitively, read from the import statements,
not by running anything) and the arithmetic it ran with (:func:`arithmetic`). Change a
hyper-parameter, that code or the threads and kernels, and the entry is rebuilt; edit one
paper's analysis, the book's site code or another paper's module and nothing retrains.

File format: a magic line, one JSON line (kind, config, key, payload length and SHA-256), then
the payload written by ``torch.save`` (loaded back with ``weights_only=True``). Writes go to a
temporary file that is renamed into place, so a crash never leaves a half-written entry. A
file that fails any check (magic, key, length, checksum, unpickling) is reported with a
warning, deleted, and rebuilt -- never silently loaded.
"""
from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch

from qfail.isa import KERNEL_PINS

__all__ = ["arithmetic", "cache_dir", "cache_key", "cached", "cached_entry", "code_closure", "code_fingerprint", "CacheCorrupt"]

_MAGIC = b"QFAILCACHE1\n"
_PACKAGE = Path(__file__).resolve().parent


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


def _source(module: str) -> Path | None:
    """The file of a qfail module (``qfail.a.b``), or None for anything outside qfail."""
    parts = module.split(".")
    if parts[0] != "qfail":
        return None
    base = _PACKAGE.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)


def _imports(module: str, path: Path) -> set[str]:
    """qfail modules named by the import statements of ``module`` (at any depth of the file)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return {m for m in found if _source(m) is not None}


@cache
def code_closure(module: str) -> tuple[str, ...]:
    """``module`` and every qfail module it imports, transitively (parent packages included)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or _source(name) is None:
            continue
        seen.add(name)
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo.extend(parents + sorted(_imports(name, _source(name))))
    return tuple(sorted(seen))


@cache
def code_fingerprint(module: str) -> str:
    """A hash of the source of :func:`code_closure` (``module``): what a cached result depends on."""
    digest = hashlib.sha256()
    for name in code_closure(module):
        path = _source(name)
        digest.update(path.relative_to(_PACKAGE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def arithmetic() -> dict[str, Any]:
    """What else a float result depends on: torch's threads, oneDNN on or off, and the kernels
    each library was asked for (:mod:`qfail.isa`; a reader's own choice keys its own entries)."""
    return {"threads": torch.get_num_threads(), "onednn": torch.backends.mkldnn.enabled,
            "kernels": {name: os.environ.get(name) for name in KERNEL_PINS}}


def cache_key(kind: str, config: Mapping[str, Any], code: str | Sequence[str]) -> str:
    """The entry's name: a hash of ``kind``, ``config``, the fingerprints of the ``code`` modules
    and the :func:`arithmetic` it was computed with."""
    modules = [code] if isinstance(code, str) else sorted(set(code))
    prints = [code_fingerprint(m) for m in modules]
    text = json.dumps({"kind": kind, "config": config, "code": prints, "arithmetic": arithmetic()}, sort_keys=True,
                      default=str)
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


def cached(kind: str, config: Mapping[str, Any], build: Callable[[], Any], *, code: str | Sequence[str],
           refresh: bool = False) -> Any:
    """The stored result for ``(kind, config)``; see :func:`cached_entry`."""
    return cached_entry(kind, config, build, code=code, refresh=refresh)[0]


def cached_entry(kind: str, config: Mapping[str, Any], build: Callable[[], Any], *, code: str | Sequence[str],
                 refresh: bool = False) -> tuple[Any, str]:
    """Return the stored result for ``(kind, config)``, building and storing it if needed, and
    the entry's name (a hash of the config and the code): results derived from this one put the
    name into their own keys, so they are rebuilt when either changes.

    ``code`` names the module (or modules) whose source, with everything it imports from qfail,
    computes the result; callers pass their own ``__name__`` and, where a callable from another
    module does part of the work (a model constructor, a loss), that module too. ``build`` must return what
    ``torch.load(weights_only=True)`` can read back: tensors, numbers, strings, lists, tuples and
    dicts of those (state dicts included).
    """
    key = cache_key(kind, config, code)
    path = _path(kind, key)
    if path.exists() and not refresh:
        try:
            return _read(path, key), key
        except (CacheCorrupt, OSError) as err:
            warnings.warn(f"cache entry {path.name} is corrupt ({err}); rebuilding it", stacklevel=2)
            path.unlink(missing_ok=True)
    value = build()
    _write(path, kind, key, config, value)
    return value, key
