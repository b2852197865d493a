"""Evaluation: full-image inference, the experiment grid and statistics over seeds.

The question of the course is decided here, so every step is explicit:

1. **Inference on whole test images**: :func:`starunet.inference.predict_images`
   (the padded whole image by default; overlapping tiles measured beside it).
2. **Metrics** from :mod:`starunet.metrics`: pooled over all test pixels inside the
   field of view at threshold 0.5 (the usual retinal-vessel protocol), plus per-image metrics
   (mean +- std) and down-sampled ROC / PR curve points. Because the fixed 0.5 also
   measures how a network is *calibrated*, every run is scored a second time at the
   threshold that maximises F1 on its own validation images
   (:func:`starunet.metrics.f1_optimal_threshold`; columns ``val_threshold``,
   ``f1_tuned``, ``se_tuned``, ``pre_tuned``): the test images never choose it.
3. **The grid** (:func:`reproduce`, ``python -m starunet reproduce``): fusion
   sum|star x activation none|relu for every seed, trained or reused through
   :func:`starunet.train.train`, evaluated, written atomically to an output folder
   (``metrics.csv`` one row per run, ``per_image.csv``, ``curves.json``, small
   prediction PNGs, ``provenance.json`` and a ``README.md`` that says how they
   were made). Re-running resumes: finished runs and evaluations are reused.
4. **Statistics** (:mod:`starunet.stats`, re-exported here): mean +- std over seeds
   per configuration, and the paired difference star - sum per activation with a
   bootstrap confidence interval over seeds and test images, turned into a verdict.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from starunet.config import PROJECT_ROOT, default_runs_dir, display_path, git_commit, smoke_mode
from starunet.device import hardware_record
from starunet.io import read_csv, write_bytes_atomic, write_csv_atomic, write_json_atomic, write_text_atomic
from starunet.inference import (DEFAULT_METHOD, INFERENCE_METHODS, check_inference_method, compare_inference_methods,
                                predict_images)
from starunet.metrics import (MAX_CURVE_POINTS, METRIC_NAMES, confusion_counts, f1_optimal_threshold, rates_from_counts,
                              roc_pr_curves, segmentation_metrics)
from starunet.source import format_points, improvement_points
from starunet.stats import (  # noqa: F401  (re-exported: notebooks and tests read them here)
    ACTIVATIONS_COMPARED, ACTIVATION_LABELS, FUSIONS_COMPARED, FUSION_LABELS, HEADLINE_METRICS, METRIC_LABELS,
    OLDER_EVALUATION, PairedDifference, TUNED_COLUMNS, TUNED_METRICS, config_differences, paired_bootstrap,
    paired_differences, replacement_differences, summarize_over_seeds, verdict, verdict_sentence)

REFERENCE_DIR = PROJECT_ROOT / "results" / "reference"
# the same grid with 4x the training (preset "long"): notebook 05 §9
LONG_REFERENCE_DIR = PROJECT_ROOT / "results" / "long"
# the source's protocol (preset "full": early stopping on 2,000-patch epochs), trained on a
# lent GPU: when present, the grid the course shows first (the CPU grids are what a laptop reproduces)
FULL_REFERENCE_DIR = PROJECT_ROOT / "results" / "full"
BUDGET_ORDER = ("smoke", "quick", "long", "full")  # presets by training budget, for the budget tables
METRICS_COLUMNS = ["fusion", "activation", "seed", *METRIC_NAMES]
PANEL_COUNT = 2  # test images saved as prediction PNGs for the qualitative panels


# ---------------------------------------------------------------- inference


# ---------------------------------------------------------------- curves


# ---------------------------------------------------------------- one run

@dataclass
class RunEvaluation:
    """Everything measured on one run's test images.

    ``pooled``: metrics over all FOV pixels of all test images (threshold 0.5);
    ``per_image``: ``{image_id: metrics}``; ``curves``: see :func:`roc_pr_curves`;
    ``probabilities``: ``{image_id: (H, W) float32}`` (kept in memory only).
    ``val_threshold``: the F1-optimal threshold on the run's validation images (None
    until :meth:`score_at_threshold`); ``tuned``: pooled :data:`TUNED_METRICS` at it;
    ``per_image_tuned``: ``{image_id: {"f1_tuned": ...}}``.
    """
    ids: tuple[str, ...]
    pooled: dict[str, float]
    per_image: dict[str, dict[str, float]]
    curves: dict
    method: str = DEFAULT_METHOD
    seconds: float = 0.0
    config: dict = field(default_factory=dict)
    probabilities: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    val_threshold: float | None = None
    tuned: dict[str, float] = field(default_factory=dict)
    per_image_tuned: dict[str, dict[str, float]] = field(default_factory=dict)

    def score_at_threshold(self, threshold: float, records: Sequence) -> None:
        """Score the kept test probabilities again at ``threshold`` (chosen on other
        images): fills ``val_threshold``, ``tuned`` and ``per_image_tuned``."""
        chosen = select_records(records, self.ids)
        if any(r.id not in self.probabilities for r in chosen):
            raise ValueError("this evaluation kept no probability maps (read from a cache?); "
                             "evaluate the run again to score it at another threshold")
        def rates(probs, labels, fovs) -> dict[str, float]:  # counts only: the AUCs are known already
            return rates_from_counts(**confusion_counts(probs, labels, fovs, threshold=threshold))
        pooled = rates([self.probabilities[r.id] for r in chosen], [r.label for r in chosen], [r.fov for r in chosen])
        self.val_threshold = float(threshold)
        self.tuned = {f"{m}_tuned": pooled[m] for m in ("f1", "se", "pre")}
        self.per_image_tuned = {r.id: {"f1_tuned": rates(self.probabilities[r.id], r.label, r.fov)["f1"]}
                                for r in chosen}

    def per_image_mean_std(self) -> dict[str, tuple[float, float]]:
        """``{metric: (mean, std)}`` over the test images (population std)."""
        values = {m: np.array([self.per_image[i][m] for i in self.ids]) for m in METRIC_NAMES}
        return {m: (float(v.mean()), float(v.std())) for m, v in values.items()}

    def to_json(self) -> dict:
        """A JSON-able dict without the probability maps."""
        return {"ids": list(self.ids), "pooled": self.pooled, "per_image": self.per_image,
                "curves": self.curves, "method": self.method, "seconds": self.seconds,
                "config": self.config, "val_threshold": self.val_threshold, "tuned": self.tuned,
                "per_image_tuned": self.per_image_tuned}

    @classmethod
    def from_json(cls, data: Mapping) -> "RunEvaluation":
        return cls(ids=tuple(data["ids"]), pooled=dict(data["pooled"]), per_image=dict(data["per_image"]),
                   curves=dict(data["curves"]), method=data["method"], seconds=float(data["seconds"]),
                   config=dict(data.get("config", {})), val_threshold=data.get("val_threshold"),
                   tuned=dict(data.get("tuned") or {}), per_image_tuned=dict(data.get("per_image_tuned") or {}))


def evaluate_probabilities(probs: Mapping[str, np.ndarray], records: Sequence) -> RunEvaluation:
    """Score probability maps (``{id: (H, W)}``) against the records' ``ah`` labels
    inside their FOV masks. Every record must have a probability map."""
    missing = [r.id for r in records if r.id not in probs]
    if missing:
        raise ValueError(f"no probability map for {missing}; have {sorted(probs)}")
    for r in records:
        if np.shape(probs[r.id]) != r.label.shape:
            raise ValueError(f"probability map of {r.id} has shape {np.shape(probs[r.id])}, "
                             f"its label {r.label.shape}: predict on the whole image")
    ordered = [probs[r.id] for r in records]
    pooled = segmentation_metrics(ordered, [r.label for r in records], [r.fov for r in records])
    per_image = {r.id: segmentation_metrics(probs[r.id], r.label, r.fov) for r in records}
    curves = roc_pr_curves(ordered, [r.label for r in records], [r.fov for r in records])
    return RunEvaluation(ids=tuple(r.id for r in records), pooled=pooled, per_image=per_image,
                         curves=curves, probabilities=dict(probs))


def select_records(records: Sequence, ids: Iterable[str] | None) -> list:
    """The records with the given ids, in that order (all records when ``ids`` is None)."""
    if ids is None:
        return list(records)
    by_id = {r.id: r for r in records}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise ValueError(f"unknown image ids {unknown}; loaded records: {sorted(by_id)}")
    return [by_id[i] for i in ids]


def evaluate_model(model, records: Sequence, ids: Iterable[str] | None = None, method: str = DEFAULT_METHOD,
                   batch_size: int = 4, device: str | None = None) -> RunEvaluation:
    """Predict whole test images with ``model`` and score them (see :class:`RunEvaluation`)."""
    chosen = select_records(records, ids)
    start = time.perf_counter()
    probs = predict_images(model, [r.image for r in chosen], method=method,
                                  batch_size=batch_size, device=device)
    seconds = time.perf_counter() - start
    evaluation = evaluate_probabilities({r.id: p for r, p in zip(chosen, probs)}, chosen)
    evaluation.method, evaluation.seconds = method, round(seconds, 3)
    return evaluation


def validation_threshold(model, records: Sequence, val_ids: Sequence[str], method: str = DEFAULT_METHOD,
                         batch_size: int = 4, device: str | None = None) -> float:
    """The F1-optimal threshold of ``model`` on the validation images ``val_ids``
    (pooled over their FOV pixels; :func:`starunet.metrics.f1_optimal_threshold`)."""
    chosen = select_records(records, val_ids)
    probs = predict_images(model, [r.image for r in chosen], method=method, batch_size=batch_size, device=device)
    return f1_optimal_threshold(probs, [r.label for r in chosen], [r.fov for r in chosen])


def evaluate_run(run_dir: str | Path, records: Sequence, ids: Iterable[str] | None = None,
                 which: str = "best", method: str = DEFAULT_METHOD, batch_size: int = 4,
                 device: str | None = None, tune_threshold: bool = True) -> RunEvaluation:
    """Evaluate a finished training run on whole images.

    ``run_dir`` is a run directory written by :func:`starunet.train.train`;
    ``ids`` the test image ids (default: the test split of the run's config);
    ``which`` the checkpoint (``"best"`` or ``"last"``); ``records`` the loaded STARE
    records (:func:`starunet.data.load_stare`) that contain those ids and, with
    ``tune_threshold``, the run's validation ids too: the test images are then also
    scored at the threshold that maximises F1 on the validation images
    (:meth:`RunEvaluation.score_at_threshold`).
    """
    from starunet.train import load_model, read_config

    config = read_config(run_dir)  # FileNotFoundError naming the folder if it is no run
    split = config.split()
    ids = list(split.test if ids is None else ids)
    if tune_threshold:
        chosen_on_scored = sorted(set(ids) & set(split.val))
        if chosen_on_scored:
            raise ValueError(f"images {chosen_on_scored} are the run's validation images, which choose its tuned "
                             "threshold: score other images, or pass tune_threshold=False")
        missing = sorted(set(split.val) - {r.id for r in records})
        if missing:
            raise ValueError(f"the records lack the run's validation images {missing}, which choose its "
                             "tuned threshold: load them too (load_stare() loads all) or pass tune_threshold=False")
    model = load_model(run_dir, which=which, device=device or "cpu")
    evaluation = evaluate_model(model, records, ids, method=method, batch_size=batch_size, device=device)
    evaluation.config = config.to_dict()
    if tune_threshold:
        threshold = validation_threshold(model, records, split.val, method, batch_size, device)
        evaluation.score_at_threshold(threshold, records)
    return evaluation


# ---------------------------------------------------------------- tables


def format_value(mean: float, std: float | None = None, digits: int = 4) -> str:
    """``0.9512 ± 0.0031`` (or just the mean when there is no spread to show)."""
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], numbers: bool = True) -> str:
    """A GitHub markdown table; the first column left-aligned, the others
    right-aligned when ``numbers`` (else left-aligned too)."""
    other = "---:" if numbers else ":---"
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join([":---"] + [other] * (len(header) - 1)) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def comparison_rows(a: Mapping[str, float], b: Mapping[str, float], name_a: str, name_b: str,
                    std_a: Mapping[str, float] | None = None, std_b: Mapping[str, float] | None = None,
                    change_label: str | None = None, metrics: Sequence[str] = METRIC_NAMES) -> list[list[str]]:
    """Three table rows: run A, run B, and the change B − A per metric in percentage
    points, as the source's "提升" row computes it (:func:`starunet.source.improvement_points`)."""
    def cells(values, std):
        return [format_value(values[m], None if std is None else std[m]) for m in metrics]

    points = improvement_points({m: a[m] for m in metrics}, b)
    return [[name_a, *cells(a, std_a)], [name_b, *cells(b, std_b)],
            [change_label or f"{name_b} − {name_a} (points)", *(format_points(points[m]) for m in metrics)]]


def comparison_table(a: Mapping[str, float], b: Mapping[str, float], name_a: str = "A", name_b: str = "B",
                     std_a: Mapping[str, float] | None = None, std_b: Mapping[str, float] | None = None,
                     metrics: Sequence[str] = METRIC_NAMES) -> str:
    """Markdown table comparing two runs (or two means over seeds) metric by metric,
    with a change row B − A in percentage points, ▲ (B higher) / ▼ (B lower)."""
    header = ["", *(METRIC_LABELS.get(m, m) for m in metrics)]
    return markdown_table(header, comparison_rows(a, b, name_a, name_b, std_a, std_b, metrics=metrics))


def source_format_table(summary: Mapping[tuple[str, str], Mapping], activation: str,
                        source: Mapping | None = None, human: Mapping[str, float] | None = None,
                        metrics: Sequence[str] = METRIC_NAMES) -> str:
    """The source's table for one activation setting: sum vs star and the
    "提升" row (star − sum in percentage points, as the source computes it), ours
    (mean ± std over seeds) and, when given, the source's published rows and the
    second human observer.

    ``summary`` comes from :func:`summarize_over_seeds`; ``source`` has the layout of
    :data:`starunet.source.SOURCE_RESULTS` (or None); ``human`` is a metric dict.
    """
    pair = [summary.get((f, activation)) for f in FUSIONS_COMPARED]
    if any(p is None for p in pair):
        raise ValueError(f"need both fusions {FUSIONS_COMPARED} with activation {activation!r}; "
                         f"have {sorted(summary)}")
    sum_, star = pair
    n = min(sum_["n"], star["n"])
    rows = comparison_rows(sum_["mean"], star["mean"], f"sum (+), ours, {sum_['n']} seed(s)",
                           f"star (*), ours, {star['n']} seed(s)", sum_["std"], star["std"],
                           change_label=f"提升 star − sum, ours (points; means of {n} seed(s))",
                           metrics=metrics)
    published = (source or {}).get(activation)
    if published:
        rows += comparison_rows(published["sum"], published["star"], "sum (+), source (published)",
                                "star (*), source (published)", change_label="提升 star − sum, source (points)",
                                metrics=metrics)
    if human:
        rows.append(["second observer (vk vs ah)", *(format_value(human[m]) for m in metrics)])
    header = [ACTIVATION_LABELS.get(activation, activation), *(METRIC_LABELS.get(m, m) for m in metrics)]
    return markdown_table(header, rows)


# ---------------------------------------------------------------- results on disk

def run_key(fusion: str, activation: str, seed: int | str) -> str:
    """The name of one run of the grid in result files, e.g. ``star-none-seed2024``."""
    return f"{fusion}-{activation}-seed{seed}"


# Columns of the result CSVs read back as numbers; every other one stays a string
# (a config_hash such as "12345678" must not become an int).
INTEGER_COLUMNS = frozenset({"seed", "epochs", "best_epoch", "n_test_images"})
FLOAT_COLUMNS = frozenset({*METRIC_NAMES, *TUNED_COLUMNS, "train_seconds", "eval_seconds", "seconds",
                           "seconds_per_image"})


def _parse_row(row: Mapping[str, str]) -> dict:
    """A CSV row with the known numeric columns parsed (empty cells stay ``""``)."""
    def parse(key: str, value: str):
        if value in ("", None):
            return value
        if key in INTEGER_COLUMNS:
            return int(value)
        return float(value) if key in FLOAT_COLUMNS else value
    return {k: parse(k, v) for k, v in row.items()}


@dataclass
class Results:
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
        """One sentence: where these numbers come from (folder, preset, seeds, hardware, date)."""
        p = self.provenance
        who = "your own `reproduce` output" if self.kind == "own" else "the committed reference results"
        seeds = ", ".join(str(s) for s in p.get("seeds", [])) or "?"
        hardware = p.get("hardware", {}).get("summary", "unknown hardware")
        return (f"{who} in `{display_path(self.directory)}`: preset `{p.get('preset', '?')}`, "
                f"seeds {seeds}, {len(self.runs)} runs, trained and evaluated on {hardware} "
                f"(torch {p.get('torch', '?')}), finished {p.get('finished', '?')}, "
                f"{len(p.get('test_ids', []))} test images, {p.get('method', '?')} inference")


def load_results(directory: str | Path, kind: str = "own") -> Results:
    """Read a ``reproduce`` output folder (see :class:`Results`)."""
    directory = Path(directory)
    if not (directory / "metrics.csv").is_file():
        raise FileNotFoundError(f"no metrics.csv in {display_path(directory)}: run `python -m starunet "
                                "reproduce --preset quick --seeds 2024 2025 2026 --out DIR` first")

    def rows(name: str) -> list[dict]:
        path = directory / name
        return [_parse_row(r) for r in read_csv(path)] if path.is_file() else []

    def json_file(name: str) -> dict:
        path = directory / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    runs, curves = rows("metrics.csv"), json_file("curves.json")
    order = [run_key(r["fusion"], r["activation"], r["seed"]) for r in runs]  # the grid's order, not JSON's
    curves = {k: curves[k] for k in order if k in curves} | {k: v for k, v in curves.items() if k not in order}
    return Results(directory=directory, kind=kind, runs=runs, per_image=rows("per_image.csv"),
                   curves=curves, provenance=json_file("provenance.json"),
                   inference_methods=rows("inference_methods.csv"))


def own_results_dir() -> Path:
    """Where ``reproduce`` writes by default, and where the course looks for the
    reader's own grid: ``<runs dir>/reproduce``."""
    return default_runs_dir() / "reproduce"


def find_results(directory: str | Path | None = None) -> Results:
    """The results the course shows: ``directory`` if given, else the reader's own
    ``reproduce`` output (:func:`own_results_dir`) if it has one, else the committed
    full-protocol grid ``results/full/`` (GPU) when present, else the committed
    ``results/reference/`` (the quick CPU grid)."""
    if directory is not None:
        return load_results(directory, kind="own")
    own = own_results_dir()
    if (own / "metrics.csv").is_file():
        return load_results(own, kind="own")
    if (FULL_REFERENCE_DIR / "metrics.csv").is_file():
        return load_results(FULL_REFERENCE_DIR, kind="reference")
    return load_results(REFERENCE_DIR, kind="reference")


def summary_table(summary: Mapping[tuple[str, str], Mapping], metrics: Sequence[str] = METRIC_NAMES) -> str:
    """Markdown: one row per configuration, mean ± std over seeds of every metric."""
    header = ["fusion", "activation", "seeds", *(METRIC_LABELS.get(m, m) for m in metrics)]
    rows = [[fusion, activation, str(s["n"]), *(format_value(s["mean"][m], s["std"][m]) for m in metrics)]
            for (fusion, activation), s in summary.items()]
    return markdown_table(header, rows)


def results_markdown(results: Results, heading: str = "## Results: sum vs star skip fusion") -> str:
    """A short markdown report of a grid: where it comes from, mean ± std per
    configuration, and the computed verdict per activation setting."""
    lines = [heading, "", f"From {results.describe()}.", "",
             "Pooled over the FOV pixels of the test images at threshold 0.5; mean ± std over seeds.", "",
             summary_table(results.summary()), ""]
    diffs = results.paired_differences()
    for act in [a for a in ACTIVATIONS_COMPARED if any(d.activation == a for d in diffs)]:
        lines.append(f"- {verdict_sentence(diffs, act)}")
    if diffs:
        lines += ["", "CIs: percentile bootstrap of the per-image difference, resampling seeds and test images."]
    return "\n".join(lines) + "\n"


def inference_methods_markdown(rows: Sequence[Mapping]) -> str:
    """Markdown table of :func:`compare_inference_methods` rows, with a computed
    sentence on what tiling costs and changes compared with the padded whole image."""
    if not rows:
        return "No inference-method measurement in these results."
    table = markdown_table(["method", "seconds / image", *(METRIC_LABELS[m] for m in METRIC_NAMES)],
                           [[r["method"], f"{float(r['seconds_per_image']):.2f}",
                             *(format_value(float(r[m])) for m in METRIC_NAMES)] for r in rows])
    by_method = {r["method"]: r for r in rows}
    if not {"pad", "tiles"} <= set(by_method):
        return table
    pad, tiles = by_method["pad"], by_method["tiles"]
    ratio = float(tiles["seconds_per_image"]) / max(float(pad["seconds_per_image"]), 1e-9)
    deltas = ", ".join(f"{METRIC_LABELS[m]} {float(tiles[m]) - float(pad[m]):+.4f}" for m in HEADLINE_METRICS)
    return (table + f"\n\nMeasured on run `{pad.get('run', '?')}`: overlapping tiles took {ratio:.1f}x the time "
            f"of the padded whole image and changed {deltas} (tiles - pad).")


def compare_two_runs(results: Results, key_a: str, key_b: str) -> str:
    """Markdown: the pooled test metrics of two runs of a grid, B's relative change
    vs A (▲/▼), and on how many test images B beats A per metric."""
    a, b = results.run(key_a), results.run(key_b)
    table = comparison_table(a, b, key_a, key_b)
    per_image = {}
    for row in results.per_image:
        per_image.setdefault(run_key(row["fusion"], row["activation"], row["seed"]), {})[row["image_id"]] = row
    ids = sorted(set(per_image.get(key_a, {})) & set(per_image.get(key_b, {})))
    if not ids:
        return table + "\n"
    wins = {m: sum(per_image[key_b][i][m] > per_image[key_a][i][m] for i in ids) for m in METRIC_NAMES}
    counts = ", ".join(f"{METRIC_LABELS[m]} {wins[m]}" for m in METRIC_NAMES)
    return table + f"\n\nTest images (of {len(ids)}) on which `{key_b}` scores higher than `{key_a}`: {counts}.\n"


def course_check_dir() -> Path:
    """Where the course evaluates the reader's notebook-04 runs for the comparison
    with the reference grid: ``<runs dir>/course-check``."""
    return default_runs_dir() / "course-check"


def finished_reference_seeds(reference: Results, runs_dir: str | Path | None = None) -> list[int]:
    """The seeds of ``reference`` whose whole fusion x activation grid the reader has
    trained (finished runs of the same configs, e.g. by notebook 04) under ``runs_dir``."""
    from starunet.train import RESULT_FILE, preset_config, run_dir_for

    p = reference.provenance
    fusions, activations = p.get("fusions", FUSIONS_COMPARED), p.get("activations", ACTIVATIONS_COMPARED)
    preset = p.get("preset")
    if preset is None:
        return []

    def finished(seed: int) -> bool:
        return all((run_dir_for(preset_config(preset, fusion=f, activation=a, seed=seed), runs_dir)
                    / RESULT_FILE).is_file() for f in fusions for a in activations)
    return [int(s) for s in p.get("seeds", []) if finished(int(s))]


def own_runs_beside_reference(reference: Results, records: Sequence | None = None,
                              runs_dir: str | Path | None = None, out: str | Path | None = None,
                              log=None) -> Results | None:
    """The reader's own finished runs of the reference grid's configurations, evaluated
    like the reference (:func:`reproduce` into :func:`course_check_dir`: their training
    is reused, not redone), or None when the reader has trained none of them."""
    seeds = finished_reference_seeds(reference, runs_dir)
    if not seeds:
        return None
    p = reference.provenance
    return reproduce(p["preset"], seeds, out=out or course_check_dir(), fusions=p["fusions"],
                     activations=p["activations"], runs_dir=runs_dir, method=p.get("method", DEFAULT_METHOD),
                     records=records, log=log or (lambda message: None), overwrite=True,
                     command=f"python -m starunet reproduce --preset {p['preset']} --seeds "
                             f"{' '.join(map(str, seeds))}")


def reference_comparison_markdown(own: Results, reference: Results, digits: int = 4) -> str:
    """The reader's runs beside the same runs of the reference grid: per run and metric
    the reference value, the reader's, and the difference; then one computed sentence
    ("identical to 4 decimals on this machine" when every pooled metric agrees)."""
    common = [k for k in own.keys if k in reference.keys]
    if not common:
        return (f"Your runs ({own.describe()}) share no configuration and seed with the reference "
                f"grid ({reference.describe()}): nothing to compare.")
    rows, largest = [], 0.0
    for key in common:
        mine, ref = own.run(key), reference.run(key)
        for m in METRIC_NAMES:
            diff = float(mine[m]) - float(ref[m])
            largest = max(largest, abs(diff))
            rows.append([key, METRIC_LABELS[m], f"{float(ref[m]):.{digits}f}", f"{float(mine[m]):.{digits}f}",
                         f"{diff:+.{digits}f}"])
    table = markdown_table(["run", "metric", "reference", "yours", "yours − reference"], rows)
    machine = own.provenance.get("hardware", {}).get("summary", "this machine")
    if largest < 0.5 * 10**-digits:
        verdict = (f"All {len(common) * len(METRIC_NAMES)} pooled test metrics of your {len(common)} run(s) are "
                   f"**identical to {digits} decimals** to the reference's (yours on {machine}).")
    else:
        verdict = (f"Your {len(common)} run(s) differ from the reference by up to {largest:.{digits}f} "
                   f"(yours on {machine}; the reference on "
                   f"{reference.provenance.get('hardware', {}).get('summary', '?')}): another CPU, thread "
                   "count or torch build sums in another order, and the runs drift apart from there.")
    return f"{table}\n\n{verdict}\n"


def course_summary_markdown() -> str:
    """The results section of the course's ``summary.md`` (see :mod:`starunet.course`):
    the grid notebook 05 shows and, when a longer-trained grid exists
    (:func:`budget_grids`), the verdicts of notebook 05 section 9 for every budget."""
    try:
        results = find_results()
    except FileNotFoundError as err:
        return f"## Results: sum vs star skip fusion\n\nNo grid results found: {err}\n"
    text = results_markdown(results)
    own_dir = own_results_dir() if results.kind == "own" else course_check_dir()
    if (own_dir / "metrics.csv").is_file():
        own, reference = load_results(own_dir), load_results(REFERENCE_DIR, kind="reference")
        text += ("\n## Your runs beside the reference (notebook 05, section 1)\n\n"
                 f"{reference_comparison_markdown(own, reference)}")
    grids = budget_grids(results)
    diffs = budget_differences(grids) if len(grids) > 1 else {}
    if len(diffs) > 1:
        sources = "\n".join(f"- `{name}`: {grid.describe()}." for name, grid in grids.items())
        text += (f"\n## Across training budgets (notebook 05, section 9)\n\n{sources}\n\n"
                 f"{budget_verdicts_markdown(diffs)}\n")
    return text


# ---------------------------------------------------------------- training budget

def is_committed_grid(directory: str | Path) -> bool:
    """True for a grid folder directly under the repository's ``results/`` (the
    reference grids the course ships), False for a reader's own output."""
    return Path(directory).resolve().parent == (PROJECT_ROOT / "results").resolve()


def budget_grids(results: Results, others: Sequence[str | Path] | None = None) -> dict[str, Results]:
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


def budget_differences(grids: Mapping[str, Results], activations: Sequence[str] = ACTIVATIONS_COMPARED,
                       metrics: Sequence[str] = HEADLINE_METRICS, n_boot: int = 4000,
                       level: float = 0.95, replacement: bool = True) -> dict[str, list[PairedDifference]]:
    """Star − sum per grid (training budget), for each of ``activations`` that the
    grid has both fusions for, as :func:`paired_differences` computes it, and (with
    ``replacement``) star/none − sum/relu (:func:`replacement_differences`) where
    the grid has both; grids with none of them are left out."""
    out = {}
    for name, results in grids.items():
        acts = [a for a in activations if a in results.paired_activations]
        diffs = paired_differences(results.per_image, acts, metrics, n_boot=n_boot, level=level) if acts else []
        if replacement and {("star", "none"), ("sum", "relu")} <= set(results.summary()):
            diffs += replacement_differences(results.per_image, metrics, n_boot=n_boot, level=level)
        if diffs:
            out[name] = diffs
    return out


def _training_length(results: Results, fusion: str, activation: str) -> str:
    """'E (B), P' of a configuration's runs: epochs trained, best epoch and training
    patches seen, means over seeds."""
    runs = [r for r in results.runs if r["fusion"] == fusion and r["activation"] == activation]
    per_epoch = int(results.provenance.get("preset_config", {}).get("samples_per_epoch", 0))
    epochs = float(np.mean([r["epochs"] for r in runs]))
    best = float(np.mean([r["best_epoch"] for r in runs]))
    return f"{epochs:.1f} ({best:.1f}), {epochs * per_epoch:,.0f}"


def _compared_configs(d: PairedDifference) -> tuple[tuple[str, str], tuple[str, str]]:
    """The ``(fusion, activation)`` pairs a difference compares: ``a``/``b`` are fusions
    with ``d.activation``, or ``"fusion/activation"`` for :func:`replacement_differences`."""
    def config(name: str) -> tuple[str, str]:
        fusion, _, activation = name.partition("/")
        return fusion, activation or d.activation
    return config(d.a), config(d.b)


def training_budget_table(grids: Mapping[str, Results], diffs: Mapping[str, Sequence[PairedDifference]]) -> str:
    """Markdown: per grid, activation and headline metric, sum and star (mean ± std
    over seeds), the paired difference star − sum with its CI and verdict, and how
    long each fusion trained (epochs, best epoch, patches seen; means over seeds).
    Rows of activation ``"none vs relu"`` compare star/none (column star) with
    sum/relu (column sum)."""
    header = ["preset", "activation", "metric", "sum", "star", "star − sum [CI]", "verdict",
              "sum: epochs (best), patches", "star: epochs (best), patches"]
    rows = []
    for name, chosen in diffs.items():
        summary = grids[name].summary()
        for d in chosen:
            config_a, config_b = _compared_configs(d)
            sums, stars = summary[config_a], summary[config_b]
            rows.append([name, d.activation, METRIC_LABELS.get(d.metric, d.metric),
                         format_value(sums["mean"][d.metric], sums["std"][d.metric]),
                         format_value(stars["mean"][d.metric], stars["std"][d.metric]),
                         f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]", d.verdict,
                         _training_length(grids[name], *config_a), _training_length(grids[name], *config_b)])
    return markdown_table(header, rows, numbers=False)


