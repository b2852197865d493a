"""How much training, on which learning-rate schedule, reaches the full protocol's quality?

The table behind the ``fast`` preset, computed from the committed folders (never typed):
one row per recipe, budget and configuration, with the test metrics (pooled over the FOV
pixels of the test images, mean over seeds) and the training time per run on the
hardware that trained it.

* ``results/curves``: Adam at a constant 5e-4 (the source's recipe), the best validation
  weights so far scored on the test images at every doubling of training patches;
* ``results/reference``, ``long``, ``full``: the same recipe with early stopping, so the
  budget is what the runs trained (mean epochs × epoch size);
* ``results/fast``: one-cycle to a peak of 2e-3, a fixed 16,384 patches;
* ``results/search/*``: other recipes, each a grid folder written by ``python -m starunet
  reproduce --preset fast --set lr=1e-3 ... --out results/search/NAME``.

:func:`search_rows` sets each searched recipe beside ``results/fast`` seed by seed, with
the minutes a run estimated from the benchmark (``benchmarks/cpu.csv``).
:func:`against_reference_rows` asks whether ``fast`` reaches ``full`` within run-to-run noise
(Welch intervals: the two folders' seeds share nothing), :func:`precision_rows` whether its
bf16 training steps move quality (``results/fast-fp32``, the same grid in fp32, paired by seed).

The folders differ in more than the recipe (hardware, precision, epoch size; the
``training_conditions`` of ``starunet.provenance`` lists them); the table names each row's
source so a reader can see which.
"""
from __future__ import annotations

import math
import re
from statistics import mean, stdev
from typing import Iterable, Mapping, Sequence

import numpy as np

from starunet import stats
from starunet.config import PROJECT_ROOT
from starunet.io import read_csv
from starunet.presets import PRESETS
from starunet.report import markdown_table
from starunet.results import (FAST_DIR, FP32_DIR, FULL_REFERENCE_DIR, CurveResults, GridResults, load_curves,
                              load_results)

SEARCH_DIR = PROJECT_ROOT / "results" / "search"  # one grid folder per recipe tried (reproduce --set ...)
BENCH_FILE = PROJECT_ROOT / "benchmarks" / "cpu.csv"  # python -m starunet bench --fast-run --out benchmarks/
GRID_FOLDERS = ("reference", "long", "full", "fast")

CONFIGS: tuple[tuple[str, str], ...] = (("sum", "relu"), ("sum", "none"), ("star", "none"), ("star", "relu"))
COLUMNS = ["source", "schedule", "peak_lr", "batch", "patches", "fusion", "activation", "seeds", "roc_auc", "pr_auc", "f1",
           "train_minutes", "hardware"]


def recipe(preset_config: dict) -> tuple[str, float]:
    """``(schedule, peak lr)`` of a folder's training config (constant when unnamed)."""
    return preset_config.get("schedule", "constant"), float(preset_config["lr"])


def batch_size(preset_config: dict) -> int:
    """A folder's training batch size (configs written before it was recorded used the default, 8)."""
    return int(preset_config.get("batch_size", 8))


def _row(source: str, config: dict, fusion: str, activation: str, runs: Sequence[dict], patches: float,
         minutes: float, hardware: str) -> dict:
    schedule, lr = recipe(config)
    return {"source": source, "schedule": schedule, "peak_lr": lr, "batch": batch_size(config),
            "patches": round(patches), "fusion": fusion,
            "activation": activation, "seeds": len({r["seed"] for r in runs}),
            **{m: mean(float(r[m]) for r in runs) for m in ("roc_auc", "pr_auc", "f1")},
            "train_minutes": minutes, "hardware": hardware}


