"""From STARE records to what the network sees: the image split, tensors, random
training patches (:class:`PatchDataset`) and the class balance.

The records themselves (download, verification, cache, FOV masks) come from
:mod:`starunet.stare`; full-image inference (:mod:`starunet.inference`) runs whole
images, or tiles of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from starunet.stare import STARE_IDS, StareRecord, check_ids


# ------------------------------------------------------------------ class balance

def vessel_fraction(records: Sequence[StareRecord], within_fov: bool = True) -> float:
    """Vessel pixels (ah) over the pixels of all ``records``, pooled -- the class
    balance a model trains against. ``within_fov`` (default) counts only pixels
    inside the FOV, where the metrics are computed; the black surround would
    make vessels look rarer than they are to the model."""
    return _pooled_vessel_fraction(((r.label, r.fov) for r in records), within_fov)


def _pooled_vessel_fraction(masks: Iterable[tuple[np.ndarray, np.ndarray]], within_fov: bool) -> float:
    """Vessel pixels / counted pixels over ``(label, fov)`` boolean mask pairs,
    counted as integers so the result does not depend on summation order."""
    vessels = counted = 0
    for label, fov in masks:
        region = fov if within_fov else np.ones_like(fov)
        vessels += int(np.count_nonzero(label & region))
        counted += int(np.count_nonzero(region))
    if counted == 0:
        raise ValueError("no pixels to count: pass at least one record or patch with a non-empty FOV "
                         "(or within_fov=False)")
    return vessels / counted


# ------------------------------------------------------------------ splits

@dataclass(frozen=True)
class Split:
    """Image-level split of STARE ids (tuples, sorted)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def split_ids(ids: Iterable[str] = STARE_IDS, n_test: int = 10, val_ratio: float = 0.2,
              seed: int = 2024) -> Split:
    """Split ids into train/val/test at the image level, deterministically.

    Test = the last ``n_test`` ids in sorted order (the common STARE 10/10 protocol).
    Validation = ``round(val_ratio * n_rest)`` of the remaining ids (at least one when
    ``val_ratio > 0``), chosen by ``numpy.random.default_rng(seed).permutation`` (PCG64,
    identical on every platform; a test pins the result in case NumPy ever changes
    the stream). Defaults: the source experiment's ratio 0.2 and seed 2024.
    """
    ids = check_ids(ids)
    ids = tuple(sorted(ids))
    if not isinstance(n_test, (int, np.integer)) or not 0 <= n_test < len(ids):
        raise ValueError(f"n_test must be an integer in [0, {len(ids) - 1}] for {len(ids)} ids, got {n_test!r}")
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio!r}")
    rest, test = ids[:len(ids) - n_test], ids[len(ids) - n_test:]
    n_val = round(val_ratio * len(rest))
    n_val = max(n_val, 1) if val_ratio > 0 else 0
    if n_val >= len(rest):
        raise ValueError(f"val_ratio={val_ratio} leaves no training ids out of {len(rest)}; lower it")
    order = np.random.default_rng(seed).permutation(len(rest))
    val = tuple(sorted(rest[k] for k in order[:n_val]))
    train = tuple(i for i in rest if i not in val)
    return Split(train=train, val=val, test=test)


# ------------------------------------------------------------------ tensors and patches

def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3) uint8`` -> ``(3, H, W) float32`` in [0, 1] (``x / 255``).

    The one normalisation used for training, inference and visualisation: BatchNorm
    after the first convolution makes any further per-channel standardisation moot.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image_to_tensor expects an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    array = image.transpose(2, 0, 1).astype(np.float32)
    array /= 255.0
    return torch.from_numpy(array)


