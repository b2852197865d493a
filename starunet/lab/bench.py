"""Speed benchmarks: ``python -m starunet bench``.

Prints one table and writes it (markdown + CSV, with the device, library versions
and date) to ``<runs>/bench/``, or to ``--out``: ``--out benchmarks/`` updates the
committed tables, and only when asked. Everything is measured in the same run, so
the numbers that matter are ratios, which survive a noisy shared machine:

* FLOPs per 96x96 patch (forward, and a training step) counted by
  ``torch.utils.flop_counter`` on the real model;
* the device's practical peak: the fastest of large matmuls and a large channels-last
  convolution in each training dtype, measured now (the best round, not the median: a
  peak is what the hardware reaches, and an under-measured one made the model look
  faster than the hardware);
* training throughput (patches/s) at batch 8 and at a larger batch for
  sum/star x none/relu (``--configs`` picks fewer), each as a fraction of that peak, next to the plain
  eager fp32 baseline so every optimisation is reported as a ratio (bf16 autocast rows
  on GPUs and on CPUs with native bf16); every function is warmed up before the first
  round, so the first row is not penalised by one-off setup;
* full-image (605x700) inference time and the metric time for the 10 test images;
* with ``--fast-run``: one whole ``fast`` run (sum/none, seed 2024) trained for real in
  each precision, its training time measured end to end (validation included);
* the end-to-end time of the quick 2x2 grid, where its runs are in this machine's runs folder.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from starunet.config import PROJECT_ROOT, default_runs_dir, smoke_mode
from starunet.io import write_csv_atomic, write_text_atomic
from starunet.preflight import check_positive, check_writable_dir, cli_message, plain_help
from starunet.stats import ACTIVATIONS_COMPARED, FUSIONS_COMPARED
from starunet.device import DEVICE_CHOICES, native_bf16_cpu, training_autocast

BENCH_DIR = PROJECT_ROOT / "benchmarks"  # the committed tables: written only with --out benchmarks/
GRID = [(f, a) for a in ACTIVATIONS_COMPARED for f in FUSIONS_COMPARED]  # the study's 2x2, from stats


@dataclass(frozen=True)
class Variant:
    """One way of executing the same model: what the benchmark compares."""
    name: str
    channels_last: bool = False
    bf16: bool = False       # autocast to bfloat16 (GPUs, CPUs with native bf16)
    compile: bool = False    # torch.compile
    default_inference: bool = False  # starunet.inference: BatchNorm folded, device layout, fp32


BASELINE = Variant("eager fp32")
INFERENCE_DEFAULT = Variant("starunet.inference (folded BN)", default_inference=True)


@dataclass
class Row:
    """One line of the benchmark table."""
    what: str
    variant: str
    value: float
    unit: str
    ratio: str = ""   # relative to baseline or peak, preformatted
    note: str = ""


# ---------------------------------------------------------------- timing helpers

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, min_seconds: float = 1.0,
              warmup: int = 2, min_repeats: int = 3) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` calls, repeating for at
    least ``min_seconds`` (and ``min_repeats`` times). Median: robust to the
    occasional stall on a shared machine."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_flops(model: torch.nn.Module, batch: torch.Tensor, train_step: bool) -> int:
    """FLOPs of one forward (or forward + backward) of ``model`` on ``batch``,
    counted with ``torch.utils.flop_counter`` (convs and matmuls; element-wise
    ops are not counted, which is the usual convention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        out = model(batch)
        if train_step:
            out.float().mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


# ---------------------------------------------------------------- measurements

def _prepare(model: torch.nn.Module, x: torch.Tensor, variant: Variant):
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if variant.compile else model
    return model, forward, x


def interleaved_samples(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int = 3,
                        min_seconds: float = 1.0, warmup_seconds: float = 0.0) -> dict[str, list[float]]:
    """Seconds per call of each function in each of ``rounds`` rounds, measured round-robin.

    On a shared machine the load changes within seconds; timing A fully and then
    B compares A and B under different loads. Alternating them makes the ratios
    meaningful. Every function first runs for ``warmup_seconds`` (at least twice):
    one-off costs (oneDNN primitive creation, allocator growth, clock ramp-up) must
    not land in the first round of the first function.
    """
    for fn in fns.values():
        time_call(fn, device, warmup_seconds, warmup=1, min_repeats=1)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(time_call(fn, device, min_seconds / rounds, warmup=0))
    return samples


def interleaved_seconds(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int = 3,
                        min_seconds: float = 1.0, warmup_seconds: float = 0.0) -> dict[str, float]:
    """Median seconds per call of each function over :func:`interleaved_samples`' rounds."""
    samples = interleaved_samples(fns, device, rounds, min_seconds, warmup_seconds)
    return {name: statistics.median(values) for name, values in samples.items()}


def train_step_fn(fusion: str, activation: str, batch_size: int, device: torch.device,
                  variant: Variant = BASELINE, patch: int = 96) -> Callable[[], None]:
    """One training step (forward, BCE-with-logits, backward, Adam) of the real
    model on random data of the real shape -- the engine's step without data loading."""
    from starunet.model import UNet

    torch.manual_seed(0)
    model = UNet(fusion=fusion, activation=None if activation == "none" else activation).to(device)
    x = torch.randn(batch_size, 3, patch, patch, device=device)
    y = (torch.rand(batch_size, 1, patch, patch, device=device) > 0.9).float()
    model, forward, x = _prepare(model, x, variant)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)

    def step() -> None:
        with training_autocast(device, "bf16" if variant.bf16 else "fp32"):  # as starunet.training
            logits = forward(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step.model = model  # type: ignore[attr-defined]  # lets tests see what a step changed
    return step


def matmul_fn(device: torch.device, dtype: torch.dtype = torch.float32,
              size: int | None = None) -> tuple[Callable[[], object], int]:
    """A square matmul in ``dtype`` and its FLOP count: one candidate for the peak."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return (lambda: a @ b), 2 * size**3


def conv_fn(device: torch.device, dtype: torch.dtype = torch.float32, channels: int = 256,
            side: int = 48, batch: int = 8) -> tuple[Callable[[], object], int]:
    """A large 3x3 convolution (channels-last, the layout the engine trains in) and its
    FLOP count: on CPUs oneDNN's convolutions can outrun the BLAS matmul, so a peak
    from matmuls alone is under-measured for a convolutional network."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device, dtype)
    x = torch.randn(batch, channels, side, side, device=device, dtype=dtype)
    if device.type == "cpu":
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

    def run() -> None:
        with torch.no_grad():
            conv(x)
    return run, 2 * batch * channels * channels * 9 * side * side


def peak_candidates(device: torch.device, dtype: torch.dtype) -> dict[str, tuple[Callable[[], object], int]]:
    """The kernels whose best rate is the practical peak in ``dtype``."""
    sizes = (8192,) if device.type == "cuda" else (2048, 4096)
    return {**{f"matmul {n}": matmul_fn(device, dtype, n) for n in sizes}, "conv3x3 256ch": conv_fn(device, dtype)}


def bf16_is_native(device: torch.device) -> bool:
    """bf16 rows are timed on GPUs with bf16 and CPUs with it in hardware (else emulated, slow)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and native_bf16_cpu()


def inference_fn(device: torch.device, variant: Variant = BASELINE, height: int = 605,
                 width: int = 700) -> Callable[[], None]:
    """One full STARE-sized image through the model (one forward pass, eval mode).
    :data:`INFERENCE_DEFAULT` times exactly what evaluation and validation run:
    :func:`starunet.inference.predict_logits` on an :func:`~starunet.inference.inference_model`."""
    from starunet.inference import inference_model, predict_logits
    from starunet.model import UNet

    torch.manual_seed(0)
    model = UNet().to(device).eval()
    x = torch.rand(1, 3, height, width, device=device)
    if variant.default_inference:
        net = inference_model(model, device)
        return lambda: predict_logits(net, x, prepared=True)
    model, forward, x = _prepare(model, x, variant)

    def run() -> None:
        with torch.inference_mode(), training_autocast(device, "bf16" if variant.bf16 else "fp32"):
            forward(x)

    return run


def metrics_seconds(n_images: int = 10, height: int = 605, width: int = 700) -> float:
    """Seconds to compute all seven metrics pooled over ``n_images`` full images."""
    from starunet.metrics import segmentation_metrics

    rng = np.random.default_rng(0)
    target = [rng.random((height, width)) < 0.1 for _ in range(n_images)]
    prob = [np.clip(t * 0.6 + rng.random((height, width)) * 0.5, 0, 1).astype(np.float32) for t in target]
    mask = [np.ones((height, width), bool) for _ in range(n_images)]
    return time_call(lambda: segmentation_metrics(prob, target, mask), torch.device("cpu"),
                     min_seconds=0, warmup=0, min_repeats=1)


def recorded_grid_seconds(preset: str = "quick", seeds: tuple[int, ...] = (2024, 2025, 2026),
                          runs_dir: Path | None = None) -> dict[int, dict[str, float]]:
    """Training seconds of each finished (fusion, activation) run of ``preset``, per
    seed, read from the runs' ``result.json`` (written by :func:`starunet.training.train`)."""
    from starunet.presets import preset_config
    from starunet.runs import run_dir_for

    found: dict[int, dict[str, float]] = {}
    for seed in seeds:
        for fusion, activation in GRID:
            config = preset_config(preset, fusion=fusion, activation=activation, seed=seed)
            result = run_dir_for(config, runs_dir) / "result.json"
            if result.is_file():
                seconds = float(json.loads(result.read_text())["train_seconds"])
                found.setdefault(seed, {})[f"{fusion}-{activation}"] = seconds
    return found


# ---------------------------------------------------------------- the report

def environment(device: torch.device) -> dict[str, str]:
    """What the numbers were measured on."""
    from starunet.device import device_description

    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "device": device_description(device),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "torch threads": str(torch.get_num_threads()),
    }


