"""Tests of starunet.lab.fanout: the grid's runs in parallel jobs (submitit), their
failures, Ctrl-C, and the SLURM job script (checked without a cluster).

submitit is the optional ``cluster`` extra: the tests that need it skip without it,
except in CI (``CI=true``), which installs it and must run them."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import starunet.grid as G
from fakes import needs_submitit
from starunet import cli
from starunet.io import read_csv
from starunet.lab import fanout
from starunet.lab.fanout import FanOut, SlurmOptions
from starunet.runners import GridRunError

ROOT = Path(__file__).resolve().parent.parent
TIMING_COLUMNS = ("train_seconds", "eval_seconds")


# ---------------------------------------------------------------- pure helpers

def test_threads_per_job_share_the_cores():
    assert fanout.threads_per_job(1, cores=16) == 16
    assert fanout.threads_per_job(4, cores=16) == 4
    assert fanout.threads_per_job(3, cores=16) == 5
    assert fanout.threads_per_job(8, cores=2) == 1  # never zero


def test_job_threads_follow_the_cluster():
    assert fanout.job_threads(FanOut(jobs=2, threads=3)) == 3
    assert fanout.job_threads(FanOut(jobs=2)) == fanout.threads_per_job(2)
    assert fanout.job_threads(FanOut(jobs=2, cluster="slurm", slurm=SlurmOptions(time_min=5, cpus_per_job=6))) == 6
    assert fanout.job_threads(FanOut(jobs=2, cluster="slurm", slurm=SlurmOptions(time_min=5))) == 1


def test_least_loaded_gpu_spreads_jobs_round_robin_and_shares_one_gpu():
    assert fanout.least_loaded(["0", "1"], []) == "0"
    assert fanout.least_loaded(["0", "1"], ["0"]) == "1"
    assert fanout.least_loaded(["0", "1"], ["0", "1", "1"]) == "0"
    assert fanout.least_loaded(["0"], ["0", "0", "0"]) == "0"


def test_visible_gpus_keep_the_parents_restriction(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, GPU-abc")
    assert fanout.visible_gpus() == ["2", "GPU-abc"]


def test_bad_options_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"--jobs \(jobs=\) must be a positive integer"):
        FanOut(jobs=0).validate()
    with pytest.raises(ValueError, match="--cluster 'pbs' is unknown; valid: local, slurm"):
        FanOut(cluster="pbs").validate()
    with pytest.raises(ValueError, match="add --cluster slurm"):
        FanOut(jobs=2, slurm=SlurmOptions(time_min=5)).validate()
    assert not FanOut().parallel and FanOut(jobs=2).parallel


def test_error_line_finds_the_exception_of_a_traceback():
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\n    f()\nRuntimeError: boom\n---\nlog: y'
    assert fanout._error_line(trace) == "RuntimeError: boom"
    assert fanout._error_line("no trace here\nmore") == "no trace here"


def test_reproduce_refuses_bad_fanout_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="--jobs"):
        G.reproduce("smoke", [1], tmp_path / "out", runner=FanOut(jobs=0), records=[])
    assert not (tmp_path / "out").exists()


@pytest.fixture
def no_submitit(monkeypatch):
    """submitit not installed (``import submitit`` raises ImportError)."""
    monkeypatch.setitem(sys.modules, "submitit", None)


def test_parallel_runs_without_the_cluster_extra_are_refused_in_one_line(no_submitit, fake_slurm):
    with pytest.raises(ValueError) as err:
        FanOut(jobs=2).validate()
    assert str(err.value) == ("--jobs 2 needs the optional 'cluster' extra (submitit): "
                              "pip install -e '.[cluster]'")
    with pytest.raises(ValueError, match=r"^--cluster slurm needs the optional 'cluster' extra \(submitit\)"):
        FanOut(cluster="slurm", slurm=SlurmOptions(time_min=5)).validate()
    assert FanOut(jobs=1, threads=2).validate().provenance() is None  # one run at a time needs no extra


def test_reproduce_jobs_without_the_cluster_extra_exits_2_before_any_work(no_submitit, tmp_path, monkeypatch,
                                                                         capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("data loaded or a run trained before the missing extra was named")

    for name in ("load_stare", "reproduce", "reproduce_problem"):
        monkeypatch.setattr(G, name, no_work)
    out, runs = tmp_path / "out", tmp_path / "runs"
    code = cli.main(["reproduce", "--preset", "smoke", "--seeds", "1", "--jobs", "2", "--out", str(out),
                     "--runs-dir", str(runs)])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --jobs 2 needs the optional 'cluster' extra (submitit): pip install -e '.[cluster]'"]
    assert not out.exists() and not runs.exists()


def test_cli_builds_slurm_options_only_when_asked():
    parser = argparse.ArgumentParser()
    fanout.add_fanout_arguments(parser)
    assert fanout.slurm_options_from_args(parser.parse_args([])) is None
    args = parser.parse_args(["--cluster", "slurm", "--slurm-time", "30", "--slurm-partition", "gpu",
                              "--slurm-gpus-per-job", "1", "--slurm-extra", "gres=gpu:1", "constraint=h100"])
    options = fanout.slurm_options_from_args(args)
    assert (options.time_min, options.partition, options.gpus_per_job) == (30, "gpu", 1)
    assert options.extra == (("gres", "gpu:1"), ("constraint", "h100"))


# ---------------------------------------------------------------- SLURM, without a cluster

@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch``/``srun``/``scancel`` stand-ins on PATH: sbatch keeps the script it is
    given in ``submitted.sh`` and answers like SLURM; nothing runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n',
        "srun": "#!/bin/sh\nexit 0\n",
        "scancel": f'#!/bin/sh\necho "$@" >> {tmp_path}/cancelled\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_slurm_options_need_a_time_limit_and_sbatch(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    with pytest.raises(ValueError) as err:
        FanOut(jobs=4, cluster="slurm", slurm=SlurmOptions()).validate()
    assert "--slurm-time must be a positive number of minutes" in str(err.value)
    assert "needs SLURM's sbatch on PATH" in str(err.value)


@needs_submitit
def test_slurm_job_script_carries_the_requested_resources(fake_slurm):
    options = SlurmOptions(time_min=45, partition="gpu", gpus_per_job=1, cpus_per_job=8, mem_gb=32,
                           account="lab", setup=("source .venv/bin/activate",), extra=(("gres", "gpu:h100:1"),))
    fan = FanOut(jobs=20, cluster="slurm", slurm=options).validate()
    run_dir = fake_slurm / "runs" / "full" / "star-none-s2024-abc"
    executor = fanout._make_executor(run_dir / fanout.LOG_FOLDER, fan, fanout.job_threads(fan), None,
                                     "starunet-star-none")
    job = executor.submit(fanout.train_job, None, str(run_dir), "auto", 8, None)
    assert job.job_id == "4242"
    script = (fake_slurm / "submitted.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=45", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "#SBATCH --account=lab",
                 "#SBATCH --gres=gpu:h100:1", "#SBATCH --job-name=starunet-star-none", "#SBATCH --nodes=1",
                 "source .venv/bin/activate"):
        assert line in script.splitlines(), line
    assert "submitit.core._submit" in script and str(run_dir / fanout.LOG_FOLDER) in script
    assert "--error" not in script  # stderr goes into the run's one log
    job.cancel(check=False)
    assert (fake_slurm / "cancelled").read_text().split() == ["4242"]


@needs_submitit
def test_cpu_only_slurm_jobs_ask_for_no_gpu_line(fake_slurm):
    fan = FanOut(jobs=2, cluster="slurm", slurm=SlurmOptions(time_min=10)).validate()
    executor = fanout._make_executor(fake_slurm / "log", fan, 1, None, "x")
    executor.submit(fanout.train_job, None, "run", "cpu", 1, None)
    script = (fake_slurm / "submitted.sh").read_text()
    assert "gpus" not in script and "#SBATCH --cpus-per-task=1" in script.splitlines()


# ---------------------------------------------------------------- real grids (children train)


@pytest.fixture
def job_data(stare_source, monkeypatch):
    """Job processes load STARE themselves (from the environment), like the parent's records."""
    if stare_source is not None:
        monkeypatch.setenv("STARUNET_STARE_SOURCE", stare_source)


