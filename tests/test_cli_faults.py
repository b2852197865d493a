"""Faults a command-line user meets, each run as a real ``python -m starunet``
subprocess in a temporary folder: bad arguments and unwritable output folders are
refused in one line before any work and leave nothing behind; Ctrl-C during
``train`` ends with one line and a resume command that works; a run folder has
one writer at a time.

Tests run as root in CI, and root ignores permission bits: an unwritable folder is
simulated by a path below a regular file, which stops everyone. The chmod variant
runs only for other users."""
from __future__ import annotations

import os
import shlex
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from starunet import preflight
from starunet.runs import read_history

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def env(stare_source, tmp_path_factory) -> dict[str, str]:
    """Smoke mode, the STARE source, and one private data cache for the module."""
    env = {**os.environ, "STARUNET_SMOKE": "1", "STARUNET_DATA": str(tmp_path_factory.mktemp("data")),
           "STARUNET_RUNS": str(tmp_path_factory.mktemp("runs"))}
    if stare_source is not None:
        env["STARUNET_STARE_SOURCE"] = stare_source
    return env


def starunet(args: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: int = 300,
             code: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "starunet", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def refused(proc: subprocess.CompletedProcess, *words: str) -> str:
    """The one-line error of a refused command (asserting its shape)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def blocked(tmp_path) -> Path:
    """A folder no one can create: its parent is a regular file."""
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path / "a-file" / "out"


# ---------------------------------------------------------------- checks before work

def test_train_refuses_an_out_of_range_seed_before_creating_anything(env, tmp_path):
    proc = starunet(["train", "--preset", "smoke", "--seed", "99999999999999999999",
                     "--out", str(tmp_path / "run")], env)
    refused(proc, "--seed 99999999999999999999", "2**64 - 1", "e.g. --seed 2024")
    assert not (tmp_path / "run").exists()  # no folder holding only config.json


@pytest.mark.parametrize("command", [
    ["train", "--preset", "smoke"],
    ["reproduce", "--preset", "smoke", "--seeds", "1"],
    ["course"],
    ["bench"],
])
def test_unwritable_output_folder_is_refused_before_any_work(command, env, blocked):
    proc = starunet([*command, "--out", str(blocked)], env)
    refused(proc, "cannot write the", "is a file, not a folder", "--out")
    assert "executing" not in proc.stdout and not proc.stdout.strip()


def test_fetch_refuses_an_unwritable_cache_before_downloading(env, blocked):
    proc = starunet(["fetch", "--root", str(blocked)], env)
    refused(proc, "cannot write the data cache folder", "--root")


def test_reproduce_checks_every_argument_before_training(env, tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    common = ["reproduce", "--preset", "smoke", "--out", str(out), "--runs-dir", str(runs)]
    refused(starunet([*common, "--seeds", "1", "--batch-size", "0"], env), "--batch-size 0", "positive integer")
    refused(starunet([*common, "--seeds", "1", str(2**64)], env), f"--seeds {2**64}", "e.g. --seeds 2024")
    (tmp_path / "f").write_text("")
    refused(starunet([*common[:-2], "--seeds", "1", "--runs-dir", str(tmp_path / "f" / "x")], env),
            "runs folder", "--runs-dir")
    assert not out.exists() and not runs.exists()


def test_bench_and_course_check_their_options(env, tmp_path):
    refused(starunet(["bench", "--seconds", "0", "--out", str(tmp_path)], env), "--seconds 0", "positive")
    refused(starunet(["bench", "--large-batches", "0", "--out", str(tmp_path)], env), "--large-batches 0")
    refused(starunet(["course", "--timeout", "-5", "--out", str(tmp_path / "c")], env), "--timeout -5")  # 0: no limit
    assert not (tmp_path / "c").exists() and not any(tmp_path.iterdir())


def test_command_line_errors_name_options_not_keyword_arguments(env, tmp_path):
    proc = starunet(["fetch", "--source", str(tmp_path / "missing")], env)
    assert "pass --source" in proc.stderr and "source=" not in proc.stderr
    if not __import__("torch").cuda.is_available():
        line = refused(starunet(["train", "--preset", "smoke", "--device", "cuda", "--out", str(tmp_path / "r")],
                                env), "--device auto or --device cpu")
        assert "device='auto'" not in line and not (tmp_path / "r").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_folder_by_permissions(env, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    refused(starunet(["train", "--preset", "smoke", "--out", str(folder / "run")], env), "permission denied")


# ---------------------------------------------------------------- Ctrl-C and the lock

# Runs `python -m starunet train ...` with validation slowed down from the given call
# on, so that SIGINT reliably lands inside a known epoch.
SLOW_AFTER = """
import signal, sys, time
# a background job of a non-interactive shell starts with SIGINT ignored, and Python then
# installs no KeyboardInterrupt handler: restore it, as a terminal user's process has it
signal.signal(signal.SIGINT, signal.default_int_handler)
import starunet.training as t
slow_from, calls, validate = int(sys.argv[1]), [], t.validate
def slow_validate(*args, **kwargs):
    calls.append(1)
    if len(calls) >= slow_from:
        print("slow", flush=True)
        time.sleep(120)
    return validate(*args, **kwargs)
t.validate = slow_validate
sys.exit(t.cli(sys.argv[2:]))
"""


def _interrupt(args: list[str], slow_from: int, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-c", SLOW_AFTER, str(slow_from), *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "slow", proc.communicate()  # inside epoch `slow_from`
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_ctrl_c_during_train_says_what_was_saved_and_how_to_resume(env, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--preset", "smoke", "--fusion", "sum", "--activation", "none", "--seed", "3",
            "--device", "cpu", "--out", str(run)]
    proc = _interrupt(args[1:], 2, env, tmp_path)  # SIGINT inside epoch 2
    assert proc.returncode == 130, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("interrupted: epoch 1 is saved in") and "checkpoint_last.pt" in lines[0]
    assert len(read_history(run)) == 1
    resume = shlex.split(lines[0].split("continue with: ", 1)[1])
    assert resume[1:] == ["-m", "starunet", *args[:-1], str(run), "--resume"]
    again = subprocess.run(resume, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr  # the printed command runs as shown
    assert len(read_history(run)) == 2 and (run / "result.json").is_file()


def test_ctrl_c_before_the_first_epoch_leaves_nothing_behind(env, tmp_path):
    run = tmp_path / "run"
    proc = _interrupt(["--preset", "smoke", "--device", "cpu", "--out", str(run)], 1, env, tmp_path)  # epoch 1
    assert proc.returncode == 130 and "nothing was saved" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not run.exists()


HOLD_LOCK = """
import sys, time
from starunet.preflight import RunDirLock
lock = RunDirLock.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_recovered(env, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--preset", "smoke", "--device", "cpu", "--out", str(run)]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in ([], ["--resume"], ["--force"]):
            refused(starunet([*args, *extra], env), f"is being written by PID {holder.pid}", "another --out")
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written, nothing deleted
    finally:
        holder.kill()  # dies without releasing anything: the OS drops its flock
        holder.wait()
    proc = starunet(args, env)
    assert proc.returncode == 0, proc.stderr
    assert len(read_history(run)) == 2


# ---------------------------------------------------------------- the checks themselves

def test_writable_dir_problem_tries_a_real_write(tmp_path):
    assert preflight.writable_dir_problem(tmp_path / "new" / "deeper") is None
    assert not (tmp_path / "new").exists()  # the check creates nothing
    (tmp_path / "f").write_text("")
    assert "is a file, not a folder" in preflight.writable_dir_problem(tmp_path / "f" / "sub")
    assert list(tmp_path.iterdir()) == [tmp_path / "f"]  # and leaves no probe file


def test_seed_range_is_torchs():
    import torch

    torch.manual_seed(preflight.SEED_LIMIT - 1)  # the largest seed the check accepts works
    with pytest.raises((ValueError, OverflowError, RuntimeError)):
        torch.manual_seed(preflight.SEED_LIMIT)
    assert preflight.seed_problem(preflight.SEED_LIMIT - 1) is None
    for bad in (preflight.SEED_LIMIT, -1, 1.5, True):
        assert "2**64 - 1" in preflight.seed_problem(bad)


def test_run_lock_is_reentrant_in_one_process_and_released_with_its_holder(tmp_path):
    lock = preflight.RunDirLock.acquire(tmp_path / "run")
    assert preflight.RunDirLock.acquire(tmp_path / "run") is lock and preflight.RunDirLock.holds(tmp_path / "run")
    assert (tmp_path / "run" / ".lock").read_text().startswith(f"PID {os.getpid()} on ")
    del lock
    assert not preflight.RunDirLock.holds(tmp_path / "run")


def test_cli_message_rewords_the_python_api():
    err = ValueError("device 'cuda' was requested but is not available here; use device='auto' or 'cpu'")
    assert preflight.cli_message(err).endswith("use --device auto or --device cpu")


def test_a_failed_run_does_not_stay_locked_while_its_traceback_lives(stare_records, tmp_path):
    import starunet.training as tr
    from starunet.presets import TrainConfig

    tiny = TrainConfig(patch_size=32, samples_per_epoch=4, batch_size=2, max_epochs=3, patience=5,
                       narrow=0.125, val_images=1, val_crop=96, preset="tiny")

    def fail(history):
        raise RuntimeError("a cell's error after epoch 1")

    run = tmp_path / "run"
    with pytest.raises(RuntimeError) as kept:  # as a notebook keeps its last traceback
        tr.train(tiny, run, records=stare_records, device="cpu", callback=fail)
    assert kept.value.__traceback__ is not None and not preflight.RunDirLock.holds(run)
    other = subprocess.run([sys.executable, "-c", "import sys; from starunet.preflight import RunDirLock; "
                            "RunDirLock.acquire(sys.argv[1]); print('taken')", str(run)],
                           capture_output=True, text=True, timeout=120)
    assert other.stdout.strip() == "taken", other.stderr


def test_ctrl_c_during_the_course_ends_with_one_line(env, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "starunet", "course", "--only", "02", "--out", str(tmp_path / "c")],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "executing 02_" in proc.stdout.readline()
    time.sleep(3)  # the kernel is starting or running the first cells: either way one line
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted: the notebooks finished so far are in")
    assert "Traceback" not in stderr, stderr


def test_a_truncated_checkpoint_stops_train_and_reproduce_with_one_line(env, tmp_path):
    runs_dir = tmp_path / "runs"
    grid = ["reproduce", "--preset", "smoke", "--seeds", "3", "--fusions", "sum", "--activations", "none",
            "--device", "cpu", "--runs-dir", str(runs_dir), "--out", str(tmp_path / "grid")]
    assert starunet(grid, env).returncode == 0
    run = next((runs_dir / "smoke").iterdir())
    best = run / "checkpoint_best.pt"
    best.write_bytes(best.read_bytes()[:1000])  # a copy cut short
    shutil.rmtree(tmp_path / "grid")  # no cached evaluation: the grid must load the weights
    line = refused(starunet(grid, env), "checkpoint_best.pt", "is corrupt or truncated", "train it again")
    assert str(run.name) in line
    (run / "result.json").unlink()  # now an unfinished run whose resume state is cut short too
    last = run / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    train = ["train", "--preset", "smoke", "--fusion", "sum", "--activation", "none", "--seed", "3",
             "--device", "cpu", "--out", str(run), "--resume"]
    refused(starunet(train, env), "checkpoint_last.pt", "is corrupt or truncated", "--force")


def test_help_reads_as_plain_text_and_proc_is_named_as_a_system_folder(env, tmp_path):
    from starunet.preflight import plain_help

    assert plain_help("See :class:`~starunet.x.CourseProgress` and ``python -m x``.") == \
        "See CourseProgress and 'python -m x'."
    text = starunet(["course", "--help"], env).stdout
    assert "``" not in text and ":class:" not in text and "CourseProgress" in text
    line = refused(starunet(["train", "--preset", "smoke", "--out", "/proc/nope"], env))
    assert "No such file or directory" not in line and "system folder" in line


@pytest.mark.parametrize("command", sorted(__import__("starunet.cli", fromlist=["COMMANDS"]).COMMANDS))
def test_every_option_of_every_command_has_plain_help(command, monkeypatch):
    """``--help`` of each command: a description without reStructuredText markup, and help
    text for every option (argparse actions caught as the command builds its parser)."""
    import argparse
    import importlib

    from starunet.cli import COMMANDS

    parsers: list[argparse.ArgumentParser] = []

    def caught(self, args=None, namespace=None):
        parsers.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", caught)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", caught)
    with pytest.raises(SystemExit):
        importlib.import_module(COMMANDS[command][0]).cli(["--help"])
    assert parsers, command
    for parser in parsers:
        text = parser.format_help()
        assert "``" not in text and ":class:" not in text and ":func:" not in text, command
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help and action.help.strip(), f"{command}: {action.option_strings or action.dest} has no help"