def variants_for(device: torch.device) -> list[Variant]:
    """The ways of running a training step worth comparing on ``device`` (baseline first)."""
    if device.type == "cuda":
        # bf16 alone, then with channels_last: each change gets its own ratio
        return [BASELINE, Variant("bf16", bf16=True), Variant("channels_last bf16", channels_last=True, bf16=True),
                Variant("channels_last bf16 compile", channels_last=True, bf16=True, compile=True)]
    cpu = [BASELINE, Variant("channels_last", channels_last=True)]
    return cpu + [Variant("channels_last bf16", channels_last=True, bf16=True)] * bf16_is_native(device)


def inference_variants_for(device: torch.device) -> list[Variant]:
    """The ways of running full-image inference worth comparing (baseline first,
    the package's default path last). Inference stays fp32 everywhere."""
    layout = [Variant("channels_last", channels_last=True)] if device.type == "cpu" else []
    return [BASELINE, *layout, INFERENCE_DEFAULT]


def parse_configs(names: list[str] | None) -> list[tuple[str, str]]:
    """``["sum/none", "star/none"]`` -> the grid configurations to time (default: all
    four). A shorter list keeps a lent GPU's few minutes for the grid itself."""
    if not names:
        return list(GRID)
    valid = [f"{f}/{a}" for f, a in GRID]
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(f"--configs {' '.join(bad)}: unknown configuration(s); valid: {', '.join(valid)}")
    return [tuple(n.split("/")) for n in dict.fromkeys(names)]  # type: ignore[misc]