def _grid(tmp_path, name, records, **fan):
    return G.reproduce("smoke", [7], tmp_path / name / "out", fusions=["sum", "star"], activations=["none"],
                       runs_dir=tmp_path / name / "runs", records=records, log=lambda m: None, runner=FanOut(**fan))


def _without_timing(rows):
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


@needs_submitit
def test_jobs_2_gives_the_same_grid_as_jobs_1(stare_records, tiny_preset, job_data, tmp_path):
    one = _grid(tmp_path, "one", stare_records, jobs=1, threads=1)
    two = _grid(tmp_path, "two", stare_records, jobs=2, threads=1)
    a, b = (read_csv(tmp_path / name / "out" / "metrics.csv") for name in ("one", "two"))
    assert len(a) == 2 and _without_timing(a) == _without_timing(b)
    assert all(r["device"] == a[0]["device"] and "1 torch threads" in r["device"] for r in a + b)
    for name in ("per_image.csv", "curves.json"):
        assert (tmp_path / "one" / "out" / name).read_bytes() == (tmp_path / "two" / "out" / name).read_bytes()
    assert two.provenance["fanout"] == {"jobs": 2, "cluster": "local", "threads_per_job": 1}
    assert "fanout" not in one.provenance
    readme_one, readme_two = ((tmp_path / n / "out" / "README.md").read_text() for n in ("one", "two"))
    assert "up to 2 runs at once (local, 1 torch threads each)" in readme_two and "at once" not in readme_one
    logs = sorted((tmp_path / "two" / "runs").glob(f"smoke/*/{fanout.LOG_FOLDER}/*_log.out"))
    assert len(logs) == 2 and all("1 torch threads" in p.read_text() for p in logs)
    # rerun: finished runs are taken from their folders, no job is started
    again = _grid(tmp_path, "two", stare_records, jobs=2, threads=1)
    assert again.provenance["runs_reused"] == 2 and again.provenance["evaluations_reused"] == 2
    assert sorted((tmp_path / "two" / "runs").glob(f"smoke/*/{fanout.LOG_FOLDER}/*_log.out")) == logs


