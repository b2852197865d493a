"""The plan of a GPU session (:mod:`starunet.lab.gpu_session`), as pure functions: from a
measured :class:`Timing`, the :class:`Work` asked for and the :class:`Assumptions`
(epochs a run lasts, parallel efficiency), what fits in the budget: seeds are cut
first, then the learning curves. Tested without a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True)
class Timing:
    """What the probe measured on this device (one job alone)."""
    step_seconds: float            # one training step at the preset's batch size
    val_seconds: float             # one validation pass over the preset's validation images
    image_seconds: float           # inference + metrics of one full 605x700 test image


@dataclass(frozen=True)
class Assumptions:
    """What the estimate cannot measure in seconds; printed with it."""
    epochs: int                    # epochs of an early-stopped run (measured: 20-39 in results/full)
    efficiency: float = 0.6        # throughput each further job on the same GPU adds, vs the first
    startup_seconds: float = 25.0  # a job's process start, imports, data and CUDA initialisation
    tests_minutes: float = 1.0
    bench_minutes: float = 3.0     # torch.compile of 4 step variants dominates on a GPU
    test_images: int = 10


@dataclass(frozen=True)
class Work:
    """The sizes of the work to plan: the grid's and the curves' runs."""
    steps_per_epoch: int           # training steps per epoch of the grid preset
    seeds: tuple[int, ...]
    runs_per_seed: int = 4         # sum/star x none/relu
    jobs: int = 1
    curve_runs: int = 8
    curve_steps: int = 0           # training steps of one curve run
    curve_validations: int = 0     # validations of one curve run
    curve_snapshots: int = 0       # snapshots per curve run, each scored on the test images


@dataclass
class PlannedStep:
    name: str
    minutes: float
    detail: str = ""


@dataclass
class Plan:
    steps: list[PlannedStep]
    seeds: tuple[int, ...]
    budget_minutes: float
    notes: list[str] = field(default_factory=list)

    @property
    def minutes(self) -> float:
        return sum(s.minutes for s in self.steps)

    def step(self, name: str) -> PlannedStep | None:
        return next((s for s in self.steps if s.name == name), None)

    def describe(self) -> str:
        lines = [f"plan for the {self.budget_minutes:.1f} min left (estimate {self.minutes:.1f} min):"]
        lines += [f"  {s.name:<7} {s.minutes:6.1f} min  {s.detail}" for s in self.steps]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def parallel_speedup(jobs: int, efficiency: float) -> float:
    """Throughput of ``jobs`` runs sharing one device, in units of one run alone."""
    return 1 + (max(1, jobs) - 1) * efficiency


def run_seconds(steps: int, validations: int, timing: Timing, a: Assumptions) -> float:
    """Wall time of one run alone on the device."""
    return a.startup_seconds + steps * timing.step_seconds + validations * timing.val_seconds


def grid_minutes(n_seeds: int, work: Work, timing: Timing, a: Assumptions) -> float:
    """The grid of ``n_seeds`` seeds with ``work.jobs`` runs in flight: the runs'
    device time shared by the jobs, plus the evaluation of the last run (the others
    are evaluated while runs still train)."""
    runs = n_seeds * work.runs_per_seed
    one = run_seconds(a.epochs * work.steps_per_epoch, a.epochs, timing, a)
    speedup = parallel_speedup(min(work.jobs, runs), a.efficiency)
    return (runs * one / speedup + a.test_images * timing.image_seconds) / 60


def curves_minutes(work: Work, timing: Timing, a: Assumptions) -> float:
    """The curve runs in ``work.jobs`` shards, then every snapshot scored."""
    one = run_seconds(work.curve_steps, work.curve_validations, timing, a)
    speedup = parallel_speedup(min(work.jobs, work.curve_runs), a.efficiency)
    scoring = work.curve_runs * work.curve_snapshots * a.test_images * timing.image_seconds
    return (work.curve_runs * one / speedup + scoring) / 60


def plan_session(budget_minutes: float, work: Work, timing: Timing, a: Assumptions,
                 skip: Sequence[str] = ()) -> Plan:
    """The steps that fit ``budget_minutes``, most important first: tests and bench
    are kept, the grid loses seeds (down to one) until it fits, the curves run only
    in what is left. A plan that does not fit even so is kept and says so: each step
    keeps what it finished when the time runs out."""
    plan = Plan([], tuple(work.seeds), budget_minutes)
    for name, minutes, detail in (("tests", a.tests_minutes, "pytest -k cuda"),
                                  ("bench", a.bench_minutes, "python -m starunet bench")):
        if name not in skip:
            plan.steps.append(PlannedStep(name, minutes, detail))
    if "grid" not in skip:
        left = budget_minutes - plan.minutes
        n = len(work.seeds)
        while n > 1 and grid_minutes(n, work, timing, a) > left:
            n -= 1
        plan.seeds = tuple(work.seeds[:n])
        if n < len(work.seeds):
            plan.notes.append(f"grid cut from {len(work.seeds)} to {n} seed(s) to fit the budget")
        plan.steps.append(PlannedStep("grid", grid_minutes(n, work, timing, a),
                                      f"{n * work.runs_per_seed} runs, {work.jobs} at once, "
                                      f"~{a.epochs} epochs each (assumed)"))
    if "curves" not in skip:
        minutes = curves_minutes(work, timing, a)
        if minutes <= budget_minutes - plan.minutes:
            plan.steps.append(PlannedStep("curves", minutes, f"{work.curve_runs} runs in {work.jobs} shards"))
        else:
            plan.notes.append(f"curves skipped: they need ~{minutes:.0f} min, {max(0.0, budget_minutes - plan.minutes):.1f} left")
    if plan.minutes > budget_minutes:
        plan.notes.append(f"the plan needs ~{plan.minutes:.1f} min, over the budget: the last step is cut "
                          "short at the deadline and keeps what it finished")
    return plan
