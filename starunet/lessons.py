"""The lesson frame: how every notebook of the course opens.

A lesson's first cell (typed) says what it teaches. The next cell calls
``su.lesson_header("05")``, which shows three things no one types:

* the lesson's **result** in a few lines, computed now from the committed results by
  the function registered for it with :func:`lesson_result`;
* its **reading time**, counted from the notebook's own words and code lines;
* its **compute time**, as ``python -m starunet course`` measured it, with the machine
  (``notebooks/timings.csv``, written by :func:`record_timings`).

The rest of the frame is a convention that ``tests/test_lessons.py`` checks: exercises
under ``### Exercise N`` headings, each with a solution cell tagged ``solution`` (and
``hide-cell``), collapsed in JupyterLab, that asserts its answer; a ``## Summary`` and a
link to the next lesson at the end.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Iterable

from IPython.display import Markdown

from starunet.config import PROJECT_ROOT
from starunet.io import read_csv, write_csv_atomic

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
TIMINGS_CSV = NOTEBOOKS_DIR / "timings.csv"
TIMING_COLUMNS = ["notebook", "seconds", "runs_trained", "cpu", "cores", "measured"]
# Reading speeds: prose at an adult's silent-reading pace for technical text, code slower.
WORDS_PER_MINUTE = 200
CODE_LINES_PER_MINUTE = 20
SOLUTION_TAG = "solution"

_RESULTS: dict[str, Callable[[], list[str]]] = {}


def lesson_result(lesson: str) -> Callable[[Callable[[], list[str]]], Callable[[], list[str]]]:
    """Register the function that computes lesson ``lesson``'s result lines (3-5 strings
    of Markdown, each read from committed results or computed by the package)."""
    def register(fn: Callable[[], list[str]]) -> Callable[[], list[str]]:
        _RESULTS[lesson] = fn
        return fn
    return register


def notebook_path(lesson: str, directory: Path = NOTEBOOKS_DIR) -> Path:
    """``"05"`` -> ``notebooks/05_metric_comparison.ipynb``; a clear error listing the
    lessons there are otherwise."""
    matches = sorted(directory.glob(f"{lesson}_*.ipynb"))
    if len(matches) != 1:
        valid = ", ".join(sorted(p.name[:2] for p in directory.glob("[0-9][0-9]_*.ipynb")))
        raise ValueError(f"no lesson {lesson!r} in {directory}; valid: {valid}")
    return matches[0]


def reading_minutes(path: Path) -> int:
    """Minutes to read a notebook: its Markdown words at :data:`WORDS_PER_MINUTE` plus
    its non-blank code lines at :data:`CODE_LINES_PER_MINUTE`. Solutions and outputs
    are not counted: they are read only by whoever wants them."""
    cells = json.loads(Path(path).read_text())["cells"]
    words = lines = 0
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            words += len(source.split())
        elif cell["cell_type"] == "code" and SOLUTION_TAG not in cell.get("metadata", {}).get("tags", []):
            lines += sum(1 for line in source.splitlines() if line.strip())
    return max(1, math.ceil(words / WORDS_PER_MINUTE + lines / CODE_LINES_PER_MINUTE))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def compute_time(lesson: str, timings: Path = TIMINGS_CSV) -> str:
    """How long the lesson took to run, from :data:`TIMINGS_CSV`, with the machine and,
    where it trained, how many runs; the text says when no measurement is recorded."""
    rows = [r for r in read_csv(timings) if r["notebook"].startswith(f"{lesson}_")] if timings.exists() else []
    if not rows:
        return "not measured yet (`python -m starunet course --inplace` records it)"
    row = rows[-1]
    text = f"{_duration(float(row['seconds']))} on a {row['cores']}-core {row['cpu']} ({row['measured']})"
    if int(row["runs_trained"]):
        text += f", training {row['runs_trained']} runs; seconds once they exist"
    return text


def record_timings(rows: Iterable[dict], timings: Path = TIMINGS_CSV) -> None:
    """Merge measured rows (``TIMING_COLUMNS``) into ``timings``, one row per notebook."""
    merged = {r["notebook"]: r for r in read_csv(timings)} if timings.exists() else {}
    merged.update({r["notebook"]: {k: r[k] for k in TIMING_COLUMNS} for r in rows})
    write_csv_atomic(timings, [merged[k] for k in sorted(merged)], TIMING_COLUMNS)


def lesson_header(lesson: str, directory: Path = NOTEBOOKS_DIR, timings: Path = TIMINGS_CSV) -> Markdown:
    """The computed part of a lesson's frame: its result, reading and compute time."""
    if lesson not in _RESULTS:
        raise ValueError(f"no result registered for lesson {lesson!r}; registered: {', '.join(sorted(_RESULTS))}")
    result = "\n".join(f"- {line}" for line in _RESULTS[lesson]())
    return Markdown(f"**The result.**\n\n{result}\n\n"
                    f"**Reading time:** about {reading_minutes(notebook_path(lesson, directory))} min. "
                    f"**Compute time:** {compute_time(lesson, timings)}.")


# -- The results of lessons 01-03 (one function each, registered with @lesson_result). ---------


# -- The results of lessons 04-06 (one function each, registered with @lesson_result). ---------
