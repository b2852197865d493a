"""How the grid's runs get trained: the one thing :func:`starunet.grid.reproduce` leaves open.

:func:`~starunet.grid.reproduce` hands its runs to a *runner* and evaluates each
result as the runner yields it. The course's runner is :class:`InProcessRunner`: one
run after another, in this process, through :func:`starunet.training.train`. Any other
way of training them (the lab's parallel jobs, ``python -m starunet reproduce --jobs N``)
is an object with the same four members (:class:`Runner`), passed as
``reproduce(..., runner=...)``; the course never imports it.

A run that cannot be trained is yielded as a :class:`RunFailure`, so the others go on;
the grid evaluates the rest and then raises :class:`GridRunError` naming every failure.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Protocol, Sequence

from starunet.config import display_path
from starunet.stats import run_key


class Runner(Protocol):
    """What :func:`starunet.grid.reproduce` asks of whatever trains its runs."""

    parallel: bool  # runs end in any order, elsewhere (the log counts them as they end)

    def validate(self) -> "Runner":
        """Return itself, or raise ``ValueError`` naming every problem and its fix,
        before any work (before the data are loaded)."""

    def process_threads(self) -> int | None:
        """Torch threads of this process while the grid runs (None: unchanged)."""

    def train_runs(self, configs: Sequence, run_dirs: Sequence[Path], device: str, selected: str,
                   log: Callable[[str], None], records: Sequence,
                   precision: str = "auto") -> Iterator[tuple[int, Any]]:
        """Train (or reuse) ``configs[i]`` into ``run_dirs[i]`` in ``precision``; yield
        ``(i, outcome)`` as each ends, ``outcome`` a ``TrainingResult`` or a
        :class:`RunFailure`. ``device`` is the device asked for (``"auto"``), ``selected``
        the one this process chose. Closing the iterator early stops the runs in flight."""

    def provenance(self) -> dict | None:
        """What ``provenance.json`` records about how the runs were spread, or None."""


@dataclass(frozen=True)
class InProcessRunner:
    """The grid's runs one after another, here: the default of :func:`starunet.grid.reproduce`."""
    threads: int | None = None  # torch threads while the grid runs (None: unchanged)
    parallel: ClassVar[bool] = False

    def validate(self) -> "InProcessRunner":
        if self.threads is not None and not (isinstance(self.threads, int) and not isinstance(self.threads, bool)
                                             and self.threads >= 1):
            raise ValueError(f"--threads (threads=) must be a positive integer, the torch threads per run; "
                             f"got {self.threads!r}")
        return self

    def process_threads(self) -> int | None:
        return self.threads

    def train_runs(self, configs: Sequence, run_dirs: Sequence[Path], device: str, selected: str,
                   log: Callable[[str], None], records: Sequence,
                   precision: str = "auto") -> Iterator[tuple[int, Any]]:
        from starunet.training import train  # here, not above: the lab's job processes import this module

        for n, (config, run_dir) in enumerate(zip(configs, run_dirs)):
            log(f"[{n + 1}/{len(configs)}] {run_key(config.fusion, config.activation, config.seed)}: "
                "training (or reusing) ...")
            yield n, train(config, run_dir, resume=True, device=selected, records=records, precision=precision)

    def provenance(self) -> None:
        return None  # absent for one run at a time, so such grids' files stay as they were


@dataclass
class RunFailure:
    """A run whose training raised or died; ``log`` holds its output with the traceback."""
    index: int
    run_dir: Path
    log: Path
    error: str

    def describe(self) -> str:
        return f"{display_path(self.run_dir)} failed: {self.error}\n    log: {self.log}"


class GridRunError(RuntimeError):
    """Some runs of a grid failed; the others finished (and were evaluated)."""

    def __init__(self, failures: Sequence[RunFailure], total: int):
        self.failures = list(failures)
        lines = [f"{len(self.failures)} of {total} runs failed (the others finished):"]
        lines += [f"  {f.describe()}" for f in self.failures]
        lines.append("Fix the cause and rerun the same command: finished runs are reused.")
        super().__init__("\n".join(lines))
