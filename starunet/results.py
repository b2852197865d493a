"""Grid results on disk, read back: :class:`GridResults`, where the course finds them, and
the committed grids of every training budget; and the learning curves of
:mod:`starunet.curves`, read back as :class:`CurveResults`.

A grid folder (written by :func:`starunet.grid.reproduce`) holds ``metrics.csv``,
``per_image.csv``, ``curves.json``, ``inference_methods.csv``, prediction PNGs and
``provenance.json``; this module only reads them, so notebooks, reports and plots
can use a grid without the machinery that made it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from starunet.config import PROJECT_ROOT, default_runs_dir, display_path
from starunet.io import read_csv, read_numeric_csv
from starunet.metrics import METRIC_NAMES
from starunet.provenance import preset_changes
from starunet.stats import (ACTIVATIONS_COMPARED, FUSIONS_COMPARED, PairedDifference, TUNED_COLUMNS, paired_differences,
                            run_key, summarize_over_seeds)

REFERENCE_DIR = PROJECT_ROOT / "results" / "reference"  # the quick CPU grid
# the same grid with 4x the training (preset "long"): notebook 05 §9
LONG_REFERENCE_DIR = PROJECT_ROOT / "results" / "long"
# the source's protocol (preset "full": early stopping on 2,000-patch epochs), trained on a
# lent GPU: when present, the grid the course shows first (the CPU grids are what a laptop reproduces)
FULL_REFERENCE_DIR = PROJECT_ROOT / "results" / "full"
CURVES_DIR = PROJECT_ROOT / "results" / "curves"  # the learning curves (notebook 06)
# the fast preset's study (sum, star, star_bn, sum_star_bn x none, relu x seeds), trained on a
# 2-core CPU: the grid notebook 04's own runs (the fast preset) are compared with
FAST_DIR = PROJECT_ROOT / "results" / "fast"
FP32_DIR = PROJECT_ROOT / "results" / "fast-fp32"  # the fast grid trained in fp32: the precision check
BUDGET_ORDER = ("smoke", "quick", "long", "full")  # presets by training budget, for the budget tables


# Columns of the result CSVs read back as numbers; every other one stays a string
# (a config_hash such as "12345678" must not become an int).
INTEGER_COLUMNS = frozenset({"seed", "epochs", "best_epoch", "n_test_images"})
FLOAT_COLUMNS = frozenset({*METRIC_NAMES, *TUNED_COLUMNS, "train_seconds", "eval_seconds", "seconds",
                           "seconds_per_image"})


def parse_row(row: Mapping[str, str]) -> dict:
    """A CSV row with the known numeric columns parsed (empty cells stay ``""``)."""
    def parse(key: str, value: str):
        if value in ("", None):
            return value
        if key in INTEGER_COLUMNS:
            return int(value)
        return float(value) if key in FLOAT_COLUMNS else value
    return {k: parse(k, v) for k, v in row.items()}


@dataclass
class GridResults:
    """The output folder of one ``reproduce`` grid, read back.

    ``runs``: rows of ``metrics.csv`` (numbers parsed); ``per_image``: rows of
    ``per_image.csv``; ``curves``: ``{run_key: curves}``; ``provenance``: how it
    was made; ``kind``: ``"own"`` (the reader's run) or ``"reference"`` (committed).
    """
    directory: Path
    kind: str
    runs: list[dict]
    per_image: list[dict]
    curves: dict[str, dict]
    provenance: dict
    inference_methods: list[dict] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [run_key(r["fusion"], r["activation"], r["seed"]) for r in self.runs]

    def run(self, key: str) -> dict:
        """The metrics row of one run (``KeyError`` listing the valid keys)."""
        for k, row in zip(self.keys, self.runs):
            if k == key:
                return row
        raise KeyError(f"no run {key!r} in {display_path(self.directory)}; valid: {', '.join(self.keys)}")

    def summary(self) -> dict[tuple[str, str], dict]:
        return summarize_over_seeds(self.runs)

    @property
    def has_tuned_threshold(self) -> bool:
        """Whether every run and test image was also scored at its validation threshold."""
        return bool(self.runs) and all(r.get(c, "") != "" for r in self.runs for c in TUNED_COLUMNS) \
            and all(r.get("f1_tuned", "") != "" for r in self.per_image)

    @property
    def paired_activations(self) -> list[str]:
        """The activations (of none, relu) for which the grid has both sum and star runs."""
        summary = self.summary()
        return [a for a in ACTIVATIONS_COMPARED if all((f, a) in summary for f in FUSIONS_COMPARED)]

    def paired_differences(self, **kwargs) -> list[PairedDifference]:
        """Star − sum for every activation that has both fusions (see :func:`paired_differences`)."""
        acts = self.paired_activations
        return paired_differences(self.per_image, activations=acts, **kwargs) if acts else []

    def probability_map(self, key: str, image_id: str) -> np.ndarray | None:
        """The saved prediction PNG of a run on a test image as float probabilities
        (8-bit quantised), or None if that one was not saved."""
        from PIL import Image

        path = self.directory / "predictions" / f"{key}_{image_id}.png"
        if not path.is_file():
            return None
        return np.asarray(Image.open(path), dtype=np.float32) / 255.0

    def saved_predictions(self) -> list[tuple[str, str]]:
        """``(run_key, image_id)`` pairs that have a prediction PNG."""
        return sorted(tuple(p.stem.rsplit("_", 1)) for p in (self.directory / "predictions").glob("*_*.png"))

    def describe(self) -> str:
        """One sentence: where these numbers come from (folder, preset, seeds, hardware, date).
        The seeds are those of the finished runs: a partial grid (interrupted, or with failed
        runs) says so, with how many of the runs it was started for are missing."""
        p = self.provenance
        who = "your own `reproduce` output" if self.kind == "own" else "the committed reference results"
        seeds = ", ".join(str(s) for s in sorted({int(r["seed"]) for r in self.runs})) or "?"
        partial = p.get("partial")
        short = (f" (partial: {partial['ended']}, {len(partial['missing'])} of the {p.get('runs', '?')} runs it was "
                 "started for missing)") if partial else ""
        hardware = p.get("hardware", {}).get("summary", "unknown hardware")
        return (f"{who} in `{display_path(self.directory)}`: preset `{p.get('preset', '?')}`{preset_changes(p)}, "
                f"seeds {seeds}, {len(self.runs)} run{'s' * (len(self.runs) != 1)}{short}, trained and evaluated on {hardware} "
                f"(torch {p.get('torch', '?')}), finished {p.get('finished', '?')}, "
                f"{len(p.get('test_ids', []))} test images, {p.get('method', '?')} inference")


def load_results(directory: str | Path, kind: str = "own") -> GridResults:
    """Read a ``reproduce`` output folder (see :class:`GridResults`)."""
    directory = Path(directory)
    if not (directory / "metrics.csv").is_file():
        raise FileNotFoundError(f"no metrics.csv in {display_path(directory)}: run `python -m starunet "
                                "reproduce --preset quick --seeds 2024 2025 2026 --out DIR` first")

    def rows(name: str) -> list[dict]:
        path = directory / name
        return [parse_row(r) for r in read_csv(path)] if path.is_file() else []

    def json_file(name: str) -> dict:
        path = directory / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    runs, curves = rows("metrics.csv"), json_file("curves.json")
    order = [run_key(r["fusion"], r["activation"], r["seed"]) for r in runs]  # the grid's order, not JSON's
    curves = {k: curves[k] for k in order if k in curves} | {k: v for k, v in curves.items() if k not in order}
    return GridResults(directory=directory, kind=kind, runs=runs, per_image=rows("per_image.csv"),
                       curves=curves, provenance=json_file("provenance.json"),
                       inference_methods=rows("inference_methods.csv"))


def own_results_dir() -> Path:
    """Where ``reproduce`` writes by default, and where the course looks for the
    reader's own grid: ``<runs dir>/reproduce``."""
    return default_runs_dir() / "reproduce"


def course_check_dir() -> Path:
    """Where the course evaluates the reader's notebook-04 runs for the comparison
    with the reference grid: ``<runs dir>/course-check``."""
    return default_runs_dir() / "course-check"


def course_reference() -> GridResults:
    """The committed grid that the reader's notebook-04 runs are set beside (appendix
    notebook 07, section 6; ``summary.md``): ``results/fast/`` (same preset as notebook 04) when it
    has results, else the quick grid ``results/reference/``."""
    folder = FAST_DIR if (FAST_DIR / "metrics.csv").is_file() else REFERENCE_DIR
    return load_results(folder, kind="reference")


MAIN_ANSWER_SEEDS = 5  # results/fast answers the question once every configuration has this many


def complete_seeds(directory: str | Path) -> int:
    """How many seeds a grid folder's ``metrics.csv`` has for every configuration in it."""
    path = Path(directory) / "metrics.csv"
    if not path.is_file():
        return 0
    seeds: dict[tuple[str, str], set[str]] = {}
    for r in read_csv(path):
        seeds.setdefault((r["fusion"], r["activation"]), set()).add(r["seed"])
    return len(set.intersection(*seeds.values())) if seeds else 0


def find_results(directory: str | Path | None = None) -> GridResults:
    """The results the course shows: ``directory`` if given, else the reader's own
    ``reproduce`` output (:func:`own_results_dir`) if it has one, else the committed
    ``results/fast/`` once every configuration there has :data:`MAIN_ANSWER_SEEDS` seeds,
    else the full-protocol grid ``results/full/`` (GPU) when present, else the committed
    ``results/reference/`` (the quick CPU grid)."""
    if directory is not None:
        return load_results(directory, kind="reference" if is_committed_grid(directory) else "own")
    own = own_results_dir()
    if (own / "metrics.csv").is_file():
        return load_results(own, kind="own")
    if complete_seeds(FAST_DIR) >= MAIN_ANSWER_SEEDS:
        return load_results(FAST_DIR, kind="reference")
    if (FULL_REFERENCE_DIR / "metrics.csv").is_file():
        return load_results(FULL_REFERENCE_DIR, kind="reference")
    return load_results(REFERENCE_DIR, kind="reference")


def is_committed_grid(directory: str | Path) -> bool:
    """True for a grid folder inside the repository's ``results/`` (the grids the course
    ships, ``results/search/*`` included), False for a reader's own output, which the
    commands write under ``runs/`` (``own_results_dir``) or wherever ``--out`` says."""
    return (PROJECT_ROOT / "results").resolve() in Path(directory).resolve().parents


def budget_grids(results: GridResults, others: Sequence[str | Path] | None = None) -> dict[str, GridResults]:
    """The grids that notebook 05 compares across training budgets, keyed by preset
    and ordered by budget (:data:`BUDGET_ORDER`): ``results`` and each folder of
    ``others`` (default: the committed quick, long and full grids) that has a
    ``metrics.csv``; a preset already present keeps the grid it has (``results`` first)."""
    grids = {str(results.provenance.get("preset", "?")): results}
    folders = others if others is not None else (REFERENCE_DIR, LONG_REFERENCE_DIR, FULL_REFERENCE_DIR)
    for folder in map(Path, folders):
        if (folder / "metrics.csv").is_file() and folder.resolve() != Path(results.directory).resolve():
            other = load_results(folder, kind="reference" if is_committed_grid(folder) else "own")
            grids.setdefault(str(other.provenance.get("preset", folder.name)), other)
    rank = {name: i for i, name in enumerate(BUDGET_ORDER)}
    return dict(sorted(grids.items(), key=lambda item: rank.get(item[0], len(rank))))


# ---------------------------------------------------------------- learning curves

@dataclass
class CurveResults:
    """The files of :func:`starunet.curves.evaluate_curves`, read back (numbers parsed)."""
    directory: Path
    points: list[dict]
    per_image: list[dict]
    runs: list[dict]
    provenance: dict

    def keys(self) -> list[str]:
        return [run_key(r["fusion"], r["activation"], int(r["seed"])) for r in self.runs]

    def history(self, key: str) -> list[dict[str, float]]:
        return read_numeric_csv(self.directory / "history" / f"{key}.csv")  # a copy of the run's history.csv

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


_CURVE_INTS = {"patches", "epoch", "best_epoch", "epochs", "finished", "seed"}


def _parse_curve_row(row: Mapping[str, str]) -> dict:
    parsed = parse_row(row)  # metrics, seed
    for key in _CURVE_INTS & set(row):
        parsed[key] = int(row[key]) if row[key] != "" else ""
    for key in ("val_pr_auc", "train_seconds", "val_pr_auc_swing", "val_pr_auc_max_drop"):
        if row.get(key, "") != "":
            parsed[key] = float(row[key])
    return parsed


def load_curves(directory: str | Path = CURVES_DIR) -> CurveResults:
    """Read the output folder of :func:`starunet.curves.evaluate_curves` (default: the committed curves)."""
    directory = Path(directory)
    if not (directory / "points.csv").is_file():
        raise FileNotFoundError(f"no points.csv in {display_path(directory)}: run `python -m starunet curves "
                                "train` and then `python -m starunet curves evaluate --out DIR` first")
    def rows(name: str) -> list[dict]:
        return [_parse_curve_row(r) for r in read_csv(directory / name)]
    provenance = json.loads((directory / "provenance.json").read_text(encoding="utf-8"))
    return CurveResults(directory, rows("points.csv"), rows("per_image.csv"), rows("runs.csv"), provenance)
