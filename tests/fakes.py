"""Small fakes shared by several test modules (pytest puts tests/ on sys.path)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import nn


def fake_records(n: int = 3, shape=(40, 52), seed: int = 0):
    """Random records: uint8 images, ~10 % vessels, a disc-shaped FOV."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    fov = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (0.45 * min(shape)) ** 2
    return [SimpleNamespace(id=f"im{i:04d}", image=rng.integers(0, 256, shape + (3,), dtype=np.uint8),
                            label=rng.random(shape) < 0.1, fov=fov) for i in range(n)]


class PixelwiseNet(nn.Module):
    """1x1 convs only: each output pixel depends on its own input pixel, so whole-image
    and tiled inference must agree exactly."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Tanh(), nn.Conv2d(4, 1, 1))

    def forward(self, x):
        return self.net(x)
