"""Figures of the course. Each function takes plain data (arrays, records,
histories) and returns a matplotlib ``Figure``; notebooks only call them.

This module holds the styles every figure shares (a fusion's colour, an activation's
line style) and the figures of training and results (notebooks 04-06); the figures of
the data, the theory and the model are :mod:`starunet.plots_data`,
:mod:`starunet.plots_theory` and :mod:`starunet.plots_model`.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from starunet import fusion as _fusion
from starunet.stats import ACTIVATIONS_COMPARED, FUSIONS_COMPARED

# ---------------------------------------------------------------- styles shared by the sections

# A fusion's colour comes from its class (starunet.fusion.fusion_color: Okabe-Ito for the
# built-in ops, colour-blind safe), so it looks the same in every notebook and a new op
# needs no edit here; the line style says the activation: solid without one, dashed with
# ReLU, dotted with GELU/SiLU.
ACTIVATION_STYLES = {"none": "-", "relu": "--", "gelu": ":", "silu": ":"}

# A training budget's colour and marker in every figure that compares budgets (notebooks
# 05, 06): one fixed entry per preset, purples light to dark as the budget grows (hues no
# fusion op uses), each with its own marker so they stay apart without colour.
BUDGET_STYLES = {"smoke": ("#BBBBBB", "x"), "quick": ("#ADA8D3", "v"), "long": ("#8479BC", "s"),
                 "fast": ("#6A51A3", "D"), "full": ("#3F007D", "o"), "curves": ("#000000", "^")}


def budget_style(name: str) -> tuple[str, str]:
    """``(colour, marker)`` of a budget (preset) name; a grey plus for one not in
    :data:`BUDGET_STYLES` (e.g. a reader's own preset)."""
    return BUDGET_STYLES.get(name, ("0.45", "P"))


def no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def fusion_color(fusion: str, default: str = "0.4") -> str:
    """The registered op's colour (:func:`starunet.fusion.fusion_color`); ``default``
    (grey) for a name that is not a registered op, such as a user's model label."""
    return _fusion.fusion_color(fusion) if fusion in _fusion.FUSIONS else default


def as_image(t) -> np.ndarray:
    """(3, H, W) or (1, H, W) tensor/array -> (H, W, 3) or (H, W) numpy for imshow."""
    a = np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=np.float32)
    return a.transpose(1, 2, 0) if a.ndim == 3 and a.shape[0] == 3 else a.squeeze()


# ---------------------------------------------------------------- 04 training

TRAINING_CURVE_TITLES = {
    "train_loss": "training loss (BCE, patches)",
    "val_loss": "validation loss (BCE inside the FOV)",
    "val_pr_auc": "validation PR-AUC",
    "val_roc_auc": "validation ROC-AUC",
    "val_f1": "validation F1 (threshold 0.5)",
}


