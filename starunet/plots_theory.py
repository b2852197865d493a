"""Figures of the theory (notebook 02): implicit dimensions, responses along a line,
star stacks, toy decision boundaries and accuracies."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from starunet.plots import fusion_color
from starunet.theory import implicit_dimension, paper_implicit_dimension
from starunet.toys import decision_surface


_TOY_COLORS = ("#d95f02", "#1b9e77")  # class 0, class 1 (colour-blind safe pair)


def _toy_bar_style(model: str) -> dict:
    """A toy model ``"fusion/activation"`` as the course draws it everywhere: the colour of
    its fusion (``sum``, ``star``: the U-Net registry's; ``stack``, no U-Net fusion: grey),
    filled without an activation, hatched with one."""
    fusion, _, activation = model.partition("/")
    color = fusion_color(fusion, default="0.45")
    if activation in ("", "none"):
        return {"color": color}
    return {"facecolor": "white", "edgecolor": color, "hatch": "////", "linewidth": 1.0}


def plot_implicit_dimension(ds, depths) -> plt.Figure:
    """Implicit feature dimension of stacked star layers vs input width d, one
    colour per depth: exact monomial count (solid) and the estimate of Ma et al.
    (dashed), on a log scale."""
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
               yerr=stds, capsize=2, label=m, error_kw={"ecolor": "0.2", "lw": 1}, **_toy_bar_style(m))
    n_seeds = summary[0]["n_seeds"]
    ax.set(xticks=np.arange(len(datasets)), xticklabels=datasets, ylim=(40, 101),
           ylabel="test accuracy (%)", title=f"Mean ± std over {n_seeds} seed{'s' if n_seeds > 1 else ''}")
    ax.axhline(50, color="gray", lw=0.8, ls=":")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