class PatchDataset(torch.utils.data.Dataset):
    """Random square training patches whose centre lies inside the FOV.

    Item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: its random numbers
    come from ``numpy.random.default_rng([seed, e, i])``, so the stream is the same
    with any number of DataLoader workers and after a resume. Call :meth:`set_epoch`
    before each epoch (with non-persistent workers the dataset is re-sent to them).

    Each item draws, always in the same order: the record (uniform), a centre pixel
    (uniform over that record's FOV), one of the 8 flips/90-degree rotations, and
    colour gains -- so switching ``augment`` or ``color_jitter`` never moves a patch.
    ``color_jitter=j`` multiplies each channel by a gain in ``[1 - j, 1 + j]`` (a shared
    brightness part plus a per-channel part), then clips to [0, 1].
    Near the border the window is shifted to stay inside the image (the sampled FOV
    pixel is then off-centre but still inside the patch).

    Returns ``(image (3,p,p), label (1,p,p), fov (1,p,p))``, all float32; images are
    converted once at construction, so an item costs a slice and a copy.
    """

    def __init__(self, records: Sequence[StareRecord], patch_size: int = 96,
                 samples_per_epoch: int = 1000, augment: bool = True,
                 color_jitter: float = 0.0, seed: int = 2024):
        records = list(records)
        if not records:
            raise ValueError("PatchDataset needs at least one record")
        if not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
        if not isinstance(samples_per_epoch, (int, np.integer)) or samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be a positive integer, got {samples_per_epoch!r}")
        if not 0.0 <= color_jitter <= 0.5:
            raise ValueError(f"color_jitter must be in [0, 0.5] (a relative gain), got {color_jitter!r}")
        for r in records:
            height, width = r.label.shape
            if patch_size > min(height, width):
                raise ValueError(f"patch_size {patch_size} exceeds record {r.id}'s size {height}x{width}")
            if not r.fov.any():
                raise ValueError(f"record {r.id} has an empty FOV; no patch centre can be drawn")
        self.ids = tuple(r.id for r in records)
        self.patch_size = int(patch_size)
        self.samples_per_epoch = int(samples_per_epoch)
        self.augment = bool(augment)
        self.color_jitter = float(color_jitter)
        self.seed = int(seed)
        self.epoch = 0
        self._images = [image_to_tensor(r.image) for r in records]
        self._labels = [torch.from_numpy(r.label.astype(np.float32))[None] for r in records]
        self._fovs = [torch.from_numpy(r.fov.astype(np.float32))[None] for r in records]
        self._centres = [np.flatnonzero(r.fov) for r in records]  # flat FOV pixel indices

    def set_epoch(self, epoch: int) -> None:
        """Select the patch stream of ``epoch`` (a non-negative integer)."""
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.samples_per_epoch:
            raise IndexError(f"index {index} out of range for {self.samples_per_epoch} samples")
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        k = int(rng.integers(len(self._images)))
        centre = int(self._centres[k][rng.integers(len(self._centres[k]))])
        transform = int(rng.integers(8))  # rotation by transform % 4 quarter turns, then flip if >= 4
        gains = rng.uniform(-1.0, 1.0, size=4)  # brightness, then one per channel

        height, width = self._labels[k].shape[1:]
        p = self.patch_size
        row, col = divmod(centre, width)
        top = min(max(row - p // 2, 0), height - p)
        left = min(max(col - p // 2, 0), width - p)
        window = (slice(None), slice(top, top + p), slice(left, left + p))
        image, label, fov = self._images[k][window], self._labels[k][window], self._fovs[k][window]

        if self.augment:
            image, label, fov = (_dihedral(t, transform) for t in (image, label, fov))
        if self.color_jitter > 0:
            # multiplicative gains keep black (outside the FOV) black; channel k's gain is
            # 1 + j * (brightness + colour_k) / 2, so it stays within [1 - j, 1 + j]
            scale = 1.0 + self.color_jitter * (gains[0] + gains[1:]) / 2
            image = (image * torch.from_numpy(scale.astype(np.float32))[:, None, None]).clamp_(0.0, 1.0)
        return image.contiguous(), label.contiguous(), fov.contiguous()


def _dihedral(x: torch.Tensor, transform: int) -> torch.Tensor:
    """One of the 8 symmetries of the square on the last two dims of ``x``."""
    x = torch.rot90(x, transform % 4, dims=(1, 2))
    return torch.flip(x, dims=(2,)) if transform >= 4 else x


def patch_vessel_fraction(dataset: PatchDataset, n: int, within_fov: bool = True) -> float:
    """:func:`vessel_fraction` of the first ``n`` patches of ``dataset`` (its current
    epoch). Compared with the training images' own fraction it tells whether
    drawing patch centres from the FOV over- or under-samples vessels."""
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= len(dataset):
        raise ValueError(f"n must be an integer from 1 to the dataset's {len(dataset)} samples per "
                         f"epoch, got {n!r}; pass a smaller n or build it with more samples_per_epoch")
    items = (dataset[i] for i in range(n))
    return _pooled_vessel_fraction(((label[0].numpy() > 0.5, fov[0].numpy() > 0.5) for _, label, fov in items),
                                   within_fov)


# ------------------------------------------------------------------ selecting records

def select_records(records: Sequence, ids: Iterable[str] | None) -> list:
    """The records with the given ids, in that order (all records when ``ids`` is None)."""
    if ids is None:
        return list(records)
    by_id = {r.id: r for r in records}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise ValueError(f"unknown image ids {unknown}; loaded records: {sorted(by_id)}")
    return [by_id[i] for i in ids]
