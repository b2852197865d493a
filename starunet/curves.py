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

from starunet.config import PROJECT_ROOT, default_runs_dir, display_path, git_commit, smoke_mode
from starunet.device import DEVICE_CHOICES, hardware_record
from starunet.evaluate import EVALUATION_VERSION, RunEvaluation, evaluate_run
from starunet.io import read_csv, write_csv_atomic, write_json_atomic, write_text_atomic
from starunet.metrics import METRIC_NAMES
from starunet.preflight import cli_message
from starunet.presets import TrainConfig, preset_config
from starunet.report import markdown_table
from starunet.results import parse_row
from starunet.runs import LAST_CHECKPOINT, read_history, run_dir_for, snapshot_name
from starunet.stats import (HEADLINE_METRICS, METRIC_LABELS, PairedDifference, TUNED_METRICS, config_differences,
                            config_order, run_key)
from starunet.training import train

CURVES_DIR = PROJECT_ROOT / "results" / "curves"  # the committed curves
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


def format_patches(n: int) -> str:
    """1024 -> "1k", 65536 -> "64k" (powers of two read better in binary k)."""
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


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
        state = torch.load(folder / LAST_CHECKPOINT, map_location="cpu", weights_only=True)
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
    write_text_atomic(out / "README.md", curves_readme(results))
    log(f"curves -> {display_path(out)}")
    return results


# ---------------------------------------------------------------- reading them back

@dataclass
class CurveResults:
    """The files of :func:`evaluate_curves`, read back (numbers parsed)."""
    directory: Path
    points: list[dict]
    per_image: list[dict]
    runs: list[dict]
    provenance: dict

    def keys(self) -> list[str]:
        return [CurveRun(r["fusion"], r["activation"], int(r["seed"])).key for r in self.runs]

    def history(self, key: str) -> list[dict[str, float]]:
        return read_history_csv(self.directory / "history" / f"{key}.csv")

    def largest_common_budget(self, keys: Sequence[tuple[str, str]]) -> int:
        """The largest budget that every configuration in ``keys`` reached with one shared
        seed. Seeds that have not reached it (a second seed still training) are left out
        of a comparison there instead of pulling it back to their first points."""
        reached: dict[tuple[str, str], dict[int, int]] = {}
        for r in self.points:
            if (r["fusion"], r["activation"]) in keys:
                seeds = reached.setdefault((r["fusion"], r["activation"]), {})
                seeds[r["seed"]] = max(seeds.get(r["seed"], 0), r["patches"])
        if len(reached) < len(set(keys)):
            raise ValueError(f"no scored points for {keys} in {display_path(self.directory)}")
        shared = set.intersection(*(set(seeds) for seeds in reached.values()))
        if not shared:
            raise ValueError(f"{keys} share no seed in {display_path(self.directory)}")
        return max(min(seeds[s] for seeds in reached.values()) for s in shared)


def read_history_csv(path: Path) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in read_csv(path)]


_CURVE_INTS = {"patches", "epoch", "best_epoch", "epochs", "finished", "seed"}


def _parse(row: Mapping[str, str]) -> dict:
    parsed = parse_row(row)  # metrics, seed
    for key in _CURVE_INTS & set(row):
        parsed[key] = int(row[key]) if row[key] != "" else ""
    for key in ("val_pr_auc", "train_seconds", "val_pr_auc_swing", "val_pr_auc_max_drop"):
        if row.get(key, "") != "":
            parsed[key] = float(row[key])
    return parsed


def load_curves(directory: str | Path = CURVES_DIR) -> CurveResults:
    """Read the output folder of :func:`evaluate_curves`."""
    directory = Path(directory)
    if not (directory / "points.csv").is_file():
        raise FileNotFoundError(f"no points.csv in {display_path(directory)}: run `python -m starunet curves "
                                "train` and then `python -m starunet curves evaluate --out DIR` first")
    def rows(name: str) -> list[dict]:
        return [_parse(r) for r in read_csv(directory / name)]
    provenance = json.loads((directory / "provenance.json").read_text(encoding="utf-8"))
    return CurveResults(directory, rows("points.csv"), rows("per_image.csv"), rows("runs.csv"), provenance)


# ---------------------------------------------------------------- what they say

# The comparisons notebook 06 draws at the largest budget: (a, b), each (fusion, activation).
COMPARISONS: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
    (("sum", "none"), ("star", "none")),
    (("sum", "none"), ("star_bn", "none")),
    (("sum", "none"), ("sum_star_bn", "none")),
    (("sum", "relu"), ("star", "relu")),
    (("sum", "relu"), ("star", "none")),
    (("sum", "relu"), ("sum_star_bn", "none")),
)


