"""``python -m starunet gpu-session``: one command for a lent GPU, rehearsed on the CPU.

On a CUDA machine, from the repository root, it:

1. **env** -- prints and records the device and library versions;
2. **probe** -- times a few training steps and one validation on the device, then
   prints its estimate of every step and cuts the plan to ``--budget-minutes``
   (fewer seeds, no curves) before anything long starts;
3. **tests** -- the CUDA tests (``pytest -k cuda`` over the test files that mention it);
4. **bench** -- ``python -m starunet bench --device cuda --out benchmarks``;
5. **grid** -- ``python -m starunet reproduce --preset full --seeds ... --jobs K
   --device cuda --out results/full``: K runs share the GPU;
6. **curves** -- if the plan keeps them: ``python -m starunet curves train`` in K shards,
   then ``curves evaluate``.

Every step is a child process with its own log; one that fails is recorded and the
next still runs; one still running when the budget is spent is interrupted (Ctrl-C:
a grid keeps the runs it finished). After every step the session rewrites, in
``--out`` (default ``$OUT`` when set), ``summary.md``, ``session.log`` and
``gpu-session.tar.gz``: the step logs and results (``benchmarks/cuda.*``,
``results/full/``, the curves), without checkpoints, at their repository paths, so
``tar xzf gpu-session.tar.gz`` in a checkout puts them in place.

``--smoke`` rehearses the same steps end to end on the CPU with the smoke preset,
everything in a temporary folder (nothing in the checkout changes).

STARE: ``$STARUNET_STARE_SOURCE`` if set, else ``shared/data/stare`` in the repository
or ``../shared/data/stare`` beside it (the device machine gets the mirror inside the
copy of the working tree). Missing Python packages are named, with the way to carry
them as wheels, before anything runs (the device image has PyTorch but lacks a few
pure-Python packages; the README's "A GPU session" lists them).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from starunet.config import PROJECT_ROOT
from starunet.io import atomic_path, write_json_atomic, write_text_atomic
from starunet.preflight import plain_help
from starunet.lab.session_plan import Assumptions, Plan, Timing, Work, plan_session

STEPS = ("tests", "bench", "grid", "curves")  # after env and probe, in this order
DEFAULT_SEEDS = (2024, 2025, 2026, 2027, 2028)
BENCH_CONFIGS = ("sum/none", "star/none")
REQUIRED_MODULES = ("torch", "numpy", "scipy", "sklearn", "PIL", "pooch", "tqdm", "submitit", "pytest")
ARCHIVE = "gpu-session.tar.gz"
INTERRUPT_GRACE_SECONDS = 45  # after Ctrl-C, time for a grid to cancel its jobs and write its files


# ---------------------------------------------------------------- checks before any work

def find_stare_source(root: Path = PROJECT_ROOT) -> str | None:
    """``$STARUNET_STARE_SOURCE``, else ``shared/data/stare`` inside or beside the checkout."""
    env = os.environ.get("STARUNET_STARE_SOURCE")
    if env:
        return env
    for candidate in (root / "shared" / "data" / "stare", root.parent / "shared" / "data" / "stare"):
        if candidate.is_dir():
            return str(candidate)
    return None


def missing_modules(names: Sequence[str] = REQUIRED_MODULES) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


def preflight(args: argparse.Namespace) -> list[str]:
    """Every reason the session would fail, with its fix (empty: go)."""
    problems = []
    missing = missing_modules()
    if missing:
        pip = {"sklearn": "scikit-learn", "PIL": "pillow"}
        names = " ".join(pip.get(m, m) for m in missing)
        problems.append(f"Python packages missing: {names}. Install them (pip install {names}), or on a "
                        f"machine without a registry carry them as wheels (pip download --no-deps "
                        f"--only-binary=:all: -d .whl {names}; then pip install --no-index .whl/*.whl)")
    if not args.smoke:
        import torch

        if not torch.cuda.is_available():
            problems.append("no CUDA device here: run it on the GPU machine, or rehearse with --smoke")
    source = find_stare_source()
    if source is None:
        problems.append("no STARE data: set STARUNET_STARE_SOURCE to the mirror (a folder with "
                        "stare-images.tar, labels-ah.tar, labels-vk.tar, SHA256SUMS), or put it at "
                        "shared/data/stare in the repository")
    elif not source.startswith(("http://", "https://")) and not Path(source).exists():
        problems.append(f"STARUNET_STARE_SOURCE={source} does not exist")
    if not args.budget_minutes > 0:
        problems.append(f"--budget-minutes must be positive, got {args.budget_minutes}")
    if args.jobs is not None and args.jobs < 1:
        problems.append(f"--jobs must be a positive integer, got {args.jobs}")
    bad_skip = [s for s in args.skip if s not in STEPS]
    if bad_skip:
        problems.append(f"--skip {' '.join(bad_skip)}: unknown step(s); valid: {', '.join(STEPS)}")
    return problems


# ---------------------------------------------------------------- measuring

def environment(device_name: str) -> dict:
    """Device and versions, for the log and ``env.json``."""
    import numpy
    import submitit
    import torch

    from starunet.device import device_description

    env = {"python": platform.python_version(), "platform": platform.platform(terse=True),
           "torch": torch.__version__, "cuda": torch.version.cuda, "numpy": numpy.__version__,
           "submitit": submitit.__version__, "cpus": os.cpu_count(), "device": device_description(device_name),
           "stare_source": find_stare_source()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpus=torch.cuda.device_count(), gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
    smi = shutil.which("nvidia-smi")
    if smi:
        env["nvidia_smi"] = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout.strip()
    return env


def probe(preset: str, device_name: str, steps: int = 10, warmup: int = 3) -> Timing:
    """Time ``steps`` training steps (after ``warmup``), one validation and one full-image
    inference of the preset's model on the device: the engine's own step functions."""
    import torch

    from starunet.stare import load_stare
    from starunet.inference import predict_images
    from starunet.metrics import segmentation_metrics
    from starunet.device import resolve_precision, select_device, to_device, training_autocast
    from starunet.presets import preset_config
    from starunet.runs import build_model
    from starunet.training import make_patch_loader, split_records, training_loss, validate, validation_images

    device = select_device(device_name)
    config = preset_config(preset, fusion="star", activation="none")
    records = load_stare()
    train_records, val_records = split_records(config, records)
    model = to_device(build_model(config), device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loader = make_patch_loader(config, train_records, device)
    loader.dataset.set_epoch(1)
    batches = iter(loader)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            start = time.perf_counter()
        try:
            image, label, fov = (t.to(device, non_blocking=True) for t in next(batches))
        except StopIteration:  # an epoch shorter than the probe (smoke): draw the next one
            loader.dataset.set_epoch(i + 2)
            batches = iter(loader)
            image, label, fov = (t.to(device, non_blocking=True) for t in next(batches))
        with training_autocast(device, resolve_precision("auto", device)):
            logits = model(image)
        loss = training_loss(logits, label, fov)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync()
    step_seconds = (time.perf_counter() - start) / steps
    images = validation_images(config, val_records)
    validate(model, images)  # warm-up (cuDNN picks kernels for the new shape)
    start = time.perf_counter()
    validate(model, images)
    val_seconds = time.perf_counter() - start
    test = records[0]
    predict_images(model, [test.image], device=str(device))  # warm-up
    start = time.perf_counter()
    prob = predict_images(model, [test.image], device=str(device))
    segmentation_metrics(prob, [test.label], mask=[test.fov])
    return Timing(step_seconds, val_seconds, time.perf_counter() - start)


# ---------------------------------------------------------------- running steps

@dataclass
class StepResult:
    name: str
    status: str                    # ok | failed (rc N) | interrupted at the deadline | skipped | error
    seconds: float
    log: str


class Session:
    """The output folders, the log, the deadline and the record of finished steps."""

    def __init__(self, out: Path, work: Path, deadline: float, smoke: bool):
        self.out, self.work, self.deadline, self.smoke = out, work, deadline, smoke
        self.results: list[StepResult] = []
        self.plan: Plan | None = None
        self.outputs: list[Path] = []  # result folders/files to archive, besides the work folder's logs
        self._log = open(out / "session.log", "a", encoding="utf-8")

    def log(self, message: str) -> None:
        print(message, flush=True)
        self._log.write(message + "\n")
        self._log.flush()

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", STARUNET_RUNS=str(self.work / "runs"))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        source = find_stare_source()
        if source:
            env["STARUNET_STARE_SOURCE"] = str(Path(source).resolve()) if Path(source).exists() else source
        if self.smoke:
            env["STARUNET_SMOKE"] = "1"
        return env

    def run(self, name: str, commands: Sequence[Sequence[str]], deadline: float | None = None) -> StepResult:
        """Run ``commands`` at once (each a child process, output to the step's log and
        here); interrupt them at ``deadline`` (default: the session's)."""
        deadline = min(deadline or self.deadline, self.deadline)
        log_path = self.work / f"{name}.log"
        start = time.monotonic()
        if time.monotonic() >= deadline:
            return self._record(StepResult(name, "skipped: no time left", 0.0, str(log_path)))
        self.log(f"== {name}: " + " ;; ".join(" ".join(c) for c in commands))
        with open(log_path, "a", encoding="utf-8") as log_file:
            procs = [subprocess.Popen(list(c), cwd=PROJECT_ROOT, env=self.env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True)
                     for c in commands]
            lock = threading.Lock()
            readers = [threading.Thread(target=self._pump, args=(p, log_file, lock), daemon=True) for p in procs]
            for r in readers:
                r.start()
            status = self._wait(procs, deadline)
            for r in readers:
                r.join(timeout=10)
        return self._record(StepResult(name, status, round(time.monotonic() - start, 1), str(log_path)))

    def _pump(self, proc: subprocess.Popen, log_file, lock: threading.Lock) -> None:
        for line in proc.stdout:
            with lock:
                log_file.write(line)
                log_file.flush()
                print("   | " + line, end="", flush=True)

    def _wait(self, procs: list[subprocess.Popen], deadline: float) -> str:
        try:
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.5)
        except KeyboardInterrupt:
            _interrupt(procs)
            raise
        if any(p.poll() is None for p in procs):
            _interrupt(procs)
            return "interrupted at the deadline (kept what it finished)"
        codes = [p.returncode for p in procs]
        return "ok" if all(c == 0 for c in codes) else f"failed (exit {', '.join(map(str, codes))})"

    def _record(self, result: StepResult) -> StepResult:
        self.results.append(result)
        self.log(f"== {result.name}: {result.status} ({result.seconds:.0f} s); log {result.log}")
        self.save()
        return result

    def save(self) -> None:
        """summary.md, session.json and the archive, rewritten (atomically) after each step."""
        write_json_atomic(self.work / "session.json", {
            "smoke": self.smoke, "plan": asdict(self.plan) if self.plan else None,
            "steps": [asdict(r) for r in self.results]})
        write_text_atomic(self.out / "summary.md", summary_markdown(self.plan, self.results, self.smoke))
        shutil.copyfile(self.out / "summary.md", self.work / "summary.md")
        self._archive()

    def _archive(self) -> None:
        with atomic_path(self.out / ARCHIVE) as tmp, tarfile.open(tmp, "w:gz") as tar:
            inside_work = [p for p in self.outputs if p.resolve().is_relative_to(self.work.resolve())]
            for path in [*(p for p in self.outputs if p not in inside_work), self.work]:  # each file once
                if path.exists():
                    tar.add(path, arcname=_arcname(path, self.work), filter=_no_weights)


