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

Whole images go through :func:`predict_images` in one of two ways. A model trained
on 96x96 patches is fully convolutional, so it can run on a whole 605x700 image
padded to a multiple of 16 (the four 2x poolings of the U-Net), or on overlapping
96x96 tiles whose probabilities are averaged (:class:`Tiler`). Both are here
(``method="pad"`` / ``"tiles"``) and :func:`compare_inference_methods` measures
them; ``reproduce`` repeats that measurement on every run it evaluates
(``inference_methods.csv``, shown in notebook 05, and the ``pooled_tiles`` verdicts:
how much the comparisons depend on it). We report ``"pad"``: one pass per image instead
of about four per pixel (96x96 tiles at stride 48), and no tile seams. It is a choice, not
a winner: tiles are about 3x slower, and on some runs they score higher (e.g. PR-AUC on
``results/fast``'s sum/none runs), which is why every verdict is also shown under tiles.
Batches: ``batch_size`` whole images, or tiles, per forward pass.
"""
from __future__ import annotations

import copy
import time
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from starunet.data import image_to_tensor
from starunet.device import preferred_memory_format  # noqa: F401  (re-exported)
from starunet.metrics import segmentation_metrics
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


INFERENCE_METHODS = ("pad", "tiles")


DEFAULT_METHOD = "pad"


def check_inference_method(method: str) -> None:
    if method not in INFERENCE_METHODS:
        raise ValueError(f"unknown inference method {method!r}; valid: {', '.join(INFERENCE_METHODS)}")


def _predict_padded(net, tensors: list, batch_size: int) -> list[np.ndarray]:
    """Whole images, ``batch_size`` per pass, batched by size (all STARE images
    share one); the UNet reflect-pads each to a multiple of 16 and crops back."""
    out: list[np.ndarray | None] = [None] * len(tensors)
    for indices, batch in stack_images(tensors):
        probs = predict_probabilities(net, batch, batch_size, prepared=True)[:, 0]
        for i, p in zip(indices, probs):
            out[i] = p.numpy()
    return out  # type: ignore[return-value]


def _predict_tiled(net, tensors: list, batch_size: int, patch_size: int, stride: int) -> list[np.ndarray]:
    """Overlapping tiles of the training patch size, probabilities averaged."""
    out = []
    for t in tensors:
        tiler = Tiler(t.shape[-2], t.shape[-1], patch_size=patch_size, stride=stride)
        probs = predict_probabilities(net, tiler.split(t), batch_size, prepared=True)
        out.append(tiler.merge(probs)[0].numpy())
    return out


def predict_images(model, images: Sequence[np.ndarray], method: str = DEFAULT_METHOD,
                   batch_size: int = 4, device: str | None = None,
                   patch_size: int = 96, stride: int = 48) -> list[np.ndarray]:
    """Vessel probability maps of whole images.

    ``images`` are ``(H, W, 3) uint8`` arrays (``StareRecord.image``); returns one
    ``(H, W) float32`` array in [0, 1] per image. ``method="pad"`` runs each image
    whole (the UNet pads it to a multiple of 16); ``"tiles"`` runs overlapping
    ``patch_size`` tiles at ``stride`` and averages them. Both go through
    :mod:`starunet.inference` (fp32, BatchNorm folded: eval mode's running
    statistics) on a copy of ``model``; ``model`` itself is not touched.
    """
    check_inference_method(method)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net = inference_model(model, device)
    tensors = [image_to_tensor(np.asarray(im)) for im in images]
    if method == "pad":
        probs = _predict_padded(net, tensors, batch_size)
    else:
        probs = _predict_tiled(net, tensors, batch_size, patch_size, stride)
    return [np.clip(p, 0.0, 1.0).astype(np.float32) for p in probs]


def compare_inference_methods(model, records: Sequence, batch_size: int = 4,
                              device: str | None = None, patch_size: int = 96, stride: int = 48) -> list[dict]:
    """Time both inference methods on ``records`` and score them (pooled, FOV, 0.5).

    One row per method: ``method, seconds, seconds_per_image`` and the metrics.
    """
    rows = []
    for method in INFERENCE_METHODS:
        start = time.perf_counter()
        probs = predict_images(model, [r.image for r in records], method=method, batch_size=batch_size,
                               device=device, patch_size=patch_size, stride=stride)
        seconds = time.perf_counter() - start
        metrics = segmentation_metrics(probs, [r.label for r in records], [r.fov for r in records])
        rows.append({"method": method, "seconds": round(seconds, 3),
                     "seconds_per_image": round(seconds / max(len(records), 1), 3), **metrics})
    return rows


def _tile_starts(size: int, patch_size: int, stride: int) -> list[int]:
    starts = list(range(0, size - patch_size + 1, stride))
    if starts[-1] != size - patch_size:
        starts.append(size - patch_size)  # the last tile sits flush with the border
    return starts


class Tiler:
    """Cut an image into overlapping square tiles and stitch tile outputs back.

    Tiles start every ``stride`` pixels; the last row/column of tiles is flush with
    the border, so every pixel is covered. :meth:`merge` averages the overlaps
    (accumulating in float64, so ``merge(split(x)) == x`` exactly for float32 ``x``).
    """

    def __init__(self, height: int, width: int, patch_size: int = 96, stride: int = 48):
        for name, value in (("height", height), ("width", width), ("patch_size", patch_size), ("stride", stride)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if patch_size > min(height, width):
            raise ValueError(f"patch_size {patch_size} exceeds the image size {height}x{width}")
        if stride > patch_size:
            raise ValueError(f"stride {stride} > patch_size {patch_size} would leave gaps between tiles")
        self.height, self.width = int(height), int(width)
        self.patch_size, self.stride = int(patch_size), int(stride)
        self.origins = [(r, c) for r in _tile_starts(height, patch_size, stride)
                        for c in _tile_starts(width, patch_size, stride)]
        counts = torch.zeros(height, width, dtype=torch.float64)
        for r, c in self.origins:
            counts[r:r + patch_size, c:c + patch_size] += 1
        self._counts = counts

    def __len__(self) -> int:
        return len(self.origins)

    def __repr__(self) -> str:
        return (f"Tiler({self.height}x{self.width}, patch_size={self.patch_size}, "
                f"stride={self.stride}, tiles={len(self)})")

    def split(self, image: torch.Tensor) -> torch.Tensor:
        """``(C, H, W)`` -> ``(N, C, p, p)`` tiles in row-major order of :attr:`origins`."""
        image = torch.as_tensor(image)
        if image.ndim != 3 or tuple(image.shape[1:]) != (self.height, self.width):
            raise ValueError(f"expected a (C, {self.height}, {self.width}) tensor, got {tuple(image.shape)}")
        p = self.patch_size
        return torch.stack([image[:, r:r + p, c:c + p] for r, c in self.origins])

    def merge(self, tiles: torch.Tensor) -> torch.Tensor:
        """``(N, C', p, p)`` -> ``(C', H, W)``, averaging where tiles overlap.

        Accumulates on the CPU in float64 and returns the input's dtype and device.
        """
        tiles = torch.as_tensor(tiles)
        p = self.patch_size
        if tiles.ndim != 4 or tiles.shape[0] != len(self) or tuple(tiles.shape[2:]) != (p, p):
            raise ValueError(f"expected ({len(self)}, C, {p}, {p}) tiles, got {tuple(tiles.shape)}")
        source = tiles.detach().to("cpu", torch.float64)
        total = torch.zeros(tiles.shape[1], self.height, self.width, dtype=torch.float64)
        for tile, (r, c) in zip(source, self.origins):
            total[:, r:r + p, c:c + p] += tile
        return (total / self._counts).to(device=tiles.device, dtype=tiles.dtype)