def threshold_table(grids: Mapping[str, Results]) -> str:
    """Markdown: per grid and configuration, the validation images' F1-optimal
    threshold and the test F1 at the fixed 0.5 next to the test F1, Se and Pre at
    that threshold (mean ± std over seeds). Grids evaluated before the tuned
    threshold existed are an error naming the command that adds it."""
    header = ["preset", "fusion", "activation", "val. threshold", "F1 at 0.5", "F1 (val. thr.)",
              "Se (val. thr.)", "Pre (val. thr.)"]
    rows = []
    for name, results in grids.items():
        if not results.has_tuned_threshold:
            raise ValueError(f"{display_path(results.directory)} has no validation-tuned threshold: {OLDER_EVALUATION}")
        for (fusion, activation), s in results.summary().items():
            cells = [format_value(s["mean"][m], s["std"][m], digits=3 if m == "val_threshold" else 4)
                     for m in ("val_threshold", "f1", "f1_tuned", "se_tuned", "pre_tuned")]
            rows.append([name, fusion, activation, *cells])
    return markdown_table(header, rows, numbers=False)


def threshold_report(grids: Mapping[str, Results], n_boot: int = 4000, level: float = 0.95) -> str:
    """Notebook 05's answer to "is the F1 gap only calibration?": :func:`threshold_table`
    and F1 at 0.5 next to F1 at the validation threshold, paired as in
    :func:`budget_differences`. A grid evaluated before the tuned threshold existed gets a
    line saying how to add it instead of stopping the notebook."""
    tuned = {name: g for name, g in grids.items() if g.has_tuned_threshold}
    lines = [f"* `{name}` ({display_path(g.directory)}) has no validation-tuned threshold: {OLDER_EVALUATION}."
             for name, g in grids.items() if name not in tuned]
    if tuned:
        diffs = budget_differences(tuned, metrics=("f1", "f1_tuned"), n_boot=n_boot, level=level)
        lines += ["", threshold_table(tuned), "", training_budget_table(tuned, diffs)]
    return "\n".join(lines).strip() + "\n"


