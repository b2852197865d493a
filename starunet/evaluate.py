"""Scoring one trained run on whole test images: the numbers the question is decided on.

1. **Inference on whole test images**: :func:`starunet.inference.predict_images`
   (the padded whole image by default; overlapping tiles measured beside it).
2. **Metrics** from :mod:`starunet.metrics`: pooled over all test pixels inside the
   field of view at threshold 0.5 (the usual retinal-vessel protocol), plus per-image
   metrics and down-sampled ROC / PR curve points. Because the fixed 0.5 also measures
   how a network is *calibrated*, every run is scored a second time at the threshold
   that maximises F1 on its own validation images
   (:func:`starunet.metrics.f1_optimal_threshold`; columns ``val_threshold``,
   ``f1_tuned``, ``se_tuned``, ``pre_tuned``): the test images never choose it.

The grid of runs over seeds is :mod:`starunet.grid`; statistics over seeds are
:mod:`starunet.stats`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from starunet.data import select_records
from starunet.inference import DEFAULT_METHOD, predict_images
from starunet.metrics import (METRIC_NAMES, confusion_counts, f1_optimal_threshold, rates_from_counts, roc_pr_curves,
                              segmentation_metrics)
from starunet.runs import load_model, read_config

EVALUATION_VERSION = 3  # bump when evaluation changes numbers: cached evaluations are then redone
# 2: starunet.inference (BatchNorm folded), test metrics within 1e-6 of version 1
# 3: + the validation-tuned threshold (TUNED_COLUMNS); version-2 numbers unchanged


@dataclass
class RunEvaluation:
    """Everything measured on one run's test images.

    ``pooled``: metrics over all FOV pixels of all test images (threshold 0.5);
    ``per_image``: ``{image_id: metrics}``; ``curves``: see :func:`roc_pr_curves`;
    ``probabilities``: ``{image_id: (H, W) float32}`` (kept in memory only).
    ``val_threshold``: the F1-optimal threshold on the run's validation images (None
    until :meth:`score_at_threshold`); ``tuned``: pooled :data:`starunet.stats.TUNED_METRICS` at it;
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

    ``run_dir`` is a run directory written by :func:`starunet.training.train`;
    ``ids`` the test image ids (default: the test split of the run's config);
    ``which`` the checkpoint (``"best"`` or ``"last"``); ``records`` the loaded STARE
    records (:func:`starunet.stare.load_stare`) that contain those ids and, with
    ``tune_threshold``, the run's validation ids too: the test images are then also
    scored at the threshold that maximises F1 on the validation images
    (:meth:`RunEvaluation.score_at_threshold`).
    """
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

