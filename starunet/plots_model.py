"""Figures of the model (notebook 03): the U-Net's architecture, its outputs, the
softmax pitfall, fusion maps and feature statistics of variants."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from starunet import fusion as _fusion
from starunet.plots import ACTIVATION_STYLES, as_image, fusion_color


def plot_unet_architecture(rows: list[dict], input_size: int = 96) -> plt.Figure:
    """Draw the U-Net from its :func:`starunet.probe.parameter_table` ``rows``: encoder
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
            artists[f"fusion{k}"].get_bbox_patch().set(edgecolor=fusion_color(fusion_name), linewidth=2.5)
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


def plot_patch_output(image, label, logits, title: str = "") -> plt.Figure:
    """A patch, its vessel label, the logits z of a model on it (own colour scale)
    and P(vessel) = sigmoid(z) on the fixed 0..1 scale."""
    logits = as_image(logits)
    limit = float(np.abs(logits).max()) or 1.0
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    axes[0].imshow(as_image(image))
    axes[1].imshow(as_image(label), cmap="gray", vmin=0, vmax=1)
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
    one row per model (``features``: name -> :func:`starunet.probe.capture_features`;
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

    ``statistics``: name -> :func:`starunet.probe.feature_statistics` rows; names
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
    """What :func:`starunet.probe.inspect_variant` found: the patch, its label, the
    (untrained) variant's logits on it, and its activation statistics through depth."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), gridspec_kw=dict(width_ratios=[1, 1, 1, 1.8]))
    axes[0].imshow(as_image(image))
    axes[1].imshow(as_image(label), cmap="gray", vmin=0, vmax=1)
    logits = as_image(variant["logits"][sample])
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
