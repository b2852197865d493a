"""Tests of starunet.lab.gpu_session's plan: estimate, cut to the budget, checks before
any work, and what the archive keeps. Pure functions: nothing is trained here (the
session itself is rehearsed end to end with ``python -m starunet gpu-session --smoke``)."""
from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

import pytest

from fakes import needs_submitit
from starunet.lab import gpu_session as G
from starunet.lab import session_plan

TIMING = session_plan.Timing(step_seconds=0.01, val_seconds=1.0, image_seconds=0.5)
ASSUME = session_plan.Assumptions(epochs=30, efficiency=0.5, startup_seconds=20.0, tests_minutes=1.0, bench_minutes=3.0)
WORK = session_plan.Work(steps_per_epoch=250, seeds=(2024, 2025, 2026, 2027, 2028), jobs=4, curve_runs=8,
                         curve_steps=8192, curve_validations=128, curve_snapshots=7)


def test_parallel_speedup_adds_a_fraction_per_extra_job():
    assert session_plan.parallel_speedup(1, 0.5) == 1
    assert session_plan.parallel_speedup(3, 0.5) == 1 + 2 * 0.5
    assert session_plan.parallel_speedup(4, 1.0) == 4


def test_grid_estimate_grows_with_seeds_and_shrinks_with_jobs():
    one, five = session_plan.grid_minutes(1, WORK, TIMING, ASSUME), session_plan.grid_minutes(5, WORK, TIMING, ASSUME)
    assert 0 < one < five
    alone = session_plan.grid_minutes(5, session_plan.Work(250, WORK.seeds, jobs=1), TIMING, ASSUME)
    assert five < alone
    run = session_plan.run_seconds(ASSUME.epochs * WORK.steps_per_epoch, ASSUME.epochs, TIMING, ASSUME)
    last_eval = ASSUME.test_images * TIMING.image_seconds
    assert alone == pytest.approx((5 * WORK.runs_per_seed * run + last_eval) / 60)


def test_a_large_budget_keeps_everything():
    plan = session_plan.plan_session(10_000, WORK, TIMING, ASSUME)
    assert [s.name for s in plan.steps] == ["tests", "bench", "grid", "curves"]
    assert plan.seeds == WORK.seeds and plan.notes == []
    assert plan.minutes == pytest.approx(sum(s.minutes for s in plan.steps))


def test_the_grid_loses_seeds_until_it_fits_and_the_curves_go_first():
    fixed = ASSUME.tests_minutes + ASSUME.bench_minutes
    budget = fixed + session_plan.grid_minutes(3, WORK, TIMING, ASSUME) + 0.01  # room for 3 seeds, not 4
    plan = session_plan.plan_session(budget, WORK, TIMING, ASSUME)
    assert plan.seeds == WORK.seeds[:3]
    assert [s.name for s in plan.steps] == ["tests", "bench", "grid"]
    assert plan.minutes <= budget
    assert any("5 to 3 seed" in n for n in plan.notes) and any("curves skipped" in n for n in plan.notes)


def test_a_plan_over_budget_keeps_one_seed_and_says_so():
    plan = session_plan.plan_session(ASSUME.tests_minutes + ASSUME.bench_minutes, WORK, TIMING, ASSUME)
    assert plan.seeds == WORK.seeds[:1]
    assert plan.minutes > plan.budget_minutes
    assert any("over the budget" in n for n in plan.notes)


def test_skipped_steps_are_not_planned_and_free_their_time():
    plan = session_plan.plan_session(10_000, WORK, TIMING, ASSUME, skip=["bench", "curves"])
    assert [s.name for s in plan.steps] == ["tests", "grid"]
    assert plan.step("bench") is None and plan.step("grid").minutes > 0
    assert "grid" in plan.describe() and "bench" not in plan.describe()


def test_stare_is_found_in_or_beside_the_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("STARUNET_STARE_SOURCE", raising=False)
    root = tmp_path / "repo"
    root.mkdir()
    assert G.find_stare_source(root) is None
    beside = tmp_path / "shared" / "data" / "stare"
    beside.mkdir(parents=True)
    assert G.find_stare_source(root) == str(beside)
    inside = root / "shared" / "data" / "stare"
    inside.mkdir(parents=True)
    assert G.find_stare_source(root) == str(inside)
    monkeypatch.setenv("STARUNET_STARE_SOURCE", "/elsewhere")
    assert G.find_stare_source(root) == "/elsewhere"


