"""Execute the book's chapters in parallel into Jupyter Book's execution cache.

Jupyter Book 1 (MyST-NB, ``execute_notebooks: cache``) executes the chapters one after another
while it reads them. The chapters run torch on one thread (:mod:`qfail.machine`), so on a
machine with two cores half of it would sit idle. ``execute_chapters`` runs the chapters whose
code is not cached yet in ``workers`` processes, longest first (by the last build's times), and
stores each executed notebook in the same jupyter-cache that MyST-NB then reads: the build that
follows finds every chapter cached and only renders. A chapter that fails stops the build with
its one-line error, as MyST-NB's own execution would.

jupyter-cache keys a chapter by its cells alone, so a change inside ``qfail`` (or to the pinned
versions) would leave a chapter's old outputs in place: :func:`drop_stale_cache` removes the
entry of every chapter whose :func:`chapter_digest` changed since it was filled: the pins, or the
source of a qfail module the chapter runs (what its cells import, with everything those import,
and the modules that execute it). Editing one paper's code re-executes its chapters only;
editing the book's own site code (the scorecard, the launch buttons) re-executes none. The
trained models come from qfail's own cache, which is keyed by the code that trains them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from qfail.site.runner import CELL_SECONDS, ChapterError

__all__ = ["toc_chapters", "execute_chapters", "cached_notebooks", "chapter_pool", "chapter_modules", "chapter_digest", "drop_stale_cache"]


# the modules that execute every chapter: how its kernel starts and how its outputs are collected
_EXECUTION = ("qfail.site.execute",)


def chapter_modules(chapter: Path) -> set[str]:
    """The qfail modules that ``chapter``'s code cells name: the ones they import, the modules
    of ``qfail.a.b`` attribute chains, and those behind the names ``qfail`` loads on first use
    (``qfail.load_data`` is :mod:`qfail.data`). Names that are not modules are kept; the
    closure drops them."""
    import ast

    from qfail import _NAMES

    found = set()
    for cell in _read(chapter).cells:
        if cell.cell_type != "code":
            continue
        # IPython's magics and shell lines are not Python: blank them, keeping the line numbers
        code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())
        for node in ast.walk(ast.parse(code, f"{chapter.name} cell")):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Attribute):
                chain = [node.attr]
                while isinstance(node := node.value, ast.Attribute):
                    chain.insert(0, node.attr)
                if isinstance(node, ast.Name) and node.id == "qfail":
                    found.update("qfail." + ".".join(chain[:i]) for i in range(1, len(chain) + 1))
                    if chain[0] in _NAMES:
                        found.add(f"qfail.{_NAMES[chain[0]]}")
    return {m for m in found if m == "qfail" or m.startswith("qfail.")}


def _data_files(package: Path) -> list[Path]:
    """Files a package's modules may read: in its folder, or in a subfolder that is no package."""
    found = []
    for entry in package.iterdir():
        if entry.is_file() and entry.suffix not in (".py", ".pyc"):
            found.append(entry)
        elif entry.is_dir() and entry.name != "__pycache__" and not (entry / "__init__.py").exists():
            found += [f for f in entry.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    return found


def chapter_digest(root: Path, chapter: Path) -> str:
    """What ``chapter``'s outputs depend on besides its own cells: the pins (``constraints.txt``)
    and the source of every qfail module it runs (:func:`chapter_modules` and :data:`_EXECUTION`,
    with everything they import: :func:`qfail.cache.code_closure`), data files beside them included.

    The modules a forked kernel finds imported already (:data:`qfail.site.warm_start.PRELOAD`) do
    not count: importing them runs nothing that moves a number, so a forked kernel prints what a
    launched one does (:mod:`qfail.site.warm_start`)."""
    # qfail's own resolver and folder (private: making them public edits cache.py, which retrains every model)
    from qfail.cache import _PACKAGE, code_closure
    from qfail.cache import _source as module_file

    modules = sorted({m for name in chapter_modules(chapter) | set(_EXECUTION) for m in code_closure(name)})
    files = [module_file(m) for m in modules]
    data = sorted({f for folder in {f.parent for f in files} for f in _data_files(folder)})
    digest = hashlib.sha256()
    for name, path in [*zip(modules, files, strict=True), *((f.relative_to(_PACKAGE).as_posix(), f) for f in data),
                       ("constraints.txt", root / "constraints.txt")]:
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def drop_stale_cache(root: Path, cache_path: Path, force: bool = False) -> bool:
    """Remove from the execution cache at ``cache_path`` every chapter whose :func:`chapter_digest`
    differs from the one recorded when its entry was filled (all of them when ``force``, or when
    no digests were recorded); return whether any entry went, so that Sphinx renders every page
    again. The digests are recorded beside the cache."""
    from jupyter_cache import get_cache

    stamp = cache_path.with_name(cache_path.name + ".source")
    chapters = toc_chapters(root)
    current = {path.stem: chapter_digest(root, path) for path in chapters}
    try:
        recorded = json.loads(stamp.read_text()) if stamp.exists() and not force else None
    except json.JSONDecodeError:
        recorded = None  # a stamp from before the digests were per chapter
    dropped = False
    if cache_path.exists() and not isinstance(recorded, dict):
        shutil.rmtree(cache_path)
        dropped = True
    elif cache_path.exists():
        cache = get_cache(cache_path)
        for path in chapters:
            if recorded.get(path.stem) != current[path.stem]:
                with contextlib.suppress(KeyError):  # never executed, or its cells changed: nothing to remove
                    cache.remove_cache(cache.match_cache_notebook(_read(path)).pk)
                    dropped = True
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(current, indent=1, sort_keys=True))  # what fills the cache from here on runs this code
    return dropped