def grid_rows(results: GridResults, configs: Iterable[tuple[str, str]] = CONFIGS) -> list[dict]:
    """One row per configuration of a grid folder: its runs' mean test metrics, the mean
    patches they trained (early stopping decides it where the preset stops early)."""
    config = results.provenance["preset_config"]
    rows = []
    for fusion, activation in configs:
        runs = [r for r in results.runs if (r["fusion"], r["activation"]) == (fusion, activation)]
        if runs:
            patches = mean(int(r["epochs"]) * int(config["samples_per_epoch"]) for r in runs)
            minutes = mean(float(r["train_seconds"]) for r in runs) / 60
            rows.append(_row(results.directory.name, config, fusion, activation, runs, patches, minutes,
                             str(runs[0].get("device", "?"))))
    return rows


def curve_rows(curves: CurveResults, configs: Iterable[tuple[str, str]] = CONFIGS) -> list[dict]:
    """One row per budget and configuration of the learning curves (the test metrics of
    the best validation weights so far at that budget)."""
    config, devices = curves.provenance["preset_config"], {(r["fusion"], r["activation"]): r["device"] for r in curves.runs}
    rows = []
    for fusion, activation in configs:
        points = [p for p in curves.points if (p["fusion"], p["activation"]) == (fusion, activation)]
        for patches in sorted({p["patches"] for p in points}):
            at = [p for p in points if p["patches"] == patches]
            rows.append(_row(curves.directory.name, config, fusion, activation, at, patches,
                             mean(float(p["train_seconds"]) for p in at) / 60, devices.get((fusion, activation), "?")))
    return rows


def recipe_table(grids: Sequence[GridResults], curves: CurveResults | None = None,
                 min_patches: int = 4096) -> list[dict]:
    """Every row of the grids and the curves (budgets from ``min_patches`` on), ordered by
    configuration, then budget."""
    rows = [r for g in grids for r in grid_rows(g)]
    if curves is not None:
        rows += [r for r in curve_rows(curves) if r["patches"] >= min_patches]
    order = {c: i for i, c in enumerate(CONFIGS)}
    return sorted(rows, key=lambda r: (order.get((r["fusion"], r["activation"]), len(order)), r["patches"],
                                       r["source"]))


def committed_recipe_table() -> list[dict]:
    """:func:`recipe_table` of the committed grids, the recipe search's folders under
    ``results/search/`` and the learning curves."""
    folders = [PROJECT_ROOT / "results" / name for name in GRID_FOLDERS] + sorted(SEARCH_DIR.glob("*/"))
    grids = [load_results(f, kind="reference") for f in folders if (f / "metrics.csv").is_file()]
    return recipe_table(grids, load_curves())


def recipe_markdown(rows: Sequence[dict]) -> str:
    """The table as Markdown, one block of rows per configuration. The recorded training
    minutes are left out: they were measured on different, often shared machines
    (``benchmarks/cpu.md`` times a ``fast`` run on an idle one)."""
    return markdown_table(
        ["config", "source", "schedule, peak lr, batch", "patches", "seeds", "ROC-AUC", "PR-AUC", "F1", "trained on"],
        [[f"{r['fusion']}/{r['activation']}", f"`{r['source']}`", f"{r['schedule']}, {r['peak_lr']:g}, {r['batch']}",
          f"{r['patches']:,}", str(r["seeds"]), f"{r['roc_auc']:.4f}", f"{r['pr_auc']:.4f}", f"{r['f1']:.4f}",
          r["hardware"]] for r in rows])


def recipe_lines(rows: Sequence[dict], source: str = "fast", reference: str = "full") -> list[str]:
    """Per configuration, one Markdown line setting the ``source`` recipe's test PR-AUC
    beside the source's recipe at the same budget (the curves) and under ``reference``."""
    lines = []
    for fusion, activation in CONFIGS:
        mine = [r for r in rows if (r["fusion"], r["activation"], r["source"]) == (fusion, activation, source)]
        if not mine:
            continue
        m = mine[0]
        parts = [f"**{fusion}/{activation}**: `{source}` ({m['schedule']} to {m['peak_lr']:g}, {m['patches']:,} "
                 f"patches, {m['seeds']} seed{'s' * (m['seeds'] != 1)}) PR-AUC {m['pr_auc']:.4f}"]
        for r in rows:
            same_budget = r["source"] == "curves" and r["patches"] == m["patches"]
            if (r["fusion"], r["activation"]) == (fusion, activation) and (same_budget or r["source"] == reference):
                parts.append(f"`{r['source']}` ({r['schedule']} {r['peak_lr']:g}, {r['patches']:,} patches, "
                             f"{r['seeds']} seed{'s' * (r['seeds'] != 1)}) {r['pr_auc']:.4f}")
        lines.append("- " + "; ".join(parts) + ".")
    return lines


