"""The U-Net: the source architecture's exact size, every fusion x activation
variant, odd input sizes, memory formats, devices and torch.compile.

Most tests use ``narrow=0.125`` (widths 8..64) to stay fast on a shared CPU; the
architecture is the same at every width."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from starunet.fusion import FUSIONS
from starunet.model import (ACTIVATIONS, UNet, count_parameters, make_activation, pad_to_multiple,
                            probabilities_from_logits)
from starunet.probe import (capture_features, feature_statistics, format_parameter_table, format_statistics_comparison,
                            format_variant_parameter_counts, inspect_variant, most_label_correlated_channel,
                            parameter_table, tensor_statistics, variant_parameter_counts)

SMALL = dict(narrow=0.125)


def _block_params(c_in: int, c_out: int) -> int:
    # two 3x3 convs with bias + two BatchNorms (weight and bias)
    return (9 * c_in * c_out + c_out) + (9 * c_out * c_out + c_out) + 2 * (2 * c_out)


def test_default_model_has_exactly_the_source_parameter_count():
    model = UNet()
    assert count_parameters(model) == 2_937_345
    # ... and that number is the documented architecture, block by block.
    encoder = [(3, 32), (32, 64), (64, 128), (128, 256)]
    decoder = [(256, 256), (256, 128), (128, 64), (64, 32)]
    head = 32 * 1 + 1
    assert sum(_block_params(*c) for c in encoder + decoder) + head == 2_937_345
    assert [(b.in_channels, b.out_channels) for b in model.encoder] == encoder
    assert [(b.in_channels, b.out_channels) for b in model.decoder] == decoder
    assert len(model.fusions) == 3 and model.head.in_channels == 32


def test_default_is_relu_free_star_fusion():
    model = UNet()
    assert all(type(m) is not nn.ReLU for m in model.modules())
    assert [f.name for f in model.fusions] == ["star"] * 3
    assert model.activation_name == "none"


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
@pytest.mark.parametrize("activation", [None, *ACTIVATIONS])
def test_every_fusion_and_activation_gives_one_logit_map_per_image(fusion, activation):
    torch.manual_seed(0)
    model = UNet(fusion=fusion, activation=activation, **SMALL)
    x = torch.randn(2, 3, 32, 48)
    logits = model(x)
    assert logits.shape == (2, 1, 32, 48) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_every_fusion_trains_every_parameter(fusion):
    torch.manual_seed(0)
    model = UNet(fusion=fusion, use_shallowest_skip=True, **SMALL)
    model(torch.randn(2, 3, 16, 16)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_concatenating_fusions_widen_the_next_block():
    model = UNet(fusion="concat")
    assert [b.in_channels for b in model.decoder] == [256, 512, 256, 128]
    assert model.head.in_channels == 32
    shallow = UNet(fusion="concat", use_shallowest_skip=True)
    assert shallow.head.in_channels == 64
    # the only new parameters are the 32 extra head inputs
    assert count_parameters(shallow) - count_parameters(model) == 32


def test_activation_registry_and_none_alias():
    assert {"none", "relu", "gelu"} <= set(ACTIVATIONS)
    assert type(make_activation(None)) is nn.Identity is type(make_activation("none"))
    assert type(make_activation("relu")) is nn.ReLU
    relu_net = UNet(activation="relu", **SMALL)
    assert sum(type(m) is nn.ReLU for m in relu_net.modules()) == 2 * 8  # 2 per block, 8 blocks
    # activations have no parameters: same count, same checkpoint keys
    plain = UNet(activation=None, **SMALL)
    assert count_parameters(relu_net) == count_parameters(plain)
    assert relu_net.state_dict().keys() == plain.state_dict().keys()


def test_unknown_names_are_rejected_with_the_valid_names_listed():
    with pytest.raises(ValueError, match="unknown activation 'tanh'; valid names: None, 'none', 'relu', 'gelu'"):
        UNet(activation="tanh")
    with pytest.raises(ValueError, match="unknown fusion 'mul'; valid names: .*star.*sum"):
        UNet(fusion="mul")


def test_width_scales_every_block():
    model = UNet(narrow=0.25, channel_multiplier=2)  # same widths as the default
    assert count_parameters(model) == 2_937_345
    small = UNet(**SMALL)
    assert [b.out_channels for b in small.encoder] == [8, 16, 32, 64]
    with pytest.raises(ValueError, match="leaves no channels"):
        UNet(narrow=0.001)


def test_bad_inputs_get_clear_errors():
    model = UNet(**SMALL)
    with pytest.raises(ValueError, match=r"expects a batch \(N, 3, H, W\), got shape \(3, 32, 32\)"):
        model(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="at least 16"):
        model(torch.zeros(1, 3, 8, 32))


def test_odd_sizes_are_reflect_padded_and_cropped_back():
    torch.manual_seed(0)
    model = UNet(**SMALL).eval()
    x = torch.randn(1, 3, 37, 53)
    with torch.no_grad():
        logits = model(x)
        padded = model(pad_to_multiple(x, 16))  # 48 x 64, no further padding
    assert pad_to_multiple(x, 16).shape[-2:] == (48, 64)
    assert logits.shape == (1, 1, 37, 53)
    assert torch.equal(logits, padded[..., :37, :53])
    # the padding is a mirror of the image, not zeros
    assert torch.equal(pad_to_multiple(x, 16)[..., 37, :53], x[..., 35, :])


def test_a_whole_stare_sized_image_works():
    model = UNet(narrow=1 / 32).eval()  # widths 2..16: the size logic is the same
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 605, 700))
    assert logits.shape == (1, 1, 605, 700)


@pytest.mark.parametrize("fusion", ["star", "sum"])
def test_the_default_predicts_at_half_resolution(fusion):
    """Faithful to the source, the last decoder block runs at H/2 and is upsampled by
    nearest neighbour into the 1x1 head: every aligned 2x2 block of the output is one
    value (a cap on 1-2 px capillaries). Fusing the shallowest skip gives full resolution."""
    x = torch.randn(1, 3, 32, 48)
    torch.manual_seed(0)
    half = UNet(fusion=fusion).eval()(x)
    blocks = half.unfold(2, 2, 2).unfold(3, 2, 2)  # (N, C, H/2, W/2, 2, 2)
    assert torch.equal(blocks, blocks[..., :1, :1].expand_as(blocks))
    torch.manual_seed(0)
    full = UNet(fusion=fusion, use_shallowest_skip=True).eval()(x)
    blocks = full.unfold(2, 2, 2).unfold(3, 2, 2)
    assert not torch.allclose(blocks, blocks[..., :1, :1].expand_as(blocks))


def test_return_feats_gives_the_fused_features_the_head_reads():
    torch.manual_seed(0)
    model = UNet(fusion="sum", use_shallowest_skip=True, return_feats=True, **SMALL).eval()
    with torch.no_grad():
        logits, feats = model(torch.randn(1, 3, 37, 53))
    assert [tuple(f.shape) for f in feats] == [
        (1, 64, 5, 7), (1, 32, 10, 14), (1, 16, 19, 27), (1, 8, 37, 53)]
    assert torch.allclose(model.head(feats[-1]), logits)
    default = UNet(return_feats=True, **SMALL)
    assert len(default(torch.randn(1, 3, 32, 32))[1]) == 3


def test_same_seed_same_model_same_output():
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = UNet(**SMALL)
        torch.manual_seed(8)
        outputs.append(model(torch.randn(2, 3, 32, 32)))
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("fusion", ["star", "concat", "attention"])
def test_channels_last_gives_the_same_logits(fusion):
    torch.manual_seed(0)
    model = UNet(fusion=fusion, **SMALL).eval()
    x = torch.randn(2, 3, 37, 40)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        logits = model(x.to(memory_format=torch.channels_last))
    assert torch.allclose(logits, reference, atol=1e-5, rtol=1e-4)


def test_torch_compile_captures_the_graph():
    torch.manual_seed(0)
    model = UNet(**SMALL).eval()
    x = torch.randn(1, 3, 40, 40)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    model = UNet(**SMALL).eval()
    x = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        reference = model(x)
        logits = model.cuda()(x.cuda()).cpu()
    assert torch.allclose(logits, reference, atol=1e-4, rtol=1e-3)


def test_probabilities_use_a_sigmoid_because_a_one_channel_softmax_is_always_one():
    logits = torch.tensor([[[[-3.0, 0.0, 5.0]]]])
    assert torch.equal(torch.softmax(logits, dim=1), torch.ones_like(logits))  # the source's bug
    assert torch.allclose(probabilities_from_logits(logits), torch.sigmoid(logits))
    two = torch.randn(1, 2, 3, 3)
    assert torch.allclose(probabilities_from_logits(two).sum(dim=1), torch.ones(1, 3, 3))


# ---------------------------------------------------------------- inspection helpers (notebook 03)

def test_parameter_table_rows_sum_to_the_model_and_name_every_block():
    rows = parameter_table(UNet())
    assert sum(r["params"] for r in rows) == 2_937_345
    assert [r["block"] for r in rows] == [
        "encoder1", "encoder2", "encoder3", "encoder4", "decoder1", "fusion1 (star)", "decoder2",
        "fusion2 (star)", "decoder3", "fusion3 (star)", "decoder4", "head (1x1 conv)"]
    text = format_parameter_table(rows)
    assert text.splitlines()[-1].split() == ["total", "2,937,345"]
    attention = parameter_table(UNet(fusion="attention", **SMALL))
    assert sum(r["params"] for r in attention) == count_parameters(UNet(fusion="attention", **SMALL))


def test_variant_parameter_counts_cover_every_fusion_and_match_the_built_networks():
    rows = variant_parameter_counts()
    assert [r["fusion"] for r in rows] == sorted(FUSIONS)
    by_name = {r["fusion"]: r for r in rows}
    # sum and star have no weights of their own: both are the source's 2,937,345
    assert by_name["sum"]["params"] == by_name["star"]["params"] == 2_937_345
    assert by_name["star"]["params_shallowest"] == count_parameters(UNet(use_shallowest_skip=True))
    assert by_name["attention"]["params"] > by_name["sum"]["params"]
    lines = format_variant_parameter_counts(rows).splitlines()
    assert len(lines) == 1 + len(FUSIONS)
    assert lines[1 + sorted(FUSIONS).index("star")].split()[-2:] == [
        "2,937,345", f"{by_name['star']['params_shallowest']:,}"]


def test_format_statistics_comparison_has_one_column_per_network_and_names_missing_layers():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    stats = {name: feature_statistics(UNet(fusion=name, **SMALL), x) for name in ("sum", "star")}
    lines = format_statistics_comparison(stats).splitlines()
    assert lines[0].split() == ["fused", "layer", "sum", "star"]
    assert len(lines) == 1 + 3 * 3  # three statistics x three fused layers
    std3 = next(r["std"] for r in stats["star"] if r["layer"] == "fusion3")
    row = next(line for line in lines if line.startswith("fusion3 std"))
    assert float(row.split()[-1]) == pytest.approx(std3, rel=1e-2)
    with pytest.raises(KeyError, match="no layer 'fusion9'.*'encoder1'"):
        format_statistics_comparison(stats, layers=("fusion9",))


def test_capture_features_records_every_stage_without_touching_the_model():
    torch.manual_seed(0)
    model = UNet(fusion="star", **SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    feats = capture_features(model, x)
    assert list(feats)[:5] == ["encoder1", "encoder2", "encoder3", "encoder4", "decoder1"]
    assert list(feats)[5:8] == ["fusion1.decoder", "fusion1.skip", "fusion1"]
    assert list(feats)[-1] == "logits" and feats["logits"].shape == (2, 1, 32, 32)
    # the recorded fusion really is the product of its recorded inputs
    assert torch.allclose(feats["fusion2"], feats["fusion2.decoder"] * feats["fusion2.skip"])
    assert torch.equal(feats["fusion3.skip"], feats["encoder2"])
    # BatchNorm running statistics of the caller's model are untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_feature_statistics_match_the_batchnorm_and_product_algebra():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    rows = {r["layer"]: r for r in feature_statistics(UNet(fusion="star", **SMALL), x)}
    # with batch statistics every block ends in a BatchNorm (gamma=1, beta=0 at init)
    for name in ["encoder1", "encoder4", "decoder1", "decoder4"]:
        assert abs(rows[name]["mean"]) < 1e-5 and abs(rows[name]["std"] - 1) < 1e-3
    # a product of two such tensors is heavy-tailed (kurtosis 9 when independent)
    assert rows["fusion1"]["kurtosis"] > 2 * rows["decoder1"]["kurtosis"]
    relu = {r["layer"]: r for r in feature_statistics(UNet(fusion="star", activation="relu", **SMALL), x)}
    assert abs(relu["encoder1"]["zero_fraction"] - 0.5) < 0.05
    assert relu["fusion1"]["zero_fraction"] > 0.6  # zero wherever either factor is


def test_tensor_statistics_on_known_values():
    stats = tensor_statistics(torch.tensor([-2.0, 0.0, 0.0, 2.0]))
    assert stats == pytest.approx(dict(mean=0.0, std=2**0.5, max_abs=2.0, kurtosis=2.0, zero_fraction=0.5))


def test_inspect_variant_is_seeded_and_leaves_the_global_rng_alone():
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = inspect_variant(x, fusion="gated", activation="gelu", narrow=0.125, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = inspect_variant(x, fusion="gated", activation="gelu", narrow=0.125, seed=3)
    assert torch.equal(a["logits"], b["logits"])
    assert a["params"] == count_parameters(UNet(fusion="gated", **SMALL))
    assert torch.allclose(a["probabilities"], torch.sigmoid(a["logits"]))
    assert [r["layer"] for r in a["statistics"]][-1] == "logits"


def test_most_label_correlated_channel_finds_the_channel_that_copies_the_label():
    label = torch.zeros(1, 16, 16)
    label[:, 4:8] = 1
    feature = torch.randn(5, 8, 8) * 0.1
    feature[3] += -torch.nn.functional.avg_pool2d(label, 2)[0]  # anti-correlated still counts
    assert most_label_correlated_channel(feature, label) == 3


def test_notebook_03_figures_build(tmp_path):
    """The figures of notebook 03 (starunet.plots) run on small inputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from starunet import plots_model

    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.8).float()
    feats = {name: capture_features(UNet(fusion=name, **SMALL), x) for name in ["sum", "star"]}
    stats = {"sum, none": feature_statistics(UNet(fusion="sum", **SMALL), x),
             "star, relu": feature_statistics(UNet(fusion="star", activation="relu", **SMALL), x)}
    figures = [
        plots_model.plot_unet_architecture(parameter_table(UNet(**SMALL))),
        plots_model.plot_unet_architecture(parameter_table(UNet(fusion="concat", use_shallowest_skip=True, **SMALL))),
        plots_model.plot_patch_output(x[0], y[0], feats["star"]["logits"][0], "untrained"),
        plots_model.plot_softmax_pitfall(feats["star"]["logits"][:1]),
        plots_model.plot_fusion_maps(feats, fusion=3, channel=1),
        plots_model.plot_feature_statistics(stats),
        plots_model.plot_variant(x[0], y[0], inspect_variant(x, "max", "relu", 0.125)),
    ]
    figures[0].savefig(tmp_path / "architecture.png", dpi=30)  # the arrows clip at draw time
    assert all(isinstance(fig, plt.Figure) for fig in figures)
    plt.close("all")


def test_notebook_03_widget_builds_and_rebuilds_on_a_change():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from starunet import widgets

    x, y = torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.8).float()
    explorer = widgets.model_variant_explorer(x, y, narrow=0.125)
    controls = explorer.children[0].children
    assert [c.description for c in controls] == ["fusion", "activation", "narrow"]
    assert set(controls[0].options) == set(FUSIONS)
    controls[0].value = "sum"  # a change rebuilds the variant without error
    plt.close("all")


def test_lesson_03_result_is_computed_on_the_network():
    from starunet import lessons

    lines = lessons.model_result()
    assert 3 <= len(lines) <= 5
    assert f"**{count_parameters(UNet()):,} parameters**" in lines[0] and "2,937,345" in lines[0]
    assert "3 star fusions" in lines[1] and "by 16 = 2^4" in lines[1] and "degree 4" in lines[1]
    assert lines[2].startswith("It predicts at half resolution")
    assert "is 1 at every pixel" in lines[3]


def test_the_architecture_draws_each_fusion_in_its_colour():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    from starunet import plots_model
    from starunet.fusion import fusion_color

    fig = plots_model.plot_unet_architecture(parameter_table(UNet(fusion="sum", **SMALL)))
    circles = [t for t in fig.axes[0].texts if t.get_text() == "+" and t.get_bbox_patch() is not None]
    assert len(circles) == 3
    assert all(c.get_bbox_patch().get_edgecolor() == to_rgba(fusion_color("sum")) for c in circles)
    plt.close(fig)