def _args(**changes) -> argparse.Namespace:
    base = dict(smoke=True, budget_minutes=10.0, jobs=2, skip=[])
    return argparse.Namespace(**{**base, **changes})


def test_preflight_names_every_problem_before_any_work(monkeypatch):
    monkeypatch.setattr(G, "find_stare_source", lambda root=None: None)
    monkeypatch.setattr(G, "missing_modules", lambda names=G.REQUIRED_MODULES: ["submitit"])
    problems = G.preflight(_args(budget_minutes=0, jobs=0, skip=["grid", "lunch"]))
    text = "\n".join(problems)
    assert "Python packages missing: submitit" in text and "pip download" in text
    assert "no STARE data" in text and "STARUNET_STARE_SOURCE" in text
    assert "--budget-minutes must be positive" in text and "--jobs must be a positive integer" in text
    assert "--skip lunch: unknown step(s); valid: tests, bench, grid, curves" in text
    assert len(problems) == 5


@needs_submitit  # the session's grid runs with --jobs
def test_preflight_passes_the_rehearsal_here(stare_source, monkeypatch):
    if stare_source is not None:
        monkeypatch.setenv("STARUNET_STARE_SOURCE", stare_source)
    else:
        monkeypatch.setattr(G, "find_stare_source", lambda root=None: "https://example.invalid/stare")
    assert G.preflight(_args()) == []


def test_the_archive_keeps_results_at_their_paths_and_leaves_out_weights(tmp_path):
    work = tmp_path / "work"
    (work / "runs" / "smoke" / "run").mkdir(parents=True)
    (work / "runs" / "smoke" / "run" / "checkpoint_best.pt").write_bytes(b"w")
    (work / "runs" / "smoke" / "run" / "result.json").write_text("{}")
    (work / "full").mkdir()
    (work / "full" / "metrics.csv").write_text("fusion\n")
    (work / "grid.log").write_text("log\n")
    session = G.Session(tmp_path, work, deadline=0.0, smoke=True)
    session.outputs.append(work / "full")
    session.results.append(G.StepResult("grid", "ok", 1.0, str(work / "grid.log")))
    session.save()
    with tarfile.open(tmp_path / G.ARCHIVE) as tar:
        all_names = tar.getnames()
    names = set(all_names)
    assert len(names) == len(all_names)  # an output inside the work folder is archived once
    assert {"session/grid.log", "session/full/metrics.csv", "session/summary.md", "session/session.json"} <= names
    assert not any(n.endswith(".pt") or "/runs" in n for n in names)
    assert "| grid | ok |" in (tmp_path / "summary.md").read_text()
    assert G._arcname(G.PROJECT_ROOT / "results" / "full", work) == str(Path("results") / "full")


def test_a_step_past_the_deadline_is_skipped_not_started(tmp_path):
    session = G.Session(tmp_path, tmp_path / "work", deadline=0.0, smoke=True)
    (tmp_path / "work").mkdir()
    result = session.run("bench", [["false"]])
    assert result.status.startswith("skipped") and not Path(result.log).exists()


def test_step_commands_name_repository_paths_relative_to_it(tmp_path):
    assert G._shown(G.PROJECT_ROOT / "results" / "full") == "results/full"
    assert G._shown(tmp_path / "bench") == str(tmp_path / "bench")


def test_the_default_epochs_are_the_median_of_the_committed_full_runs():
    """README and `--expected-epochs` say 33 is the median early-stopped length in results/full."""
    import statistics

    from starunet.config import PROJECT_ROOT
    from starunet.io import read_csv
    from starunet.lab.gpu_session import _default_epochs

    rows = read_csv(PROJECT_ROOT / "results" / "full" / "metrics.csv")
    assert _default_epochs("full") == statistics.median(int(r["epochs"]) for r in rows)
    assert _default_epochs("smoke") == 2
