"""Tests of starunet.plots that are about the package's shared conventions rather
than one notebook: fusion formulas come from the registry, and a fusion has one
colour (and an activation one line style) in every figure. The per-notebook
figures are built in the test file of their module (test_theory, test_model, ...)."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.colors import to_hex

from starunet import plots
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
    fig = plots.plot_fusion_maps({"star": _fusion_maps_input(), "gated": _fusion_maps_input(),
                                  "my model": _fusion_maps_input()}, fusion=3)
    fused_titles = [ax.get_title() for ax in fig.axes if "fused" in ax.get_title()]
    assert fused_titles == ["star: fused = d ⊙ s", "gated: fused = d ⊙ σ(s)", "my model: fused = my model"]


def test_every_registered_fusion_has_one_colour():
    assert set(plots.FUSION_COLORS) == set(FUSIONS)
    assert len(set(plots.FUSION_COLORS.values())) == len(FUSIONS)  # no two fusions alike


def _statistics_rows() -> list[dict]:
    return [{"layer": layer, "depth": depth, "std": 1.0 + depth, "kurtosis": 3.0, "zero_fraction": 0.0}
            for depth, layer in enumerate(["encoder1", "fusion1", "decoder1"])]


def test_feature_statistics_and_training_curves_style_a_fusion_alike():
    stats = plots.plot_feature_statistics({"concat, none": _statistics_rows(), "star, relu": _statistics_rows(),
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
