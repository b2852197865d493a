"""Figures of the data (notebook 01): the STARE images, the field of view, the split,
patches and tiles, the two annotators."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from starunet.metrics import METRIC_NAMES
from starunet.plots import no_ticks
from starunet.stare import FOV_RED_THRESHOLD


SPLIT_COLORS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}

# Figures of photographs are saved at this resolution (dots per inch), below the 100 of
# line plots: a fundus photo compresses badly as PNG, and at 80 dpi a 10-point label is
# still 11 pixels high, legible at 100 % zoom.
PHOTO_DPI = 80


def plot_stare_records(records, ids=None) -> plt.Figure:
    """One row per record: image | ah label | vk label | computed FOV over the image."""
    chosen = [r for r in records if ids is None or r.id in ids]
    fig, axes = plt.subplots(len(chosen), 4, figsize=(10, 2.2 * len(chosen)), squeeze=False)
    for row, r in zip(axes, chosen):
        row[0].imshow(r.image)
        row[1].imshow(r.label, cmap="gray")
        row[2].imshow(r.label_vk, cmap="gray")
        row[3].imshow(r.image)
        row[3].imshow(np.where(r.fov, np.nan, 1.0), cmap="Greys", vmin=0, vmax=1.2, alpha=0.75)
        row[3].contour(r.fov, levels=[0.5], colors="gold", linewidths=1.2)
        row[0].set_ylabel(r.id, fontsize=11)
        row[1].set_xlabel(f"{r.label.mean():.1%} of image, {r.label[r.fov].mean():.1%} of FOV", fontsize=9)
        row[2].set_xlabel(f"{r.label_vk.mean():.1%} of image, {r.label_vk[r.fov].mean():.1%} of FOV", fontsize=9)
        row[3].set_xlabel(f"FOV = {r.fov.mean():.1%} of the image", fontsize=9)
        for ax in row:
            no_ticks(ax)
    for ax, title in zip(axes[0], ("fundus photograph", "vessels: ah (ground truth)",
                                   "vessels: vk (2nd observer)", "computed FOV (outside grey)")):
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.set_dpi(PHOTO_DPI)
    return fig


def plot_fov_method(record, threshold: float | None = None) -> plt.Figure:
    """How :func:`starunet.stare.compute_fov` works on one image: the red channel, the
    histogram of its smoothed values with the threshold, and the cleaned mask."""
    from scipy import ndimage

    threshold = FOV_RED_THRESHOLD if threshold is None else threshold
    red = ndimage.uniform_filter(record.image[..., 0].astype(np.float32), size=5)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), gridspec_kw={"width_ratios": [1, 1.3, 1]})
    axes[0].imshow(record.image[..., 0], cmap="gray")
    axes[0].set_title(f"{record.id}: red channel", fontsize=10)
    bins = np.arange(0, 257, 4)
    axes[1].hist(red[~record.fov], bins=bins, color="0.4", alpha=0.8, label="outside the FOV")
    axes[1].hist(red[record.fov], bins=bins, color="tab:red", alpha=0.6, label="inside the FOV")
    axes[1].axvline(threshold, color="k", ls="--", lw=1.2, label=f"threshold {threshold}")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("red value, 5x5 mean (0-255)")
    axes[1].set_ylabel("pixels (log scale)")
    axes[1].legend(fontsize=8, frameon=False)
    axes[1].set_title("the black surround and the retina separate in red", fontsize=10)
    raw = red > threshold
    axes[2].imshow(record.image)
    axes[2].contour(raw, levels=[0.5], colors="cyan", linewidths=0.6)
    axes[2].contour(record.fov, levels=[0.5], colors="gold", linewidths=1.5)
    axes[2].set_title("threshold (cyan) -> cleaned FOV (gold)", fontsize=10)
    for ax in (axes[0], axes[2]):
        no_ticks(ax)
    fig.tight_layout()
    fig.set_dpi(PHOTO_DPI)
    return fig


def plot_vessel_fractions(summary: list[dict], split=None) -> plt.Figure:
    """Vessel fraction (ah) per image over the whole image vs inside the FOV; tick
    labels coloured by split when ``split`` (a :class:`starunet.data.Split`) is given."""
    ids = [row["id"] for row in summary]
    x = np.arange(len(ids))
    whole = np.array([row["vessel_fraction_image"] for row in summary]) * 100
    inside = np.array([row["vessel_fraction_fov"] for row in summary]) * 100
    fig, ax = plt.subplots(figsize=(12, 3.6))
    ax.bar(x - 0.2, whole, 0.4, color="0.65", label=f"whole image (mean {whole.mean():.1f} %)")
    ax.bar(x + 0.2, inside, 0.4, color="tab:red", label=f"inside the FOV (mean {inside.mean():.1f} %)")
    ax.set_xticks(x, ids, rotation=60, fontsize=9)
    ax.set_ylabel("vessel pixels (%)")
    ax.set_title("Vessels are a small minority class: accuracy alone would flatter any model", fontsize=11)
    handles, labels = ax.get_legend_handles_labels()
    if split is not None:
        from matplotlib.patches import Patch

        for tick, stare_id in zip(ax.get_xticklabels(), ids):
            subset = next(name for name in SPLIT_COLORS if stare_id in getattr(split, name))
            tick.set_color(SPLIT_COLORS[subset])
        handles += [Patch(color=c) for c in SPLIT_COLORS.values()]
        labels += [f"{name} ids ({len(getattr(split, name))})" for name in SPLIT_COLORS]
    ax.legend(handles, labels, fontsize=8, ncol=2, frameon=False, loc="upper left")
    ax.set_ylim(0, max(inside.max(), whole.max()) * 1.35)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def plot_patches(dataset, n: int = 16, start: int = 0, columns: int = 8) -> plt.Figure:
    """Items ``start .. start+n-1`` of a :class:`starunet.data.PatchDataset`: each patch
    above its label (vessels white, outside the FOV tinted red)."""
    n_rows = 2 * int(np.ceil(n / columns))
    fig, axes = plt.subplots(n_rows, columns, figsize=(1.45 * columns, 1.5 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k in range(n):
        image, label, fov = dataset[start + k]
        row, col = 2 * (k // columns), k % columns
        axes[row, col].imshow(image.permute(1, 2, 0).numpy())
        axes[row, col].set_title(f"#{start + k}", fontsize=8)
        overlay = np.stack([label[0].numpy()] * 3, axis=-1)
        overlay[fov[0].numpy() == 0] = (0.45, 0.1, 0.1)
        axes[row + 1, col].imshow(overlay)
    fig.suptitle(f"{n} training patches ({dataset.patch_size}x{dataset.patch_size}, epoch {dataset.epoch}, "
                 f"seed {dataset.seed}, augment={dataset.augment}, color_jitter={dataset.color_jitter})",
                 fontsize=10)
    fig.tight_layout()
    fig.set_dpi(PHOTO_DPI)
    return fig


def plot_tiles(record, tiler) -> plt.Figure:
    """The tiles of a :class:`starunet.inference.Tiler` on an image, and how many cover each pixel."""
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    axes[0].imshow(record.image)
    p = tiler.patch_size
    for k, (r, c) in enumerate(tiler.origins):
        axes[0].add_patch(Rectangle((c - 0.5, r - 0.5), p, p, fill=False, lw=0.6,
                                    color="cyan" if k % 2 else "yellow", alpha=0.7))
    axes[0].set_title(f"{len(tiler)} tiles of {p}x{p}, stride {tiler.stride}", fontsize=10)
    counts = np.zeros((tiler.height, tiler.width), int)
    for r, c in tiler.origins:
        counts[r:r + p, c:c + p] += 1
    shown = axes[1].imshow(counts, cmap="viridis")
    fig.colorbar(shown, ax=axes[1], fraction=0.04, label="tiles covering the pixel")
    axes[1].set_title("overlaps are averaged when tiles are merged", fontsize=10)
    for ax in axes:
        no_ticks(ax)
    fig.tight_layout()
    fig.set_dpi(PHOTO_DPI)
    return fig


def plot_observer_agreement(record) -> plt.Figure:
    """Where annotator vk agrees with ah inside the FOV: both (white), only ah (a vessel
    vk missed: magenta), only vk (a vessel ah did not mark: green)."""
    from matplotlib.patches import Patch

    both, only_ah, only_vk = (record.label & record.label_vk), (record.label & ~record.label_vk), (~record.label & record.label_vk)
    canvas = np.zeros((*record.label.shape, 3))
    canvas[~record.fov] = 0.25
    canvas[both] = (1, 1, 1)
    canvas[only_ah & record.fov] = (0.9, 0.1, 0.9)
    canvas[only_vk & record.fov] = (0.1, 0.85, 0.2)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.7))
    axes[0].imshow(record.image)
    axes[1].imshow(canvas)
    axes[0].set_title(f"{record.id}", fontsize=10)
    axes[1].set_title("vk scored against ah inside the FOV", fontsize=10)
    axes[1].legend([Patch(color=c) for c in ((1, 1, 1), (0.9, 0.1, 0.9), (0.1, 0.85, 0.2))],
                   ["both (TP)", "ah only (FN of vk)", "vk only (FP of vk)"],
                   loc="lower right", fontsize=8, framealpha=0.9)
    for ax in axes:
        no_ticks(ax)
    fig.tight_layout()
    fig.set_dpi(PHOTO_DPI)
    return fig


def plot_human_baseline(pooled: dict[str, float], per_image: dict[str, dict[str, float]]) -> plt.Figure:
    """The second observer's metrics: pooled over the test images (bars) and per image (dots)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1.2, 1]})
    values = [pooled[m] for m in METRIC_NAMES]
    bars = axes[0].bar(METRIC_NAMES, values, color="tab:purple", alpha=0.8)
    axes[0].bar_label(bars, [f"{v:.3f}" for v in values], fontsize=8)
    axes[0].set_ylim(0, 1.1)
    axes[0].set_title(f"vk vs ah, pooled over {len(per_image)} test images (inside the FOV)", fontsize=10)
    shown = ("f1", "se", "pre")
    ids = list(per_image)
    for k, name in enumerate(shown):
        axes[1].plot(np.arange(len(ids)), [per_image[i][name] for i in ids], "o-", lw=0.8, label=name)
    axes[1].set_xticks(np.arange(len(ids)), ids, rotation=60, fontsize=8)
    axes[1].set_ylim(0, 1.05)
    axes[1].legend(fontsize=8, frameon=False, ncol=3, loc="lower left")
    axes[1].set_title("the same, per test image", fontsize=10)
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig
