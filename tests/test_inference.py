"""Tests of starunet.inference: BatchNorm folding, the one full-image path, padded and tiled."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fakes import PixelwiseNet, fake_records
from starunet.data import image_to_tensor
from starunet.inference import (INFERENCE_METHODS, Tiler, compare_inference_methods, fold_batchnorm, inference_model,
                                predict_images, predict_logits, predict_probabilities, preferred_memory_format,
                                stack_images)
from starunet.fusion import FUSIONS
from starunet.metrics import METRIC_NAMES
from starunet.model import UNet


def _trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters,
    as training would (fresh ones are mean 0, var 1, identity: folding them is trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
@pytest.mark.parametrize("activation", ["none", "relu"])
def test_folding_computes_what_eval_mode_computes(fusion, activation):
    torch.manual_seed(0)
    model = _trained_looking(UNet(fusion=fusion, activation=activation, narrow=1 / 8)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 48, 40)
    folded = fold_batchnorm(model)
    # every conv's BatchNorm is folded; a normalised product's BatchNorm follows a product,
    # not a conv, so it stays (and eval mode applies it as before)
    fusion_norms = {id(m) for f in folded.fusions for m in f.modules() if isinstance(m, nn.BatchNorm2d)}
    assert not any(isinstance(m, nn.BatchNorm2d) and id(m) not in fusion_norms for m in folded.modules())
    with torch.no_grad():
        expected = model.eval()(x)
        got = folded(x)
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= 1e-5 * max(scale, 1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "model was modified"


def test_model_is_left_untouched_and_in_its_mode():
    model = _trained_looking(UNet(narrow=1 / 8)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predict_logits(model, torch.rand(1, 3, 32, 32))
    assert model.training
    assert next(model.parameters()).is_contiguous()  # its layout is not changed either
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_full_stare_image_matches_the_plain_model(stare_records):
    torch.manual_seed(1)
    model = _trained_looking(UNet(), seed=1).eval()
    image = image_to_tensor(stare_records[0].image)[None]
    logits = predict_logits(model, image)
    assert logits.shape == (1, 1, 605, 700) and logits.dtype == torch.float32
    with torch.no_grad():
        plain = model(image)
    assert (logits - plain).abs().max().item() <= 1e-4 * max(plain.abs().max().item(), 1.0)
    prob = predict_probabilities(model, image)
    assert 0.0 <= prob.min() and prob.max() <= 1.0


def test_predictions_are_deterministic_and_batch_independent():
    torch.manual_seed(2)
    model = _trained_looking(UNet(narrow=1 / 8), seed=2)
    images = torch.rand(3, 3, 50, 37)
    one = predict_logits(model, images, batch_size=1)
    again = predict_logits(model, images, batch_size=1)
    three = predict_logits(model, images, batch_size=3)
    assert torch.equal(one, again)
    torch.testing.assert_close(one, three, atol=1e-5, rtol=1e-5)


def test_prepared_model_is_used_as_is():
    model = _trained_looking(UNet(narrow=1 / 8))
    net = inference_model(model, "cpu")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(predict_logits(net, x, prepared=True), predict_logits(model, x))


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 1, 32, 32), (2, 4, 32, 32)])
def test_bad_image_shapes_name_the_fix(shape):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*image_to_tensor"):
        predict_logits(UNet(narrow=1 / 8), torch.zeros(shape))


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        predict_logits(UNet(narrow=1 / 8), torch.zeros(1, 3, 32, 32), batch_size=0)


def test_stack_images_groups_by_size():
    tensors = [torch.zeros(3, 4, 5), torch.ones(3, 6, 5), torch.full((3, 4, 5), 2.0)]
    groups = stack_images(tensors)
    assert [idx for idx, _ in groups] == [[0, 2], [1]]
    assert groups[0][1].shape == (2, 3, 4, 5) and groups[0][1][1].eq(2).all()


def test_channels_last_on_cpu_only_and_every_layout_works_with_contiguous():
    assert preferred_memory_format("cpu") == torch.channels_last
    assert preferred_memory_format("cuda") == torch.contiguous_format
    for device in ("cpu", "cuda", "mps"):  # the first GPU session failed here: preserve_format is refused
        assert torch.zeros(1, 3, 4, 4).contiguous(memory_format=preferred_memory_format(device)).shape == (1, 3, 4, 4)


@pytest.mark.parametrize("height, width, patch, stride", [(605, 700, 96, 48), (100, 130, 32, 32), (50, 50, 50, 7), (33, 40, 16, 5)])
def test_tiler_round_trip_is_exact_and_covers_the_image(height, width, patch, stride):
    tiler = Tiler(height, width, patch_size=patch, stride=stride)
    x = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    tiles = tiler.split(x)
    assert tiles.shape == (len(tiler), 3, patch, patch)
    assert torch.equal(tiler.merge(tiles), x)
    assert max(r for r, _ in tiler.origins) == height - patch and max(c for _, c in tiler.origins) == width - patch
    assert (tiler._counts > 0).all()


def test_tiler_merge_averages_overlaps():
    tiler = Tiler(4, 6, patch_size=4, stride=2)  # tiles start at columns 0 and 2
    tiles = torch.stack([torch.full((1, 4, 4), 1.0), torch.full((1, 4, 4), 3.0)])
    merged = tiler.merge(tiles)[0]
    assert merged[:, :2].eq(1).all() and merged[:, 2:4].eq(2).all() and merged[:, 4:].eq(3).all()
    with pytest.raises(ValueError, match=r"expected \(2, C, 4, 4\) tiles"):
        tiler.merge(tiles[:1])
    with pytest.raises(ValueError, match=r"expected a \(C, 4, 6\) tensor"):
        tiler.split(torch.zeros(1, 5, 6))
    with pytest.raises(ValueError, match="gaps"):
        Tiler(10, 10, patch_size=4, stride=5)
    with pytest.raises(ValueError, match="exceeds the image size"):
        Tiler(10, 10, patch_size=12)


@pytest.mark.parametrize("method", INFERENCE_METHODS)
def test_inference_has_the_image_size_and_lies_in_unit_interval(method):
    torch.manual_seed(0)
    model = UNet(narrow=1 / 16)  # 4 channels at the top: a fast real U-Net
    images = [r.image for r in fake_records(shape=(37, 53))]  # not multiples of 16
    probs = predict_images(model, images, method=method, batch_size=2, patch_size=32, stride=16)
    assert len(probs) == len(images)
    for p in probs:
        assert p.shape == (37, 53) and p.dtype == np.float32
        assert np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0


def test_batching_does_not_change_predictions():
    torch.manual_seed(0)
    model = UNet(narrow=1 / 16)
    images = [r.image for r in fake_records(n=3)]
    one = predict_images(model, images, batch_size=1)
    three = predict_images(model, images, batch_size=3)
    for a, b in zip(one, three):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_pad_and_tiles_agree_for_a_pixelwise_model():
    model = PixelwiseNet()
    images = [r.image for r in fake_records(n=2, shape=(50, 70))]
    pad = predict_images(model, images, method="pad")
    tiles = predict_images(model, images, method="tiles", patch_size=32, stride=16)
    for a, b in zip(pad, tiles):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_unknown_inference_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="pad, tiles"):
        predict_images(PixelwiseNet(), [fake_records(1)[0].image], method="sliding")


def test_compare_inference_methods_times_and_scores_both():
    rows = compare_inference_methods(PixelwiseNet(), fake_records(n=2, shape=(48, 48)), patch_size=32, stride=16)
    assert [r["method"] for r in rows] == list(INFERENCE_METHODS)
    for r in rows:
        # both are rounded to 3 decimals from the same raw time, so they agree to a rounding step
        assert set(METRIC_NAMES) <= set(r) and abs(r["seconds_per_image"] - r["seconds"] / 2) <= 0.001
    # a pixel-wise model gives the same map either way, hence the same metrics
    assert rows[0]["roc_auc"] == pytest.approx(rows[1]["roc_auc"], abs=1e-6)
