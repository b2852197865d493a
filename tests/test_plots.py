"""Tests of starunet.plots that are about the package's shared conventions rather
than one notebook: fusion formulas come from the registry, and a fusion has one
colour (and an activation one line style) in every figure. The per-notebook
figures are built in the test file of their module (test_theory, test_model, ...)."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex

from starunet import plots, plots_model
from starunet.fusion import FUSIONS

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _fusion_maps_input(fusion: int = 3) -> dict[str, torch.Tensor]:
    maps = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    return {f"fusion{fusion}.skip": maps, f"fusion{fusion}.decoder": -maps, f"fusion{fusion}": maps * 2}


def test_fusion_map_titles_take_the_formula_from_the_registry():
    fig = plots_model.plot_fusion_maps({"star": _fusion_maps_input(), "gated": _fusion_maps_input(),
                                        "my model": _fusion_maps_input()}, fusion=3)
    fused_titles = [ax.get_title() for ax in fig.axes if "fused" in ax.get_title()]
    assert fused_titles == ["star: fused = d ⊙ s", "gated: fused = d ⊙ σ(s)", "my model: fused = my model"]


def test_every_registered_fusion_has_its_own_colour():
    colours = [plots.fusion_color(name) for name in FUSIONS]
    assert len(set(colours)) == len(FUSIONS)  # no two fusions alike
    assert plots.fusion_color("my model") == "0.4"  # not an op: neutral grey


def test_a_fusion_registered_in_a_test_appears_in_figures_with_no_other_edit(monkeypatch):
    """One class, one decorator: its colour (a fixed fallback), symbol and formula reach the
    figures without touching plots."""
    from starunet import fusion as F

    monkeypatch.setattr(F, "FUSIONS", dict(F.FUSIONS))  # unregistered again after the test

    @F.register_fusion("mean_test")
    class MeanFusion(F.Fusion):
        formula = "(d + s) / 2"

        def combine(self, decoder, skip):
            return 0.5 * (decoder + skip)

    assert plots.fusion_color("mean_test") in F.FALLBACK_COLORS
    assert plots.fusion_color("mean_test") == F.fusion_color("mean_test")  # the same in every call
    assert F.fusion_symbol("mean_test") == "mean_test" and F.fusion_symbol("star") == "⊙"
    style = plots_model._variant_style("mean_test, relu")
    assert style == {"linestyle": "--", "color": plots.fusion_color("mean_test")}
    fig = plots_model.plot_fusion_maps({"mean_test": _fusion_maps_input()}, fusion=3)
    assert any(ax.get_title() == "mean_test: fused = (d + s) / 2" for ax in fig.axes)


def _statistics_rows() -> list[dict]:
    return [{"layer": layer, "depth": depth, "std": 1.0 + depth, "kurtosis": 3.0, "zero_fraction": 0.0}
            for depth, layer in enumerate(["encoder1", "fusion1", "decoder1"])]


def test_feature_statistics_and_training_curves_style_a_fusion_alike():
    stats = plots_model.plot_feature_statistics({"concat, none": _statistics_rows(), "star, relu": _statistics_rows(),
                                                 "star, gelu": _statistics_rows(), "other": _statistics_rows()})
    styles = [(line.get_label(), to_hex(line.get_color()), line.get_linestyle()) for line in stats.axes[0].lines]
    assert styles[:3] == [("concat, none", "#009e73", "-"), ("star, relu", "#d55e00", "--"),
                          ("star, gelu", "#d55e00", ":")]
    assert styles[3][0] == "other" and styles[3][2] == "-"  # no fusion in the name: matplotlib's colour

    history = [{"epoch": e, "train_loss": 1.0 / e, "is_best": True} for e in (1, 2)]
    curves = plots.plot_training_curves({"concat-none": history, "star-relu": history, "prod-none": history},
                                        metrics=("train_loss",))
    runs = [(to_hex(line.get_color()), line.get_linestyle())
            for line in curves.axes[0].lines if not line.get_label().startswith("_")]  # not the best-epoch rings
    assert runs == [("#009e73", "-"), ("#d55e00", "--"), ("#666666", "-")]  # unknown fusion: grey 0.4


def test_error_map_colours_each_outcome():
    prob = np.array([[0.9, 0.9, 0.1, 0.1, 0.9]])
    label = np.array([[1, 0, 1, 0, 1]], bool)
    fov = np.array([[1, 1, 1, 1, 0]], bool)
    rgb = plots.error_map(prob, label, fov)
    names = ["TP", "FP", "FN", "TN", "outside FOV"]
    for col, name in enumerate(names):
        np.testing.assert_allclose(rgb[0, col], plots.ERROR_COLORS[name])


def test_plot_lr_schedules_draws_each_configs_steps():
    from starunet.presets import PRESETS

    fig = plots.plot_lr_schedules({"fast": PRESETS["fast"], "quick": PRESETS["quick"]})
    fast, quick = fig.axes[0].lines
    assert len(fast.get_xdata()) == PRESETS["fast"].total_steps()
    assert max(fast.get_ydata()) == pytest.approx(2e-3) and set(quick.get_ydata()) == {5e-4}
    assert fast.get_xdata()[-1] == (PRESETS["fast"].total_steps() - 1) * 8


def test_run_panels_give_each_run_its_own_panel_in_its_style():
    history = [{"epoch": e, "val_pr_auc": 0.5 + 0.01 * e} for e in range(1, 5)]
    fig = plots.plot_run_panels({"sum-none-seed1": history, "star-relu-seed1": history, "other": history},
                                patches_per_epoch=512, ncols=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["sum-none-seed1", "star-relu-seed1", "other"]
    own = [line for line in visible[1].lines if line.get_zorder() == 2]
    assert [(to_hex(line.get_color()), line.get_linestyle()) for line in own] == [("#d55e00", "--")]
    assert len(visible[1].lines) == 3  # the two other runs in grey behind it
    assert list(own[0].get_xdata()) == [512, 1024, 1536, 2048] and visible[-1].get_xlabel() == "training patches seen"