def budget_differences(results: CurveResults, comparisons=COMPARISONS, n_boot: int = 4000,
                       level: float = 0.95) -> list[tuple[int, PairedDifference]]:
    """Each comparison's paired differences (b − a, per test image and shared seed, bootstrap
    CI) at the largest budget both configurations reached; comparisons with a configuration
    not scored yet are left out. Returns ``(budget, difference)`` pairs."""
    out = []
    for a, b in comparisons:
        try:
            budget = results.largest_common_budget([a, b])
        except ValueError:
            continue
        rows = [r for r in results.per_image if r["patches"] == budget]
        try:
            diffs = config_differences(rows, a, b, HEADLINE_METRICS, n_boot=n_boot, level=level)
        except ValueError:
            continue  # one of the two has no run at this budget with a shared seed
        out += [(budget, d) for d in diffs]
    return out


def differences_table(diffs: Sequence[tuple[int, PairedDifference]]) -> str:
    """Markdown: one row per comparison and metric, the mean difference with its CI."""
    rows = [[f"{d.b} − {d.a}", format_patches(budget), f"{d.n_seeds} × {d.n_images}",
             METRIC_LABELS.get(d.metric, d.metric), f"{d.mean:+.4f}",
             f"[{d.low:+.4f}, {d.high:+.4f}]", d.verdict] for budget, d in diffs]
    header = ["comparison", "budget", "seeds × images", "metric", "difference",
              f"{100 * diffs[0][1].level:.0f}% CI" if diffs else "CI", "verdict"]
    return markdown_table(header, rows, numbers=False)


def verdict_lines(diffs: Sequence[tuple[int, PairedDifference]]) -> list[str]:
    """One computed sentence per compared pair: its headline differences and what the
    CIs say together (with one seed, the CI covers test-image noise only)."""
    pairs: dict[tuple[str, str], list] = {}
    for budget, d in diffs:
        pairs.setdefault((d.b, d.a), []).append((budget, d))
    lines = []
    for (b, a), group in pairs.items():
        budget, first = group[0]
        verdicts = {d.verdict for _, d in group}
        overall = (f"{b} better on every headline metric" if verdicts == {f"{b} better"} else
                   f"{b} worse on every headline metric" if verdicts == {f"{b} worse"} else
                   "within noise on every headline metric" if verdicts == {"within noise"} else
                   "; ".join(f"{METRIC_LABELS[d.metric]}: {d.verdict}" for _, d in group))
        noise = ("seeds and test images" if first.n_seeds > 1 else
                 "test images only (one seed: run-to-run noise not measured)")
        numbers = ", ".join(f"{METRIC_LABELS[d.metric]} {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]" for _, d in group)
        lines.append(f"**{b} − {a}** at {format_patches(budget)} patches ({first.n_seeds} seed(s) × "
                     f"{first.n_images} images, CI over {noise}): {numbers}. Verdict: {overall}.")
    return lines


def source_comparison_table(results: CurveResults, source: Mapping[str, Mapping[str, Mapping[str, float]]],
                            metrics: Sequence[str] = METRIC_NAMES) -> str:
    """The source's 提升 rows (star − sum, percentage points) beside ours at the largest
    budget both of our runs reached (means over the seeds both have): the absolute
    numbers are not comparable (another set of pixels, notebook 05), the differences may be."""
    from starunet.source import format_points, improvement_points

    rows = []
    for activation, published in source.items():
        pair = [("sum", activation), ("star", activation)]
        try:
            budget = results.largest_common_budget(pair)
        except ValueError:
            continue
        ours = {}
        for fusion, act in pair:
            chosen = [r for r in results.points if (r["fusion"], r["activation"]) == (fusion, act)
                      and r["patches"] == budget]
            ours[fusion] = {m: float(np.mean([r[m] for r in chosen])) for m in metrics}
            seeds = len(chosen)
        src = improvement_points(published["sum"], published["star"])
        mine = improvement_points(ours["sum"], ours["star"])
        rows.append([f"提升 star − sum, {activation}, source", *(format_points(src[m]) for m in metrics)])
        rows.append([f"提升 star − sum, {activation}, ours at {format_patches(budget)} ({seeds} seed(s))",
                     *(format_points(mine[m]) for m in metrics)])
    return markdown_table(["(percentage points)", *(METRIC_LABELS[m] for m in metrics)], rows)


def curve_table(results: CurveResults, metric: str = "pr_auc") -> str:
    """Markdown: one row per run, one column per budget, the test ``metric``."""
    budgets = sorted({r["patches"] for r in results.points})
    values = {(CurveRun(r["fusion"], r["activation"], r["seed"]).key, r["patches"]): r[metric]
              for r in results.points}
    rows = [[key, *(f"{values[(key, b)]:.4f}" if (key, b) in values else "" for b in budgets)]
            for key in results.keys()]
    return markdown_table([f"test {METRIC_LABELS.get(metric, metric)}", *map(format_patches, budgets)], rows)