def benchmark_rows() -> list[dict]:
    """The rows of ``benchmarks/cpu.csv`` (empty without it): the measured speeds that turn
    a training budget into minutes."""
    return read_csv(BENCH_FILE) if BENCH_FILE.is_file() else []


def estimated_minutes(patches: int, batch: int, rows: Sequence[Mapping] | None = None) -> float | None:
    """Minutes one bf16 run of ``patches`` at ``batch`` takes alone on the benchmark CPU:
    the measured `fast` run (bf16, validations included) scaled by the budget and by the
    measured training speed at ``batch`` against the run's batch (sum/relu, channels-last
    bf16). None when the benchmark lacks a row it needs: an estimate, never a typed guess."""
    rows = benchmark_rows() if rows is None else rows
    run = next((r for r in rows if r["what"].startswith("fast preset run") and r["variant"] == "bf16"), None)
    speed = {int(m.group(1)): float(r["value"]) for r in rows if r["variant"] == "channels_last bf16"
             and (m := re.fullmatch(r"training, batch (\d+), sum/relu", r["what"]))}
    run_batch = PRESETS["fast"].batch_size
    if run is None or run_batch not in speed or batch not in speed:
        return None
    run_patches = int(re.search(r"([\d,]+) patches", run["what"]).group(1).replace(",", ""))
    return float(run["value"]) * patches / run_patches * speed[run_batch] / speed[batch]


def search_rows(reference: GridResults, searches: Sequence[GridResults]) -> list[dict]:
    """Each searched recipe beside ``reference`` (``results/fast``) on the same seeds and
    configuration: both means and the per-seed differences (search − reference), so the
    luck of a seed, which moves PR-AUC by about as much as the recipes do, cancels."""
    rows = []
    for grid in searches:
        config = grid.provenance["preset_config"]
        schedule, lr = recipe(config)
        for fusion, activation in sorted({(r["fusion"], r["activation"]) for r in grid.runs}):
            mine, theirs = _by_seed(grid, (fusion, activation)), _by_seed(reference, (fusion, activation))
            seeds = sorted(set(mine) & set(theirs))
            if not seeds:
                continue
            patches, batch = int(config["samples_per_epoch"]) * int(config["max_epochs"]), batch_size(config)
            row = {"source": grid.directory.name, "schedule": schedule, "peak_lr": lr, "batch": batch,
                   "patches": patches, "fusion": fusion, "activation": activation, "seeds": seeds,
                   "minutes": estimated_minutes(patches, batch)}
            for m in ("roc_auc", "pr_auc"):
                row[m] = mean(float(mine[s][m]) for s in seeds)
                row[f"reference_{m}"] = mean(float(theirs[s][m]) for s in seeds)
                row[f"{m}_differences"] = [float(mine[s][m]) - float(theirs[s][m]) for s in seeds]
            rows.append(row)
    return sorted(rows, key=lambda r: (r["fusion"], r["activation"], r["patches"], r["batch"], r["peak_lr"]))


def _by_seed(grid: GridResults, config: tuple[str, str]) -> dict[int, dict]:
    """One configuration's runs of a grid, by seed: what two grids are paired on."""
    return {int(r["seed"]): r for r in grid.runs if (r["fusion"], r["activation"]) == tuple(config)}