def plot_training_curves(histories, metrics=("train_loss", "val_loss", "val_pr_auc", "val_roc_auc"),
                         title: str | None = None) -> plt.Figure:
    """Training curves of one or several runs: one panel per history column in
    ``metrics``, one line per run, a ring at each run's best (selected) epoch.

    ``histories``: ``{label: rows}``, rows as returned by
    :func:`starunet.runs.read_history`. Labels starting ``fusion-activation``
    get notebook 05's style (colour = fusion, dashed = ReLU).
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics) + 1.8, 3.2), squeeze=False)
    for label, rows in histories.items():
        style = _config_style(label) if label.count("-") >= 1 else {}
        epochs = [row["epoch"] for row in rows]
        best = [row for row in rows if row.get("is_best")][-1:]  # the last improvement is the kept one
        for ax, metric in zip(axes[0], metrics):
            ax.plot(epochs, [row[metric] for row in rows], marker=".", label=label, **style)
            for row in best:
                ax.plot(row["epoch"], row[metric], "o", mfc="none", ms=9, color=ax.lines[-1].get_color())
    epochs = sorted({row["epoch"] for rows in histories.values() for row in rows})
    for ax, metric in zip(axes[0], metrics):
        ax.set_title(TRAINING_CURVE_TITLES.get(metric, metric), fontsize=10)
        ax.set_xlabel("epoch")
        ax.spines[["top", "right"]].set_visible(False)
        if len(epochs) < 3:  # the integer locator gives up below 2 integers in view (0.96, 0.98, ... for 1 epoch)
            ax.set_xticks(epochs)
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0, -1].legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the data
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_run_panels(histories, metric: str = "val_pr_auc", patches_per_epoch: int | None = None,
                    ncols: int = 3, title: str | None = None) -> plt.Figure:
    """One panel per run (``{label: history rows}``, labels ``fusion-activation...``):
    its ``metric`` after every epoch in its configuration's style, the other runs in
    light grey behind it, one shared y axis, so a run's epoch-to-epoch swing can be
    read against the others' without six lines on one another. The x axis counts
    training patches when ``patches_per_epoch`` is given, else epochs."""
    n = len(histories)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 2.9 * nrows), sharex=True, sharey=True,
                             squeeze=False)
    scale = patches_per_epoch or 1
    series = {label: ([row["epoch"] * scale for row in rows], [row[metric] for row in rows])
              for label, rows in histories.items()}
    for ax, (label, (x, y)) in zip(axes.flat, series.items()):
        for other, (ox, oy) in series.items():
            if other != label:
                ax.plot(ox, oy, color="0.85", lw=0.8, zorder=1)
        ax.plot(x, y, lw=1.4, zorder=2, **(_config_style(label) if label.count("-") >= 1 else {}))
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(TRAINING_CURVE_TITLES.get(metric, metric), fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("training patches seen" if patches_per_epoch else "epoch", fontsize=9)
        if patches_per_epoch:
            ax.xaxis.set_major_formatter(lambda value, _: f"{value / 1000:g}k" if value else "0")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- 05 evaluation

ERROR_COLORS = {"TP": (1.0, 1.0, 1.0), "FP": (0.835, 0.369, 0.0), "FN": (0.337, 0.706, 0.914),
                "TN": (0.0, 0.0, 0.0), "outside FOV": (0.25, 0.25, 0.25)}


def plot_lr_schedules(configs) -> plt.Figure:
    """The learning rate of every step of each config (``{label: TrainConfig}``)
    against training patches seen: what ``TrainConfig.learning_rate`` gives ``train``."""
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    for label, config in configs.items():
        steps = np.arange(config.total_steps())
        ax.plot(steps * config.batch_size, [config.learning_rate(int(s)) for s in steps], label=label,
                color=budget_style(config.preset)[0])  # a preset's colour, as in every budget figure
    ax.set_title("learning rate of each training step", fontsize=10)
    ax.set_xlabel("training patches seen")
    ax.set_ylabel("learning rate")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def error_map(prob: np.ndarray, label: np.ndarray, fov: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``(H, W, 3)`` float RGB of the errors at ``threshold``: TP white, FP orange,
    FN blue, TN black, outside the FOV grey (colours: :data:`ERROR_COLORS`)."""
    pred = np.asarray(prob) >= threshold
    truth, fov = np.asarray(label, bool), np.asarray(fov, bool)
    rgb = np.empty(truth.shape + (3,), dtype=np.float32)
    rgb[:] = ERROR_COLORS["outside FOV"]
    for name, where in (("TN", ~pred & ~truth), ("TP", pred & truth), ("FP", pred & ~truth), ("FN", ~pred & truth)):
        rgb[where & fov] = ERROR_COLORS[name]
    return rgb


def _config_style(key: str) -> dict:
    """Line style of a run key ``fusion-activation-seedN`` (grey for a fusion without a colour)."""
    fusion, activation = key.split("-")[:2]
    return {"color": fusion_color(fusion), "linestyle": ACTIVATION_STYLES.get(activation, ":")}


