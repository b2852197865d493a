"""Figures of the course. Each function takes plain data (arrays, records,
histories) and returns a matplotlib ``Figure``; notebooks only call them.

The file is organised in sections, one per notebook, so that figures live
beside the others of their topic.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from starunet import fusion as _fusion

# ---------------------------------------------------------------- styles shared by the sections

# A fusion's colour comes from its class (starunet.fusion.fusion_color: Okabe-Ito for the
# built-in ops, colour-blind safe), so it looks the same in every notebook and a new op
# needs no edit here; the line style says the activation: solid without one, dashed with
# ReLU, dotted with GELU/SiLU.
ACTIVATION_STYLES = {"none": "-", "relu": "--", "gelu": ":", "silu": ":"}

# ---------------------------------------------------------------- 01 data

SPLIT_COLORS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_stare_records(records, ids=None) -> plt.Figure:
    """One row per record: image | ah label | vk label | computed FOV over the image."""
    chosen = [r for r in records if ids is None or r.id in ids]
    fig, axes = plt.subplots(len(chosen), 4, figsize=(12, 2.55 * len(chosen)), squeeze=False)
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
            _no_ticks(ax)
    for ax, title in zip(axes[0], ("fundus image", "vessels, annotator ah (ground truth)",
                                   "vessels, annotator vk (2nd observer)", "computed FOV (outside greyed)")):
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_fov_method(record, threshold: float | None = None) -> plt.Figure:
    """How :func:`starunet.data.compute_fov` works on one image: the red channel, the
    histogram of its smoothed values with the threshold, and the cleaned mask."""
    from scipy import ndimage

    from starunet.data import FOV_RED_THRESHOLD

    threshold = FOV_RED_THRESHOLD if threshold is None else threshold
    red = ndimage.uniform_filter(record.image[..., 0].astype(np.float32), size=5)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 1.3, 1]})
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
        _no_ticks(ax)
    fig.tight_layout()
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
    return fig


def plot_tiles(record, tiler) -> plt.Figure:
    """The tiles of a :class:`starunet.inference.Tiler` on an image, and how many cover each pixel."""
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
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
        _no_ticks(ax)
    fig.tight_layout()
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
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    axes[0].imshow(record.image)
    axes[1].imshow(canvas)
    axes[0].set_title(f"{record.id}", fontsize=10)
    axes[1].set_title("vk scored against ah inside the FOV", fontsize=10)
    axes[1].legend([Patch(color=c) for c in ((1, 1, 1), (0.9, 0.1, 0.9), (0.1, 0.85, 0.2))],
                   ["both (TP)", "ah only (FN of vk)", "vk only (FP of vk)"],
                   loc="lower right", fontsize=8, framealpha=0.9)
    for ax in axes:
        _no_ticks(ax)
    fig.tight_layout()
    return fig


def plot_human_baseline(pooled: dict[str, float], per_image: dict[str, dict[str, float]]) -> plt.Figure:
    """The second observer's metrics: pooled over the test images (bars) and per image (dots)."""
    from starunet.metrics import METRIC_NAMES

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


# ---------------------------------------------------------------- 02 theory

_TOY_COLORS = ("#d95f02", "#1b9e77")  # class 0, class 1 (colour-blind safe pair)