def committed_search_rows() -> list[dict]:
    """:func:`search_rows` of the committed search folders against ``results/fast``."""
    folders = [f for f in sorted(SEARCH_DIR.glob("*/")) if (f / "provenance.json").is_file()]  # finished writing
    return search_rows(load_results(PROJECT_ROOT / "results" / "fast", kind="reference"),
                       [load_results(f, kind="reference") for f in folders])


def search_markdown(rows: Sequence[dict], reference: str = "fast") -> str:
    """The search as Markdown: one row per recipe and configuration, its estimated minutes
    a run, both means on the shared seeds and every per-seed difference."""
    def diffs(values: Sequence[float]) -> str:
        return ", ".join(f"{v:+.4f}" for v in values)

    def minutes(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    return markdown_table(
        ["config", "folder (`results/search/`)", "schedule, peak lr, batch", "patches", "min a run (est.)", "seeds",
         f"PR-AUC: this, `{reference}`", "PR-AUC difference per seed", f"ROC-AUC: this, `{reference}`",
         "ROC-AUC difference per seed"],
        [[f"{r['fusion']}/{r['activation']}", f"`{r['source']}`", f"{r['schedule']}, {r['peak_lr']:g}, {r['batch']}",
          f"{r['patches']:,}", minutes(r["minutes"]), ", ".join(map(str, r["seeds"])),
          f"{r['pr_auc']:.4f}, {r['reference_pr_auc']:.4f}", diffs(r["pr_auc_differences"]),
          f"{r['roc_auc']:.4f}, {r['reference_roc_auc']:.4f}", diffs(r["roc_auc_differences"])] for r in rows])


def search_summary(rows: Sequence[dict], minutes_limit: float = 5.0) -> str:
    """One computed sentence on the search: which recipes fit ``minutes_limit`` a run
    (estimated) and which of them raise PR-AUC over the reference on every shared seed."""
    def name(r: dict) -> str:
        return f"`{r['source']}` ({r['fusion']}/{r['activation']})"

    fits = [r for r in rows if r["minutes"] is not None and r["minutes"] <= minutes_limit]
    better = [r for r in fits if all(d > 0 for d in r["pr_auc_differences"])]
    longer = [r for r in rows if r not in fits]
    raised_longer = [r for r in longer if all(d > 0 for d in r["pr_auc_differences"])]
    return (f"{len(fits)} of the {len(rows)} searched recipes fit {minutes_limit:g} min a run (estimated); "
            + (f"of these, {', '.join(map(name, better))} raise PR-AUC on every shared seed. " if better else
               "none of them raises PR-AUC on every shared seed. ")
            + (f"Beyond {minutes_limit:g} min, {', '.join(map(name, raised_longer)) or 'none'} "
               f"{'raises' if len(raised_longer) <= 1 else 'raise'} it on every shared seed." if longer else ""))


# ---------------------------------------------------------------- fast against full, bf16 against fp32

def against_reference_rows(source: GridResults, reference: GridResults, metrics: Sequence[str] = ("roc_auc", "pr_auc"),
                           level: float = 0.95) -> list[dict]:
    """``source`` (``results/fast``) minus ``reference`` (``results/full``) per configuration
    both have and metric: the difference of the means over their runs with Welch's interval
    (two recipes on two machines: their seeds share nothing, so nothing pairs), Bonferroni
    over the rows, and the verdict of the declared margins. It answers "does ``fast`` reach
    the full protocol within run-to-run noise?"."""
    def values(grid: GridResults, config: tuple[str, str], metric: str) -> list[float]:
        return [float(r[metric]) for r in grid.runs if (r["fusion"], r["activation"]) == config]

    configs = [c for c in CONFIGS if values(source, c, "roc_auc") and values(reference, c, "roc_auc")]
    each = stats.adjusted_level(level, len(configs) * len(metrics))
    rows = []
    for config in configs:
        for metric in metrics:
            mine, theirs = values(source, config, metric), values(reference, config, metric)
            diff, low, high = stats.welch_interval(theirs, mine, each)
            margin = stats.MARGINS[metric].value
            rows.append({"fusion": config[0], "activation": config[1], "metric": metric, "runs": len(mine),
                         "reference_runs": len(theirs), "mean": mean(mine), "reference_mean": mean(theirs),
                         "estimate": diff, "low": low, "high": high, "margin": margin, "level": each,
                         "verdict": stats.interval_verdict(low, high, margin)})
    return rows


def against_reference_markdown(rows: Sequence[dict], source: str = "fast", reference: str = "full") -> str:
    """:func:`against_reference_rows` as Markdown, one row per configuration and metric."""
    return markdown_table(
        ["config", "metric", f"`{source}`: mean (runs)", f"`{reference}`: mean (runs)",
         f"`{source}` − `{reference}` [Welch interval]", "verdict"],
        [[f"{r['fusion']}/{r['activation']}", stats.METRIC_LABELS[r["metric"]], f"{r['mean']:.4f} ({r['runs']})",
          f"{r['reference_mean']:.4f} ({r['reference_runs']})", _interval(r), r["verdict"]] for r in rows])


def against_reference_summary(rows: Sequence[dict], source: str = "fast", reference: str = "full") -> str:
    """:func:`against_reference_rows` in one computed sentence: the runs on each side and
    which gaps exceed run-to-run noise (README and notebook 06 say it in these words)."""
    if not rows:
        return f"`{source}` and `{reference}` share no configuration."

    def runs(key: str) -> str:
        low, high = min(r[key] for r in rows), max(r[key] for r in rows)
        return str(low) if low == high else f"{low}–{high}"

    decided = [r for r in rows if r["verdict"] != "inconclusive"]
    named = "; ".join(f"`{source}` {r['verdict']} on {r['fusion']}/{r['activation']} {stats.METRIC_LABELS[r['metric']]} "
                      f"({r['estimate']:+.4f})" for r in decided)
    # Two runs estimate a spread poorly: a Welch interval on such a side can be narrow by chance.
    thin = [r for r in decided if min(r["runs"], r["reference_runs"]) < 3]
    caveat = (f" Of the {len(decided)} decided, {len(thin)} rest on a side with only 2 runs, whose spread is "
              f"barely estimated: weak evidence." if thin else "")
    return (f"With {runs('runs')} runs a configuration in `{source}` against {runs('reference_runs')} in "
            f"`{reference}`, Welch intervals (Bonferroni over {len(rows)}) decide {len(decided)} of the {len(rows)} "
            f"gaps{': ' + named if decided else ''}; the other {len(rows) - len(decided)} are inconclusive "
            f"(no gap detected, none excluded).{caveat}")


def precision_rows(bf16: GridResults, fp32: GridResults, metrics: Sequence[str] = stats.HEADLINE_METRICS,
                   level: float = 0.95) -> list[dict]:
    """fp32 − bf16 training (``fp32``: the same preset trained with ``--precision fp32``)
    per configuration and metric, paired by seed: a seed fixes the initial weights and the
    patches drawn, so each difference is what the precision changed. The seed-level
    t-interval (Bonferroni over the rows) with its verdict, beside the bf16 runs' own
    seed-to-seed spread (every seed of ``bf16``): the run-to-run noise to judge it by."""
    items, extra = [], []
    for config in sorted({(r["fusion"], r["activation"]) for r in fp32.runs}, key=lambda c: stats.config_order(*c)):
        low_runs, high_runs = _by_seed(bf16, config), _by_seed(fp32, config)
        seeds = sorted(set(low_runs) & set(high_runs))
        if not seeds:
            continue
        for metric in metrics:
            items.append((config, config, metric,
                          np.array([float(high_runs[s][metric]) - float(low_runs[s][metric]) for s in seeds])))
            spread = [float(r[metric]) for r in low_runs.values()]
            extra.append({"seeds": seeds, "fp32_mean": mean(float(high_runs[s][metric]) for s in seeds),
                          "bf16_mean": mean(float(low_runs[s][metric]) for s in seeds),
                          "bf16_sd": stdev(spread) if len(spread) > 1 else math.nan, "bf16_runs": len(spread)})
    diffs = stats.differences(items, "pooled", level)
    return [{"fusion": d.config_a.fusion, "activation": d.config_a.activation, "metric": d.metric,
             "differences": list(map(float, data)), "estimate": d.mean, "low": d.low, "high": d.high,
             "margin": d.margin, "level": d.level, "family": d.family, "verdict": d.verdict, **more}
            for d, (*_, data), more in zip(diffs, items, extra)]


def precision_markdown(rows: Sequence[dict]) -> str:
    """:func:`precision_rows` as Markdown: means, every per-seed difference, the interval
    and its verdict, and the bf16 runs' seed-to-seed standard deviation."""
    return markdown_table(
        ["config", "metric", "seeds", "fp32, bf16 (mean)", "fp32 − bf16 per seed", "fp32 − bf16 [interval]", "verdict",
         "bf16 seed-to-seed sd (runs)"],
        [[f"{r['fusion']}/{r['activation']}", stats.METRIC_LABELS[r["metric"]], ", ".join(map(str, r["seeds"])),
          f"{r['fp32_mean']:.4f}, {r['bf16_mean']:.4f}", ", ".join(f"{v:+.4f}" for v in r["differences"]),
          _interval(r), r["verdict"], f"{r['bf16_sd']:.4f} ({r['bf16_runs']})"] for r in rows])


def precision_summary(rows: Sequence[dict]) -> str:
    """The precision check in computed sentences: how many intervals each verdict got and
    the largest difference beside the seed-to-seed spread. (The runs' recorded minutes are
    left out: the grids trained beside other work; ``benchmarks/cpu.md`` times both alone.)"""
    if not rows:
        return "No fp32 runs to compare with."
    counts = {v: sum(r["verdict"] == v for r in rows) for v in stats.VERDICTS}
    decided = [r for r in rows if r["verdict"] in ("better", "worse")]
    largest = max(rows, key=lambda r: abs(r["estimate"]))
    seeds = sorted({s for r in rows for s in r["seeds"]})
    text = (f"Over {len(seeds)} seeds ({', '.join(map(str, seeds))}), pooled metrics paired by seed, {len(rows)} intervals "
            f"(Bonferroni over {rows[0]['family']}): {counts['equivalent']} equivalent within the margins, "
            f"{counts['inconclusive']} inconclusive (no difference detected, none excluded), "
            f"{len(decided)} deciding a direction")
    text += (": " + "; ".join(f"fp32 {r['verdict']} on {r['fusion']}/{r['activation']} "
                              f"{stats.METRIC_LABELS[r['metric']]}" for r in decided) + "." if decided else ".")
    text += (f" The largest mean difference, {largest['estimate']:+.4f} ({largest['fusion']}/{largest['activation']} "
             f"{stats.METRIC_LABELS[largest['metric']]}), compares with a seed-to-seed sd of {largest['bf16_sd']:.4f} "
             f"among that configuration's {largest['bf16_runs']} bf16 runs.")
    return text


def _interval(row: Mapping) -> str:
    if math.isnan(row["low"]):
        return f"{row['estimate']:+.4f} (one run, no interval)"
    return f"{row['estimate']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]"


def committed_against_full_rows() -> list[dict]:
    """:func:`against_reference_rows` of ``results/fast`` against ``results/full``."""
    return against_reference_rows(load_results(FAST_DIR, kind="reference"),
                                  load_results(FULL_REFERENCE_DIR, kind="reference"))


def committed_precision_rows() -> list[dict]:
    """:func:`precision_rows` of ``results/fast`` (bf16) against ``results/fast-fp32``
    (empty until that folder is written)."""
    if not (FP32_DIR / "provenance.json").is_file():
        return []
    return precision_rows(load_results(FAST_DIR, kind="reference"), load_results(FP32_DIR, kind="reference"))
