"""Fan a grid's independent training runs out to parallel jobs, through submitit.

:class:`FanOut` is a runner of :func:`starunet.grid.reproduce` (a
:class:`starunet.runners.Runner`); :func:`cli` is ``python -m starunet reproduce``: the
grid's command with the options ``--jobs``, ``--threads``, ``--cluster`` and
``--slurm-*``. submitit is the optional ``cluster`` extra (``pip install -e
'.[cluster]'``): without it, a grid asked to run in parallel is refused before any
work, in one line naming the extra (:func:`require_submitit`).

One code path for one machine and for a SLURM cluster: `submitit
<https://github.com/facebookincubator/submitit>`_'s ``AutoExecutor`` with
``cluster="local"`` starts each run as a child process of this machine,
``cluster="slurm"`` submits it with ``sbatch``. This module only decides what each
job gets and watches the jobs:

* at most ``jobs`` runs are in flight at once; the next one starts as one ends;
* on one machine each job gets ``max(1, cores // jobs)`` torch threads and, on a
  GPU, a share of the visible GPUs (each job goes to the GPU running the fewest
  jobs: round-robin on a multi-GPU box, all on the one GPU of a single-GPU box);
  on SLURM the partition, time limit, GPUs and CPUs per job come from
  :class:`SlurmOptions`, and SLURM picks the GPU;
* each run writes its log (stdout and stderr, with the traceback of a failure) to
  ``<run folder>/submitit/<job id>_0_log.out``;
* a failing run is yielded as a :class:`starunet.runners.RunFailure` naming that log,
  and does not stop the others;
* an interrupt (Ctrl-C), or the caller closing the generator, cancels the jobs in
  flight and waits for them to end;
* finished runs are not submitted again: :func:`starunet.training.train` returns
  them from their folder, and resumes unfinished ones (``resume=True``).

Importing this module imports neither torch nor submitit: a child process must be
able to set ``CUDA_VISIBLE_DEVICES`` before CUDA starts (:func:`train_job`).
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from starunet.runners import InProcessRunner, RunFailure

CLUSTERS = ("local", "slurm")
EXTRA = "pip install -e '.[cluster]'"  # the optional dependencies of this module (pyproject.toml)
LOG_FOLDER = "submitit"        # inside each run folder
POLL_SECONDS = 0.5             # how often the jobs in flight are checked
CANCEL_WAIT_SECONDS = 20.0     # how long cancelled local jobs get to end before they are killed
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default is 2 minutes; a run must never be cut short


# ---------------------------------------------------------------- options

@dataclass(frozen=True)
class SlurmOptions:
    """The SLURM resources of each run's job (``python -m starunet reproduce --slurm-*``)."""
    time_min: int | None = None          # time limit per job, minutes (required: SLURM kills a job past it)
    partition: str | None = None
    gpus_per_job: int = 0                # --gpus-per-node of each job (one node, one task per job)
    cpus_per_job: int | None = None      # --cpus-per-task; also the job's torch threads
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    setup: tuple[str, ...] = ()          # shell lines run before the job, e.g. "module load cuda"
    extra: tuple[tuple[str, str], ...] = ()  # any other sbatch flag, e.g. (("gres", "gpu:a100:1"),)

    def problems(self) -> list[str]:
        problems = []
        if self.time_min is None or not _positive_int(self.time_min):
            problems.append(f"--slurm-time must be a positive number of minutes (the time limit of each run's "
                            f"job), got {self.time_min!r}; e.g. --slurm-time 60")
        if not isinstance(self.gpus_per_job, int) or self.gpus_per_job < 0:
            problems.append(f"--slurm-gpus-per-job must be an integer >= 0, got {self.gpus_per_job!r}")
        if self.cpus_per_job is not None and not _positive_int(self.cpus_per_job):
            problems.append(f"--slurm-cpus-per-job must be a positive integer, got {self.cpus_per_job!r}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            problems.append(f"--slurm-mem-gb must be positive, got {self.mem_gb!r}")
        bad = [k for k, _ in self.extra if not re.fullmatch(r"[a-z][a-z0-9_-]*", k)]
        if bad:
            problems.append(f"--slurm-extra keys {bad} are not sbatch option names; write KEY=VALUE, "
                            "e.g. --slurm-extra gres=gpu:a100:1 constraint=h100")
        return problems

    def executor_parameters(self) -> dict[str, Any]:
        """Keyword arguments of ``AutoExecutor.update_parameters`` for these options."""
        params: dict[str, Any] = {"timeout_min": self.time_min, "nodes": 1, "tasks_per_node": 1,
                                  "gpus_per_node": self.gpus_per_job, "cpus_per_task": self.cpus_per_job,
                                  "mem_gb": self.mem_gb, "slurm_partition": self.partition,
                                  "slurm_account": self.account, "slurm_qos": self.qos}
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        if self.extra:
            # a key without a value is a bare flag (e.g. "exclusive" -> #SBATCH --exclusive)
            params["slurm_additional_parameters"] = {k.replace("_", "-"): v if v != "" else True
                                                     for k, v in self.extra}
        # 0 GPUs: no --gpus-per-node line at all (some CPU partitions reject even a zero)
        return {k: v for k, v in params.items() if v is not None and not (k == "gpus_per_node" and v == 0)}


@dataclass(frozen=True)
class FanOut:
    """How a grid's runs are spread: ``jobs`` in flight at once on ``cluster``."""
    jobs: int = 1
    cluster: str = "local"
    threads: int | None = None           # torch threads per job (None: cores // jobs, or SLURM's cpus)
    slurm: SlurmOptions | None = None

    def validate(self) -> "FanOut":
        """Raise ``ValueError`` naming every problem and its fix, before any work."""
        problems = []
        if not _positive_int(self.jobs):
            problems.append(f"--jobs (jobs=) must be a positive integer, the runs in flight at once; "
                            f"got {self.jobs!r}, e.g. --jobs 4")
        if self.cluster not in CLUSTERS:
            problems.append(f"--cluster {self.cluster!r} is unknown; valid: {', '.join(CLUSTERS)}")
        if self.threads is not None and not _positive_int(self.threads):
            problems.append(f"--threads (threads=) must be a positive integer, the torch threads per run; "
                            f"got {self.threads!r}")
        if self.cluster == "slurm":
            problems += (self.slurm or SlurmOptions()).problems()
            if shutil.which("sbatch") is None:
                problems.append("--cluster slurm needs SLURM's sbatch on PATH: run the command on a "
                                "login node of the cluster (or use --cluster local)")
        elif self.slurm is not None:
            problems.append("SLURM options were given but cluster is 'local'; add --cluster slurm")
        if problems:
            raise ValueError("cannot fan the grid out:\n  - " + "\n  - ".join(problems))
        if self.parallel:
            require_submitit(self)
        return self

    @property
    def parallel(self) -> bool:
        """False for the plain in-process loop (one local job at a time)."""
        return self.jobs > 1 or self.cluster != "local"

    # the runner of starunet.grid.reproduce (starunet.runners.Runner)

    def process_threads(self) -> int | None:
        """Torch threads of the grid's own process: the runs' own when they share this
        machine (so a fanned-out grid evaluates with the threads a ``jobs=1`` grid would use)."""
        return job_threads(self) if self.threads is not None or (self.parallel and self.cluster == "local") else None

    def train_runs(self, configs: Sequence, run_dirs: Sequence[Path], device: str, selected: str,
                   log: Callable[[str], None], records: Sequence,
                   precision: str = "auto") -> Iterator[tuple[int, Any]]:
        """The runs in parallel jobs (:func:`train_in_jobs`), or one after another here."""
        if not self.parallel:
            yield from InProcessRunner(self.threads).train_runs(configs, run_dirs, device, selected, log, records,
                                                                precision)
            return
        # on SLURM the jobs choose their own device (the login node may have no GPU)
        job_device = device if self.cluster == "slurm" else selected.split(":")[0]
        log(f"training {len(configs)} runs, up to {self.jobs} at once ({self.cluster}) ...")
        yield from train_in_jobs(configs, run_dirs, job_device, self, log, records, precision)

    def provenance(self) -> dict | None:
        if not self.parallel:  # absent for one run at a time, so such grids' files stay as they were
            return None
        return {"jobs": self.jobs, "cluster": self.cluster, "threads_per_job": job_threads(self)}


def require_submitit(fan: FanOut) -> None:
    """Raise ``ValueError``, one line naming the optional extra, when submitit is not installed."""
    try:
        importlib.import_module("submitit")
    except ImportError:
        asked = [f"--jobs {fan.jobs}"] if fan.jobs > 1 else []
        if fan.cluster == "slurm":
            asked.append("--cluster slurm")
        raise ValueError(f"{' '.join(asked)} needs the optional 'cluster' extra (submitit): {EXTRA}") from None


# ---------------------------------------------------------------- command-line options

def add_fanout_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--jobs``, ``--threads``, ``--cluster`` and the ``--slurm-*`` options to a
    command (``python -m starunet reproduce``)."""

    group = parser.add_argument_group("parallel runs", "train several runs at once through submitit: child "
                                      "processes here (--cluster local) or SLURM jobs (--cluster slurm)")
    group.add_argument("--jobs", type=int, default=1,
                       help="runs in flight at once (default 1: one after another, in this process); on one "
                            "machine each gets cores/jobs torch threads, or a share of the GPUs")
    group.add_argument("--threads", type=int, default=None,
                       help="torch threads per run (default: unchanged for --jobs 1, else cores/jobs)")
    group.add_argument("--cluster", choices=CLUSTERS, default="local",
                       help="where the jobs run (default local; slurm submits each run with sbatch)")
    group.add_argument("--slurm-time", type=int, default=None, metavar="MINUTES",
                       help="time limit of each run's job (required with --cluster slurm)")
    group.add_argument("--slurm-partition", default=None, help="the SLURM partition of every job")
    group.add_argument("--slurm-gpus-per-job", type=int, default=0, metavar="N", help="GPUs per run (default 0)")
    group.add_argument("--slurm-cpus-per-job", type=int, default=None, metavar="N",
                       help="CPUs per run, also its torch threads (default 1)")
    group.add_argument("--slurm-mem-gb", type=float, default=None, metavar="GB", help="memory per job, in GB")
    group.add_argument("--slurm-account", default=None, help="the SLURM account the jobs are charged to")
    group.add_argument("--slurm-qos", default=None, help="the SLURM quality of service of the jobs")
    group.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                       help="a shell line run before each job, e.g. 'source .venv/bin/activate' (repeatable)")
    group.add_argument("--slurm-extra", nargs="+", default=[], metavar="KEY=VALUE",
                       help="other sbatch options, e.g. gres=gpu:a100:1 constraint=h100")


def fanout_from_args(args: argparse.Namespace) -> FanOut:
    """The :class:`FanOut` of the flags of :func:`add_fanout_arguments`, validated."""
    return FanOut(args.jobs, args.cluster, args.threads, slurm_options_from_args(args)).validate()


def cli(argv: Sequence[str]) -> int:
    """``python -m starunet reproduce``: :func:`starunet.grid.cli` with the options of
    parallel runs (:func:`add_fanout_arguments`)."""
    from starunet import grid  # here: a job process imports this module before torch

    return grid.cli(argv, add_fanout_arguments, fanout_from_args)


def slurm_options_from_args(args: argparse.Namespace) -> SlurmOptions | None:
    """The :class:`SlurmOptions` of the flags of :func:`add_fanout_arguments`; None when no
    ``--slurm-*`` flag was given and the cluster is local (reproduce then refuses
    ``--slurm-*`` flags without ``--cluster slurm``)."""

    given = (args.slurm_time, args.slurm_partition, args.slurm_cpus_per_job, args.slurm_mem_gb,
             args.slurm_account, args.slurm_qos)
    if args.cluster == "local" and all(v is None for v in given) and not (
            args.slurm_gpus_per_job or args.slurm_setup or args.slurm_extra):
        return None
    return SlurmOptions(time_min=args.slurm_time, partition=args.slurm_partition,
                        gpus_per_job=args.slurm_gpus_per_job, cpus_per_job=args.slurm_cpus_per_job,
                        mem_gb=args.slurm_mem_gb, account=args.slurm_account, qos=args.slurm_qos,
                        setup=tuple(args.slurm_setup),
                        extra=tuple(tuple((e.split("=", 1) + [""])[:2]) for e in args.slurm_extra))


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """Torch threads of each of ``jobs`` parallel runs sharing ``cores`` (default: all)."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, cores // max(1, jobs))


def job_threads(fan: FanOut) -> int:
    """Torch threads of each job: ``fan.threads`` if given; on SLURM the job's CPUs
    (``--slurm-cpus-per-job``, else 1, SLURM's default); locally ``cores // jobs``."""
    if fan.threads is not None:
        return fan.threads
    if fan.cluster == "slurm":
        return (fan.slurm.cpus_per_job if fan.slurm else None) or 1
    return threads_per_job(fan.jobs)


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out, as ``CUDA_VISIBLE_DEVICES`` tokens: its own
    ``CUDA_VISIBLE_DEVICES`` entries (ids or UUIDs), else ``0 .. device_count - 1``."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip():
        return [t.strip() for t in env.split(",") if t.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def least_loaded(gpus: Sequence[str], busy: Sequence[str]) -> str:
    """The GPU of ``gpus`` running the fewest of the ``busy`` jobs (first on ties)."""
    load = Counter(busy)
    return min(gpus, key=lambda g: (load[g], list(gpus).index(g)))


# ---------------------------------------------------------------- the job (runs in the child)

def train_job(config, run_dir: str, device: str, threads: int, cuda_visible: str | None = None,
              precision: str = "auto"):
    """Train (or resume) one run in a job process; returns its ``TrainingResult``.

    ``cuda_visible`` restricts the job to one GPU; it is set before torch starts CUDA.
    """
    if cuda_visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible
    import torch

    from starunet.training import train

    torch.set_num_threads(threads)
    print(f"starunet job: {run_dir} on {device} (CUDA_VISIBLE_DEVICES="
          f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')}), {threads} torch threads", flush=True)
    result = train(config, Path(run_dir), resume=True, device=device, progress=False, precision=precision)
    print(result.summary(), flush=True)
    return result


# ---------------------------------------------------------------- the parent

@dataclass
class _Slot:
    job: Any
    gpu: str | None = None
    started: float = field(default_factory=time.monotonic)


def _make_executor(folder: Path, fan: FanOut, threads: int, gpu: str | None, name: str):
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=fan.cluster)
    params: dict[str, Any] = {"name": name, "stderr_to_stdout": True}
    if fan.cluster == "local":
        params.update(timeout_min=LOCAL_TIMEOUT_MIN)
    else:
        params.update((fan.slurm or SlurmOptions()).executor_parameters())
        params.setdefault("cpus_per_task", threads)
    executor.update_parameters(**params)
    return executor


def _error_line(text: str) -> str:
    """The exception line of a traceback (``KeyError: 'x'``), else the first line."""
    found = re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b.*)$", text, re.MULTILINE)
    return found[-1].strip() if found else (text.strip().splitlines() or ["unknown error"])[0]


def _outcome(index: int, run_dir: Path, job):
    """``TrainingResult`` of a finished job, or a :class:`~starunet.runners.RunFailure` naming its log."""
    error = job.exception()
    if error is None:
        return job.result()
    return RunFailure(index, run_dir, Path(job.paths.stdout), _error_line(str(error)))


def _cancel(slots: dict[int, _Slot], log: Callable[[str], None]) -> None:
    """Cancel the jobs in flight and wait until they have ended (local: their processes)."""
    if not slots:
        return
    log(f"cancelling {len(slots)} job(s) in flight ...")
    for slot in slots.values():
        try:
            slot.job.cancel(check=False)
        except Exception as err:  # noqa: BLE001 -- one failed cancel must not leave the others running
            log(f"    could not cancel job {slot.job.job_id}: {err}")
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while time.monotonic() < deadline and not all(_ended(s.job) for s in slots.values()):
        time.sleep(0.1)
    for slot in slots.values():
        process = getattr(slot.job, "_process", None)  # local jobs: the controller process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


def _ended(job) -> bool:
    process = getattr(job, "_process", None)
    return process.poll() is not None if process is not None else job.done()


def _is_finished(config, run_dir: Path) -> bool:
    from starunet.runs import CONFIG_FILE, RESULT_FILE, read_config

    return ((run_dir / RESULT_FILE).is_file() and (run_dir / CONFIG_FILE).is_file()
            and read_config(run_dir).config_hash == config.config_hash)


def train_in_jobs(configs: Sequence, run_dirs: Sequence[Path], device: str, fan: FanOut,
                  log: Callable[[str], None] = print, records: Sequence | None = None,
                  precision: str = "auto") -> Iterator[tuple[int, Any]]:
    """Train ``configs[i]`` into ``run_dirs[i]`` in parallel jobs; yield ``(i, outcome)``
    as each ends, ``outcome`` a ``TrainingResult`` or a :class:`RunFailure`.

    Finished runs are yielded first, from their folders, without a job. The caller may
    work (evaluate) between items while the other jobs train. Closing the generator
    early, or an exception (Ctrl-C) while it waits, cancels the jobs in flight.
    """
    from starunet.training import train

    fan.validate()
    threads = job_threads(fan)
    gpus = visible_gpus() if fan.cluster == "local" and device == "cuda" else []
    pending = []
    for i, (config, run_dir) in enumerate(zip(configs, run_dirs)):
        if _is_finished(config, run_dir):
            yield i, train(config, run_dir, resume=True, device=device, records=records, precision=precision)
        else:
            pending.append(i)
    if pending:
        _prepare_data()
    slots: dict[int, _Slot] = {}
    try:
        while pending or slots:
            while pending and len(slots) < fan.jobs:
                i = pending.pop(0)
                slots[i] = _submit(configs[i], Path(run_dirs[i]), device, fan, threads, gpus, slots, precision)
                log(f"    started {Path(run_dirs[i]).name} (job {slots[i].job.job_id}"
                    f"{', GPU ' + slots[i].gpu if slots[i].gpu is not None else ''})")
            done = [i for i, slot in slots.items() if slot.job.done()]
            for i in done:
                slot = slots.pop(i)
                yield i, _outcome(i, Path(run_dirs[i]), slot.job)
            if not done:
                time.sleep(POLL_SECONDS)
    except BaseException:  # Ctrl-C, GeneratorExit, or an error of the caller between items
        _cancel(slots, log)
        raise


def _submit(config, run_dir: Path, device: str, fan: FanOut, threads: int, gpus: Sequence[str],
            slots: dict[int, _Slot], precision: str = "auto") -> _Slot:
    gpu = least_loaded(gpus, [s.gpu for s in slots.values() if s.gpu is not None]) if gpus else None
    executor = _make_executor(run_dir / LOG_FOLDER, fan, threads, gpu, f"starunet-{run_dir.name}")
    job = executor.submit(train_job, config, str(run_dir), device, threads, gpu, precision)
    return _Slot(job, gpu)


def _prepare_data() -> None:
    """Verify and extract STARE into the cache once, here, so that parallel jobs only
    read it (instead of all extracting it at once)."""
    from starunet.stare import STARE_IDS, load_stare

    load_stare(ids=STARE_IDS[:1])


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1

