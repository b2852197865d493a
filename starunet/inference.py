"""Full-image inference: the one forward path that validation, test evaluation and
the benchmark share, so a validation score and a test score are computed alike.

Two measured speed-ups make it the fastest path on the project's 2-core CPU
(``benchmarks/cpu.md``), and neither changes what the network computes:

* **BatchNorm folded into the convolutions.** In eval mode a BatchNorm is a fixed
  per-channel affine map, so ``BN(conv(x))`` is one convolution with rescaled
  weights and a new bias. Folding removes the 16 BatchNorm passes over full-size
  feature maps (memory traffic, no FLOPs). The outputs agree with the unfolded
  network to float32 rounding (~1e-6 relative), and the fold is itself
  deterministic.
* **channels-last layout on CPU** (:func:`preferred_memory_format`), for which
  oneDNN's convolutions are faster.

Inference is always fp32, also on GPUs: ten full images are cheap, and a metric
should not depend on the device's half-precision rounding.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from starunet.device import preferred_memory_format  # noqa: F401  (re-exported)
from starunet.model import probabilities_from_logits


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` in which every ``Conv2d`` directly followed by a
    ``BatchNorm2d`` inside an ``nn.Sequential`` (the UNet's ConvBlocks) is replaced by
    one conv with the BatchNorm folded in, and the BatchNorm by ``nn.Identity``.

    ``model`` itself is not touched (its mode, weights and running statistics stay).
    Only valid for inference: the folded conv uses the running statistics, as eval
    mode does, and has no BatchNorm left to train.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module[i] = fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()
    return folded


def inference_model(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """``model`` ready for fast inference on ``device`` (default: where it is): a
    BatchNorm-folded eval copy in the device's preferred layout. ``model`` is not
    touched, so this is safe to call on a model in the middle of training."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    return fold_batchnorm(model).to(device, memory_format=preferred_memory_format(device))


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a batch of image tensors (N, 3, H, W), got shape {tuple(images.shape)}; "
                         "make one with torch.stack([starunet.image_to_tensor(r.image) for r in records])")


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 4,
                   device: torch.device | str | None = None, prepared: bool = False) -> torch.Tensor:
    """Logits ``(N, 1, H, W) float32`` on the CPU for image tensors ``(N, 3, H, W)``.

    Whole images go through in one pass each (the UNet reflect-pads sizes that are
    not multiples of 16 and crops back), ``batch_size`` images per forward pass.
    ``prepared=True`` skips :func:`inference_model` for a model that already went
    through it (e.g. once for many batches of tiles).
    """
    _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net = model if prepared else inference_model(model, device)
    device = next(net.parameters()).device
    layout = preferred_memory_format(device)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device).contiguous(memory_format=layout)
        logits = net(batch)
        if isinstance(logits, tuple):  # models built with return_feats=True
            logits = logits[0]
        outputs.append(logits.float().cpu())
    return torch.cat(outputs).contiguous()


def predict_probabilities(model: nn.Module, images: torch.Tensor, batch_size: int = 4,
                          device: torch.device | str | None = None, prepared: bool = False) -> torch.Tensor:
    """Vessel probabilities ``(N, C, H, W)`` in [0, 1] on the CPU (sigmoid of
    :func:`predict_logits`; a softmax over channels for several output channels)."""
    return probabilities_from_logits(predict_logits(model, images, batch_size, device, prepared))


def stack_images(tensors: Sequence[torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
    """Group ``(3, H, W)`` image tensors by size: ``[(indices, (n, 3, H, W) batch), ...]``,
    so images of different sizes can still be predicted in batches."""
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tensors):
        by_size.setdefault(tuple(t.shape), []).append(i)
    return [(indices, torch.stack([tensors[i] for i in indices])) for indices in by_size.values()]
