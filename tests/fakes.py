"""Small fakes shared by several test modules (pytest puts tests/ on sys.path)."""
from __future__ import annotations

import importlib.util
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import starunet.results as RS
from starunet.stare import StareRecord
from starunet.metrics import METRIC_NAMES


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


def crop(record, size: int = 96):
    h, w = record.label.shape
    top, left = (h - size) // 2, (w - size) // 2
    window = (slice(top, top + size), slice(left, left + size))
    return StareRecord(record.id, record.image[window], record.label[window], record.label_vk[window],
                       record.fov[window])


def synthetic_grid(tmp_path, preset: str, gap: float, epochs: int, seeds=(1, 2, 3)) -> RS.GridResults:
    """A grid whose star runs score ``gap`` more than the sum runs on every image."""
    rng = np.random.default_rng(0)
    runs, per_image = [], []
    for seed in seeds:
        sums = {i: 0.7 + 0.05 * rng.standard_normal() for i in ("im1", "im2", "im3", "im4")}
        for fusion, values in (("sum", sums), ("star", {i: v + gap for i, v in sums.items()})):
            per_image += [{"fusion": fusion, "activation": "none", "seed": seed, "image_id": i,
                           **{m: v for m in METRIC_NAMES}} for i, v in values.items()]
            runs.append({"fusion": fusion, "activation": "none", "seed": seed, "epochs": epochs,
                         "best_epoch": epochs - 1, **{m: float(np.mean(list(values.values()))) for m in METRIC_NAMES}})
    provenance = {"preset": preset, "preset_config": {"samples_per_epoch": 100}}
    return RS.GridResults(tmp_path / preset, "own", runs, per_image, {}, provenance)


def tiny_smoke():
    """The smoke preset shrunk to about a second per run (narrow net, 1 epoch of 8
    patches of 32x32): what the ``tiny_preset`` fixture installs as "smoke"."""
    from starunet.presets import PRESETS

    return PRESETS["smoke"].replace(narrow=0.125, samples_per_epoch=8, max_epochs=1, patience=1,
                                    patch_size=32, val_crop=64)


# The lab's tests that need submitit, the optional 'cluster' extra: skipped without it,
# except in CI (CI=true), which installs it (make install) and must run them.
needs_submitit = pytest.mark.skipif(
    importlib.util.find_spec("submitit") is None and os.environ.get("CI") != "true",
    reason="needs the optional 'cluster' extra (submitit): pip install -e '.[cluster]'")