def plot_implicit_dimension(ds, depths) -> plt.Figure:
    """Implicit feature dimension of stacked star layers vs input width d, one
    colour per depth: exact monomial count (solid) and the estimate of Ma et al.
    (dashed), on a log scale."""
    from starunet.theory import implicit_dimension, paper_implicit_dimension

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, depth in enumerate(depths):
        color = plt.cm.viridis(k / max(len(depths) - 1, 1) * 0.85)
        exact = [np.log10(float(implicit_dimension(d, depth))) for d in ds]
        paper = [np.log10(paper_implicit_dimension(d, depth)) for d in ds]
        ax.plot(ds, exact, "-o", color=color, ms=3, label=f"{depth} layer{'s' if depth > 1 else ''} "
                                                          f"(degree {2**depth})")
        ax.plot(ds, paper, "--", color=color, lw=1)
    ax.plot([], [], "k-", label="exact: C(d + 2^l, 2^l)")
    ax.plot([], [], "k--", lw=1, label="Ma et al.: (d/√2)^(2^l)")
    ax.set(xscale="log", xlabel="input width d (channels)", ylabel="log10 implicit dimension",
           title="Star layers reach huge feature spaces without widening")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_line_responses(curves) -> plt.Figure:
    """One panel per ``(title, ts, values)``: a function's output along a straight
    line through its input space. Affine maps stay straight; products curve; max
    pooling bends."""
    fig, axes = plt.subplots(1, len(curves), figsize=(3.3 * len(curves), 3.0), squeeze=False)
    for ax, (title, ts, values) in zip(axes[0], curves):
        ax.plot(ts, np.asarray(values).reshape(len(ts), -1), lw=1.5)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("t (position on the line)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("output")
    fig.tight_layout()
    return fig


def plot_star_scales(input_scales, raw, normalized) -> plt.Figure:
    """RMS of the features after each bias-free star layer, for inputs scaled by
    each of ``input_scales``: without (left) and with (right) normalisation."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), sharey=True)
    for ax, rms, title in zip(axes, (raw, normalized), ("no normalisation", "standardised after each layer")):
        for scale, row in zip(input_scales, rms):
            ax.plot(range(len(row)), row, "-o", ms=4, label=f"input × {scale:g}")
        ax.set(yscale="log", xlabel="star layers applied", title=title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("feature RMS (log scale)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _draw_toy_boundary(ax, result, resolution: int = 150) -> None:
    """Probability shading, the P = 0.5 line and a sample of test points, on ``ax``."""
    from starunet.theory import decision_surface

    data = result.data
    xx, yy, prob = decision_surface(result.net, (-2.6, 2.6, -2.6, 2.6), resolution)
    # antialiased=False: with it, the saved notebook grows ~3x for no visible gain
    ax.contourf(xx, yy, prob, levels=np.linspace(0, 1, 11), cmap="PuOr", alpha=0.55, antialiased=False)
    ax.contour(xx, yy, prob, levels=[0.5], colors="k", linewidths=1.2)
    x, y = data.x_test.numpy(), data.y_test.numpy()
    for label in (0, 1):
        pts = x[y == label][:200]  # a sample keeps the panel readable
        ax.scatter(pts[:, 0], pts[:, 1], s=5, color=_TOY_COLORS[label], edgecolors="none", antialiased=False)
    ax.set(xlim=(-2.6, 2.6), ylim=(-2.6, 2.6), xticks=[], yticks=[], aspect="equal")


def plot_decision_boundary(result, resolution: int = 150) -> plt.Figure:
    """One trained toy network: its probability surface, the 0.5 boundary and the test points."""
    fig, ax = plt.subplots(figsize=(4.4, 4.6))
    _draw_toy_boundary(ax, result, resolution)
    ax.set_xlabel("dots: test points (orange class 0, green class 1)\n"
                  "shading: P(class 1); black line: P = 0.5", fontsize=8)
    ax.set_title(f"{result.dataset}, fusion {result.fusion!r}, activation {result.activation!r}\n"
                 f"depth {result.depth}, width {result.width}, {result.n_params} params, seed {result.seed}\n"
                 f"train {100 * result.train_acc:.1f} %, test {100 * result.test_acc:.1f} %", fontsize=9)
    fig.tight_layout()
    return fig


def plot_toy_grid(results, seed: int | None = None, resolution: int = 100) -> plt.Figure:
    """Decision boundaries side by side: one row per dataset, one column per
    fusion/activation, for one seed (default: the first one in ``results``)."""
    seed = results[0].seed if seed is None else seed
    chosen = [r for r in results if r.seed == seed]
    datasets = list(dict.fromkeys(r.dataset for r in chosen))
    models = list(dict.fromkeys(r.model_name for r in chosen))
    fig, axes = plt.subplots(len(datasets), len(models), figsize=(2.1 * len(models), 2.25 * len(datasets)),
                             squeeze=False)
    for r in chosen:
        ax = axes[datasets.index(r.dataset), models.index(r.model_name)]
        _draw_toy_boundary(ax, r, resolution)
        ax.text(0.03, 0.03, f"{100 * r.test_acc:.1f} %", transform=ax.transAxes, fontsize=9,
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="none", pad=1))
    for j, m in enumerate(models):
        axes[0, j].set_title(m, fontsize=10)
    for i, d in enumerate(datasets):
        axes[i, 0].set_ylabel(d, fontsize=10)
    fig.suptitle(f"Decision boundaries, seed {seed} (test accuracy in the corner)\n"
                 "dots: test points (orange class 0, green class 1); shading: predicted P(class 1), "
                 "brown low to purple high; black line: P = 0.5", fontsize=10)
    fig.tight_layout()
    return fig


def plot_toy_accuracies(summary) -> plt.Figure:
    """Grouped bars: mean test accuracy per dataset and model, error bars one std over seeds."""
    datasets = list(dict.fromkeys(r["dataset"] for r in summary))
    models = list(dict.fromkeys(r["model"] for r in summary))
    cell = {(r["model"], r["dataset"]): r for r in summary}
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(9.5, 3.6))
    for k, m in enumerate(models):
        means = [100 * cell[m, d]["mean"] for d in datasets]
        stds = [100 * cell[m, d]["std"] for d in datasets]
        ax.bar(np.arange(len(datasets)) + (k - (len(models) - 1) / 2) * width, means, width,
               yerr=stds, capsize=2, label=m, color=plt.cm.tab20(k % 20))  # pairs: dark, light
    n_seeds = summary[0]["n_seeds"]
    ax.set(xticks=np.arange(len(datasets)), xticklabels=datasets, ylim=(40, 101),
           ylabel="test accuracy (%)", title=f"Mean ± std over {n_seeds} seed{'s' if n_seeds > 1 else ''}")
    ax.axhline(50, color="gray", lw=0.8, ls=":")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- 03 model

def fusion_color(fusion: str, default: str = "0.4") -> str:
    """The registered op's colour (:func:`starunet.fusion.fusion_color`); ``default``
    (grey) for a name that is not a registered op, such as a user's model label."""
    return _fusion.fusion_color(fusion) if fusion in _fusion.FUSIONS else default


def plot_unet_architecture(rows: list[dict], input_size: int = 96) -> plt.Figure:
    """Draw the U-Net from its :func:`starunet.model.parameter_table` ``rows``: encoder
    blocks down the left, decoder blocks up the right, a fusion node where each skip
    arrives; every box shows channels, resolution and parameters."""
    blocks = {r["block"].split(" ")[0]: r for r in rows}
    fusion_rows = [r for r in rows if r["block"].startswith("fusion")]
    fusion_name = fusion_rows[0]["block"].split("(")[1].rstrip(")") if fusion_rows else "none"
    symbol = _fusion.fusion_symbol(fusion_name) if fusion_name in _fusion.FUSIONS else fusion_name
    n_levels = sum(name.startswith("encoder") for name in blocks)
    enc_x, fuse_x, dec_x, bottom_x, head_x = 0.0, 4.4, 6.0, 3.0, 7.8
    fig, ax = plt.subplots(figsize=(11, 6.2))
    artists = {}

    def node(name, x, level, text, color, style="round,pad=0.35"):
        artists[name] = ax.text(x, -level, text, ha="center", va="center", fontsize=8.5,
                                bbox=dict(boxstyle=style, facecolor=color, linewidth=1.2))

    def block(name, x, level, color):
        r, size = blocks[name], input_size // 2**level
        node(name, x, level, f"{name}\n{r['in_channels']}→{r['out_channels']}, {size}×{size}\n"
             f"{r['params']:,} params", color)

    def link(a, b, label="", **style):
        ax.annotate("", xy=(0.5, 0.5), xycoords=artists[b], xytext=(0.5, 0.5), textcoords=artists[a],
                    arrowprops={**dict(arrowstyle="-|>", color="0.3", lw=1.2, shrinkA=2, shrinkB=2,
                                       patchA=artists[a].get_bbox_patch(),
                                       patchB=artists[b].get_bbox_patch()), **style})
        if label:
            (xa, ya), (xb, yb) = artists[a].get_position(), artists[b].get_position()
            ax.text((xa + xb) / 2, (ya + yb) / 2 + 0.05, label, fontsize=7.5, color="0.35",
                    ha="center", va="bottom")

    # Nodes first (the arrows clip against their boxes).
    for level in range(n_levels):
        block(f"encoder{level + 1}", enc_x, level, "#cfe2f3")
    for k in range(1, n_levels + 1):  # decoder k works at level n_levels + 1 - k
        block(f"decoder{k}", bottom_x if k == 1 else dec_x, n_levels + 1 - k, "#d9ead3")
        if f"fusion{k}" in blocks:
            node(f"fusion{k}", fuse_x, n_levels - k, symbol, "#fce5cd", "circle,pad=0.3")
            artists[f"fusion{k}"].set_fontsize(13)
    head = blocks["head"]
    node("head", head_x, 0, f"head 1×1 conv\n{head['in_channels']}→{head['out_channels']} logits\n"
         f"{head['params']:,} params", "#ead1dc")
    node("unused", fuse_x, 0, "skip unused\n(as in the source)", "white", "round,pad=0.3")
    artists["unused"].set_color("0.5")

    for level in range(n_levels - 1):
        link(f"encoder{level + 1}", f"encoder{level + 2}", "maxpool 2")
    link(f"encoder{n_levels}", "decoder1", "maxpool 2")
    for k in range(1, n_levels + 1):
        target = f"fusion{k}" if f"fusion{k}" in blocks else "head"
        link(f"decoder{k}", target, "up ×2")
        if f"fusion{k}" in blocks:
            skip = f"encoder{n_levels + 1 - k}"
            link(skip, f"fusion{k}", f"skip ({blocks[skip]['out_channels']} ch)")
            link(f"fusion{k}", f"decoder{k + 1}" if k < n_levels else "head")
    if "fusion4" in blocks or f"fusion{n_levels}" in blocks:
        artists.pop("unused").remove()
    else:
        link("encoder1", "unused", linestyle="--", color="0.6")
    total = sum(r["params"] for r in rows)
    ax.set_title(f"U-Net with fusion = {fusion_name} ({symbol}): {total:,} parameters "
                 f"(input {input_size}×{input_size})", fontsize=11)
    ax.set_xlim(-1.0, head_x + 1.0)
    ax.set_ylim(-n_levels - 0.5, 0.5)
    ax.axis("off")
    fig.tight_layout()
    return fig


def _as_image(t) -> np.ndarray:
    """(3, H, W) or (1, H, W) tensor/array -> (H, W, 3) or (H, W) numpy for imshow."""
    a = np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=np.float32)
    return a.transpose(1, 2, 0) if a.ndim == 3 and a.shape[0] == 3 else a.squeeze()


