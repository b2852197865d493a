"""The source experiment as cited data: its settings and its two published tables; and
the published STARE baselines of Idiap's bob.ip.binseg on the same split, with the
statistic they report computed for our runs (:func:`mean_image_f1`).

Nothing here was measured by this project. The numbers are those printed in the blog
post this course reproduces (:data:`SOURCE_CITATION`), entered from the project's
transcription of its tables (``shared/source/README.md``), so that notebook 05 can show
the source's rows beside ours in the source's own format.

The source's "提升" (improvement) row is the **absolute** difference star − sum in
percentage points (0.9312 − 0.9039 = 0.0273 is printed "↑2.73%"), not a relative
change; :func:`improvement_points` computes it that way for the source and for us alike.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from starunet.metrics import METRIC_NAMES

SOURCE_CITATION = {
    "title": "【U-Net验证】逐元素乘积将特征投射到极高维隐式特征空间的能力 "
             "(U-Net check: the element-wise product projects features into a very "
             "high-dimensional implicit feature space)",
    "urls": ["http://www.coreui.cn/news/360409.html", "http://mzph.cn/pingmian/20945.shtml"],
    "sections": "实验设置, w/o-ReLU的性能比较, with-ReLU的性能比较",
    "cites": "X. Ma et al., 'Rewrite the Stars', CVPR 2024; tyb311/SkelCon (GitHub)",
}

# The post's table 实验设置 (settings). It does not say how the test set was chosen, nor
# whether it scored patches or whole images, inside the FOV or not, nor the threshold.
SOURCE_SETTINGS = {"seed": 2024, "val_ratio": 0.2, "batch_size": 8, "early_stop": 10, "lr": 0.0005,
                   "optimizer": "adam", "image_size": "96x96", "dataset": "STARE", "parameters": "2.94M"}


def _row(*values: float) -> dict[str, float]:
    return dict(zip(METRIC_NAMES, values))  # roc_auc, pr_auc, f1, acc, se, sp, pre: the post's column order


# {activation: {fusion: {metric: value}}}, as printed (4 decimals).
SOURCE_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    "none": {"sum": _row(0.9039, 0.7139, 0.6530, 0.9271, 0.5939, 0.9706, 0.7251),
             "star": _row(0.9312, 0.7407, 0.6835, 0.9330, 0.6271, 0.9729, 0.7511)},
    "relu": {"sum": _row(0.9743, 0.8732, 0.7846, 0.9500, 0.7888, 0.9710, 0.7805),
             "star": _row(0.9706, 0.8613, 0.7750, 0.9483, 0.7715, 0.9713, 0.7786)},
}

# The post's "提升" rows, exactly as printed: kept so a test can recompute them.
SOURCE_IMPROVEMENT_ROWS: dict[str, dict[str, str]] = {
    "none": dict(zip(METRIC_NAMES, ["↑2.73%", "↑2.68%", "↑3.05%", "↑0.59%", "↑3.32%", "↑0.23%", "↑2.60%"])),
    "relu": dict(zip(METRIC_NAMES, ["↓0.37%", "↓1.19%", "↓0.96%", "↓0.17%", "↓1.73%", "↑0.03%", "↓0.19%"])),
}


def improvement_points(sum_: Mapping[str, float], star: Mapping[str, float]) -> dict[str, float]:
    """The "提升" row as the source computes it: star − sum in percentage points."""
    return {m: 100.0 * (star[m] - sum_[m]) for m in sum_ if m in star}


def format_points(points: float) -> str:
    """One "提升" cell in the source's format with our arrows: ``▲ 2.73``, ``▼ 0.37``
    (percentage points; ``=`` when equal to the printed 2 decimals)."""
    if math.isnan(points):
        return "n/a"
    rounded = round(points, 2)
    arrow = "▲" if rounded > 0 else "▼" if rounded < 0 else "="
    return f"{arrow} {abs(rounded):.2f}"


def parse_printed_improvement(cell: str) -> float:
    """A printed source cell (``"↑2.73%"``, ``"↓0.37%"``) as signed percentage points."""
    sign = {"↑": 1.0, "↓": -1.0}.get(cell[:1])
    if sign is None or not cell.endswith("%"):
        raise ValueError(f"not a printed 提升 cell: {cell!r} (expected e.g. '↑2.73%')")
    return sign * float(cell[1:-1])


def implied_prevalence(row: Mapping[str, float]) -> float:
    """The vessel fraction ``p`` of the scored pixels implied by a row's Acc, Se and Sp:
    ``Acc = p·Se + (1 − p)·Sp``, so ``p = (Sp − Acc) / (Sp − Se)``."""
    return (row["sp"] - row["acc"]) / (row["sp"] - row["se"])


def source_prevalences() -> dict[str, float]:
    """:func:`implied_prevalence` of each of the source's four rows, e.g. ``"sum, none"``."""
    return {f"{fusion}, {activation}": implied_prevalence(row)
            for activation, rows in SOURCE_RESULTS.items() for fusion, row in rows.items()}


# Idiap's bob.ip.binseg STARE 'ah' protocol is this course's 10/10 split (train im0001-0005,
# im0044, im0077, im0081, im0082, im0139; the other 10 for testing). Its published F1 is the
# mean over the test images of each image's F1, at one threshold chosen on the training
# images. Cited, not measured here.
IDIAP_CITATION = ("bob.ip.binseg (Idiap Research Institute), doc/results/baselines: STARE, protocol 'ah', "
                  "F1 mean over test images at the threshold chosen on the training set")
IDIAP_STARE_F1: dict[str, float] = {"U-Net": 0.828, "DRIU": 0.828, "HED": 0.815, "M2U-Net": 0.818,
                                    "Little W-Net (68k parameters)": 0.839, "second annotator": 0.759}


def mean_image_f1(per_image_rows: Sequence[Mapping], column: str = "f1_tuned") -> dict[tuple[str, str], list[float]]:
    """Idiap's statistic for our runs: per configuration ``(fusion, activation)``, one
    value per seed, the mean over that run's test images of the per-image F1 at the
    run's validation-chosen threshold (``f1_tuned`` of ``per_image.csv``)."""
    by_run: dict[tuple[str, str, int], list[float]] = {}
    for r in per_image_rows:
        if r.get(column, "") != "":
            by_run.setdefault((str(r["fusion"]), str(r["activation"]), int(r["seed"])), []).append(float(r[column]))
    out: dict[tuple[str, str], list[float]] = {}
    # the grid's order: without ReLU first, sum before star; then other configurations by name
    def order(item):
        (fusion, activation, seed), _ = item
        return activation != "none", activation, fusion != "sum", fusion, seed

    for (fusion, activation, _), values in sorted(by_run.items(), key=order):
        out.setdefault((fusion, activation), []).append(sum(values) / len(values))
    return out


def baseline_rows(per_image_rows: Sequence[Mapping]) -> list[list[str]]:
    """Table rows: our configurations in Idiap's statistic (:func:`mean_image_f1`, mean ±
    std over seeds), then the cited bob.ip.binseg rows."""
    rows = []
    for (fusion, activation), values in mean_image_f1(per_image_rows).items():
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else math.nan
        spread = "" if math.isnan(std) else f" ± {std:.3f}"
        rows.append([f"ours: {fusion}/{activation}, {len(values)} seed(s)", f"{mean:.3f}{spread}"])
    rows += [[f"bob.ip.binseg (cited): {name}", f"{value:.3f}"] for name, value in IDIAP_STARE_F1.items()]
    return rows
