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

The folders differ in more than the recipe (hardware, precision, epoch size; the
``training_conditions`` of ``starunet.verdicts`` lists them); the table names each row's
source so a reader can see which.
"""
from __future__ import annotations

from statistics import mean
from typing import Iterable, Sequence

from starunet.config import PROJECT_ROOT
from starunet.report import markdown_table
from starunet.results import CurveResults, GridResults, load_curves, load_results

SEARCH_DIR = PROJECT_ROOT / "results" / "search"  # one grid folder per recipe tried (reproduce --set ...)
GRID_FOLDERS = ("reference", "long", "full", "fast")

CONFIGS: tuple[tuple[str, str], ...] = (("sum", "relu"), ("sum", "none"), ("star", "none"), ("star", "relu"))
COLUMNS = ["source", "schedule", "peak_lr", "patches", "fusion", "activation", "seeds", "roc_auc", "pr_auc", "f1",
           "train_minutes", "hardware"]


def recipe(preset_config: dict) -> tuple[str, float]:
    """``(schedule, peak lr)`` of a folder's training config (constant when unnamed)."""
    return preset_config.get("schedule", "constant"), float(preset_config["lr"])


def _row(source: str, config: dict, fusion: str, activation: str, runs: Sequence[dict], patches: float,
         minutes: float, hardware: str) -> dict:
    schedule, lr = recipe(config)
    return {"source": source, "schedule": schedule, "peak_lr": lr, "patches": round(patches), "fusion": fusion,
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
        ["config", "source", "schedule, peak lr", "patches", "seeds", "ROC-AUC", "PR-AUC", "F1", "trained on"],
        [[f"{r['fusion']}/{r['activation']}", f"`{r['source']}`", f"{r['schedule']}, {r['peak_lr']:g}",
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
