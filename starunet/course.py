"""Run the course headless: ``python -m starunet course --out DIR``.

Executes every notebook in ``notebooks/`` in order with nbclient (in this Python
environment's kernel), writes the executed copies and a short ``summary.md`` into
one output folder. ``--inplace`` writes the outputs back into ``notebooks/``
(how maintainers refresh the committed outputs).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from starunet.config import PROJECT_ROOT, smoke_mode
from starunet.io import write_text_atomic

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"


def list_notebooks(directory: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The course notebooks (``NN_name.ipynb``) in reading order."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb") if p.is_file())


def clean_notebook(nb) -> None:
    """Drop what stops GitHub from rendering a notebook: saved widget state.

    Widget outputs keep their ``text/plain`` fallback; every widget in the
    course is preceded by a static figure, so nothing is lost for readers.
    """
    nb.metadata.pop("widgets", None)


@contextlib.contextmanager
def inline_figures() -> Iterator[None]:
    """Hide ``MPLBACKEND`` from the kernel while it runs. Headless shells and CI set
    it to ``Agg``; a kernel that inherits it draws nothing inline, and the saved
    notebook would keep "<Figure ...>" text instead of its figures."""
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved


def execute_notebook(src: Path, dst: Path, timeout: int | None = None) -> float:
    """Execute ``src`` with its folder as working directory, write it to ``dst``;
    return the wall time in seconds. Raises ``nbclient`` errors on a failing cell."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(src, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(src.parent)}},
    )
    start = time.perf_counter()
    with inline_figures():
        client.execute()
    elapsed = time.perf_counter() - start
    clean_notebook(nb)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dst, nbformat.writes(nb) + "\n")
    return elapsed


def _results_summary() -> str:
    """The results part of summary.md, from the package's evaluation if present."""
    try:
        from starunet.evaluate import course_summary_markdown
    except ImportError:
        return ""
    return course_summary_markdown()


def run_course(out: Path, only: list[str] | None = None, inplace: bool = False,
               timeout: int | None = None) -> list[tuple[str, float]]:
    """Execute the notebooks (all, or those whose name starts with one of ``only``)."""
    notebooks = list_notebooks()
    if only:
        notebooks = [p for p in notebooks if any(p.name.startswith(o) for o in only)]
        if not notebooks:
            valid = ", ".join(p.name for p in list_notebooks())
            raise SystemExit(f"no notebook matches {only}; valid: {valid}")
    timings = []
    for nb_path in notebooks:
        dst = nb_path if inplace else out / nb_path.name
        print(f"executing {nb_path.name} ...", flush=True)
        seconds = execute_notebook(nb_path, dst, timeout=timeout)
        print(f"  done in {seconds:.0f} s -> {dst}", flush=True)
        timings.append((nb_path.name, seconds))
    lines = ["# starunet course run", "",
             f"Mode: {'smoke (STARUNET_SMOKE=1)' if smoke_mode() else 'normal'}; "
             f"Python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d %H:%M')}.", "",
             "| notebook | seconds |", "| --- | ---: |"]
    lines += [f"| {name} | {sec:.0f} |" for name, sec in timings]
    summary = "\n".join(lines) + "\n\n" + _results_summary()
    write_text_atomic(out / "summary.md", summary)
    print(f"summary -> {out / 'summary.md'}")
    return timings


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m starunet course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("course-output"),
                        help="folder for the executed notebooks and summary.md (default: course-output)")
    parser.add_argument("--only", nargs="+", metavar="PREFIX",
                        help="run only notebooks whose file name starts with PREFIX (e.g. 01 03)")
    parser.add_argument("--inplace", action="store_true",
                        help="write outputs back into notebooks/ (to refresh the committed outputs)")
    parser.add_argument("--timeout", type=int, default=None,
                        help="per-cell timeout in seconds (default: none)")
    args = parser.parse_args(argv)
    run_course(args.out, args.only, args.inplace, args.timeout)
    return 0