def early_stopping_table(results: CurveResults, full, metric: str = "pr_auc") -> str:
    """Markdown: the full-protocol grid ``full`` (a :class:`starunet.results.GridResults`
    of preset ``full``: early stopping on 2,000-patch epochs) beside the curves of the
    same configurations: where early stopping stopped and which weights it kept (patches,
    means over seeds), the test ``metric`` of those weights, and the curves' test
    ``metric`` at the budgets around them and at their largest. Did early stopping stop
    where the curves flatten?"""
    label = METRIC_LABELS.get(metric, metric)
    epoch = int(full.provenance["preset_config"]["samples_per_epoch"])
    rows = []
    for fusion, activation in sorted({(r["fusion"], r["activation"]) for r in full.runs},
                                      key=lambda config: config_order(*config)):
        runs = [r for r in full.runs if (r["fusion"], r["activation"]) == (fusion, activation)]
        curve = {}
        for r in results.points:
            if (r["fusion"], r["activation"]) == (fusion, activation):
                curve.setdefault(r["patches"], []).append(r[metric])
        if not curve:
            continue
        best = float(np.mean([int(r["best_epoch"]) * epoch for r in runs]))
        below = max((b for b in curve if b <= best), default=min(curve))
        above = min((b for b in curve if b >= best), default=max(curve))
        values = [float(r[metric]) for r in runs]
        spread = f" ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else ""
        at = dict.fromkeys([below, above, max(curve)])
        rows.append([f"{fusion}/{activation}", str(len(runs)),
                     f"{np.mean([int(r['epochs']) * epoch for r in runs]):,.0f}", f"{best:,.0f}",
                     f"{np.mean(values):.4f}{spread}",
                     ", ".join(f"{np.mean(curve[b]):.4f} at {format_patches(b)}" for b in at)])
    header = ["configuration", "full: seeds", "full: stopped after (patches)", "full: kept weights of (patches)",
              f"full: test {label}", f"curves: test {label} (budgets around the kept weights, and the largest)"]
    return markdown_table(header, rows)


def runs_table(results: CurveResults) -> str:
    """Markdown: per run, how far it trained, how long, where its curve flattened and
    how much its validation PR-AUC swung between epochs."""
    rows = [[key, f"{r['patches']:,}", "yes" if r["finished"] else "no", f"{r['train_seconds'] / 60:.0f} min",
             r["plateau"], f"{r['val_pr_auc_swing']:.4f}", f"{r['val_pr_auc_max_drop']:.4f}"]
            for key, r in zip(results.keys(), results.runs)]
    header = ["run", "patches trained", "finished", "training time", "plateau (test PR-AUC)",
              "val PR-AUC swing (median)", "largest drop"]
    return markdown_table(header, rows)


def curves_readme(results: CurveResults) -> str:
    """The generated README of a curves folder: how it was made, then what it holds."""
    p = results.provenance
    config = p["preset_config"]
    lines = [
        "# Learning curves: test quality against training patches seen", "",
        "Generated by `starunet.curves.evaluate_curves` -- do not edit by hand.", "",
        f"- **Recipe**: preset `{p['preset']}`: Adam lr {config['lr']}, batch {config['batch_size']}, "
        f"{config['patch_size']}x{config['patch_size']} patches, {config['samples_per_epoch']} patches per "
        f"epoch, validated after each epoch on the split's validation images, up to "
        f"{config['samples_per_epoch'] * config['max_epochs']:,} patches, no early stopping: the best "
        "validation (PR-AUC) weights so far are kept and snapshotted at every doubling of patches seen.",
        f"- **Points**: {', '.join(f'{n:,}' for n in p['points'])} patches; every snapshot scored on the "
        f"test images {' '.join(p['test_ids'])} (whole images, pooled inside the FOV, threshold 0.5, and "
        "again at the validation images' F1-optimal threshold).",
        "- **Commands**: `python -m starunet curves train --shard 0/2 --threads 1` and `--shard 1/2` "
        "side by side (two workers of one torch thread each), then "
        f"`{p['command']}`.",
        f"- **Trained on**: {'; '.join(p['trained_on'])}. Training times were measured while the two workers "
        "shared the machine with other work: read them as upper bounds, not benchmarks.",
        f"- **Evaluated on**: {p['evaluated_on']}, torch {p['torch']}, Python {p['python']}, commit "
        f"{p['git_commit']}, {p['finished']}.",
        f"- **Plateau rule**: {p['plateau_rule']} for every later doubling.", "",
        "## Runs", "", runs_table(results), "",
        "## Test PR-AUC per budget", "", curve_table(results, "pr_auc"), "",
        "## Test ROC-AUC per budget", "", curve_table(results, "roc_auc"), "",
        "## Test F1 (threshold 0.5) per budget", "", curve_table(results, "f1"), "",
    ]
    diffs = budget_differences(results)
    if diffs:
        lines += ["## Paired differences at the largest budget reached", "",
                  "Per test image, paired by seed; 95 % bootstrap CI over seeds and images (with one seed, "
                  "over test images only: run-to-run noise is not in it).", "", differences_table(diffs), ""]
    return "\n".join(lines)


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
    parser.add_argument("--device", choices=list(DEVICE_CHOICES), default="auto")
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