def toc_chapters(root: Path) -> list[Path]:
    """The notebook sources (``notebooks/*.md``) that ``_toc.yml`` lists, in its order."""
    import yaml

    files: list[str] = []

    def walk(entries: list) -> None:
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key, []))

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    walk([toc])
    return [root / f"{f}.md" for f in files if f.startswith("notebooks/") and (root / f"{f}.md").exists()]


def _read(path: Path):  # -> an nbformat NotebookNode
    """The notebook exactly as MyST-NB reads it, so the cache keys match."""
    from myst_nb.core.read import read_myst_markdown_notebook

    return read_myst_markdown_notebook(path.read_text(), path=path)


def _execute(path: str, timeout: int) -> tuple[str, dict | None, float, str | None]:
    """Worker: run one chapter; return (path, executed notebook as JSON, seconds, error line)."""
    from jupyter_cache.executors.utils import single_nb_execution

    from qfail.site.kernel import CLIENT_OPTIONS
    from qfail.site.widgets import STATIC_ENV

    os.environ[STATIC_ENV] = "1"  # this worker's kernels render every widget panel for the page
    nb = _read(Path(path))
    result = single_nb_execution(nb, cwd=str(Path(path).parent), allow_errors=False, timeout=timeout,
                                 meta_override=True, **CLIENT_OPTIONS)
    if result.err is not None:
        return path, None, result.time, f"{type(result.err).__name__}: {str(result.err).strip().splitlines()[-1]}"
    return path, json.loads(json.dumps(nb)), result.time, None


def _expected_seconds(root: Path) -> dict[str, float]:
    """Seconds per chapter of a fresh build on the reference machine (2 cores): the order of
    work for a clone that has no build report of its own yet."""
    path = root / "book" / "expected-seconds.json"
    return json.loads(path.read_text()) if path.exists() else {}


def chapter_pool(workers: int) -> ProcessPoolExecutor:
    """Processes that run chapters, spawned rather than forked: the caller has threads (npm's
    download beside the build, a test runner's), and a fork copies into the child any lock one of
    them holds at that moment, with no thread left to release it (a run then hangs or dies).

    The kernel server starts first (:mod:`qfail.site.warm_start`): it imports what chapters
    import while the workers start, and every worker forks its kernels from it."""
    from qfail.site import warm_start

    if warm_start.enabled(os.environ):
        warm_start.kernel_server(dict(os.environ))
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def execute_chapters(root: Path, cache_path: Path, workers: int | None = None, timeout: int = CELL_SECONDS,
                     previous: dict[str, float] | None = None) -> dict[str, float]:
    """Execute every uncached chapter of ``root`` into ``cache_path``; return seconds per chapter run.

    Raises :class:`~qfail.site.runner.ChapterError` (one line, naming the chapter) if one fails.
    """
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(cache_path)
    todo = []
    for path in toc_chapters(root):
        try:
            cache.match_cache_notebook(_read(path))
        except KeyError:
            todo.append(path)
    previous = previous or _expected_seconds(root)
    # longest first, so that the last to finish started first: by the last build's times, or on a
    # fresh clone by book/expected-seconds.json, else by the size of the chapter's source (a
    # rough proxy). Frank & Ardis's analyses (shorter) then start after its pairs (longer), whose
    # cached pair they reuse.
    todo.sort(key=lambda p: (previous.get(p.stem, 0.0), p.stat().st_size), reverse=True)
    workers = workers or min(2, os.cpu_count() or 1)
    done: dict[str, float] = {}
    if not todo:
        return done
    with chapter_pool(min(workers, len(todo))) as pool:
        futures = [pool.submit(_execute, str(p), timeout) for p in todo]
        for future in as_completed(futures):
            path, executed, seconds, error = future.result()
            if error is not None:
                for other in futures:
                    other.cancel()
                raise ChapterError(f"chapter {Path(path).stem!r} failed: {error}")
            record = cache.add_nb_to_project(path, read_data={"name": "myst_nb_md", "type": "plugin"})
            cache.cache_notebook_bundle(CacheBundleIn(nbformat.from_dict(executed), record.uri,
                                                      data={"execution_seconds": seconds}),
                                        check_validity=False, overwrite=True)
            done[Path(path).stem] = seconds
            print(f"executed {Path(path).stem} in {seconds:.0f} s", flush=True)
    return done


def cached_notebooks(root: Path, cache_path: Path) -> list[dict]:
    """The executed chapters of ``root`` as the cache holds them, in table-of-contents order
    (a chapter without a valid cache entry is left out)."""
    from jupyter_cache import get_cache

    cache = get_cache(cache_path)
    notebooks = []
    for path in toc_chapters(root):
        try:
            record = cache.match_cache_notebook(_read(path))
        except KeyError:
            continue
        notebooks.append(json.loads(json.dumps(cache.get_cache_bundle(record.pk).nb)))
    return notebooks