def run_benchmarks(device: torch.device, large_batches: list[int], min_seconds: float,
                   log: Callable[[str], None] = print,
                   configs: list[tuple[str, str]] | None = None) -> list[Row]:
    """Measure everything in the module docstring on ``device``; return the rows.

    Each comparison (variants of one configuration, and the matmul peak beside
    them) is measured round-robin, so its ratios are taken under the same load.
    """
    from starunet.model import UNet

    rows: list[Row] = []
    model = UNet()
    patch = torch.randn(1, 3, 96, 96)
    fwd, step = count_flops(model, patch, False), count_flops(model, patch, True)
    rows += [Row("FLOPs per 96x96 patch, forward", "-", fwd / 1e9, "GFLOP"),
             Row("FLOPs per 96x96 patch, training step", "-", step / 1e9, "GFLOP")]
    log(f"FLOPs per patch: forward {fwd / 1e9:.2f} G, training step {step / 1e9:.2f} G")

    dtypes = {False: torch.float32, **({True: torch.bfloat16} if bf16_is_native(device) else {})}
    peak_fns = {f"peak {dtype} {name}": (bf16, fn, flops) for bf16, dtype in dtypes.items()
                for name, (fn, flops) in peak_candidates(device, dtype).items()}
    variants = variants_for(device)

    def with_peaks(fns: dict[str, Callable[[], object]]) -> tuple[dict[str, float], dict[bool, float]]:
        samples = interleaved_samples({**fns, **{k: fn for k, (_, fn, _) in peak_fns.items()}}, device,
                                      min_seconds=min_seconds, warmup_seconds=min(1.0, min_seconds))
        peaks = dict.fromkeys(dtypes, 0.0)
        for key, (bf16, _, flops) in peak_fns.items():  # the best round of the best kernel
            peaks[bf16] = max(peaks[bf16], flops / min(samples.pop(key)))
        return {name: statistics.median(values) for name, values in samples.items()}, peaks

    all_peaks: list[dict[bool, float]] = []
    for batch in [8, *large_batches]:
        for fusion, activation in configs or GRID:
            fns = {v.name: train_step_fn(fusion, activation, batch, device, v) for v in variants}
            timed, peaks = with_peaks(fns)
            all_peaks.append(peaks)
            base = batch / timed[BASELINE.name]
            for v in variants:
                rate = batch / timed[v.name]
                frac = rate * step / peaks[v.bf16]
                rows.append(Row(f"training, batch {batch}, {fusion}/{activation}", v.name, rate,
                                "patches/s", f"x{rate / base:.2f} vs eager fp32",
                                f"{100 * frac:.0f}% of same-round peak"))
                log(f"train b{batch} {fusion}/{activation} [{v.name}]: {rate:.1f} patches/s "
                    f"({100 * frac:.0f}% of peak)")

    inference_variants = inference_variants_for(device)
    timed, peaks = with_peaks({v.name: inference_fn(device, v) for v in inference_variants})
    all_peaks.append(peaks)
    image_flops = fwd * 605 * 700 / 96**2
    for v in inference_variants:
        seconds = timed[v.name]
        rows.append(Row("full-image inference 605x700", v.name, seconds, "s/image",
                        f"x{timed[BASELINE.name] / seconds:.2f} vs eager fp32",
                        f"{image_flops / seconds / peaks[v.bf16]:.0%} of same-round peak; "
                        f"fp32 floor at that peak {image_flops / peaks[False]:.3g} s"))
        log(f"inference [{v.name}]: {seconds:.3f} s/image")
    for n, (bf16, name) in enumerate((b, n) for b, n in ((False, "fp32"), (True, "bf16")) if b in dtypes):
        rows.insert(2 + n, Row(f"practical peak {name} (best matmul or conv3x3, best round)", "-",
                               max(p[bf16] for p in all_peaks) / 1e12, "TFLOP/s",
                               note="the best round's; each '% of same-round peak' below divides by the "
                                    "peak measured in its own round, at most this"))

    seconds = metrics_seconds()
    rows.append(Row("metrics, 10 full images pooled", "-", seconds, "s"))
    log(f"metrics: {seconds:.2f} s")

    for seed, runs in recorded_grid_seconds("quick").items():
        for name, sec in runs.items():
            rows.append(Row(f"quick preset run {name}, seed {seed} (recorded)", "-", sec / 60, "min",
                            note="training time from the run's result.json"))
        if len(runs) == len(GRID):
            rows.append(Row(f"quick preset 2x2 grid, seed {seed}, end to end (recorded)", "-",
                            sum(runs.values()) / 60, "min", note="sum of the four runs' training time"))
    return rows