def plot_patch_output(image, label, logits, title: str = "") -> plt.Figure:
    """A patch, its vessel label, the logits z of a model on it (own colour scale)
    and P(vessel) = sigmoid(z) on the fixed 0..1 scale."""
    logits = _as_image(logits)
    limit = float(np.abs(logits).max()) or 1.0
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    axes[0].imshow(_as_image(image))
    axes[1].imshow(_as_image(label), cmap="gray", vmin=0, vmax=1)
    im = axes[2].imshow(logits, cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    im = axes[3].imshow(1 / (1 + np.exp(-logits)), cmap="magma", vmin=0, vmax=1)
    fig.colorbar(im, ax=axes[3], fraction=0.046)
    for ax, name in zip(axes, ["image patch", "vessel label (ah)", "logits z", "P(vessel) = sigmoid(z)"]):
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def plot_softmax_pitfall(logits) -> plt.Figure:
    """Sigmoid vs. softmax over a single logit channel: the softmax map is all ones."""
    logits = logits.detach().cpu()
    maps = {"sigmoid(z)": logits.sigmoid(), "softmax(z, dim=channels)": logits.softmax(dim=1)}
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, (name, prob) in zip(axes, maps.items()):
        im = ax.imshow(prob[0, 0].numpy(), cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"{name}\nmin {prob.min():.4f}, max {prob.max():.4f}", fontsize=10)
        ax.axis("off")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    bins = np.linspace(0, 1.0, 51)
    for name, prob in maps.items():
        axes[2].hist(prob.flatten().numpy(), bins=bins, alpha=0.7, label=name)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("probability")
    axes[2].set_ylabel("pixels")
    axes[2].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_fusion_maps(features: dict[str, dict], fusion: int, channel: int = 0, sample: int = 0) -> plt.Figure:
    """Feature maps around fusion number ``fusion`` (1 = deepest) for several models:
    one row per model (``features``: name -> :func:`starunet.model.capture_features`;
    names that are fusion names get their formula from :data:`starunet.FUSIONS`),
    columns skip s, upsampled decoder d and the fused output, all for one
    ``channel`` of one ``sample``."""
    from starunet.fusion import FUSIONS

    columns = [(f"fusion{fusion}.skip", "skip s"), (f"fusion{fusion}.decoder", "decoder d (upsampled)"),
               (f"fusion{fusion}", "fused")]
    fig, axes = plt.subplots(len(features), 3, figsize=(10, 3.3 * len(features)), squeeze=False)
    for row, (model_name, captured) in zip(axes, features.items()):
        for ax, (key, title) in zip(row, columns):
            fmap = captured[key][sample, channel].detach().cpu().numpy()
            limit = float(np.abs(fmap).max()) or 1.0
            im = ax.imshow(fmap, cmap="RdBu_r", vmin=-limit, vmax=limit)
            fig.colorbar(im, ax=ax, fraction=0.046)
            if key == f"fusion{fusion}":
                title = f"fused = {FUSIONS[model_name].formula if model_name in FUSIONS else model_name}"
            ax.set_title(f"{model_name}: {title}", fontsize=10)
            ax.axis("off")
    size = next(iter(features.values()))[f"fusion{fusion}"].shape[-1]
    fig.suptitle(f"fusion{fusion} ({size}×{size}), channel {channel}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def _variant_style(name: str) -> dict:
    """Line style for a model named ``"fusion, activation"`` (anything else: defaults)."""
    fusion, _, activation = (part.strip() for part in name.partition(","))
    style = {"linestyle": ACTIVATION_STYLES.get(activation or "none", "-")}
    return {**style, "color": fusion_color(fusion)} if fusion in _fusion.FUSIONS else style


def _short_layer(name: str) -> str:
    return name.replace("encoder", "enc").replace("decoder", "dec").replace("fusion", "fuse")


def plot_feature_statistics(statistics: dict[str, list[dict]], keys=("std", "kurtosis", "zero_fraction"),
                            title: str = "") -> plt.Figure:
    """Activation statistics through depth, one line per model.

    ``statistics``: name -> :func:`starunet.model.feature_statistics` rows; names
    ``"fusion, activation"`` (e.g. ``"star, relu"``) get the course's colours.
    Fused layers are shaded; ``std``, ``kurtosis`` and ``max_abs`` use a log scale."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 4.0), squeeze=False)
    first = next(iter(statistics.values()))
    layers = [r["layer"] for r in first]
    for ax, key in zip(axes[0], keys):
        for name, rows in statistics.items():
            ax.plot([r["depth"] for r in rows], [r[key] for r in rows], marker="o", ms=4, label=name,
                    **_variant_style(name))
        for r in first:
            if r["layer"].startswith("fusion"):
                ax.axvspan(r["depth"] - 0.4, r["depth"] + 0.4, color="#fce5cd", zorder=0)
        if key in ("std", "kurtosis", "max_abs"):
            ax.set_yscale("log")
        if key == "kurtosis":
            ax.axhline(3, color="0.5", lw=0.8, ls="--")
            ax.text(0, 3, " Gaussian", fontsize=7, color="0.4", va="bottom")
        ax.set_xticks(range(len(layers)), [_short_layer(n) for n in layers], rotation=60, fontsize=8)
        ax.set_title(key.replace("_", " "), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def plot_variant(image, label, variant: dict, title: str = "", sample: int = 0) -> plt.Figure:
    """What :func:`starunet.model.inspect_variant` found: the patch, its label, the
    (untrained) variant's logits on it, and its activation statistics through depth."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), gridspec_kw=dict(width_ratios=[1, 1, 1, 1.8]))
    axes[0].imshow(_as_image(image))
    axes[1].imshow(_as_image(label), cmap="gray", vmin=0, vmax=1)
    logits = _as_image(variant["logits"][sample])
    limit = float(np.abs(logits).max()) or 1.0
    im = axes[2].imshow(logits, cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax, name in zip(axes, ["image patch", "vessel label (ah)", "logits z (untrained)"]):
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    rows = variant["statistics"]
    depth = [r["depth"] for r in rows]
    ax = axes[3]
    ax.plot(depth, [r["std"] for r in rows], marker="o", ms=4, label="std")
    ax.plot(depth, [r["kurtosis"] for r in rows], marker="s", ms=4, label="kurtosis")
    ax.plot(depth, [r["max_abs"] for r in rows], marker="^", ms=4, label="max |x|")
    ax.axhline(3, color="0.5", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(depth, [_short_layer(r["layer"]) for r in rows], rotation=60, fontsize=8)
    ax.legend(fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
    ax.set_title("activations through depth (batch statistics)", fontsize=10)
    fig.suptitle(title or f"{variant['params']:,} parameters", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


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
    :func:`starunet.train.read_history`. Labels starting ``fusion-activation``
    get notebook 05's style (colour = fusion, dashed = ReLU).
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
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
    axes[0, -1].legend(fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- 05 evaluation

ERROR_COLORS = {"TP": (1.0, 1.0, 1.0), "FP": (0.835, 0.369, 0.0), "FN": (0.337, 0.706, 0.914),
                "TN": (0.0, 0.0, 0.0), "outside FOV": (0.25, 0.25, 0.25)}


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
    a colour and one legend entry; ``per_run=True`` gives every run its own colour
    and label (to compare two runs). ``markers``: ``{label: metrics}`` drawn as
    points at their operating point (``1 - sp, se`` and ``se, pre``), e.g. the
    second observer. The ROC x-axis stops at ``roc_xmax``: all models live in its
    top-left corner.
    """
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 4.6))
    seen = set()
    for n, (key, curve) in enumerate(curves.items()):
        config = key.rsplit("-seed", 1)[0]
        if per_run:
            label, style = key, {"color": f"C{n}", "linestyle": "-"}
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
    when a 700-pixel image is drawn 3 inches wide).
    """
    from matplotlib.patches import Patch


    window = (slice(crop[0], crop[1]), slice(crop[2], crop[3])) if crop else (slice(None), slice(None))
    n = len(probabilities)
    fig, axes = plt.subplots(2, n + 1, figsize=(3.0 * (n + 1), 7.2), squeeze=False)
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
    bootstrap compares)."""
    configs = [(f, a) for a in ("none", "relu") for f in ("sum", "star")
               if any(r["fusion"] == f and r["activation"] == a for r in runs)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for x, (fusion, act) in enumerate(configs):
            values = [float(r[metric]) for r in runs if r["fusion"] == fusion and r["activation"] == act]
            style = _config_style(f"{fusion}-{act}")
            ax.hlines(np.mean(values), x - 0.3, x + 0.3, color=style["color"], lw=2)
            ax.plot([x] * len(values), values, "o", color=style["color"], alpha=0.8,
                    mfc="none" if act == "relu" else style["color"])
        for act in ("none", "relu"):
            xs = [configs.index((f, act)) for f in ("sum", "star") if (f, act) in configs]
            if len(xs) < 2:
                continue
            for seed in sorted({r["seed"] for r in runs}):
                pair = [next((float(r[metric]) for r in runs if r["fusion"] == f and r["activation"] == act
                              and r["seed"] == seed), np.nan) for f in ("sum", "star")]
                ax.plot(xs, pair, color="0.6", lw=0.8, zorder=0)
        ax.set_xticks(range(len(configs)), [f"{f}\n{a}" for f, a in configs])
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("test metrics per run (dots) and mean over seeds (bars)")
    fig.tight_layout()
    return fig


def plot_paired_differences(diffs):
    """Forest plot of star - sum per metric: the mean paired difference and its
    bootstrap CI, one colour per activation setting; CIs crossing 0 = within noise."""
    colors = {"none": "black", "relu": "#CC79A7"}  # not the fusion colours: here colour = activation
    groups = {f"activation {act}": [d for d in diffs if d.activation == act]
              for act in dict.fromkeys(d.activation for d in diffs)}
    return _forest_plot(groups, {f"activation {a}": c for a, c in colors.items()})


def plot_budget_differences(diffs_by_grid):
    """Forest plot of star - sum per metric for grids trained with different budgets
    (``{preset: [PairedDifference, ...]}``, see ``stats.budget_differences``), one
    colour per preset and activation: does the difference shrink, grow or flip with
    more training?"""
    palette = ["#999999", "black", "#E69F00", "#56B4E9", "#009E73", "#CC79A7"]
    groups: dict[str, list] = {}
    for name, diffs in diffs_by_grid.items():
        for d in diffs:
            label = f"{name}: star/none - sum/relu" if "/" in d.b else f"{name}, activation {d.activation}"
            groups.setdefault(label, []).append(d)
    return _forest_plot(groups, {g: palette[i % len(palette)] for i, g in enumerate(groups)})


def _forest_plot(groups, colors):
    """Mean and CI of each :class:`~starunet.stats.PairedDifference`, one row per
    metric, the ``groups`` (label -> differences) side by side in their colours."""
    diffs = [d for group in groups.values() for d in group]
    metrics = list(dict.fromkeys(d.metric for d in diffs))
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(metrics) * len(groups) + 1.4))
    spread = min(0.35, 0.075 * len(groups))  # many groups: use the room between metrics
    offsets = np.linspace(-spread, spread, len(groups)) if len(groups) > 1 else [0.0]
    for off, (label, group) in zip(offsets, groups.items()):
        color = colors.get(label, "0.3")
        for d in group:
            y = metrics.index(d.metric) + off
            ax.errorbar(d.mean, y, xerr=[[d.mean - d.low], [d.high - d.mean]], fmt="o", capsize=3,
                        color=color, mfc="white" if d.verdict == "within noise" else None)
        ax.plot([], [], "o", color=color, label=label)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(metrics)), metrics)
    ax.invert_yaxis()
    level = diffs[0].level if diffs else 0.95
    pairs = {(d.b, d.a) for d in diffs}
    compared = " - ".join(pairs.pop()) if len(pairs) == 1 else "difference as in the legend"
    ax.set_xlabel(f"{compared} (mean per-image difference, {100 * level:.0f}% bootstrap CI)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("paired difference; hollow = CI contains 0 (within noise)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- 06 learning curves

def plot_learning_curves(points, metrics=("roc_auc", "pr_auc", "f1"), human=None, source=None,
                         title: str | None = None) -> plt.Figure:
    """Test metrics against training patches seen (log axis), one line per run.

    ``points``: rows with ``fusion, activation, seed, patches`` and the metrics (e.g.
    :class:`starunet.curves.CurveResults` ``.points``); colour = fusion, line style =
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


def plot_config_differences(diffs):
    """Forest plot of the paired differences b − a of several configuration pairs
    (:func:`starunet.stats.config_differences`), one colour per pair."""
    palette = ["black", "#D55E00", "#999933", "#882255", "#CC79A7", "#56B4E9"]
    groups: dict[str, list] = {}
    for d in diffs:
        groups.setdefault(f"{d.b} − {d.a}", []).append(d)
    return _forest_plot(groups, {g: palette[i % len(palette)] for i, g in enumerate(groups)})
