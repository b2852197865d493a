"""Learning curves: how each configuration's test quality grows with training, up to
where it stops growing.

Every configuration of :data:`CURVE_RUNS` trains once with the source recipe (Adam
5e-4 constant, batch 8, 96x96 patches) for the ``curves`` preset's 65,536 patches,
validated every 512 patches. Early stopping is replaced by "keep the best validation
weights so far", and those weights are snapshotted at every doubling of patches seen
(1,024; 2,048; ...; 65,536: :func:`curve_points`). Each snapshot is then scored on the
test images like any grid run, so a point of a curve is "the model this configuration
would have delivered with that budget".
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from starunet.config import default_runs_dir, display_path, git_commit, smoke_mode
from starunet.device import DEVICE_CHOICES, hardware_record
from starunet.evaluate import EVALUATION_VERSION, RunEvaluation, evaluate_run
from starunet.io import write_csv_atomic, write_json_atomic, write_text_atomic
from starunet.metrics import METRIC_NAMES
from starunet.preflight import cli_message
from starunet.presets import TrainConfig, preset_config
from starunet.report import curves_readme, format_patches
from starunet.results import CURVES_DIR, CurveResults, load_curves
from starunet.runs import LAST_CHECKPOINT, load_checkpoint, read_history, run_dir_for, snapshot_name
from starunet.stats import PairedDifference, TUNED_METRICS, run_key
from starunet.training import train
from starunet.verdicts import CURVE_COMPARISONS, curve_differences, write_verdicts

PLATEAU_GAIN = 0.005  # test PR-AUC gained over one doubling below which a curve counts as flat


@dataclass(frozen=True)
class CurveRun:
    """One learning curve: a fusion, an activation and a seed."""
    fusion: str
    activation: str
    seed: int

    @property
    def key(self) -> str:
        return run_key(self.fusion, self.activation, self.seed)


# Seed 2024 for every configuration, a second seed where the study's question lies
# (sum vs star without activation). Ordered so that two workers splitting the list
# round-robin each get one of the headline pair first.
CURVE_RUNS: tuple[CurveRun, ...] = (
    CurveRun("sum", "none", 2024), CurveRun("star", "none", 2024),
    CurveRun("star_bn", "none", 2024), CurveRun("sum_star_bn", "none", 2024),
    CurveRun("sum", "relu", 2024), CurveRun("star", "relu", 2024),
    CurveRun("sum", "none", 2025), CurveRun("star", "none", 2025),
)

FIRST_POINT = 1024  # patches: the first point of every curve (then every doubling)


def default_preset() -> str:
    return "smoke" if smoke_mode() else "curves"


def curve_config(run: CurveRun, preset: str | None = None) -> TrainConfig:
    """The :class:`TrainConfig` that trains ``run``'s curve."""
    return preset_config(preset or default_preset(), fusion=run.fusion, activation=run.activation,
                         seed=run.seed)


def curve_points(config: TrainConfig) -> tuple[int, ...]:
    """Patch counts at which a curve is sampled: every doubling from
    ``min(FIRST_POINT, total / 2)`` up to the run's ``total`` patches, each an epoch end."""
    total = config.samples_per_epoch * config.max_epochs
    points, p = [], min(FIRST_POINT, total // 2)
    while p <= total:
        if p % config.samples_per_epoch == 0:
            points.append(p)
        p *= 2
    if not points:
        raise ValueError(f"a {config.preset!r} run ({total:,} patches in epochs of "
                         f"{config.samples_per_epoch:,}) has no doubling at an epoch end")
    return tuple(points)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)``: this worker trains runs I, I+N, I+2N, ..."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/2), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: I must be in 0..N-1")
    return index, count


def train_curves(runs_dir: str | Path | None = None, runs: Sequence[CurveRun] = CURVE_RUNS,
                 preset: str | None = None, shard: tuple[int, int] = (0, 1), device: str = "auto",
                 progress: bool | None = None) -> list[Path]:
    """Train (or resume, or reuse) this shard's curve runs one after another; return
    their run folders. Interrupted runs continue from their last epoch."""
    configs = [curve_config(r, preset) for r in runs]  # validate every config before any work
    index, count = shard
    folders = []
    for config in configs[index::count]:
        folder = run_dir_for(config, runs_dir)
        points = curve_points(config)
        result = train(config, folder, resume=True, device=device, progress=progress, snapshots=points)
        missing = [p for p in points if p <= result.epochs * config.samples_per_epoch
                   and not (folder / snapshot_name(p)).is_file()]
        if missing:  # snapshots are not part of the config hash: a run trained without them is reused
            raise ValueError(f"{display_path(folder)} holds a finished run of this config trained without "
                             f"curve snapshots (missing {', '.join(map(str, missing))} patches), e.g. by "
                             "`reproduce`; give the curves their own --runs-dir")
        folders.append(folder)
    return folders


