"""Run the course headless: ``python -m starunet course --out DIR``.

Executes every notebook in ``notebooks/`` in order with nbclient (in this Python
environment's kernel), writes the executed copies and a short ``summary.md`` into
one output folder. ``--inplace`` writes the outputs back into ``notebooks/``
(how maintainers refresh the committed outputs).

While a notebook runs, :class:`CourseProgress` prints slow cells ("cell 7/23
running ...") and every finished training epoch. Every folder the course writes is
checked before the first notebook starts.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from jupyter_core.utils import ensure_async
from nbclient import NotebookClient

from starunet.config import PROJECT_ROOT, cpu_model, smoke_mode
from starunet.io import read_csv, write_text_atomic
from starunet.lessons import record_timings
from starunet.preflight import plain_help
from starunet.report import (budget_verdicts_markdown, markdown_table, reference_comparison_markdown,
                             results_markdown, run_results_markdown)
from starunet.results import (budget_grids, course_check_dir, course_reference, find_results, load_results,
                              own_results_dir)
from starunet.stats import ACTIVATIONS_COMPARED, FUSIONS_COMPARED, budget_differences
from starunet.widgets import STATIC_TEXT, WIDGET_VIEW

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"


def list_notebooks(directory: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The course notebooks (``NN_name.ipynb``) in reading order."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb") if p.is_file())


def clean_notebook(nb) -> int:
    """Drop what stops GitHub from rendering a notebook: saved widget state.

    Every live-widget output keeps only :data:`starunet.widgets.STATIC_TEXT` (a view
    without its state shows "Error displaying widget: model not found" in
    JupyterLab); every widget in the course is preceded by a static figure, so nothing
    is lost for readers. Returns how many widget outputs were replaced."""
    nb.metadata.pop("widgets", None)
    count = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                del data[WIDGET_VIEW]
                data["text/plain"] = STATIC_TEXT
                count += 1
    return count


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


# Run in each kernel before the notebook: every figure's output gets alt text
# (starunet.alt_text), without leaving a name in the reader's namespace.
KERNEL_SETUP = "import starunet.alt_text as _alt; _alt.register(); del _alt"


def _kernel_config(ipc_dir: str):
    """Kernel settings: local IPC sockets instead of TCP where the OS has them.

    Over TCP ipykernel warns on every start that the traffic is unencrypted; IPC
    sockets (files in a private temporary folder) are local only, so the warning
    does not apply and is not printed. Windows has no IPC transport: TCP there.
    Given as config, not as a kernel manager object, so that nbclient still owns
    the kernel and shuts it down after each notebook.
    """
    from traitlets.config import Config

    config = Config()
    if os.name != "nt":
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = str(Path(ipc_dir) / "kernel")
    return config


# A cell that runs this long is hung, not working: the whole course takes minutes, and
# its longest cell (notebook 04 training in normal mode) a fraction of that. Without a
# limit, a hang (e.g. a kernel that went idle while the client still waits) never ends.
DEFAULT_CELL_TIMEOUT = 3600


class CellTimeout(RuntimeError):
    """A notebook cell ran past the per-cell timeout; the message names the cell."""


def execute_notebook(src: Path, dst: Path, timeout: int | None = None,
                     progress: "CourseProgress | None" = None) -> float:
    """Execute ``src`` with its folder as working directory, write it to ``dst``;
    return the wall time in seconds. Raises ``nbclient`` errors on a failing cell, and
    :class:`CellTimeout` naming the cell when one runs past ``timeout`` seconds.
    ``progress`` is told when each code cell starts."""
    import tempfile

    import nbformat
    from nbclient.exceptions import CellTimeoutError

    nb = nbformat.read(src, as_version=4)
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
    running = {"index": None}

    def on_cell_start(cell, cell_index: int) -> None:
        running["index"] = cell_index
        if progress is not None and cell_index in code_cells:
            progress.cell_started(code_cells.index(cell_index) + 1, len(code_cells))

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="starunet-kernel-") as ipc_dir, inline_figures():
        client = _CourseClient(nb, config=_kernel_config(ipc_dir), timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(src.parent)}},
                                extra_arguments=[f"--IPKernelApp.exec_lines={KERNEL_SETUP}"],
                                on_cell_start=on_cell_start)
        try:
            client.execute()
        except CellTimeoutError as err:
            index = running["index"]
            number = code_cells.index(index) + 1 if index in code_cells else "?"
            first = nb.cells[index].source.strip().splitlines()[0] if index is not None else "?"
            raise CellTimeout(f"{src.name}: code cell {number}/{len(code_cells)} (`{first}`) ran longer than "
                              f"{timeout} s and was stopped. Run it in JupyterLab to see where it waits, or give "
                              "the course more time per cell with --timeout SECONDS (0: no limit).") from err
    elapsed = time.perf_counter() - start
    clean_notebook(nb)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dst, nbformat.writes(nb) + "\n")
    return elapsed


class CourseProgress:
    """Progress of the headless course, printed while a notebook runs.

    The notebooks print no progress text of their own (their live plots are for
    readers), so a background thread reports (a) a code cell that runs longer than
    ``slow`` seconds ("cell 7/23 running ..."), again every ``heartbeat`` seconds,
    and (b) every epoch a training run finishes, read from the ``history.csv`` the
    engine writes atomically into each run folder under ``runs_dir``.
    """

    def __init__(self, runs_dir: Path, interval: float = 5.0, slow: float = 10.0, heartbeat: float = 60.0,
                 write: Callable[[str], None] | None = None):
        self.runs_dir, self.interval, self.slow, self.heartbeat = Path(runs_dir), interval, slow, heartbeat
        self.write = write or (lambda line: print(line, flush=True))
        self.since = time.time() - 1.0  # history files written from now on are this course's
        self._epochs: dict[Path, int] = {}
        self._cell, self._cell_start, self._reported = "", time.monotonic(), time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def cell_started(self, number: int, total: int) -> None:
        with self._lock:
            self._cell, self._cell_start = f"cell {number}/{total}", time.monotonic()
            self._reported = self._cell_start - self.heartbeat + self.slow  # first report after `slow` s

    def poll(self) -> None:
        """Report new epochs, or else a cell that has been running for a while."""
        lines = [self._epoch_line(path, rows) for path, rows in self._new_epochs()]
        with self._lock:
            now = time.monotonic()
            if lines:
                self._reported = now
            elif self._cell and now - self._reported >= self.heartbeat:
                lines.append(f"  {self._cell} running ({now - self._cell_start:.0f} s) ...")
                self._reported = now
        for line in lines:
            self.write(line)

    def _new_epochs(self) -> list[tuple[Path, list[dict[str, str]]]]:
        found = []
        for path in sorted(self.runs_dir.rglob("history.csv")) if self.runs_dir.is_dir() else []:
            try:
                if path.stat().st_mtime < self.since:
                    continue
                rows = read_csv(path)
            except OSError:  # replaced between the scan and the read: next poll
                continue
            if rows and len(rows) != self._epochs.get(path, 0):
                self._epochs[path] = len(rows)
                found.append((path, rows))
        return found

    @staticmethod
    def _epoch_line(path: Path, rows: list[dict[str, str]]) -> str:
        try:
            total = json.loads((path.parent / "config.json").read_text())["max_epochs"]
        except (OSError, ValueError, KeyError):
            total = "?"
        last = rows[-1]
        return (f"    {path.parent.name}: epoch {len(rows)}/{total}, train loss {float(last['train_loss']):.4f}, "
                f"val PR-AUC {float(last['val_pr_auc']):.4f}")

    @contextlib.contextmanager
    def watching(self) -> Iterator["CourseProgress"]:
        """Poll in a background thread while the block runs."""
        self._stop.clear()
        thread = threading.Thread(target=self._loop, name="course-progress", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.poll()  # the last epochs before the notebook ended
            self._cell = ""

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()


def check_course_folders(out: Path, inplace: bool) -> None:
    """Raise :class:`~starunet.preflight.PreflightError` before any notebook runs when
    a folder the course writes is not writable: the output folder (and ``notebooks/``
    with ``--inplace``), the runs folder, and the data cache if it is still empty."""
    from starunet.config import default_data_root, default_runs_dir
    from starunet.preflight import check_writable_dir

    if inplace:
        check_writable_dir(NOTEBOOKS_DIR, "notebooks folder", "location (without --inplace)")
    check_writable_dir(out, "course output folder")  # summary.md (and --html) go there in any case
    check_writable_dir(default_runs_dir(), "runs folder", "STARUNET_RUNS")
    if not (default_data_root() / "stare").exists():  # a filled cache is only read
        check_writable_dir(default_data_root(), "data cache folder", "STARUNET_DATA")


# What notebook 04 trains (its parameters cell): the 2x2 grid, one seed.
COURSE_PRESET, COURSE_SEED = "fast", 2024


def own_training_markdown() -> str:
    """The reader's own runs of notebook 04 (the 2x2 grid of :data:`COURSE_PRESET`, seed
    :data:`COURSE_SEED`; the smoke preset in smoke mode) that have finished: what this
    course run trained, first in the summary."""
    from starunet.presets import preset_config
    from starunet.runs import cached_result, run_dir_for

    preset = "smoke" if smoke_mode() else COURSE_PRESET
    found = {}
    for fusion in FUSIONS_COMPARED:
        for activation in ACTIVATIONS_COMPARED:
            config = preset_config(preset, fusion=fusion, activation=activation, seed=COURSE_SEED)
            result = cached_result(run_dir_for(config), config)
            if result is not None:  # read back, not reused: this course run's notebook 04 trained it
                found[f"{fusion}-{activation}"] = dataclasses.replace(result, reused=False)
    if not found:
        return (f"## Your training runs (notebook 04)\n\nNo finished `{preset}` run of seed {COURSE_SEED} "
                "in the runs folder: notebook 04 trains them.\n\n")
    return (f"## Your training runs (notebook 04)\n\nPreset `{preset}`, seed {COURSE_SEED}; the validation "
            "metrics choose the checkpoint (two images), the test metrics are below and in notebook 05.\n\n"
            f"{run_results_markdown(found)}\n\n")


def course_summary_markdown() -> str:
    """The results section of the course's ``summary.md``: the grid notebook 05 shows,
    the reader's own runs beside the reference when there are any, and, when a
    longer-trained grid exists (:func:`starunet.results.budget_grids`), the verdicts of
    notebook 05 section 9 for every budget."""
    text = own_training_markdown()
    try:
        results = find_results()
    except FileNotFoundError as err:
        return text + f"## Results: sum vs star skip fusion\n\nNo grid results found: {err}\n"
    text += results_markdown(results)
    own_dir = own_results_dir() if results.kind == "own" else course_check_dir()
    if (own_dir / "metrics.csv").is_file():
        own, reference = load_results(own_dir), course_reference()
        text += ("\n## Your runs beside the reference (appendix notebook 07, section 6)\n\n"
                 f"{reference_comparison_markdown(own, reference)}")
    grids = budget_grids(results)
    diffs = budget_differences(grids) if len(grids) > 1 else {}
    if len(diffs) > 1:
        sources = "\n".join(f"- `{name}`: {grid.describe()}." for name, grid in grids.items())
        text += (f"\n## Across training budgets (notebook 05, section 9)\n\n{sources}\n\n"
                 f"{budget_verdicts_markdown(diffs)}\n")
    return text


def _runs_finished_since(runs_dir: Path, since: float) -> int:
    """How many runs under ``runs_dir`` wrote their ``result.json`` after ``since``."""
    return sum(1 for p in runs_dir.glob("*/*/result.json") if p.stat().st_mtime >= since) if runs_dir.exists() else 0


def _timing_row(notebook: str, seconds: float, runs_trained: int) -> dict:
    return {"notebook": notebook, "seconds": f"{seconds:.0f}", "runs_trained": runs_trained,
            "cpu": cpu_model(), "cores": os.cpu_count(), "measured": time.strftime("%Y-%m-%d")}


def run_course(out: Path, only: list[str] | None = None, inplace: bool = False,
               timeout: int | None = None, html: bool = False,
               record: bool = False) -> list[tuple[str, float]]:
    """Execute the notebooks (all, or those whose name starts with one of ``only``);
    with ``html``, also write each as ``<out>/<name>.html`` with alt text on its figures;
    each one's time goes to ``<out>/timings.csv`` and, with ``record``, to the lessons'
    ``notebooks/timings.csv``."""
    notebooks = list_notebooks()
    if only:
        notebooks = [p for p in notebooks if any(p.name.startswith(o) for o in only)]
        if not notebooks:
            valid = ", ".join(p.name for p in list_notebooks())
            raise SystemExit(f"no notebook matches {only}; valid: {valid}")
    check_course_folders(out, inplace)
    from starunet.config import default_runs_dir

    progress = CourseProgress(default_runs_dir())
    timings, measured = [], []
    for n, nb_path in enumerate(notebooks, start=1):
        dst = nb_path if inplace else out / nb_path.name
        print(f"[{n}/{len(notebooks)}] executing {nb_path.name} ...", flush=True)
        started = time.time()
        with progress.watching():
            seconds = execute_notebook(nb_path, dst, timeout=timeout, progress=progress)
        measured.append(_timing_row(nb_path.name, seconds, _runs_finished_since(default_runs_dir(), started)))
        print(f"  done in {seconds:.0f} s -> {dst}", flush=True)
        if html:
            from starunet.alt_text import export_html

            print(f"  html -> {export_html(dst, out / nb_path.with_suffix('.html').name)}", flush=True)
        timings.append((nb_path.name, seconds))
    lines = ["# starunet course run", "",
             ("Mode: smoke (STARUNET_SMOKE=1): tiny data and a few steps, a check of the pipeline whose numbers "
              "mean nothing; " if smoke_mode() else "Mode: the full course (every notebook trains and scores for "
              "real, not the smoke check that CI runs); ") +
             f"Python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d %H:%M')}.", "",
             markdown_table(["notebook", "seconds"], [[name, f"{sec:.0f}"] for name, sec in timings])]
    if not smoke_mode():  # smoke timings say nothing about the course
        record_timings(measured, out / "timings.csv")
        if record:
            record_timings(measured)
    summary = "\n".join(lines) + "\n\n" + course_summary_markdown()
    write_text_atomic(out / "summary.md", summary)
    print(f"summary -> {out / 'summary.md'}")
    return timings


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m starunet course", description=plain_help(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("course-output"),
                        help="folder for the executed notebooks and summary.md (default: course-output)")
    parser.add_argument("--only", nargs="+", metavar="PREFIX",
                        help="run only notebooks whose file name starts with PREFIX (e.g. 01 03)")
    parser.add_argument("--inplace", action="store_true",
                        help="write outputs back into notebooks/ (to refresh the committed outputs)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_CELL_TIMEOUT,
                        help=f"per-cell timeout in seconds, 0 for none (default {DEFAULT_CELL_TIMEOUT}: "
                             "a cell that runs an hour is hung)")
    parser.add_argument("--html", action="store_true",
                        help="also write each executed notebook as HTML into --out, figures with alt text")
    parser.add_argument("--record-timings", action="store_true",
                        help="write each notebook's measured time into notebooks/timings.csv, the compute "
                             "times the lessons show (run on an idle machine with a fresh runs folder)")
    args = parser.parse_args(argv)
    from starunet.preflight import PreflightError, check_positive

    try:
        if args.timeout != 0:
            check_positive(args.timeout, "--timeout")
        _INTERRUPTED.clear()
        run_course(args.out, args.only, args.inplace, args.timeout or None, args.html, args.record_timings)
    except PreflightError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except CellTimeout as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BaseException as err:
        if not (_INTERRUPTED.is_set() or isinstance(err, KeyboardInterrupt)):
            raise
        # nbclient answers Ctrl-C by shutting the kernel down, which surfaces as a dead
        # kernel (and an assertion of its own); the reader needs where things stand
        print(f"\ninterrupted: the notebooks finished so far are in {args.out}; run the same command "
              "again to go on (finished training runs are reused, unfinished ones resume)", file=sys.stderr)
        return 130
    return 0


# Set by a Ctrl-C while a notebook runs: the running cell is interrupted and the
# notebook ends with that cell's error, which the command line reports in one line.
_INTERRUPTED = threading.Event()


# How often a client waiting for a kernel message looks at its socket again. ZMQ signals
# new messages edge-triggered: a wait that misses the edge sleeps until its timeout (one
# hour a cell here) although the reply is queued, and the notebook hangs with an idle
# kernel (seen on widget cells under load: nbclient issue 312). A new wait checks the
# socket first, so waiting in slices loses at most one slice.
POLL_SLICE_SECONDS = 1.0


def _polled_in_slices(get_msg: Callable) -> Callable:
    """``get_msg`` of a kernel client's channel, waiting in :data:`POLL_SLICE_SECONDS`
    slices up to the caller's ``timeout`` (None: for ever), raising ``queue.Empty`` as
    the original does once that has passed."""
    from queue import Empty

    async def get_msg_in_slices(timeout: float | None = None, **kwargs):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await ensure_async(get_msg(timeout=min(POLL_SLICE_SECONDS, left), **kwargs))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
    return get_msg_in_slices


class _CourseClient(NotebookClient):
    """nbclient's client, with Ctrl-C interrupting the running cell.

    nbclient answers SIGINT by shutting the kernel down at once, mid-reply: the
    kernel then prints a ZMQ traceback. Interrupting the kernel instead ends the cell
    with a ``KeyboardInterrupt`` (a training run keeps its last finished epoch), and
    nbclient shuts the kernel down in order.
    """

    async def async_start_new_kernel(self, **kwargs) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows, or not the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._interrupt)  # replaces nbclient's
        await super().async_start_new_kernel(**kwargs)

    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        for channel in (kc.shell_channel, kc.iopub_channel):
            channel.get_msg = _polled_in_slices(channel.get_msg)
        return kc

    _in_cell = False

    def _interrupt(self) -> None:
        _INTERRUPTED.set()
        if self._in_cell:  # else no further cell starts (async_execute_cell), and a
            # kernel still starting up is not hit in its imports
            asyncio.ensure_future(ensure_async(self.km.interrupt_kernel()))

    async def async_execute_cell(self, *args, **kwargs):
        if _INTERRUPTED.is_set():  # the interrupt fell between cells: run no more of them
            raise KeyboardInterrupt
        self._in_cell = True
        try:
            return await super().async_execute_cell(*args, **kwargs)
        finally:
            self._in_cell = False
