"""Command line: ``python -m qfail {run,list,book,sweep}``.

    python -m qfail list                            # chapters and their parameters
    python -m qfail run primer -p bits 4 -p seed 1  # run a chapter with papermill
    python -m qfail book [--force] [--no-solutions] # build the whole book (offline)
    python -m qfail sweep primer -p seed 0,1,2 -p bits 2,4  # a grid of runs on Ray (qfail[scale])

Errors in the command line (an unknown chapter, parameter or value) and errors raised inside a
chapter are printed as one line on stderr, with exit status 2 and 1 respectively.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qfail.site.runner import CELL_SECONDS


def _seconds(text: str) -> int:
    """A cell time limit: a whole number of seconds, at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of seconds >= 1, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qfail", description="qfail: quantization failure book")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a chapter with papermill parameters")
    run.add_argument("chapter")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    run.add_argument("-o", "--output", default="runs", help="folder for the executed notebook and figures")
    run.add_argument("--timeout", type=_seconds, default=CELL_SECONDS,
                     help=f"seconds a cell may run (default {CELL_SECONDS})")
    grid = sub.add_parser("sweep", help="run a chapter over a grid of parameters on Ray (pip install qfail[scale])")
    grid.add_argument("chapter")
    grid.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUES"),
                      help="one axis: scalars 0,1,2; lists separated by ';' as in 2,4;2,4,8")
    grid.add_argument("-o", "--output", default="sweeps", help="folder of the runs and the report")
    grid.add_argument("--workers", type=int, default=None, help="CPUs of the local Ray (default: all)")
    grid.add_argument("--address", default=None, help="a Ray cluster to join (default: $RAY_ADDRESS, else local)")
    grid.add_argument("--timeout", type=_seconds, default=CELL_SECONDS,
                      help=f"seconds a cell may run before its run fails (default {CELL_SECONDS})")
    sub.add_parser("list", help="list chapters and their parameters")
    book = sub.add_parser("book", help="build the book into _build/html")
    book.add_argument("--force", action="store_true", help="re-execute every chapter")
    book.add_argument("--no-solutions", dest="solutions", action="store_false",
                      help="leave the exercises' solutions out (a copy for students, in _build/student/html)")
    return parser


def main(argv: list[str] | None = None) -> int:
    import subprocess

    from qfail.site import runner

    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            import jupytext

            for chapter in runner.chapters():
                print(chapter)
                nb = jupytext.read(runner.NOTEBOOK_DIR / f"{chapter}.md")
                for p in runner.declared_parameters(nb).values():
                    print("   ", p.describe())
        elif args.command == "sweep":
            from qfail.site.grid import sweep

            outcomes = sweep(args.chapter, dict(args.parameter), args.output, args.workers, args.address,
                             timeout=args.timeout)
            failed = [o for o in outcomes if o.status == "failed"]
            counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
            print(f"{len(outcomes)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) +
                  f"; report: {Path(args.output).resolve() / (args.chapter + '-sweep.html')}")
            for o in failed:
                print(f"error: {o.key}: {o.error}", file=sys.stderr)
            return 1 if failed else 0
        elif args.command == "run":
            params = dict(args.parameter)
            path = runner.run_chapter(args.chapter, params, Path(args.output), timeout=args.timeout)
            print(f"wrote {path}")
        else:
            from qfail.site.book import build_book

            seconds = build_book(force=args.force, solutions=args.solutions)
            html = Path("_build/html" if args.solutions else "_build/student/_build/html")
            print(f"book built in {seconds:.0f} s: {(html / 'index.html').resolve()}")
    except runner.ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except runner.ChapterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as err:
        print(f"error: {Path(err.cmd[0]).name} failed with exit status {err.returncode}; its log is above",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