# ---------------------------------------------------------------- scoring the snapshots

POINT_COLUMNS = ["fusion", "activation", "seed", "patches", "epoch", "best_epoch", "val_pr_auc",
                 "train_seconds", *METRIC_NAMES, "val_threshold", *TUNED_METRICS]
PER_IMAGE_COLUMNS = ["fusion", "activation", "seed", "patches", "image_id", *METRIC_NAMES, "f1_tuned"]
RUN_COLUMNS = ["fusion", "activation", "seed", "epochs", "patches", "finished", "train_seconds",
               "val_pr_auc_swing", "val_pr_auc_max_drop", "plateau", "device", "torch_threads", "config_hash"]


def _snapshot_evaluation(folder: Path, patches: int, records: Sequence, cache: Path,
                         device: str) -> RunEvaluation:
    """Score the snapshot on the test images (and at its validation threshold), unless
    ``cache`` holds the evaluation of this exact snapshot file."""
    fingerprint = hashlib.sha256((folder / snapshot_name(patches)).read_bytes()
                                 + json.dumps([EVALUATION_VERSION]).encode()).hexdigest()[:16]
    if cache.is_file():
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if stored.get("fingerprint") == fingerprint:
            return RunEvaluation.from_json(stored["evaluation"])
    evaluation = evaluate_run(folder, records, which=patches, device=device)
    evaluation.curves = {}  # the ROC/PR curves of 56 snapshots are not shown: keep the files small
    write_json_atomic(cache, {"fingerprint": fingerprint, "evaluation": evaluation.to_json()})
    return evaluation


def validation_swing(history: Sequence[Mapping[str, float]], skip_patches: int,
                     samples_per_epoch: int) -> tuple[float, float]:
    """How much validation PR-AUC moves from one epoch to the next once the first
    ``skip_patches`` are past: ``(median |change|, largest drop)``. A network whose
    eval-mode BatchNorm statistics do not fit its features swings more."""
    values = [row["val_pr_auc"] for row in history if row["epoch"] * samples_per_epoch > skip_patches]
    if len(values) < 2:
        return float("nan"), float("nan")
    steps = np.diff(values)
    return float(np.median(np.abs(steps))), float(max(0.0, -steps.min()))


def swing_lines(runs: Sequence[Mapping]) -> list[str]:
    """Notebook 06's reading of the BatchNorm hypothesis, computed from every run of
    ``runs.csv`` (not one seed): the runs ranked by validation swing per activation, the
    run with the largest, each configuration's range over its runs, and what so few runs
    per configuration can say (they neither support nor refute the hypothesis)."""
    by_activation: dict[str, list[tuple[str, float]]] = {}
    per_config: dict[str, list[float]] = {}
    for r in runs:
        swing = float(r["val_pr_auc_swing"])
        by_activation.setdefault(str(r["activation"]), []).append((run_key(r["fusion"], r["activation"], r["seed"]), swing))
        per_config.setdefault(f"{r['fusion']}/{r['activation']}", []).append(swing)
    names = {"none": "without ReLU", "relu": "with ReLU"}
    lines = []
    for activation, ranked in by_activation.items():
        ranked = sorted(ranked, key=lambda item: -item[1])
        name = names.get(activation, f"with {activation}")
        lines.append(f"- {name[0].upper() + name[1:]}, largest swing first "
                     f"({len(ranked)} runs): " + ", ".join(f"{key} {value:.3f}" for key, value in ranked) + ".")
    ranges = "; ".join(f"{config} {min(v):.3f}" + (f"–{max(v):.3f}" if len(v) > 1 else "") + f" ({len(v)} run"
                       f"{'s' * (len(v) > 1)})" for config, v in per_config.items())
    lines.append(f"- Each configuration's swing over its runs: {ranges}.")
    if {"none", "relu"} <= set(by_activation):
        quiet, loud = max(v for _, v in by_activation["relu"]), min(v for _, v in by_activation["none"])
        lines.append(f"- Every run with ReLU swings {'less' if quiet < loud else 'not always less'} than every run "
                     f"without ({quiet:.3f} at most against {loud:.3f} at least).")
    counts = sorted({len(v) for v in per_config.values()})
    how_many = f"{counts[0]}–{counts[-1]}" if len(counts) > 1 else f"{counts[0]}"
    lines.append(f"- With {how_many} run{'s' * (counts[-1] > 1)} per configuration, these runs neither support nor "
                 "refute the hypothesis that the product swings more: ranking the configurations needs several "
                 "seeds each.")
    return lines