def fast_run_rows(device: torch.device, log: Callable[[str], None] = print) -> list[Row]:
    """One whole ``fast`` run (sum/none, seed 2024) per precision worth timing on
    ``device`` (fp32, and bf16 where native), trained for real in a temporary folder:
    what a reader of notebook 04 waits for a run, its eight validations included."""
    import tempfile

    from starunet.presets import preset_config
    from starunet.stare import load_stare
    from starunet.training import train

    records = load_stare()
    config = preset_config("smoke" if smoke_mode() else "fast", fusion="sum", activation="none", seed=2024)
    patches = config.samples_per_epoch * config.max_epochs
    rows: list[Row] = []
    minutes: dict[str, float] = {}
    for precision in ["fp32"] + ["bf16"] * bf16_is_native(device):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = train(config, Path(tmp) / "run", device=str(device), precision=precision, records=records,
                           progress=False)
            wall = time.perf_counter() - start
        minutes[precision] = result.train_seconds / 60
        rows.append(Row(f"{config.preset} preset run sum/none, seed 2024, {patches:,} patches", precision,
                        minutes[precision], "min", f"x{minutes['fp32'] / minutes[precision]:.2f} vs fp32",
                        f"trained end to end, {config.max_epochs} validations included ({wall / 60:.1f} min "
                        f"with setup); best validation PR-AUC {result.best_val['pr_auc']:.3f}"))
        log(f"{config.preset} run in {precision}: {minutes[precision]:.2f} min of training")
    return rows


