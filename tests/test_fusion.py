"""The fusion registry: every op's arithmetic, channel bookkeeping, parameter
cost and error messages."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from starunet import fusion as fusion_module
from starunet.fusion import FUSIONS, Fusion, fusion_formula, make_fusion, register_fusion
from starunet.model import count_parameters

# Hand-set inputs: 1 sample, 2 channels, 1x2 pixels.
DECODER = torch.tensor([[[[1.0, -2.0]], [[0.5, 3.0]]]])
SKIP = torch.tensor([[[[4.0, 0.5]], [[-2.0, 0.0]]]])


def test_registry_holds_the_ops_the_study_needs():
    assert {"sum", "star", "concat", "residual_star", "gated", "attention", "max"} <= set(FUSIONS)
    for name, cls in FUSIONS.items():
        assert issubclass(cls, Fusion) and cls.name == name
        assert cls.__doc__, f"fusion {name!r} needs a docstring with its formula and cost"


def test_sum_and_star_are_exactly_the_elementwise_sum_and_product():
    assert torch.equal(make_fusion("sum", 2)(DECODER, SKIP),
                       torch.tensor([[[[5.0, -1.5]], [[-1.5, 3.0]]]]))
    assert torch.equal(make_fusion("star", 2)(DECODER, SKIP),
                       torch.tensor([[[[4.0, -1.0]], [[-1.0, 0.0]]]]))


def test_the_other_parameter_free_ops_follow_their_formulas():
    d, s = DECODER, SKIP
    assert torch.equal(make_fusion("residual_star", 2)(d, s),
                       torch.tensor([[[[5.0, -3.0]], [[-0.5, 3.0]]]]))  # d + d*s
    assert torch.equal(make_fusion("max", 2)(d, s), torch.tensor([[[[4.0, 0.5]], [[0.5, 3.0]]]]))
    assert torch.allclose(make_fusion("gated", 2)(d, s), d * torch.sigmoid(s))
    concat = make_fusion("concat", 2)(d, s)
    assert concat.shape == (1, 4, 1, 2)
    assert torch.equal(concat[:, :2], d) and torch.equal(concat[:, 2:], s)


def test_attention_gate_scales_the_skip_by_a_per_pixel_coefficient_in_0_1():
    torch.manual_seed(0)
    gate = make_fusion("attention", 8)
    d, s = torch.randn(2, 8, 5, 6), torch.randn(2, 8, 5, 6)
    alpha = gate.attention(d, s)
    assert alpha.shape == (2, 1, 5, 6) and (alpha > 0).all() and (alpha < 1).all()
    out = gate(d, s)
    assert torch.equal(out[:, :8], d)
    assert torch.allclose(out[:, 8:], alpha * s)
    # Forcing the gate open (psi bias -> +inf) gives back the plain concatenation.
    with torch.no_grad():
        gate.psi.bias.fill_(1e4)
    assert torch.allclose(gate(d, s), torch.cat([d, s], dim=1))


@pytest.mark.parametrize("channels", [1, 8, 32])
def test_out_channels_and_parameter_costs_match_the_documented_table(channels):
    inter = max(1, channels // 2)
    expected_params = {"attention": 2 * channels * inter + 2 * inter + 1,
                       "star_bn": 2 * channels, "sum_star_bn": 2 * channels}  # BatchNorm weight + bias
    for name in FUSIONS:
        op = make_fusion(name, channels)
        doubles = name in {"concat", "attention"}
        assert op.out_channels == (2 if doubles else 1) * channels, name
        assert count_parameters(op) == expected_params.get(name, 0), name
        out = op(torch.randn(2, channels, 4, 4), torch.randn(2, channels, 4, 4))
        assert out.shape == (2, op.out_channels, 4, 4), name


def test_unknown_name_is_rejected_with_the_valid_names_listed():
    with pytest.raises(ValueError, match="unknown fusion 'prod'.*valid names:.*star.*sum"):
        make_fusion("prod", 8)
    with pytest.raises(ValueError, match="unknown fusion 'prod'.*valid names:.*star.*sum"):
        fusion_formula("prod")


def test_each_op_carries_its_formula_and_the_docs_agree_with_it():
    assert fusion_formula("sum") == "d + s" and fusion_formula("star") == "d ⊙ s"
    assert fusion_formula("attention") == FUSIONS["attention"].formula == "[d, α ⊙ s]"
    table_rows = {m.group(1): m.group(0) for m in re.finditer(r"^``(\w+)``  .*$", fusion_module.__doc__, re.M)}
    assert set(table_rows) == set(FUSIONS)
    for name, cls in FUSIONS.items():
        assert cls.formula in cls.__doc__, f"the docstring of {name!r} does not show {cls.formula!r}"
        assert cls.formula in table_rows[name], f"the module table row of {name!r} does not show {cls.formula!r}"


def test_bad_channels_and_mismatched_shapes_give_clear_errors():
    with pytest.raises(ValueError, match="channels must be a positive int"):
        make_fusion("sum", 0)
    with pytest.raises(ValueError, match="same shape.*decoder \\(1, 2, 4, 4\\).*skip \\(1, 2, 2, 2\\)"):
        make_fusion("star", 2)(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="built for 3 channels, got 2"):
        make_fusion("star", 3)(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


def test_registering_a_new_op_is_one_decorated_class(monkeypatch):
    monkeypatch.setattr("starunet.fusion.FUSIONS", dict(FUSIONS))
    from starunet import fusion

    @fusion.register_fusion("mean")
    class MeanFusion(Fusion):
        """(d + s) / 2."""

        formula = "(d + s) / 2"

        def combine(self, decoder, skip):
            return 0.5 * (decoder + skip)

    assert torch.equal(fusion.make_fusion("mean", 2)(DECODER, SKIP), 0.5 * (DECODER + SKIP))
    assert fusion.fusion_formula("mean") == "(d + s) / 2"
    with pytest.raises(ValueError, match="already registered"):
        fusion.register_fusion("mean")(MeanFusion)
    with pytest.raises(TypeError, match="Fusion subclasses"):
        fusion.register_fusion("conv")(nn.Conv2d)
    with pytest.raises(TypeError, match="'half' .* has no formula; set the class attribute"):
        fusion.register_fusion("half")(type("HalfFusion", (Fusion,), {"combine": lambda self, d, s: d / 2}))
    assert "half" not in fusion.FUSIONS
    assert "mean" not in FUSIONS  # the real registry was not touched


def test_the_registry_is_part_of_the_public_api():
    import starunet as su

    assert su.FUSIONS is FUSIONS
    assert su.fusion.make_fusion is make_fusion and su.register_fusion is register_fusion
    assert su.fusion.fusion_formula is fusion_formula and su.Fusion is Fusion


# ---------------------------------------------------------------- normalised products

def test_normalised_products_compute_their_formulas():
    d, s = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    for name, expected in [("star_bn", lambda n: n(d * s)), ("sum_star_bn", lambda n: d + s + n(d * s))]:
        op = make_fusion(name, 3).train()
        reference = torch.nn.BatchNorm2d(3).train()
        assert torch.allclose(op(d, s), expected(reference), atol=1e-6), name
        assert torch.allclose(op.norm.running_mean, reference.running_mean), name  # BN statistics learn


@pytest.mark.parametrize("fusion", ["star_bn", "sum_star_bn"])
def test_unet_with_a_normalised_product_trains(fusion):
    from starunet.model import UNet

    torch.manual_seed(0)
    model = UNet(fusion=fusion, narrow=0.125)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.rand(4, 3, 32, 32), (torch.rand(4, 1, 32, 32) > 0.9).float()
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(f.norm.num_batches_tracked == 5 for f in model.fusions)


def test_fused_feature_scale_at_initialisation_on_real_patches(stare_records):
    """What notebook 06 says about raw and normalised products, checked on real
    training patches at initialisation (training-mode BatchNorm, as in a first step):
    every decoder block ends in a BatchNorm, so the raw product's std stays near 1, but
    its tails grow fusion after fusion (kurtosis, max |x|); BN(d ⊙ s) pins the std to 1
    and leaves the tails; the additive path of d + s + BN(d ⊙ s) keeps them short."""
    import starunet as su
    from starunet.probe import feature_statistics, inspect_variant

    split = su.split_ids()
    dataset = su.PatchDataset([r for r in stare_records if r.id in split.train], samples_per_epoch=8, seed=0)
    dataset.set_epoch(1)
    x = torch.stack([dataset[i][0] for i in range(8)])
    stats = {}
    for fusion in ("sum", "star", "star_bn", "sum_star_bn"):
        model = inspect_variant(x, fusion=fusion, seed=2024)["model"]
        stats[fusion] = {r["layer"]: r for r in feature_statistics(model, x) if r["layer"].startswith("fusion")}
    levels = ["fusion1", "fusion2", "fusion3"]
    star = [stats["star"][level] for level in levels]
    assert star[0]["kurtosis"] < star[1]["kurtosis"] < star[2]["kurtosis"]   # tails grow with depth
    assert star[0]["max_abs"] < star[1]["max_abs"] < star[2]["max_abs"]
    assert all(0.8 < s["std"] < 1.5 for s in star)                           # the std does not blow up
    assert all(abs(stats["star_bn"][level]["std"] - 1) < 1e-3 for level in levels)
    for level in levels:
        assert stats["sum_star_bn"][level]["kurtosis"] < stats["star"][level]["kurtosis"]
        assert stats["star"][level]["kurtosis"] > 3 * stats["sum"][level]["kurtosis"]


def test_a_registered_op_reaches_every_table_widget_and_command(request, capsys):
    """One class, one decorator and nothing else: the op is a valid TrainConfig, trains in
    a U-Net, gets a row in notebook 03's table, a place in both widgets' menus and in the
    choices of the train and reproduce commands (the figures: tests/test_plots.py)."""
    import matplotlib

    matplotlib.use("Agg")
    from starunet import fusion, grid, probe, training, widgets
    from starunet.model import UNet
    from starunet.presets import TrainConfig

    @fusion.register_fusion("mean_test")  # into the real registry: modules hold that dict
    class MeanFusion(Fusion):
        formula = "(d + s) / 2"

        def combine(self, decoder, skip):
            return 0.5 * (decoder + skip)
    request.addfinalizer(lambda: fusion.FUSIONS.pop("mean_test", None))

    TrainConfig(fusion="mean_test").validate()
    assert UNet(fusion="mean_test", narrow=0.125)(torch.rand(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    rows = {r["fusion"]: r for r in probe.variant_parameter_counts()}
    assert rows["mean_test"]["params"] == rows["sum"]["params"]  # no weights of its own
    assert "(d + s) / 2" in probe.format_variant_parameter_counts(list(rows.values()))
    launcher = widgets.training_launcher(records=[], background=False)
    assert "mean_test" in launcher.children[0].children[0].options
    for cli, option in ((training.cli, "--fusion"), (grid.cli, "--fusions")):
        with pytest.raises(SystemExit):
            cli([option, "no_such_op"])
        assert "'mean_test'" in capsys.readouterr().err  # argparse lists the valid choices