def _arcname(path: Path, work: Path) -> str:
    """Repository paths stay repository paths in the archive; the work folder is ``session/``."""
    path = path.resolve()
    if path == work.resolve():
        return "session"
    try:
        return str(path.relative_to(PROJECT_ROOT.resolve()))
    except ValueError:
        return f"session/{path.name}"


def _no_weights(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Leave out checkpoints, job pickles and the runs folder (too big, and not results)."""
    parts = Path(info.name).parts
    if info.name.endswith((".pt", ".pkl")) or (len(parts) > 1 and parts[0] == "session"
                                                 and parts[1] in ("runs", "curve-runs")):
        return None
    return info


def _interrupt(procs: list[subprocess.Popen]) -> None:
    """Ctrl-C to each step process (a grid then cancels its jobs and keeps its files),
    then kill whatever of their process groups is left after a grace period."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
    end = time.monotonic() + INTERRUPT_GRACE_SECONDS
    while any(p.poll() is None for p in procs) and time.monotonic() < end:
        time.sleep(0.5)
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def summary_markdown(plan: Plan | None, results: Sequence[StepResult], smoke: bool) -> str:
    """What ran, how long, and how it ended: the first thing to read after a session."""
    title = "# GPU session (CPU rehearsal, smoke preset)" if smoke else "# GPU session"
    lines = [title, ""]
    if plan is not None:
        lines += ["```", plan.describe(), "```", ""]
    lines += ["| step | status | minutes | log |", "| --- | --- | ---: | --- |"]
    lines += [f"| {r.name} | {r.status} | {r.seconds / 60:.1f} | `{Path(r.log).name}` |" for r in results]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the session

def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _shown(path: Path) -> str:
    """A path as the step's command gets it: relative to the repository root (the
    steps' working folder) when inside it, so the tables and READMEs that record their
    command name no machine's folders."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT.resolve()))
    except ValueError:
        return str(path)


def _cuda_test_files() -> list[str]:
    """Test files that ask torch about CUDA (only those: a file that cannot be collected
    on the GPU image, e.g. for a missing notebook package, must not stop the others)."""
    return sorted(str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "tests").glob("test_*.py")
                  if "torch.cuda" in p.read_text(encoding="utf-8"))


def _work_for(args: argparse.Namespace, preset: str, curves_preset: str) -> Work:
    from starunet.curves import CURVE_RUNS, curve_points
    from starunet.presets import preset_config

    grid, curve = preset_config(preset), preset_config(curves_preset)
    return Work(steps_per_epoch=grid.steps_per_epoch(), seeds=tuple(args.seeds), jobs=args.jobs,
                curve_runs=len(CURVE_RUNS), curve_steps=curve.steps_per_epoch() * curve.max_epochs,
                curve_validations=curve.max_epochs, curve_snapshots=len(curve_points(curve)))


def run_session(args: argparse.Namespace) -> int:
    start = time.monotonic()
    preset, curves_preset = ("smoke", "smoke") if args.smoke else ("full", "curves")
    device = "cpu" if args.smoke else "cuda"
    work = Path(args.work or tempfile.mkdtemp(prefix="starunet-gpu-session-")).resolve()
    out = Path(args.out or os.environ.get("OUT") or work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    session = Session(out, work, start + args.budget_minutes * 60, args.smoke)
    env = environment(device)
    session.log("== env\n" + "\n".join(f"  {k}: {v}" for k, v in env.items()))
    write_json_atomic(work / "env.json", env)

    if args.smoke:  # the rehearsal writes nothing into the checkout
        os.environ["STARUNET_SMOKE"] = "1"
    os.environ["STARUNET_STARE_SOURCE"] = find_stare_source()  # preflight found it; the probe reads it too
    timing = probe(preset, device)
    assumptions = Assumptions(epochs=args.expected_epochs or _default_epochs(preset),
                              efficiency=args.efficiency, bench_minutes=0.5 if args.smoke else 3.0,
                              tests_minutes=0.5 if args.smoke else 1.0)
    work_sizes = _work_for(args, preset, curves_preset)
    remaining = args.budget_minutes - (time.monotonic() - start) / 60
    session.plan = plan_session(remaining, work_sizes, timing, assumptions, args.skip)
    session.log(f"== probe: {timing.step_seconds * 1000:.1f} ms per training step (batch 8), "
                f"{timing.val_seconds:.2f} s per validation, {timing.image_seconds:.2f} s per test image\n"
                f"   assumed: {assumptions.epochs} epochs per run, each extra job on the device adds "
                f"{assumptions.efficiency:.0%} of one job's throughput\n" + session.plan.describe())
    session.save()
    try:
        _run_steps(session, args, preset, device)
    except KeyboardInterrupt:
        session.log("interrupted: the step in flight was stopped; what finished is in the archive")
        session.save()
        return 130
    session.log(f"== done in {(time.monotonic() - start) / 60:.1f} min: {out / 'summary.md'}, {out / ARCHIVE}")
    return 0 if all(r.status == "ok" for r in session.results) else 1


def _default_epochs(preset: str) -> int:
    """Early stopping decides the full protocol's length: 33 epochs (66,000 patches) of
    its 200, the median of the 11 runs in results/full (20-39 epochs, mean 30.6, one H200);
    the smoke preset always runs its 2."""
    from starunet.presets import preset_config

    config = preset_config(preset)
    return config.max_epochs if config.patience >= config.max_epochs else min(config.max_epochs, 33)


def _run_steps(session: Session, args: argparse.Namespace, preset: str, device: str) -> None:
    plan, work = session.plan, session.work
    seeds = [str(s) for s in plan.seeds]
    grid_out = work / "full" if args.smoke else PROJECT_ROOT / "results" / "full"
    bench_out = work / "bench" if args.smoke else PROJECT_ROOT / "benchmarks"
    curves_out = work / "curves"
    if plan.step("tests"):
        session.run("tests", [_python("-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "cuda",
                                      *_cuda_test_files())])
    if plan.step("bench"):
        large = ["32"] if args.smoke else ["256"]
        session.outputs += [bench_out / f"{device}.md", bench_out / f"{device}.csv"]
        # the two configurations the question compares: each compiled variant costs a
        # compilation, and the lease's minutes are better spent on the grid
        session.run("bench", [_python("-m", "starunet", "bench", "--device", device, "--large-batches", *large,
                                      "--configs", *BENCH_CONFIGS, "--seconds", "0.2" if args.smoke else "0.5",
                                      "--out", _shown(bench_out))])
    if plan.step("grid"):
        session.outputs.append(grid_out)
        # the grid may use the whole budget: the curves only get what it leaves
        session.run("grid", [_python("-m", "starunet", "reproduce", "--preset", preset, "--seeds", *seeds,
                                     "--jobs", str(args.jobs), "--device", device, "--out", _shown(grid_out))])
    if plan.step("curves"):
        session.outputs.append(curves_out)
        # its own runs folder: a curve run of the same config as a grid run (smoke: same preset)
        # must not reuse that run, which has no snapshots
        runs = str(work / "curve-runs")
        threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
        session.run("curves", [_python("-m", "starunet", "curves", "train", "--shard", f"{i}/{args.jobs}",
                                       "--device", device, "--threads", threads, "--runs-dir", runs)
                               for i in range(args.jobs)])
        session.run("curves-evaluate", [_python("-m", "starunet", "curves", "evaluate", "--device", device,
                                                "--runs-dir", runs, "--out", _shown(curves_out))])


def cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m starunet gpu-session", description=plain_help(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="rehearse on the CPU: smoke preset, everything in a temporary folder")
    parser.add_argument("--budget-minutes", type=float, default=10.0,
                        help="wall time for the whole session (default 10: a 15-minute lease less start-up)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), metavar="SEED",
                        help="grid seeds, cut from the end to fit the budget (default 2024..2028)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs sharing the device at once (default: 8 on a GPU, 2 in the rehearsal)")
    parser.add_argument("--expected-epochs", type=int, default=None,
                        help="epochs an early-stopped full run is assumed to take (default 33, the median measured in results/full)")
    parser.add_argument("--efficiency", type=float, default=0.6,
                        help="throughput each further job adds on the device, vs one job alone (default 0.6)")
    parser.add_argument("--skip", nargs="+", default=[], metavar="STEP", help=f"steps to leave out: {', '.join(STEPS)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="where summary.md, session.log and the archive go (default: $OUT, else the work folder)")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a new temporary one)")
    args = parser.parse_args(list(argv))
    if args.jobs is None:
        args.jobs = 2 if args.smoke else 8
    problems = preflight(args)
    if problems:
        print("error: the GPU session cannot start:\n  - " + "\n  - ".join(problems), file=sys.stderr)
        return 2
    return run_session(args)