@needs_submitit
def test_a_failing_run_is_reported_with_its_log_and_the_others_finish(stare_records, tiny_preset, job_data,
                                                                     tmp_path, monkeypatch):
    real = fanout.train_job

    def failing_job(config, run_dir, device, threads, cuda_visible=None, precision="auto"):
        if config.fusion == "star":  # runs in the job process (pickled by value)
            raise RuntimeError("deliberate failure of the star run")
        return real(config, run_dir, device, threads, cuda_visible, precision)

    monkeypatch.setattr(fanout, "train_job", failing_job)
    with pytest.raises(GridRunError) as err:
        _grid(tmp_path, "grid", stare_records, jobs=2, threads=1)
    (failure,) = err.value.failures
    assert failure.run_dir.name.startswith("star-none-s7-")
    assert failure.error == "RuntimeError: deliberate failure of the star run"
    assert failure.log.is_file() and failure.log.parent == failure.run_dir / fanout.LOG_FOLDER
    assert "deliberate failure of the star run" in failure.log.read_text()
    assert "1 of 2 runs failed" in str(err.value) and str(failure.log) in str(err.value)
    rows = read_csv(tmp_path / "grid" / "out" / "metrics.csv")
    assert [(r["fusion"], r["activation"]) for r in rows] == [("sum", "none")]
    provenance = json.loads((tmp_path / "grid" / "out" / "provenance.json").read_text())
    assert provenance["partial"] == {"ended": "1 run(s) failed", "missing": ["star-none-seed7"]}
    assert "partial: 1 run(s) failed" in (tmp_path / "grid" / "out" / "README.md").read_text()


def _group_alive(pgid: int) -> list[int]:
    """Processes of the process group ``pgid`` that are not zombies."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


@needs_submitit
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_ctrl_c_cancels_the_jobs_in_flight(stare_source, tmp_path):
    env = {**os.environ, "STARUNET_SMOKE": "1", "PYTHONUNBUFFERED": "1"}
    if stare_source is not None:
        env["STARUNET_STARE_SOURCE"] = stare_source
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "starunet", "reproduce", "--preset", "smoke", "--seeds", "1", "2", "3",
               "--activations", "none", "--jobs", "2", "--threads", "1", "--runs-dir", str(runs),
               "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # its own group: the signal reaches the parent only
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            logs = list(runs.glob(f"smoke/*/{fanout.LOG_FOLDER}/*_log.out"))
            if any("starunet job:" in p.read_text() for p in logs):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the grid ended before a job was seen training"
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "cancelling" in stdout and "Rerun the same command" in stderr
    deadline = time.monotonic() + 15
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _group_alive(proc.pid) == []
