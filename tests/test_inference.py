"""Tests of starunet.inference: BatchNorm folding and the one full-image path."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from starunet.data import image_to_tensor
from starunet.inference import (fold_batchnorm, inference_model, predict_logits, predict_probabilities,
                                preferred_memory_format, stack_images)
from starunet.fusion import FUSIONS
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