def plateau(points: Sequence[Mapping], final_patches: int, gain: float = PLATEAU_GAIN) -> str:
    """Where a curve stopped growing, computed: the first budget from which every later
    doubling gains less than ``gain`` test PR-AUC; ``"still rising at N"`` when the last
    doubling gained more; ``"unfinished"`` while the run has not reached ``final_patches``."""
    ordered = sorted(points, key=lambda r: r["patches"])
    if not ordered or ordered[-1]["patches"] < final_patches:
        return "unfinished"
    pr = [r["pr_auc"] for r in ordered]
    flat_from = None
    for i in range(len(pr) - 1, 0, -1):
        if pr[i] - pr[i - 1] >= gain:
            break
        flat_from = ordered[i - 1]["patches"]
    if flat_from is None:
        return f"still rising at {format_patches(ordered[-1]['patches'])}"
    return f"flat from {format_patches(flat_from)}"


def evaluate_curves(runs_dir: str | Path | None = None, out: str | Path = CURVES_DIR,
                    runs: Sequence[CurveRun] = CURVE_RUNS, preset: str | None = None,
                    records: Sequence | None = None, device: str = "cpu", command: str | None = None,
                    log: Callable[[str], None] | None = None) -> "CurveResults":
    """Score every snapshot that exists (cached per snapshot file) and write the curve
    files into ``out``: ``points.csv`` (one row per run and budget), ``per_image.csv``,
    ``runs.csv`` (swing, plateau, time), ``history/<run>.csv`` (validation per epoch),
    ``provenance.json`` and a generated ``README.md``. Unstarted runs are skipped and
    unfinished ones contribute the points they have: rerun it as training goes on."""
    from starunet.stare import load_stare

    log = log or (lambda message: print(message, flush=True))
    out = Path(out)
    configs = [curve_config(r, preset) for r in runs]
    records = load_stare() if records is None else records
    started, start = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.perf_counter()
    points, per_image, run_rows, train_devices = [], [], [], set()
    for run, config in zip(runs, configs):
        folder = run_dir_for(config, runs_dir)
        if not (folder / "history.csv").is_file():
            log(f"{run.key}: not started ({display_path(folder)})")
            continue
        history = read_history(folder)
        state = load_checkpoint(folder / LAST_CHECKPOINT)
        epoch_seconds, threads = list(state["epoch_seconds"]), state.get("torch_threads")
        result_path = folder / "result.json"
        train_device = json.loads(result_path.read_text())["device"] if result_path.is_file() else ""
        train_devices.add(train_device)
        run_points = []
        for patches in curve_points(config):
            if not (folder / snapshot_name(patches)).is_file():
                continue
            evaluation = _snapshot_evaluation(folder, patches, records, out / "evaluations" /
                                              f"{run.key}_p{patches}.json", device)
            epoch = patches // config.samples_per_epoch
            best = max(history[:epoch], key=lambda row: (row["is_best"], row["epoch"]))
            row = {"fusion": run.fusion, "activation": run.activation, "seed": run.seed, "patches": patches,
                   "epoch": epoch, "best_epoch": int(best["epoch"]), "val_pr_auc": round(best["val_pr_auc"], 6),
                   "train_seconds": round(sum(epoch_seconds[:epoch]), 1),
                   **{m: round(evaluation.pooled[m], 6) for m in METRIC_NAMES},
                   "val_threshold": round(evaluation.val_threshold, 6),
                   **{m: round(evaluation.tuned[m], 6) for m in TUNED_METRICS}}
            run_points.append(row)
            per_image += [{"fusion": run.fusion, "activation": run.activation, "seed": run.seed,
                           "patches": patches, "image_id": i,
                           **{m: round(evaluation.per_image[i][m], 6) for m in METRIC_NAMES},
                           "f1_tuned": round(evaluation.per_image_tuned[i]["f1_tuned"], 6)}
                          for i in evaluation.ids]
        total = config.samples_per_epoch * config.max_epochs
        swing, drop = validation_swing(history, FIRST_POINT, config.samples_per_epoch)
        run_rows.append({"fusion": run.fusion, "activation": run.activation, "seed": run.seed,
                         "epochs": len(history), "patches": len(history) * config.samples_per_epoch,
                         "finished": int(result_path.is_file()), "train_seconds": round(sum(epoch_seconds), 1),
                         "val_pr_auc_swing": round(swing, 6), "val_pr_auc_max_drop": round(drop, 6),
                         "plateau": plateau(run_points, total), "device": train_device,
                         "torch_threads": threads, "config_hash": config.config_hash})
        write_csv_atomic(out / "history" / f"{run.key}.csv", history, list(history[0]))
        points += run_points
        log(f"{run.key}: {len(history)} epochs, {len(run_points)} points scored")
    write_csv_atomic(out / "points.csv", points, POINT_COLUMNS)
    write_csv_atomic(out / "per_image.csv", per_image, PER_IMAGE_COLUMNS)
    write_csv_atomic(out / "runs.csv", run_rows, RUN_COLUMNS)
    provenance = {
        "command": command or "starunet.curves.evaluate_curves()", "preset": configs[0].preset,
        "preset_config": {k: v for k, v in configs[0].to_dict().items() if k not in ("fusion", "activation", "seed")},
        "points": list(curve_points(configs[0])), "runs": [r.key for r in runs],
        "test_ids": list(configs[0].split().test), "plateau_rule": f"PR-AUC gain < {PLATEAU_GAIN} per doubling",
        "trained_on": sorted(d for d in train_devices if d) or ["(unfinished runs: see runs.csv)"],
        "evaluated_on": hardware_record(torch.device(device))["summary"], "torch": torch.__version__,
        "python": platform.python_version(), "git_commit": git_commit(), "smoke_mode": smoke_mode(),
        "started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    write_json_atomic(out / "provenance.json", provenance)
    results = load_curves(out)
    write_verdicts(out)  # verdicts.csv, before the README that shows it
    write_text_atomic(out / "README.md", curves_readme(results))
    log(f"curves -> {display_path(out)}")
    return results


# ---------------------------------------------------------------- what they say

COMPARISONS = CURVE_COMPARISONS  # the comparisons notebook 06 draws at the largest budget (starunet.verdicts)


def budget_differences(results: CurveResults, comparisons=COMPARISONS,
                       level: float = 0.95) -> list[tuple[int, PairedDifference]]:
    """Each comparison's primary (pooled, paired by seed) differences at the largest budget
    both configurations reached, one Bonferroni family (see
    :func:`starunet.verdicts.curve_differences`). Returns ``(budget, difference)`` pairs."""
    return curve_differences(results, "pooled", comparisons, level=level)


def cli(argv: Sequence[str]) -> int:
    """``python -m starunet curves``: train the learning-curve runs."""
    parser = argparse.ArgumentParser(prog="python -m starunet curves",
                                     description="Train the learning-curve runs (resumable).")
    parser.add_argument("action", choices=["train", "evaluate"],
                        help="train: train/resume this shard's runs; evaluate: score every snapshot there is")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where the run folders go (default: $STARUNET_RUNS or runs/)")
    parser.add_argument("--shard", default="0/1", help="I/N: train runs I, I+N, ... (for N parallel workers)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of this worker")
    parser.add_argument("--device", choices=list(DEVICE_CHOICES), default="auto",
                        help="where to train and evaluate (default auto: a GPU if there is one, else the CPU)")
    parser.add_argument("--preset", default=None, help="default: curves (smoke in smoke mode)")
    parser.add_argument("--out", type=Path, default=None,
                        help="evaluate: output folder (default: results/curves, or runs/curves-smoke in smoke mode)")
    args = parser.parse_args(list(argv))
    try:
        shard = parse_shard(args.shard)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        runs_dir = args.runs_dir or default_runs_dir()
        if args.action == "train":
            folders = train_curves(runs_dir, preset=args.preset, shard=shard, device=args.device)
            print("\n".join(str(f) for f in folders))
        else:
            out = args.out or (default_runs_dir() / "curves-smoke" if smoke_mode() else CURVES_DIR)
            device = "cpu" if args.device == "auto" else args.device
            command = "python -m starunet curves evaluate" + (f" --out {display_path(out)}" if args.out else "")
            evaluate_curves(runs_dir, out, preset=args.preset, device=device, command=command)
    except ValueError as err:
        print(f"error: {cli_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to go on (finished epochs, snapshots and evaluations "
              "are kept)", file=sys.stderr)
        return 130
    return 0