def budget_verdicts_markdown(diffs: Mapping[str, Sequence[PairedDifference]]) -> str:
    """One bullet per grid and activation: :func:`verdict_sentence` of its differences."""
    lines = []
    for name, chosen in diffs.items():
        for act in dict.fromkeys(d.activation for d in chosen):
            lines.append(f"* Preset `{name}`: {verdict_sentence(chosen, act)}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the grid

EVALUATION_VERSION = 3  # bump when evaluation changes numbers: cached evaluations are then redone
# 2: starunet.inference (BatchNorm folded), test metrics within 1e-6 of version 1
# 3: + the validation-tuned threshold (TUNED_COLUMNS); version-2 numbers unchanged
METRICS_EXTRA_COLUMNS = ["preset", "epochs", "best_epoch", "stop_reason", "train_seconds", "eval_seconds",
                         "method", "n_test_images", "device", "config_hash"]
PER_IMAGE_COLUMNS = ["fusion", "activation", "seed", "image_id", *METRIC_NAMES, "f1_tuned"]
INFERENCE_COLUMNS = ["run", "method", "seconds", "seconds_per_image", *METRIC_NAMES]


def grid_configs(preset: str, seeds: Sequence[int], fusions: Sequence[str] = FUSIONS_COMPARED,
                 activations: Sequence[str] = ACTIVATIONS_COMPARED) -> list:
    """The :class:`~starunet.train.TrainConfig` of every run of the grid, seed by seed
    (so an interrupted grid has whole seeds done), validated."""
    from starunet.train import preset_config

    seeds = list(seeds)
    if not seeds:
        raise ValueError("give at least one seed, e.g. --seeds 2024 2025 2026")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    for name, values in (("fusions", fusions), ("activations", activations)):
        if not values or len(set(values)) != len(values):
            raise ValueError(f"{name} must be a non-empty list of distinct names, got {list(values)}")
    return [preset_config(preset, fusion=f, activation=a, seed=s)
            for s in seeds for a in activations for f in fusions]


def save_probability_png(path: str | Path, prob: np.ndarray) -> None:
    """Save a probability map as an 8-bit grayscale PNG (0..255), atomically."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG", optimize=True)
    write_bytes_atomic(path, buf.getvalue())


def _fingerprint(run_dir: Path, ids: Sequence[str], method: str) -> str:
    """Identifies one evaluation: the finished run (its result.json), test ids, method."""
    payload = (run_dir / "result.json").read_bytes() + json.dumps(
        [list(ids), method, EVALUATION_VERSION]).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def _evaluate_cached(run_dir: Path, records: Sequence, ids: Sequence[str], out: Path, key: str,
                     method: str, batch_size: int, device: str, panel_ids: Sequence[str]) -> tuple[RunEvaluation, bool]:
    """Evaluate a run unless ``out/evaluations/<key>.json`` already holds this exact
    evaluation (and its prediction PNGs exist). Returns ``(evaluation, reused)``."""
    cache = out / "evaluations" / f"{key}.json"
    fingerprint = _fingerprint(run_dir, ids, method)
    pngs = [out / "predictions" / f"{key}_{i}.png" for i in panel_ids]
    if cache.is_file() and all(p.is_file() for p in pngs):
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if stored.get("fingerprint") == fingerprint:
            return RunEvaluation.from_json(stored["evaluation"]), True
    evaluation = evaluate_run(run_dir, records, ids, method=method, batch_size=batch_size, device=device)
    for image_id, path in zip(panel_ids, pngs):
        save_probability_png(path, evaluation.probabilities[image_id])
    write_json_atomic(cache, {"fingerprint": fingerprint, "evaluation": evaluation.to_json()})
    return evaluation, False


def _inference_methods_cached(run_dir: Path, records: Sequence, ids: Sequence[str], out: Path, key: str,
                              batch_size: int, device: str) -> list[dict]:
    """Both inference methods measured once on one trained run (cached like evaluations)."""
    from starunet.train import load_model

    cache = out / "evaluations" / "inference_methods.json"
    fingerprint = _fingerprint(run_dir, ids, "both")
    if cache.is_file():
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if stored.get("fingerprint") == fingerprint:
            return stored["rows"]
    model = load_model(run_dir, which="best", device=device)
    rows = [{"run": key, **row} for row in compare_inference_methods(
        model, select_records(records, ids), batch_size=batch_size, device=device)]
    write_json_atomic(cache, {"fingerprint": fingerprint, "rows": rows})
    return rows


def _metrics_row(config, result, evaluation: RunEvaluation) -> dict:
    return {"fusion": config.fusion, "activation": config.activation, "seed": config.seed,
            **{m: round(evaluation.pooled[m], 6) for m in METRIC_NAMES},
            "val_threshold": round(evaluation.val_threshold, 6),
            **{m: round(evaluation.tuned[m], 6) for m in TUNED_METRICS},
            "preset": config.preset, "epochs": result.epochs, "best_epoch": result.best_epoch,
            "stop_reason": result.stop_reason, "train_seconds": result.train_seconds,
            "eval_seconds": evaluation.seconds, "method": evaluation.method,
            "n_test_images": len(evaluation.ids), "device": result.device, "config_hash": config.config_hash}


def _per_image_rows(config, evaluation: RunEvaluation) -> list[dict]:
    return [{"fusion": config.fusion, "activation": config.activation, "seed": config.seed, "image_id": i,
             **{m: round(evaluation.per_image[i][m], 6) for m in METRIC_NAMES},
             "f1_tuned": round(evaluation.per_image_tuned[i]["f1_tuned"], 6)} for i in evaluation.ids]


def _write_grid_files(out: Path, rows: list[dict], per_image: list[dict], curves: dict,
                      inference_rows: list[dict]) -> None:
    """The grid's result files, rewritten (atomically) after every run."""
    write_csv_atomic(out / "metrics.csv", rows, METRICS_COLUMNS + TUNED_COLUMNS + METRICS_EXTRA_COLUMNS)
    write_csv_atomic(out / "per_image.csv", per_image, PER_IMAGE_COLUMNS)
    write_json_atomic(out / "curves.json", curves)
    if inference_rows:
        write_csv_atomic(out / "inference_methods.csv", inference_rows, INFERENCE_COLUMNS)


class GridConflictError(ValueError):
    """The output folder holds runs that the requested grid would silently drop."""


def check_output_folder(out: Path, configs: Sequence, method: str) -> None:
    """Refuse to write a grid into ``out`` when ``out/metrics.csv`` already holds runs
    that this grid does not contain (other seeds, fusions, activations, preset or
    inference method): the grid's files are rewritten from this call's runs, so
    those would be lost. A grid that contains them all (e.g. more seeds) is fine:
    their runs and evaluations are reused."""
    if not (out / "metrics.csv").is_file():
        return
    planned = {(c.fusion, c.activation, str(c.seed), c.preset, method) for c in configs}
    existing = [(r["fusion"], r["activation"], r["seed"], r.get("preset", ""), r.get("method", ""))
                for r in read_csv(out / "metrics.csv")]
    dropped = [e for e in existing if e not in planned]
    if dropped:
        names = ", ".join(f"{f}-{a}-seed{s} ({p}, {m})" for f, a, s, p, m in dropped[:4])
        more = f" and {len(dropped) - 4} more" if len(dropped) > 4 else ""
        raise GridConflictError(
            f"{display_path(out)} already holds results that this grid would drop: {names}{more}. "
            f"{_conflict_fix(existing, configs, method)}")


def _conflict_fix(existing: Sequence[tuple], configs: Sequence, method: str) -> str:
    """How to resolve a :class:`GridConflictError`: a grid of another preset or
    inference method cannot be extended (its runs differ), only moved elsewhere; a
    grid of the same kind can, by asking for its seeds, fusions and activations too."""
    presets = {c.preset for c in configs}
    other = sorted({(p, m) for *_, p, m in existing if p not in presets or m != method})
    if other:
        held = "; ".join(f"preset {p}, method {m}" for p, m in other)
        return (f"That folder holds a grid of another kind ({held}): write this one to another --out "
                f"(e.g. --out runs/{configs[0].preset}-grid), or pass --overwrite to replace it")
    options = []
    for flag, index, attribute in (("--seeds", 2, "seed"), ("--fusions", 0, "fusion"),
                                   ("--activations", 1, "activation")):
        wanted = [str(getattr(c, attribute)) for c in configs]
        union = list(dict.fromkeys(wanted + [str(e[index]) for e in existing]))
        if flag == "--seeds":
            union = sorted(union, key=int)
        if flag == "--seeds" or union != list(dict.fromkeys(wanted)):
            options.append(f"{flag} {' '.join(union)}")
    return (f"Re-run with all of them (e.g. {' '.join(options)}; finished runs and evaluations are "
            "reused), choose another --out, or pass --overwrite to replace them")


def reproduce(preset: str, seeds: Sequence[int], out: str | Path | None = None,
              fusions: Sequence[str] = FUSIONS_COMPARED, activations: Sequence[str] = ACTIVATIONS_COMPARED,
              device: str = "auto", runs_dir: str | Path | None = None, method: str = DEFAULT_METHOD,
              batch_size: int = 4, records: Sequence | None = None, command: str | None = None,
              log=None, overwrite: bool = False, jobs: int = 1, threads: int | None = None,
              cluster: str = "local", slurm=None) -> Results:
    """Train (or reuse) and evaluate the fusion x activation grid for every seed.

    Runs go to :func:`starunet.train.run_dir_for` under ``runs_dir`` (finished
    runs are reused, interrupted ones resumed); results to ``out`` (default
    :func:`own_results_dir`): ``metrics.csv``, ``per_image.csv``, ``curves.json``,
    ``inference_methods.csv``, ``predictions/*.png``, ``provenance.json`` and a
    generated ``README.md``. Returns the results read back. An ``out`` holding runs
    outside this grid raises :class:`GridConflictError` unless ``overwrite``.

    ``jobs > 1`` (or ``cluster="slurm"``, with ``slurm`` a
    :class:`starunet.fanout.SlurmOptions`) trains up to ``jobs`` runs at once in
    parallel jobs (:mod:`starunet.fanout`) and evaluates each as it finishes; runs
    that fail are reported together at the end (:class:`starunet.fanout.GridRunError`)
    after the others are evaluated. ``threads``: torch threads per run (and for the
    evaluation); default: unchanged for ``jobs=1``, ``cores // jobs`` otherwise.
    """
    import torch

    from starunet.data import load_stare
    from starunet.fanout import FanOut
    from starunet.device import select_device

    log = log or (lambda message: print(message, flush=True))
    check_inference_method(method)
    configs = grid_configs(preset, seeds, fusions, activations)  # fails fast on bad names
    fan = FanOut(jobs, cluster, threads, slurm).validate()
    torch_device = select_device(device)
    out = Path(out) if out is not None else own_results_dir()
    if not overwrite:
        check_output_folder(out, configs, method)
    started, start = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.perf_counter()
    commit = git_commit()  # now: the files this call writes may be tracked ones (results/reference)
    test_ids = tuple(configs[0].split().test)
    panel_ids = tuple(sorted(test_ids)[:PANEL_COUNT])
    records = load_stare() if records is None else records
    threads_before = torch.get_num_threads()
    if _evaluation_threads(fan) is not None:
        torch.set_num_threads(_evaluation_threads(fan))
    try:
        return _run_grid(configs, fan, out, runs_dir, torch_device, device, records, test_ids, panel_ids, method,
                         batch_size, log, command, preset, seeds, fusions, activations, started, start, commit)
    finally:
        torch.set_num_threads(threads_before)


def _evaluation_threads(fan) -> int | None:
    """Torch threads of the parent process: the runs' own when they share this machine
    (so a fanned-out grid evaluates with the threads a ``jobs=1`` grid would use)."""
    from starunet.fanout import job_threads

    return job_threads(fan) if fan.threads is not None or (fan.parallel and fan.cluster == "local") else None


def _trained_runs(configs: Sequence, fan, runs_dir, torch_device, device: str, records: Sequence, log):
    """``(index, RunResult | RunFailure)`` of every config: trained one after another
    here, or in parallel jobs (:func:`starunet.fanout.train_runs`), as they finish."""
    from starunet.fanout import train_runs
    from starunet.train import run_dir_for, train

    if fan.parallel:
        # on SLURM the jobs choose their own device (the login node may have no GPU)
        job_device = device if fan.cluster == "slurm" else torch_device.type
        log(f"training {len(configs)} runs, up to {fan.jobs} at once ({fan.cluster}) ...")
        yield from train_runs(configs, [run_dir_for(c, runs_dir) for c in configs], job_device, fan, log, records)
        return
    for n, config in enumerate(configs):
        log(f"[{n + 1}/{len(configs)}] {run_key(config.fusion, config.activation, config.seed)}: "
            "training (or reusing) ...")
        yield n, train(config, run_dir_for(config, runs_dir), resume=True, device=str(torch_device),
                       records=records)


def _run_grid(configs, fan, out, runs_dir, torch_device, device, records, test_ids, panel_ids, method,
              batch_size, log, command, preset, seeds, fusions, activations, started, start, commit) -> Results:
    """The body of :func:`reproduce`: train, evaluate each run as it finishes, write."""
    import contextlib

    import torch

    from starunet.fanout import GridRunError, RunFailure

    done: dict[int, tuple[dict, list[dict], dict]] = {}
    failures, inference_rows, reused, evaluations_reused = [], [], 0, 0

    def write_provenance(ended: str | None = None) -> Results:
        """provenance.json and README.md of the runs evaluated so far; ``ended`` says why
        a grid stopped short (interrupted, or runs failed) and names the missing runs."""
        provenance = {
            "command": command or f"starunet.evaluate.reproduce(preset={preset!r}, seeds={list(seeds)!r})",
            "preset": preset, "preset_config": {k: v for k, v in configs[0].to_dict().items()
                                                if k not in ("fusion", "activation", "seed")},
            "seeds": list(seeds), "fusions": list(fusions), "activations": list(activations),
            "method": method, "test_ids": list(test_ids), "panel_ids": list(panel_ids),
            "hardware": hardware_record(torch_device), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform(terse=True),
            "git_commit": commit, "smoke_mode": smoke_mode(),
            "started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "wall_seconds": round(time.perf_counter() - start, 1), "runs": len(configs), "runs_reused": reused,
            "evaluations_reused": evaluations_reused,
        }
        if fan.parallel:  # absent for one run at a time, so such grids' files stay as they were
            from starunet.fanout import job_threads

            provenance["fanout"] = {"jobs": fan.jobs, "cluster": fan.cluster, "threads_per_job": job_threads(fan)}
        if ended is not None:
            provenance["partial"] = {"ended": ended, "missing": [
                run_key(c.fusion, c.activation, c.seed) for n, c in enumerate(configs) if n not in done]}
        return write_grid_provenance(out, provenance)

    try:
        with contextlib.closing(_trained_runs(configs, fan, runs_dir, torch_device, device, records, log)) as runs:
            for n, result in runs:
                if isinstance(result, RunFailure):
                    failures.append(result)
                    log(f"    {result.describe()}")
                    continue
                config = configs[n]
                key = run_key(config.fusion, config.activation, config.seed)
                evaluation, cached = _evaluate_cached(result.run_dir, records, test_ids, out, key, method,
                                                      batch_size, str(torch_device),
                                                      panel_ids if config.seed == configs[0].seed else ())
                reused, evaluations_reused = reused + int(result.reused), evaluations_reused + int(cached)
                if n == 0:
                    inference_rows = _inference_methods_cached(result.run_dir, records, test_ids, out, key,
                                                               batch_size, str(torch_device))
                done[n] = (_metrics_row(config, result, evaluation), _per_image_rows(config, evaluation),
                           evaluation.curves)
                _write_grid_files(out, *_grid_parts(done, configs), inference_rows)
                prefix = f"[{len(done) + len(failures)}/{len(configs)}] {key} " if fan.parallel else "    "
                log(f"{prefix}{'reused' if result.reused else 'trained'}; test " +
                    ", ".join(f"{m} {evaluation.pooled[m]:.4f}" for m in HEADLINE_METRICS))
    except KeyboardInterrupt:
        if done:  # the folder's files already hold these runs: describe them, and what is missing
            write_provenance("interrupted")
        raise
    if failures:
        write_provenance(f"{len(failures)} run(s) failed")
        raise GridRunError(sorted(failures, key=lambda f: f.index), len(configs))
    results = write_provenance()
    log(f"results -> {display_path(out)}")
    return results


def write_grid_provenance(out: Path, provenance: dict) -> Results:
    """Write ``provenance`` (with the training and evaluation seconds summed from
    ``metrics.csv``) and the README generated from it into the grid folder ``out``."""
    rows = read_csv(out / "metrics.csv")
    provenance = {**provenance,
                  "train_seconds_total": round(sum(float(r["train_seconds"]) for r in rows), 1),
                  "eval_seconds_total": round(sum(float(r["eval_seconds"]) for r in rows), 1)}
    write_json_atomic(out / "provenance.json", provenance)
    results = load_results(out, kind="reference" if is_committed_grid(out) else "own")
    write_text_atomic(out / "README.md", provenance_readme(results))
    return results


def _grid_parts(done: Mapping[int, tuple[dict, list[dict], dict]], configs: Sequence) -> tuple[list, list, dict]:
    """``(rows, per_image, curves)`` of the evaluated runs, in the grid's order
    (whatever order parallel jobs finished in)."""
    rows, per_image, curves = [], [], {}
    for n in sorted(done):
        row, image_rows, run_curves = done[n]
        rows.append(row)
        per_image += image_rows
        curves[run_key(configs[n].fusion, configs[n].activation, configs[n].seed)] = run_curves
    return rows, per_image, curves


def _parallel_note(p: Mapping) -> str:
    """How a fanned-out grid ran (absent from grids trained one run at a time)."""
    fan = p.get("fanout")
    return (f"; up to {fan['jobs']} runs at once ({fan['cluster']}, {fan['threads_per_job']} torch threads "
            "each)") if fan else ""


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _partial_note(p: Mapping) -> str:
    """A grid that stopped short: why, and which runs it lacks."""
    partial = p.get("partial")
    if not partial:
        return ""
    missing = partial["missing"]
    return (f"; **partial: {partial['ended']}, {len(missing)} run(s) missing: {', '.join(missing)}** "
            "(re-run the command to finish them)")


def _reuse_note(p: Mapping) -> str:
    """What a grid invocation took over from earlier ones, in words."""
    note = f"{p['runs_reused']} trained by an earlier invocation and reused"
    if "evaluations_reused" in p:  # absent in provenance files of older versions
        note += f"; {p['evaluations_reused']} of {p['runs']} evaluations reused, the others computed now"
    return note


def provenance_readme(results: Results) -> str:
    """The README of a grid output folder, generated from its provenance and results
    (written by :func:`reproduce`; never edited by hand)."""
    p = results.provenance
    config = ", ".join(f"{k}={v}" for k, v in p["preset_config"].items() if k != "preset")
    table = markdown_table(["what", "how"], [
        ["command", f"`{p['command']}`"],
        ["preset", f"`{p['preset']}` ({config})"],
        ["seeds", ", ".join(str(s) for s in p["seeds"])],
        ["grid", f"fusion {' / '.join(p['fusions'])} x activation {' / '.join(p['activations'])}: "
                 f"{p['runs']} runs ({_reuse_note(p)}){_partial_note(p)}"],
        ["test images", f"{len(p['test_ids'])}: {' '.join(p['test_ids'])}"],
        ["inference", f"`{p['method']}` (whole images; see starunet.evaluate)"],
        ["hardware", p["hardware"]["summary"]],
        ["software", f"torch {p['torch']}, numpy {p['numpy']}, Python {p['python']}, {p['platform']}"],
        ["code", f"git commit {p['git_commit']}"],
        ["date", f"started {p['started']}, finished {p['finished']}"],
        ["duration", f"{_duration(p['wall_seconds'])} for "
                     f"{'these invocations' if p.get('invocations') else 'this invocation'}; training "
                     f"{_duration(p['train_seconds_total'])} and evaluation {_duration(p['eval_seconds_total'])} "
                     f"summed over all runs{_parallel_note(p)}"],
        *([["invocations", "; ".join(f"`{i['command']}`: {i['outcome']}" for i in p["invocations"])]]
          if p.get("invocations") else []),
        *([["assembled", p["assembled"]]] if p.get("assembled") else []),
    ], numbers=False)
    smoke = ("\n**Smoke preset or smoke mode** (`STARUNET_SMOKE=1`): a pipeline check, not a result.\n"
             if p["preset"] == "smoke" or p.get("smoke_mode") else "")
    files = "\n".join([
        "- `metrics.csv`: one row per run, the seven metrics pooled over the test images' FOV pixels "
        "(threshold 0.5); `val_threshold`, the threshold that maximises F1 on the run's validation images, "
        "and F1, Se and Pre of the test images at it (`*_tuned`); plus training facts",
        "- `per_image.csv`: the same metrics (and `f1_tuned`) per test image (for the paired bootstrap)",
        f"- `curves.json`: ROC and PR curve points per run (at most {MAX_CURVE_POINTS} each)",
        "- `inference_methods.csv`: whole-image (`pad`) vs overlapping-tile (`tiles`) inference, timed and "
        "scored once on the first run",
        f"- `predictions/`: probability maps (8-bit PNG) of the first seed's runs on {', '.join(p['panel_ids'])}",
        "- `evaluations/`: per-run evaluation cache (lets a re-run skip finished work)",
        "- `provenance.json`: the facts above, machine-readable",
    ])
    return (f"# Grid results: sum vs star skip fusion, with and without ReLU\n\n"
            f"Generated by `python -m starunet reproduce` at the end of its run; do not edit by hand, "
            f"re-run the command instead (finished runs are reused).\n{smoke}\n"
            f"## How these numbers were made\n\n{table}\n\n"
            f"{results_markdown(results, heading='## Results')}\n## Files\n\n{files}\n")


# ---------------------------------------------------------------- command line

def cli(argv: Sequence[str]) -> int:
    """``python -m starunet reproduce``: the grid over seeds, evaluated (see :func:`reproduce`)."""
    from starunet.fusion import FUSIONS
    from starunet.model import ACTIVATIONS
    from starunet.device import DEVICE_CHOICES
    from starunet.train import PRESETS

    parser = argparse.ArgumentParser(
        prog="python -m starunet reproduce",
        description="Train (or reuse) fusion x activation runs for every seed, evaluate them on the "
                    "test images and write metrics.csv, per_image.csv, curves.json, prediction PNGs, "
                    "provenance.json and README.md into --out. Re-running resumes.")
    parser.add_argument("--preset", choices=list(PRESETS), default="quick",
                        help="training budget (smoke: seconds; quick: CPU minutes per run; full: GPU)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026], metavar="SEED")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: {display_path(own_results_dir())}, where the course looks)")
    parser.add_argument("--device", choices=list(DEVICE_CHOICES), default="auto")
    parser.add_argument("--fusions", nargs="+", default=list(FUSIONS_COMPARED), choices=list(FUSIONS),
                        metavar="FUSION", help=f"skip fusions (default: sum star; valid: {', '.join(FUSIONS)})")
    parser.add_argument("--activations", nargs="+", default=list(ACTIVATIONS_COMPARED), choices=list(ACTIVATIONS),
                        metavar="ACT", help=f"activations (default: none relu; valid: {', '.join(ACTIVATIONS)})")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where training runs live (default: STARUNET_RUNS or runs/)")
    parser.add_argument("--method", choices=INFERENCE_METHODS, default=DEFAULT_METHOD,
                        help="whole-image inference: padded image (default) or averaged 96x96 tiles")
    parser.add_argument("--batch-size", type=int, default=4, help="images (or tiles) per inference batch")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace results in --out that this grid does not contain (default: refuse)")
    _add_fanout_arguments(parser)
    args = parser.parse_args(list(argv))
    from starunet.preflight import cli_message, reproduce_problem

    problem = reproduce_problem(args)  # before anything is trained or downloaded
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    command = "python -m starunet reproduce " + shlex.join(list(argv))
    from starunet.fanout import GridRunError

    try:
        reproduce(args.preset, args.seeds, args.out, fusions=args.fusions, activations=args.activations,
                  device=args.device, runs_dir=args.runs_dir, method=args.method, batch_size=args.batch_size,
                  command=command, overwrite=args.overwrite, jobs=args.jobs, threads=args.threads,
                  cluster=args.cluster, slurm=_slurm_options(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {cli_message(err)}", file=sys.stderr)
        return 2
    except GridRunError as err:  # some runs failed, the others are evaluated in --out
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the runs in flight were stopped. Rerun the same command to go on: finished "
              "runs and evaluations are reused, unfinished runs resume from their last epoch.", file=sys.stderr)
        return 130
    return 0


def _add_fanout_arguments(parser: argparse.ArgumentParser) -> None:
    """``--jobs``, ``--threads``, ``--cluster`` and the ``--slurm-*`` options (:mod:`starunet.fanout`)."""
    from starunet.fanout import CLUSTERS

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
    group.add_argument("--slurm-partition", default=None)
    group.add_argument("--slurm-gpus-per-job", type=int, default=0, metavar="N", help="GPUs per run (default 0)")
    group.add_argument("--slurm-cpus-per-job", type=int, default=None, metavar="N",
                       help="CPUs per run, also its torch threads (default 1)")
    group.add_argument("--slurm-mem-gb", type=float, default=None, metavar="GB")
    group.add_argument("--slurm-account", default=None)
    group.add_argument("--slurm-qos", default=None)
    group.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                       help="a shell line run before each job, e.g. 'source .venv/bin/activate' (repeatable)")
    group.add_argument("--slurm-extra", nargs="+", default=[], metavar="KEY=VALUE",
                       help="other sbatch options, e.g. gres=gpu:a100:1 constraint=h100")


def _slurm_options(args: argparse.Namespace):
    """The :class:`~starunet.fanout.SlurmOptions` of the parsed flags; None when no
    ``--slurm-*`` flag was given and the cluster is local (reproduce then refuses
    ``--slurm-*`` flags without ``--cluster slurm``)."""
    from starunet.fanout import SlurmOptions

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