def to_markdown(rows: list[Row], env: dict[str, str], command: str) -> str:
    lines = ["| what | variant | value | unit | ratio | note |", "| --- | --- | ---: | --- | --- | --- |"]
    lines += [f"| {r.what} | {r.variant} | {r.value:.3g} | {r.unit} | {r.ratio} | {r.note} |" for r in rows]
    head = [f"- {k}: {v}" for k, v in env.items()] + [f"- command: `{command}`"]
    return "\n".join(head) + "\n\n" + "\n".join(lines) + "\n"


def cli(argv: list[str]) -> int:
    from starunet.device import select_device

    parser = argparse.ArgumentParser(prog="python -m starunet bench", description=plain_help(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="default: auto")
    parser.add_argument("--large-batches", type=int, nargs="+", default=None,
                        help="larger batch sizes to try (default: 32 on CPU; 64 256 1024 on GPU)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="minimum seconds per measurement (default 2; 0.2 in smoke mode)")
    parser.add_argument("--configs", nargs="+", default=None, metavar="FUSION/ACTIVATION",
                        help="configurations to time (default: all four of " +
                             ", ".join(f"{f}/{a}" for f, a in GRID) + ")")
    parser.add_argument("--fast-run", action="store_true",
                        help="also train one whole fast-preset run per precision (fp32, and bf16 where "
                             "native) and report its training time: minutes")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for <device>.md and <device>.csv (default <runs>/bench; "
                             "--out benchmarks/ replaces the committed tables)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else default_out()
    try:  # before anything is measured
        for batch in args.large_batches or []:
            check_positive(batch, "--large-batches")
        if args.seconds is not None:
            check_positive(args.seconds, "--seconds", integer=False)
        configs = parse_configs(args.configs)
        check_writable_dir(out, "benchmark folder")
        device = select_device(args.device)
    except ValueError as err:
        print(f"error: {cli_message(err)}", file=sys.stderr)
        return 2
    large = args.large_batches or ([64, 256, 1024] if device.type == "cuda" else [32])
    seconds = args.seconds if args.seconds is not None else (0.2 if smoke_mode() else 2.0)
    env = environment(device)
    if smoke_mode():
        env["mode"] = SMOKE_NOTE
        print(f"SMOKE RUN: {SMOKE_NOTE}", flush=True)
    print("\n".join(f"{k}: {v}" for k, v in env.items()), flush=True)
    try:
        rows = run_benchmarks(device, large, seconds, configs=configs)
        if args.fast_run:
            rows += fast_run_rows(device)
    except KeyboardInterrupt:
        print(f"\ninterrupted: nothing was written to {out}", file=sys.stderr)
        return 130
    command = "python -m starunet bench " + " ".join(argv)
    table = to_markdown(rows, env, command.strip())
    print("\n" + table)
    paths = write_report(out, device.type, rows, env, table)
    print(f"written: {', '.join(str(p) for p in paths)}" + (f" (SMOKE RUN: {SMOKE_NOTE})" if smoke_mode() else ""))
    return 0


def default_out() -> Path:
    """Where ``bench`` writes without ``--out``: ``<runs>/bench``, never the committed tables."""
    return default_runs_dir() / "bench"


SMOKE_NOTE = "smoke mode (STARUNET_SMOKE=1): short measurements, a pipeline check, not a benchmark"


def write_report(out: Path, tag: str, rows: list[Row], env: dict[str, str], table: str) -> list[Path]:
    """``<out>/<tag>.md`` and ``<out>/<tag>.csv``; a smoke run says so in both
    (the CSV through the ``mode`` column of ``env``)."""
    title = f"# Benchmark on {env['device']}\n\n"
    if "mode" in env:
        title = f"# SMOKE RUN, not a benchmark: {env['device']}\n\n"
    md, csv = out / f"{tag}.md", out / f"{tag}.csv"
    write_text_atomic(md, title + table)
    write_csv_atomic(csv, [{**asdict(r), **env} for r in rows], fieldnames=[*Row.__dataclass_fields__, *env])
    return [md, csv]
