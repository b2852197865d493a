"""Tests of starunet.runners: how reproduce's runs get trained when the lab is not
involved (one after another, in this process), and how failures are reported."""
from __future__ import annotations

from pathlib import Path

import pytest

import starunet.grid as G
from starunet.runners import GridRunError, InProcessRunner, RunFailure


def test_the_in_process_runner_checks_its_threads_before_any_work(tmp_path):
    assert InProcessRunner().validate().process_threads() is None  # torch threads unchanged
    assert InProcessRunner(threads=2).validate().process_threads() == 2
    assert not InProcessRunner.parallel and InProcessRunner().provenance() is None
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"--threads \(threads=\) must be a positive integer"):
            G.reproduce("smoke", [1], tmp_path / "out", runner=InProcessRunner(threads=bad), records=[])
    assert not (tmp_path / "out").exists()


def test_grid_run_error_names_every_failed_run_and_its_log(tmp_path):
    failures = [RunFailure(1, tmp_path / "star-none-s7", tmp_path / "star.log", "RuntimeError: boom")]
    text = str(GridRunError(failures, total=2))
    assert text.splitlines()[0] == "1 of 2 runs failed (the others finished):"
    assert "star-none-s7 failed: RuntimeError: boom" in text and str(Path(tmp_path / "star.log")) in text
    assert text.endswith("Fix the cause and rerun the same command: finished runs are reused.")