def plot_roc_pr(curves, markers=None, roc_xmax: float = 0.3, title: str | None = None, per_run: bool = False):
    """ROC and PR curves of several runs side by side.

    ``curves``: ``{run_key: {"roc": {"fpr", "tpr"}, "pr": {"recall", "precision"}}}``
    (keys ``fusion-activation-seedN``). By default runs of one configuration share
    a colour and one legend entry; ``per_run=True`` gives every run its own legend
    entry, in its configuration's style (to compare two runs). ``markers``: ``{label: metrics}`` drawn as
    points at their operating point (``1 - sp, se`` and ``se, pre``), e.g. the
    second observer. The ROC x-axis stops at ``roc_xmax``: all models live in its
    top-left corner.
    """
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 4.6))
    seen, drawn = set(), set()
    for key, curve in curves.items():
        config = key.rsplit("-seed", 1)[0]
        if per_run:  # each run its configuration's style; a second run of one configuration dotted
            label, style = key, _config_style(key)
            if (style["color"], style["linestyle"]) in drawn:
                style["linestyle"] = ":"
            drawn.add((style["color"], style["linestyle"]))
        else:
            label = None if config in seen else config.replace("-", " / ")
            style = _config_style(key)
        seen.add(config)
        ax_roc.plot(curve["roc"]["fpr"], curve["roc"]["tpr"], lw=1.2, alpha=0.8, label=label, **style)
        ax_pr.plot(curve["pr"]["recall"], curve["pr"]["precision"], lw=1.2, alpha=0.8, label=label, **style)
    for (name, m), marker in zip((markers or {}).items(), "o^sD"):
        ax_roc.plot(1 - m["sp"], m["se"], marker, color="black", ms=7, label=name, zorder=5)
        ax_pr.plot(m["se"], m["pre"], marker, color="black", ms=7, label=name, zorder=5)
    ax_roc.set(xlim=(0, roc_xmax), ylim=(0, 1.01), xlabel="false positive rate (1 - Sp)",
               ylabel="true positive rate (Se)", title=f"ROC (x-axis cut at {roc_xmax})")
    ax_pr.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (Se)", ylabel="precision (Pre)", title="precision-recall")
    for ax in (ax_roc, ax_pr):
        ax.grid(alpha=0.3)
    ax_pr.legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_prediction_panels(image, label, fov, probabilities, threshold: float = 0.5,
                           crop: tuple[int, int, int, int] | None = None, title: str | None = None):
    """Image and ground truth, then for each run its probability map and error map.

    ``probabilities``: ``{run name: (H, W) array}``. Error maps: TP white, FP orange,
    FN blue, TN black, outside the FOV grey (see :func:`error_map`).
    ``crop=(top, bottom, left, right)`` zooms in on a region (thin vessels vanish
    when a 700-pixel image is drawn 2.6 inches wide).
    """
    from matplotlib.patches import Patch


    window = (slice(crop[0], crop[1]), slice(crop[2], crop[3])) if crop else (slice(None), slice(None))
    n = len(probabilities)
    fig, axes = plt.subplots(2, n + 1, figsize=(2.6 * (n + 1), 6.4), squeeze=False)
    axes[0, 0].imshow(np.asarray(image)[window])
    axes[0, 0].set_title("image")
    axes[1, 0].imshow(np.asarray(label)[window], cmap="gray")
    axes[1, 0].set_title("ground truth (ah)")
    for col, (name, prob) in enumerate(probabilities.items(), start=1):
        axes[0, col].imshow(np.asarray(prob)[window], cmap="magma", vmin=0, vmax=1)
        axes[0, col].set_title(f"{name}\nprobability", fontsize=9)
        axes[1, col].imshow(error_map(prob, label, fov, threshold)[window])
        axes[1, col].set_title(f"errors at threshold {threshold}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(facecolor=c, edgecolor="0.5", label=k) for k, c in ERROR_COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1), h_pad=2.0)
    return fig


def plot_seed_metrics(runs, metrics=("roc_auc", "pr_auc", "f1")):
    """Every run's test metric as a dot, per configuration, with the mean over seeds
    as a bar; grey lines join the sum and star runs of the same seed (the pairs the
    paired differences use)."""
    configs = [(f, a) for a in ACTIVATIONS_COMPARED for f in FUSIONS_COMPARED
               if any(r["fusion"] == f and r["activation"] == a for r in runs)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for x, (fusion, act) in enumerate(configs):
            values = [float(r[metric]) for r in runs if r["fusion"] == fusion and r["activation"] == act]
            style = _config_style(f"{fusion}-{act}")
            ax.hlines(np.mean(values), x - 0.3, x + 0.3, color=style["color"], lw=2)
            ax.plot([x] * len(values), values, "o", color=style["color"], alpha=0.8,
                    mfc="none" if act == "relu" else style["color"])
        for act in ACTIVATIONS_COMPARED:
            xs = [configs.index((f, act)) for f in FUSIONS_COMPARED if (f, act) in configs]
            if len(xs) < 2:
                continue
            for seed in sorted({r["seed"] for r in runs}):
                pair = [next((float(r[metric]) for r in runs if r["fusion"] == f and r["activation"] == act
                              and r["seed"] == seed), np.nan) for f in FUSIONS_COMPARED]
                ax.plot(xs, pair, color="0.6", lw=0.8, zorder=0)
        ax.set_xticks(range(len(configs)), [f"{f}\n{a}" for f, a in configs])
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("test metrics per run (dots) and mean over seeds (bars)")
    fig.tight_layout()
    return fig


def plot_paired_differences(diffs):
    """Forest plot of paired differences b − a (:class:`~starunet.stats.PairedDifference`),
    one panel per comparison, one row per metric: the mean and its interval in the
    colour of ``b``'s fusion; hollow markers: no verdict of better or worse."""
    return _forest_panels({"": diffs})


def plot_budget_differences(diffs_by_grid):
    """Forest plot of the comparisons of grids trained with different budgets
    (``{preset: [PairedDifference, ...]}``, see ``stats.budget_differences``): one panel
    per comparison, one row per metric, each budget in its colour and marker of
    :data:`BUDGET_STYLES` (the same in every figure): does a difference shrink, grow or
    flip with more training?"""
    return _forest_panels(diffs_by_grid)


def plot_config_differences(diffs):
    """Forest plot of the paired differences b − a of several configuration pairs
    (:func:`starunet.stats.config_differences`), one panel per pair."""
    return _forest_panels({"": diffs})


def _forest_panels(series: dict, ncols: int = 3):
    """``series``: ``{budget name or "": [PairedDifference, ...]}``. One panel per
    comparison (titled by it), one row per metric, each series offset within the row;
    a named series is drawn in its budget style and named in a legend below the panels,
    an unnamed one in the colour of the compared fusion."""
    diffs = [d for group in series.values() for d in group]
    comparisons = list(dict.fromkeys(d.comparison for d in diffs))
    metrics = list(dict.fromkeys(d.metric for d in diffs))
    ncols = max(1, min(ncols, len(comparisons)))
    nrows = -(-len(comparisons) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.9 * ncols, (0.42 * len(metrics) * max(1, len(series)) ** 0.5
                                                               + 1.5) * nrows),
                             sharex=True, sharey=True, squeeze=False)
    offsets = np.linspace(-0.25, 0.25, len(series)) if len(series) > 1 else [0.0]
    for ax, comparison in zip(axes.flat, comparisons):
        for off, (name, group) in zip(offsets, series.items()):
            for d in (d for d in group if d.comparison == comparison):
                color, marker = budget_style(name) if name else (fusion_color(d.config_b.fusion), "o")
                ax.errorbar(d.mean, metrics.index(d.metric) + off, xerr=[[d.mean - d.low], [d.high - d.mean]],
                            fmt=marker, capsize=3, color=color, ms=6,
                            mfc="white" if d.verdict in ("inconclusive", "equivalent") else color)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(comparison, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes.flat[len(comparisons):]:
        ax.set_visible(False)
    axes[0, 0].set_yticks(range(len(metrics)), metrics)
    axes[0, 0].invert_yaxis()
    level = diffs[0].level if diffs else 0.95
    what = {"pooled": "pooled metric, per-seed difference", "per_image": "mean per-image difference"}
    statistic = " / ".join(what[s] for s in dict.fromkeys(d.statistic for d in diffs)) or "difference"
    levels = sorted({f"{100 * d.level:.1f}%" for d in diffs if d.n_seeds > 1}) or ["no"]
    for ax in axes[-1]:
        ax.set_xlabel(f"b − a ({statistic})", fontsize=9)
    named = [name for name in series if name]
    if named:
        handles = [plt.Line2D([], [], color=budget_style(n)[0], marker=budget_style(n)[1], ls="", label=n)
                   for n in named]
        fig.legend(handles=handles, title="budget (preset)", loc="lower center", ncol=len(handles),
                   fontsize=9, frameon=False)
    fig.suptitle(f"paired differences with {' / '.join(levels)} intervals (Bonferroni); "
                 "hollow = inconclusive or equivalent", fontsize=10)
    fig.tight_layout(rect=(0, 0.1 if named else 0, 1, 1))
    return fig


# ---------------------------------------------------------------- 06 learning curves

def plot_learning_curves(points, metrics=("roc_auc", "pr_auc", "f1"), human=None, source=None,
                         title: str | None = None) -> plt.Figure:
    """Test metrics against training patches seen (log axis), one line per run.

    ``points``: rows with ``fusion, activation, seed, patches`` and the metrics (e.g.
    :class:`starunet.results.CurveResults` ``.points``); colour = fusion, line style =
    activation, the first seed of a configuration drawn solid, later seeds fainter.
    ``human``: the second observer's metrics, a black dashed line; ``source``: the
    source's published rows (``{activation: {fusion: metrics}}``), dotted lines in the
    fusion's colour, labelled at the right edge.
    """
    labels = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "f1": "F1 (threshold 0.5)"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 4.2), squeeze=False)
    runs: dict[tuple, list] = {}
    for row in points:
        runs.setdefault((row["fusion"], row["activation"], int(row["seed"])), []).append(row)
    first_seed: dict[tuple, int] = {}
    for fusion, activation, seed in sorted(runs, key=lambda k: k[2]):
        first_seed.setdefault((fusion, activation), seed)
    budgets = sorted({int(r["patches"]) for r in points})
    for ax, metric in zip(axes[0], metrics):
        for (fusion, activation, seed), rows in runs.items():
            rows = sorted(rows, key=lambda r: r["patches"])
            main = first_seed[(fusion, activation)] == seed
            ax.plot([r["patches"] for r in rows], [r[metric] for r in rows], marker="o", markersize=3.5,
                    color=fusion_color(fusion), linestyle=ACTIVATION_STYLES.get(activation, ":"),
                    alpha=1.0 if main else 0.45, lw=1.8 if main else 1.2,
                    label=f"{fusion} / {activation}" + ("" if main else f" (seed {seed})"))
        if human is not None and metric in human:
            ax.axhline(human[metric], color="black", linestyle="--", lw=1, label="second observer (vk)")
        for activation, rows in (source or {}).items():
            for fusion, values in rows.items():
                if metric in values:
                    ax.axhline(values[metric], color=fusion_color(fusion), lw=1,
                               linestyle=(0, (1, 2)) if activation == "none" else (0, (5, 2, 1, 2)))
                    ax.annotate(f"source {fusion}/{activation}", (1.0, values[metric]), xycoords=("axes fraction", "data"),
                                xytext=(2, 0), textcoords="offset points", fontsize=6.5, va="center",
                                color=fusion_color(fusion))
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [f"{b // 1024}k" if b >= 1024 else str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("training patches seen (best validation weights so far)")
        ax.set_title(labels.get(metric, metric), fontsize=10)
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(5, len(names)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * ((len(names) - 1) // 5), 1, 1))
    return fig
