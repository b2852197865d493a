"""The training engine: one configuration in, one run directory out.

The protocol is the source experiment's, in plain PyTorch:

* **data** -- the STARE split of :func:`starunet.data.split_ids` (10 test images;
  of the other 10, ``val_ratio`` = 20 % for validation, i.e. 8 train / 2 val),
  random 96x96 training patches from :class:`starunet.data.PatchDataset`;
* **epoch** -- a fixed number of random training patches (``samples_per_epoch``),
  not a pass over a fixed set: patches are re-drawn each epoch, so "epoch" only
  fixes how often we validate, checkpoint and test for early stopping. Patch ``i``
  of epoch ``e`` is a pure function of ``(seed, e, i)``, which is what makes
  resume exact;
* **model** -- :class:`starunet.model.UNet` with the chosen skip fusion and
  activation, 1-channel logits;
* **loss** -- ``BCEWithLogitsLoss`` over every pixel of the patch, no class weight,
  no Dice term (nothing added to the source recipe);
* **optimiser** -- Adam, lr 5e-4, batch 8, no schedule;
* **validation** -- after each epoch, full-image inference on the validation
  images (:func:`starunet.inference.predict_logits`, fp32), metrics inside the field of view with
  :func:`starunet.metrics.segmentation_metrics`;
* **model selection** -- the weights with the best validation ``monitor`` metric
  (default PR-AUC: threshold-free like ROC-AUC, but not flattered by the ~90 % easy
  background pixels, so it still separates models once ROC-AUC saturates) are kept
  in ``checkpoint_best.pt``; training stops after ``patience`` epochs without
  improvement or at ``max_epochs``;
* **speed** -- CPU: channels-last layout (:func:`to_device`), PyTorch's default
  thread count (one per physical core), no DataLoader workers. CUDA: bf16 autocast,
  ``cudnn.benchmark``, pinned memory, 4 loader workers, optional ``torch.compile``.
  Same seed and device give the same numbers (on CPU; cuDNN's autotuned kernels
  need not be bit-reproducible).

A run directory holds ``config.json``, ``history.csv`` (one row per epoch),
``checkpoint_last.pt`` (everything needed to resume: model, optimiser, early
stopping, RNG states, history), ``checkpoint_best.pt`` (weights) and, once
finished, ``result.json``. Every file is written atomically (:mod:`starunet.io`),
and checkpoints hold only tensors and plain Python values so they load with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import random
import shlex
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from starunet.config import default_runs_dir, display_path, smoke_mode
from starunet.device import (DEVICE_CHOICES, autocast_bf16, device_description, select_device,  # noqa: F401
                             to_device)  # (re-exported: notebook 04 and older code import them from here)
from starunet.inference import inference_model, predict_logits
from starunet.model import probabilities_from_logits
from starunet.io import read_csv, torch_save_atomic, write_csv_atomic, write_json_atomic
from starunet.preflight import (LOCK_FILE, RunDirLock, RunDirLockedError, check_seeds, check_writable_dir,
                                cli_message, python_command, seed_problem)

# Bump when a change to this file changes the numbers a config produces: it is part
# of the config hash, so cached runs of the old engine are not silently reused.
ENGINE_VERSION = 1

MONITOR_CHOICES = ("pr_auc", "roc_auc", "f1", "loss")
CONFIG_FILE, HISTORY_FILE, RESULT_FILE = "config.json", "history.csv", "result.json"
LAST_CHECKPOINT, BEST_CHECKPOINT = "checkpoint_last.pt", "checkpoint_best.pt"
RUN_FILES = (CONFIG_FILE, HISTORY_FILE, RESULT_FILE, LAST_CHECKPOINT, BEST_CHECKPOINT)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped before saving it."""


class RunDirConflictError(FileExistsError):
    """The run directory already holds a different or unfinished run."""


class TrainingStopped(Exception):
    """Training stopped on request (``train(stop=...)``) between two steps.

    The partial epoch is dropped; ``checkpoint_last.pt`` still holds the end of
    epoch ``epoch`` (0: none had finished, nothing saved), so ``resume=True``
    continues exactly where an uninterrupted run would be."""

    def __init__(self, run_dir: Path, epoch: int, max_epochs: int):
        self.run_dir, self.epoch, self.max_epochs = Path(run_dir), epoch, max_epochs
        saved = f"after epoch {epoch} of {max_epochs}" if epoch else "before the first epoch ended (nothing saved)"
        super().__init__(f"stopped {saved} in {display_path(self.run_dir)}")


StopFlag = Callable[[], bool]


def _stop_flag(stop: "threading.Event | StopFlag | None") -> StopFlag:
    """``stop`` as a no-argument callable: an Event's ``is_set``, a callable as is."""
    if stop is None:
        return lambda: False
    return stop.is_set if hasattr(stop, "is_set") else stop


# ---------------------------------------------------------------- configuration

@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the numbers a training run produces.

    Defaults are the source experiment (see the module docstring). How the run is
    executed (device, ``torch.compile``, progress bars) is not part of the config:
    those are arguments of :func:`train`.
    """

    fusion: str = "star"             # skip-fusion op, a key of starunet.FUSIONS
    activation: str = "none"         # a key of starunet.ACTIVATIONS ("none" = ReLU-free)
    seed: int = 2024                 # model init and the patch stream
    split_seed: int = 2024           # the image split; fixed across seeds so every run sees the same test set
    n_test: int = 10                 # test images held out (evaluated by starunet.evaluate, never here)
    val_ratio: float = 0.2           # fraction of the non-test images used for validation
    patch_size: int = 96             # training patch side; a multiple of 16 (four 2x poolings)
    samples_per_epoch: int = 2000    # random training patches per epoch
    batch_size: int = 8
    lr: float = 5e-4                 # Adam, constant
    max_epochs: int = 200            # hard cap
    patience: int = 10               # epochs without a better validation `monitor` before stopping
    monitor: str = "pr_auc"          # validation metric for early stopping and the best checkpoint
    augment: bool = True             # random flips/rotations of the patches
    color_jitter: float = 0.0        # per-channel colour gain jitter, at most 0.5 (0 = off, as in the source)
    narrow: float = 0.5              # UNet width factor (0.5 = the 2,937,345-parameter model)
    channel_multiplier: int = 1
    val_images: int | None = None    # use only the first N validation images (None = all)
    val_crop: int | None = None      # centre-crop validation images to this square side (None = full image)
    preset: str = "custom"           # a label for humans and the run folder; not part of the hash

    # -- checks -------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Raise ``ValueError`` listing every invalid field (and how to fix it);
        return ``self`` so calls can be chained."""
        problems = _config_problems(self)
        if problems:
            raise ValueError("invalid TrainConfig:\n  - " + "\n  - ".join(problems))
        return self

    # -- serialisation ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict` (a ``config_hash`` key is ignored)."""
        data = {k: v for k, v in data.items() if k != "config_hash"}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(names)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes).validate()

    @property
    def config_hash(self) -> str:
        """12 hex digits of SHA-256 over every field that affects results (all but
        ``preset``) and :data:`ENGINE_VERSION`: the run-cache key."""
        fields = {k: v for k, v in self.to_dict().items() if k != "preset"}
        payload = json.dumps({"engine_version": ENGINE_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def split(self):
        """The ``Split(train, val, test)`` of image ids this config trains on."""
        from starunet.data import STARE_IDS, split_ids

        return split_ids(STARE_IDS, n_test=self.n_test, val_ratio=self.val_ratio, seed=self.split_seed)

    def steps_per_epoch(self) -> int:
        return math.ceil(self.samples_per_epoch / self.batch_size)


def _config_problems(c: TrainConfig) -> list[str]:
    from starunet.data import STARE_IDS
    from starunet.fusion import FUSIONS
    from starunet.model import ACTIVATIONS

    problems = []
    if c.fusion not in FUSIONS:
        problems.append(f"fusion={c.fusion!r} is unknown; valid: {', '.join(FUSIONS)}")
    if c.activation not in ACTIVATIONS:
        problems.append(f"activation={c.activation!r} is unknown; valid: {', '.join(ACTIVATIONS)}")
    if c.monitor not in MONITOR_CHOICES:
        problems.append(f"monitor={c.monitor!r} is unknown; valid: {', '.join(MONITOR_CHOICES)}")
    positive_ints = ("patch_size", "samples_per_epoch", "batch_size", "max_epochs", "patience",
                     "channel_multiplier")
    for name in positive_ints:
        value = getattr(c, name)
        if not _is_int(value) or value < 1:
            problems.append(f"{name}={value!r} must be a positive integer")
    for name in ("seed", "split_seed"):
        problem = seed_problem(getattr(c, name), name)
        if problem:
            problems.append(problem)
    if _is_int(c.patch_size) and c.patch_size % 16:
        problems.append(f"patch_size={c.patch_size} must be a multiple of 16 (the UNet halves it 4 times); "
                        f"e.g. {max(16, round(c.patch_size / 16) * 16)}")
    if not _is_int(c.n_test) or not 0 <= c.n_test <= len(STARE_IDS) - 2:
        problems.append(f"n_test={c.n_test!r} must be an integer in [0, {len(STARE_IDS) - 2}] "
                        "(at least one training and one validation image must remain)")
    if not _is_number(c.val_ratio) or not 0 < c.val_ratio < 1:
        problems.append(f"val_ratio={c.val_ratio!r} must be a number in the open interval (0, 1)")
    if not _is_number(c.lr) or not 0 < c.lr < math.inf:
        problems.append(f"lr={c.lr!r} must be a positive finite number")
    if not _is_number(c.narrow) or not 0 < c.narrow < math.inf:
        problems.append(f"narrow={c.narrow!r} must be a positive number")
    elif _is_number(c.channel_multiplier) and round(64 * c.narrow * c.channel_multiplier) < 1:
        problems.append(f"narrow * channel_multiplier = {c.narrow * c.channel_multiplier:g} leaves no "
                        "channels (the UNet's base width is round(64 * product)); use at least 1/64")
    if not _is_number(c.color_jitter) or not 0 <= c.color_jitter <= 0.5:
        problems.append(f"color_jitter={c.color_jitter!r} must be a number in [0, 0.5] (a relative gain)")
    if not isinstance(c.augment, bool):
        problems.append(f"augment={c.augment!r} must be True or False")
    if c.val_images is not None and (not _is_int(c.val_images) or c.val_images < 1):
        problems.append(f"val_images={c.val_images!r} must be None (all) or a positive integer")
    if c.val_crop is not None and (not _is_int(c.val_crop) or c.val_crop < 16 or c.val_crop % 16):
        problems.append(f"val_crop={c.val_crop!r} must be None (full image) or a positive multiple of 16")
    if not isinstance(c.preset, str) or not c.preset.isidentifier():
        problems.append(f"preset={c.preset!r} must be a short name (letters, digits, _), used as a folder name")
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Presets differ only in how much training they buy; the recipe is the same.
# `quick` was sized from throughput probes on the project's 2-core CPU (AMD EPYC,
# channels-last; the CPU was shared with other jobs): a training step of batch 8
# took 0.35-0.37 s with 1 thread and 0.22-0.34 s (fastest steps) with 2, a
# validation epoch (2 full images + metrics) about 3 s. 12 epochs x 40
# steps is then ~3 min per run, ~12-14 min for the 2x2 grid (budget: 20 min). On
# the busy shared machine, with 1 thread, a whole star/none quick run took 319 s
# (best validation ROC-AUC 0.87, PR-AUC 0.47 at epoch 11: learning, still climbing).
PRESETS: dict[str, TrainConfig] = {
    # seconds: a pipeline check for CI and nbval, not a result
    "smoke": TrainConfig(samples_per_epoch=8, batch_size=8, max_epochs=2, patience=2,
                         val_images=1, val_crop=160, preset="smoke"),
    # minutes on a 2-core CPU: 480 steps (3,840 patches), a meaningful but under-trained model
    "quick": TrainConfig(samples_per_epoch=320, max_epochs=12, preset="quick"),
    # 4x the quick budget (up to 15,360 patches, early stopping on): does a verdict
    # of the quick grid survive more training? About 8 minutes a run on 2 CPU cores
    "long": TrainConfig(samples_per_epoch=320, max_epochs=48, preset="long"),
    # the faithful protocol, meant for a GPU: early stopping decides the length
    "full": TrainConfig(samples_per_epoch=2000, max_epochs=200, preset="full"),
    # learning curves (starunet.curves): 65,536 patches, validated every 512, no early
    # stopping (patience = max_epochs): the best validation weights so far are kept and
    # snapshotted at every doubling of patches seen. About 35-60 min a run on 2 CPU cores
    "curves": TrainConfig(samples_per_epoch=512, max_epochs=128, patience=128, preset="curves"),
}


def preset_config(preset: str, **overrides: Any) -> TrainConfig:
    """``PRESETS[preset]`` with ``overrides`` (e.g. ``fusion="sum", seed=1``), validated."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[preset].replace(**overrides)


def run_dir_for(config: TrainConfig, runs_dir: str | Path | None = None) -> Path:
    """The default run folder: ``<runs>/<preset>/<fusion>-<activation>-s<seed>-<hash>``.

    ``runs`` is :func:`starunet.config.default_runs_dir` unless given; ``hash`` is
    the first 8 digits of :attr:`TrainConfig.config_hash`. With the hash in the
    name, a changed preset or engine version trains into a new folder instead of
    clashing with (or overwriting) the runs of the old one.
    """
    base = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    name = f"{config.fusion}-{config.activation}-s{config.seed}-{config.config_hash[:8]}"
    # in smoke mode the default folder is already <runs>/smoke: no second smoke/ level
    if runs_dir is None and smoke_mode() and config.preset == "smoke":
        return base / name
    return base / config.preset / name


# ---------------------------------------------------------------- model and inference

def build_model(config: TrainConfig) -> nn.Module:
    """The UNet of ``config``, initialised from ``torch.manual_seed(config.seed)``."""
    from starunet.model import UNet

    torch.manual_seed(config.seed)
    return UNet(in_channels=3, out_channels=1, fusion=config.fusion, activation=config.activation,
                narrow=config.narrow, channel_multiplier=config.channel_multiplier)


def load_model(run_dir: str | Path, which: str | int = "best", device: str | torch.device = "cpu") -> nn.Module:
    """The trained UNet of a run directory, in eval mode.

    ``which="best"`` loads the weights of the best validation epoch, ``"last"``
    those of the last finished epoch (also of an unfinished run), an int ``n`` the
    best weights after ``n`` training patches (a snapshot, see ``train(snapshots=)``).
    """
    choices = {"best": BEST_CHECKPOINT, "last": LAST_CHECKPOINT}
    if _is_int(which):
        choices[which] = snapshot_name(which)
    if which not in choices:
        raise ValueError(f"which={which!r} is unknown; valid: {', '.join(choices)}, or a snapshot's patch count")
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    path = run_dir / choices[which]
    if not path.is_file():
        raise FileNotFoundError(f"no {choices[which]} in run directory {run_dir}; "
                                "train it first with starunet.train(...) or `python -m starunet train`")
    model = build_model(config)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["model"])
    return to_device(model, device).eval()


def read_config(run_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` stored in ``run_dir/config.json``."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a run directory")
    return TrainConfig.from_json(path.read_text())


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    """``history.csv`` of a run as a list of rows (numbers parsed)."""
    return [{k: float(v) for k, v in row.items()} for row in read_csv(Path(run_dir) / HISTORY_FILE)]


# ---------------------------------------------------------------- data

@dataclass
class ValidationImage:
    """One validation image ready for inference."""
    id: str
    image: torch.Tensor     # (3, H, W) float32
    label: np.ndarray       # (H, W) bool
    fov: np.ndarray         # (H, W) bool


def split_records(config: TrainConfig, records: Sequence | None = None):
    """``(train_records, val_records)`` of the config's split. ``records`` (e.g. the
    20 of one ``load_stare()``) avoids reading them again; test images are never used."""
    from starunet.data import load_stare

    split = config.split()
    wanted = list(split.train) + list(split.val)
    if records is None:
        records = load_stare(ids=wanted)
    by_id = {r.id: r for r in records}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise ValueError(f"records lack the split's image(s) {missing}; pass all STARE records "
                         "(starunet.load_stare()) or records=None to load them")
    return [by_id[i] for i in split.train], [by_id[i] for i in split.val]


def validation_images(config: TrainConfig, val_records) -> list[ValidationImage]:
    """The validation images as tensors with their labels and FOV masks: all of
    them at full size, unless the config limits their number or crops them."""
    from starunet.data import image_to_tensor

    chosen = val_records[: config.val_images] if config.val_images else val_records
    images = []
    for rec in chosen:
        window = _centre_crop(rec.label.shape, config.val_crop)
        images.append(ValidationImage(rec.id, image_to_tensor(rec.image[window]),
                                      np.asarray(rec.label[window], bool), np.asarray(rec.fov[window], bool)))
    return images


def _centre_crop(shape: tuple[int, int], size: int | None) -> tuple[slice, slice]:
    if size is None:
        return slice(None), slice(None)
    h, w = shape
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return slice(top, top + size), slice(left, left + size)


def make_patch_loader(config: TrainConfig, train_records, device: torch.device) -> torch.utils.data.DataLoader:
    """Batches of ``(image, label, fov)`` training patches; call
    ``loader.dataset.set_epoch(epoch)`` before iterating an epoch."""
    from starunet.data import PatchDataset

    dataset = PatchDataset(train_records, patch_size=config.patch_size,
                           samples_per_epoch=config.samples_per_epoch, augment=config.augment,
                           color_jitter=config.color_jitter, seed=config.seed)
    # Patches are already random, so no shuffling (and no sampler RNG to restore).
    # Workers only pay off when a GPU waits for data; the CPU has 2 cores to share.
    on_gpu = device.type == "cuda"
    return torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=False,
                                       num_workers=4 if on_gpu else 0, pin_memory=on_gpu)


# ---------------------------------------------------------------- one epoch

def training_loss(logits: torch.Tensor, label: torch.Tensor, fov: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over all pixels of the batch (the source's loss).
    ``fov`` is accepted for experiments that mask the loss; the source does not."""
    return F.binary_cross_entropy_with_logits(logits.float(), label)


def constant_prediction_loss(vessel_fraction: float) -> float:
    """The training loss of a model that predicts the vessel fraction ``p`` at every
    pixel: the binary entropy ``H(p) = -p log p - (1-p) log(1-p)`` (nats). A yardstick:
    an untrained network scores about this, a useful one well below it."""
    if not 0.0 < vessel_fraction < 1.0:
        raise ValueError(f"vessel_fraction must be strictly between 0 and 1, got {vessel_fraction}")
    p = vessel_fraction
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


class _StopRequested(Exception):
    """Raised by :func:`train_one_epoch` when its ``stop`` flag is set; :func:`train`
    turns it into :class:`TrainingStopped`, which knows the run folder."""


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, device: torch.device,
                    epoch: int, progress: bool = False, stop: StopFlag | None = None) -> float:
    """One pass over ``loader``; returns the mean training loss.

    Raises :class:`NonFiniteLossError` on the first NaN/inf loss, *before* the
    optimiser applies it, so the model is never updated with it. ``stop()`` is
    checked before every step; when it returns True the epoch is abandoned.
    """
    from tqdm.auto import tqdm

    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress, unit="batch")
    for step, (image, label, fov) in enumerate(bar, start=1):
        if stop is not None and stop():
            bar.close()
            raise _StopRequested
        image, label, fov = (t.to(device, non_blocking=True) for t in (image, label, fov))
        with autocast_bf16(device):
            logits = model(image)
        loss = training_loss(logits, label, fov)
        value = loss.item()  # one host sync per step: negligible next to a UNet step
        if not math.isfinite(value):
            raise NonFiniteLossError(f"training loss became {value} at epoch {epoch}, step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, count = total + value * len(image), count + len(image)
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / count


def validate(model: nn.Module, images: Sequence[ValidationImage]) -> dict[str, float]:
    """Validation loss (BCE inside the FOV) and :func:`segmentation_metrics` over
    ``images``, pixels pooled inside their FOV masks.

    Full images through :func:`starunet.inference.predict_logits`, the same fp32
    path as the test evaluation, on a BatchNorm-folded copy of ``model`` (``model``
    itself, its mode included, is not touched).
    """
    from starunet.metrics import segmentation_metrics

    net = inference_model(model)
    probs, losses, n_pixels = [], 0.0, 0
    for item in images:
        logits = predict_logits(net, item.image[None], prepared=True)[0, 0]
        fov = torch.from_numpy(item.fov)
        target = torch.from_numpy(item.label).float()
        losses += F.binary_cross_entropy_with_logits(logits[fov], target[fov], reduction="sum").item()
        n_pixels += int(fov.sum())
        probs.append(probabilities_from_logits(logits[None, None])[0, 0].numpy())  # as the test images
    metrics = segmentation_metrics(probs, [i.label for i in images], mask=[i.fov for i in images])
    return {"loss": losses / max(n_pixels, 1), **{k: float(v) for k, v in metrics.items()}}


# ---------------------------------------------------------------- run state and checkpoints

@dataclass
class RunResult:
    """What :func:`train` returns (and ``result.json`` holds)."""
    run_dir: Path
    config: TrainConfig
    best_epoch: int
    best_val: dict[str, float]       # validation metrics at the best epoch
    epochs: int                      # epochs trained
    stop_reason: str                 # "early_stopping" or "max_epochs"
    train_seconds: float             # wall time summed over epochs (all sessions of a resumed run)
    device: str
    reused: bool = False             # True when a cached finished run was returned

    def summary(self) -> str:
        """Two lines for humans: what happened, the best validation metrics, the folder."""
        status = "reused a finished run" if self.reused else f"trained {self.epochs} epochs"
        metrics = ", ".join(f"{k} {self.best_val[k]:.4f}" for k in ("roc_auc", "pr_auc", "f1"))
        return (f"{self.config.fusion}-{self.config.activation}: {status} "
                f"({self.stop_reason.replace('_', ' ')}, {self.train_seconds:.0f} s of training); "
                f"best epoch {self.best_epoch}: validation {metrics}\n"
                f"run folder: {display_path(self.run_dir)}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(run_dir=str(self.run_dir), config=self.config.to_dict(),
                    config_hash=self.config.config_hash)
        data.pop("reused")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], run_dir: Path, reused: bool = True) -> "RunResult":
        fields = {k: data[k] for k in ("best_epoch", "best_val", "epochs", "stop_reason",
                                       "train_seconds", "device")}
        return cls(run_dir=run_dir, config=TrainConfig.from_dict(data["config"]), reused=reused, **fields)


@dataclass
class EarlyStopping:
    """Tracks the best validation score; ``should_stop`` after ``patience`` bad epochs."""
    patience: int
    higher_is_better: bool
    best_score: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, score: float, epoch: int) -> bool:
        """Record ``score``; True if it is a new best (strictly better)."""
        signed = score if self.higher_is_better else -score
        # the first epoch is the best so far even if its score is NaN, so a best
        # checkpoint always exists; a NaN best must not block every later epoch
        # (NaN compares False), so any real score replaces it
        if self.best_epoch == 0 or math.isnan(self.best_score) or signed > self.best_score:
            self.best_score, self.best_epoch, self.bad_epochs = signed, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


def _rng_state() -> dict[str, Any]:
    """Every global RNG, as tensors and plain values (``weights_only``-loadable)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                       "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _history_fields() -> list[str]:
    from starunet.metrics import METRIC_NAMES

    return ["epoch", "train_loss", "val_loss", *[f"val_{m}" for m in METRIC_NAMES], "is_best"]


# ---------------------------------------------------------------- the run directory

def _prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool, force: bool) -> RunDirLock:
    """Make ``run_dir`` ready for ``config`` (a finished run was handled before) and
    return its lock, which the caller holds while it writes the run.

    Never deletes work by accident: a folder another live process is writing is
    refused first (:class:`~starunet.preflight.RunDirLockedError`), then a folder
    holding another config, or an unfinished run, is an error unless ``force``
    (start over) or ``resume``.
    """
    reentered = RunDirLock.holds(run_dir)
    lock = RunDirLock.acquire(run_dir)
    try:
        _check_run_dir(run_dir, config, resume, force)
    except BaseException:
        if not reentered:  # a refused call must not keep the folder locked
            lock.release()
        raise
    return lock


def _check_run_dir(run_dir: Path, config: TrainConfig, resume: bool, force: bool) -> None:
    if force:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    config_path = run_dir / CONFIG_FILE
    if config_path.is_file():
        stored = read_config(run_dir)
        if stored.config_hash != config.config_hash:
            changed = [k for k, v in config.to_dict().items() if stored.to_dict().get(k) != v and k != "preset"]
            raise RunDirConflictError(
                f"{run_dir} holds a run with a different config (fields {changed or ['engine version']} differ). "
                "Pass force=True (--force) to overwrite it, or another out_dir (--out).")
        if (run_dir / LAST_CHECKPOINT).is_file() and not resume:
            raise RunDirConflictError(
                f"{run_dir} holds an unfinished run of this config. Pass resume=True (--resume) to "
                "continue it, or force=True (--force) to start over.")
    write_json_atomic(config_path, {**config.to_dict(), "config_hash": config.config_hash})


def snapshot_name(patches: int) -> str:
    """File name of the best-so-far weights after ``patches`` training patches."""
    return f"snapshot_p{patches:07d}.pt"


def _save_checkpoints(run_dir: Path, model: nn.Module, optimizer, stopper: EarlyStopping,
                      history: list[dict], epoch_seconds: list[float], is_best: bool,
                      snapshot_patches: int | None = None) -> None:
    """Best weights (if improved), a snapshot of them (if asked), then the full resume
    state, then the CSV view of it. Each write is atomic; ``checkpoint_last.pt`` is the
    truth, history.csv a view. The snapshot is written before the resume state, so a
    kill between the two redoes the epoch and rewrites the same snapshot."""
    weights = model.state_dict()
    epoch = int(history[-1]["epoch"])
    if is_best:
        torch_save_atomic({"model": weights, "epoch": epoch, "val": history[-1]}, run_dir / BEST_CHECKPOINT)
    if snapshot_patches is not None:
        best = torch.load(run_dir / BEST_CHECKPOINT, map_location="cpu", weights_only=True)
        torch_save_atomic({**best, "patches": snapshot_patches}, run_dir / snapshot_name(snapshot_patches))
    torch_save_atomic({
        "model": weights, "optimizer": optimizer.state_dict(), "epoch": epoch,
        "early_stopping": dataclasses.asdict(stopper), "history": history,
        "epoch_seconds": epoch_seconds, "rng": _rng_state(), "engine_version": ENGINE_VERSION,
        "torch_threads": torch.get_num_threads(),
    }, run_dir / LAST_CHECKPOINT)
    write_csv_atomic(run_dir / HISTORY_FILE, history, _history_fields())


# ---------------------------------------------------------------- train

EpochCallback = Callable[[list[dict[str, float]]], None]


def train(config: TrainConfig, out_dir: str | Path | None = None, *, resume: bool = False,
          force: bool = False, device: str = "auto", compile: bool = False,
          records: Sequence | None = None, callback: EpochCallback | None = None,
          progress: bool | None = None, snapshots: Sequence[int] = (),
          stop: threading.Event | StopFlag | None = None) -> RunResult:
    """Train ``config`` into ``out_dir`` (default :func:`run_dir_for`) and return its result.

    * A finished run of the same config in ``out_dir`` is reused (``force=True``
      retrains from scratch); an unfinished one continues with ``resume=True``
      from its last epoch end, ending with the same weights as an uninterrupted run.
    * ``device``: ``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"mps"``; ``compile=True``
      wraps the model in ``torch.compile`` (CUDA only, worth it for long runs).
    * ``records``: STARE records already in memory (else :func:`load_stare`).
    * ``callback(history)`` runs after each epoch is saved (e.g. a live plot); an
      exception it raises interrupts the run, which can then be resumed.
    * ``progress``: tqdm progress bars (``tqdm.auto``: text in a terminal, widgets in
      Jupyter). Default: on when stderr is a terminal and not in smoke mode -- off in
      CI logs and in notebooks, where a saved notebook would keep a stale "0 %" bar;
      notebooks pass a live-plot ``callback`` or ``progress=True`` instead.
    * ``snapshots``: numbers of training patches (multiples of ``samples_per_epoch``)
      after which the best validation weights so far are also saved as
      :func:`snapshot_name` files: the points of a learning curve. They do not change
      what is trained.
    * ``stop``: a ``threading.Event`` (or a callable returning True) checked before
      every training step and before each validation; once set, the partial epoch is
      dropped and :class:`TrainingStopped` raised. The last finished epoch is already
      saved, so ``resume=True`` continues bit-identically. Unlike Ctrl-C it works
      from any thread (a widget's Stop button runs on a kernel thread SIGINT never
      reaches).
    """
    config.validate()
    bad = [n for n in snapshots if not _is_int(n) or n < 1 or n % config.samples_per_epoch
           or n > config.samples_per_epoch * config.max_epochs]
    if bad:
        raise ValueError(f"snapshots {bad} are not epoch ends of this config; use multiples of "
                         f"samples_per_epoch={config.samples_per_epoch} up to "
                         f"{config.samples_per_epoch * config.max_epochs:,} patches")
    run_dir = Path(out_dir) if out_dir is not None else run_dir_for(config)
    cached = None if force else _cached_result(run_dir, config)
    if cached is not None:
        return cached
    torch_device = select_device(device)
    train_records, val_records = split_records(config, records)  # fails before the folder is touched
    run_lock = _prepare_run_dir(run_dir, config, resume, force)  # held until this call ends
    progress = (not smoke_mode() and sys.stderr.isatty()) if progress is None else progress

    model = to_device(build_model(config), torch_device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    stopper = EarlyStopping(config.patience, higher_is_better=config.monitor != "loss")
    history: list[dict[str, float]] = []
    epoch_seconds: list[float] = []
    if (run_dir / LAST_CHECKPOINT).is_file():
        history, epoch_seconds = _restore(run_dir, model, optimizer, stopper)
    forward_model = torch.compile(model) if compile else model

    loader = make_patch_loader(config, train_records, torch_device)
    val_images = validation_images(config, val_records)
    # fixed input shapes: let cuDNN pick the fastest kernels, for this run only
    with _cudnn_benchmark(torch_device.type == "cuda"), run_lock.released_on_error():
        _run_epochs(config, run_dir, model, forward_model, optimizer, stopper, loader, val_images,
                    history, epoch_seconds, torch_device, callback, progress, set(snapshots),
                    _stop_flag(stop))

    stop_reason = "early_stopping" if stopper.should_stop else "max_epochs"
    best = history[stopper.best_epoch - 1]
    result = RunResult(run_dir=run_dir, config=config, best_epoch=stopper.best_epoch,
                       best_val={k[4:]: v for k, v in best.items() if k.startswith("val_")},
                       epochs=len(history), stop_reason=stop_reason,
                       train_seconds=round(sum(epoch_seconds), 2),
                       device=device_description(torch_device))
    write_json_atomic(run_dir / RESULT_FILE, {**result.to_dict(), "run_dir": run_dir.name,
                                               "epoch_seconds": epoch_seconds})
    return result


def _cached_result(run_dir: Path, config: TrainConfig) -> RunResult | None:
    result_path, config_path = run_dir / RESULT_FILE, run_dir / CONFIG_FILE
    if result_path.is_file() and config_path.is_file() and read_config(run_dir).config_hash == config.config_hash:
        return RunResult.from_dict(json.loads(result_path.read_text()), run_dir)
    return None


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool):
    """Set ``torch.backends.cudnn.benchmark`` while the block runs, then restore it
    (a process-wide switch: a notebook's later cells should not inherit it). With it,
    ``cudnn.deterministic``: the benchmark then picks the fastest *deterministic*
    convolution algorithms, so the same seed on the same GPU gives the same run."""
    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark = enabled or before[0]
    torch.backends.cudnn.deterministic = enabled or before[1]
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before


def _restore(run_dir: Path, model: nn.Module, optimizer, stopper: EarlyStopping):
    """Load the resume state of ``checkpoint_last.pt`` into the given objects."""
    state = torch.load(run_dir / LAST_CHECKPOINT, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for key, value in state["early_stopping"].items():
        setattr(stopper, key, value)
    _set_rng_state(state["rng"])
    threads = state.get("torch_threads")  # absent in checkpoints of older versions
    if threads is not None and threads != torch.get_num_threads():
        warnings.warn(f"resuming {run_dir.name} with {torch.get_num_threads()} torch threads, but it was "
                      f"trained with {threads}: CPU kernels split their sums by thread, so the resumed "
                      f"run may not be bit-identical to an uninterrupted one; call "
                      f"torch.set_num_threads({threads}) first to keep it exact", stacklevel=3)
    history = [dict(row) for row in state["history"]]
    # history.csv may be one epoch behind if a kill hit between the two writes
    write_csv_atomic(run_dir / HISTORY_FILE, history, _history_fields())
    return history, list(state["epoch_seconds"])


def _run_epochs(config, run_dir, model, forward_model, optimizer, stopper, loader, val_images,
                history, epoch_seconds, device, callback, progress, snapshots=frozenset(),
                stop: StopFlag = lambda: False) -> None:
    from tqdm.auto import tqdm

    first = len(history) + 1
    if history and (stopper.should_stop or len(history) >= config.max_epochs):
        return  # killed after the last checkpoint but before result.json
    bar = tqdm(range(first, config.max_epochs + 1), desc=f"{config.fusion}-{config.activation}",
               initial=first - 1, total=config.max_epochs, disable=not progress, unit="epoch")
    for epoch in bar:
        start = time.perf_counter()
        loader.dataset.set_epoch(epoch)
        try:
            train_loss = train_one_epoch(forward_model, loader, optimizer, device, epoch, progress, stop)
            if stop():  # validation takes seconds: do not start it for an epoch that is thrown away
                raise _StopRequested
        except _StopRequested:
            bar.close()
            raise TrainingStopped(run_dir, len(history), config.max_epochs) from None
        except NonFiniteLossError as err:
            saved = (f"the last good checkpoint ({LAST_CHECKPOINT}, epoch {len(history)}) in {run_dir} is intact"
                     if history else "no epoch had finished, so nothing was saved")
            raise NonFiniteLossError(f"{err}; the run stopped and {saved}. A lower lr (or a fusion "
                                     "that keeps activations bounded) usually avoids this.") from None
        val = validate(model, val_images)
        is_best = stopper.update(val[config.monitor], epoch)
        history.append({"epoch": epoch, "train_loss": train_loss,
                        **{f"val_{k}": v for k, v in val.items()}, "is_best": int(is_best)})
        epoch_seconds.append(round(time.perf_counter() - start, 3))
        patches = epoch * config.samples_per_epoch
        _save_checkpoints(run_dir, model, optimizer, stopper, history, epoch_seconds, is_best,
                          patches if patches in snapshots else None)
        bar.set_postfix({"loss": f"{train_loss:.4f}", f"val_{config.monitor}": f"{val[config.monitor]:.4f}"})
        if callback is not None:
            callback(history)
        if stopper.should_stop:
            break
    bar.close()


class _Killed(Exception):
    """Stands in for a kill in :func:`kill_and_resume_check`."""


@dataclass
class ResumeCheck:
    """What :func:`kill_and_resume_check` found."""
    killed_after_epoch: int
    same_weights: bool     # checkpoint_last.pt of the resumed run == the uninterrupted run's, bit for bit
    same_history: bool     # history.csv byte-identical


def kill_and_resume_check(config: TrainConfig, records: Sequence, kill_after_epoch: int = 1,
                          device: str = "cpu") -> ResumeCheck:
    """Train ``config`` twice in a temporary folder: once straight through, once
    killed after ``kill_after_epoch`` epochs (an exception from the epoch callback,
    as Ctrl-C or a dead kernel would) and resumed with ``resume=True``. Compares the
    final weights and histories; notebook 04 shows it on a tiny config."""
    import tempfile

    if not 1 <= kill_after_epoch < config.max_epochs:
        raise ValueError(f"kill_after_epoch must be in 1..{config.max_epochs - 1} (max_epochs - 1), "
                         f"got {kill_after_epoch}")

    def kill(history: list[dict[str, float]]) -> None:
        if len(history) == kill_after_epoch:
            raise _Killed

    with tempfile.TemporaryDirectory() as tmp:
        straight, interrupted = Path(tmp) / "straight", Path(tmp) / "interrupted"
        train(config, straight, records=records, device=device, progress=False)
        with contextlib.suppress(_Killed):
            train(config, interrupted, records=records, device=device, progress=False, callback=kill)
        killed_after = len(read_history(interrupted))
        train(config, interrupted, records=records, device=device, progress=False, resume=True)
        a, b = (torch.load(d / LAST_CHECKPOINT, weights_only=True)["model"] for d in (straight, interrupted))
        same_history = (straight / HISTORY_FILE).read_bytes() == (interrupted / HISTORY_FILE).read_bytes()
        return ResumeCheck(killed_after, a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
                           same_history)


# ---------------------------------------------------------------- reporting

def describe_run_dir(run_dir: str | Path) -> str:
    """The files of a run directory with their sizes, one per line."""
    run_dir = Path(run_dir)
    lines = [f"{display_path(run_dir)}/"]
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_file():
            lines.append(f"  {name:<20} {path.stat().st_size / 1024:>9,.1f} KiB")
    return "\n".join(lines)


def presets_markdown() -> str:
    """A Markdown table of how the presets differ (everything else is the source recipe)."""
    header = ("| preset | patches/epoch | steps/epoch | max epochs | patience | max steps | validation |\n"
              "| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    rows = []
    for name, c in PRESETS.items():
        val = "all val images" if c.val_images is None else f"{c.val_images} image(s)"
        val += ", full size" if c.val_crop is None else f", {c.val_crop}x{c.val_crop} centre crop"
        rows.append(f"| `{name}` | {c.samples_per_epoch:,} | {c.steps_per_epoch()} | {c.max_epochs} | "
                    f"{c.patience} | {c.steps_per_epoch() * c.max_epochs:,} | {val} |")
    return "\n".join([header, *rows])


def results_markdown(results: dict[str, RunResult]) -> str:
    """A Markdown table of finished runs: length, best validation epoch and metrics, time."""
    header = ("| run | epochs | stopped by | best epoch | val ROC-AUC | val PR-AUC | val F1 | train time | |\n"
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    rows = [f"| {label} | {r.epochs} | {r.stop_reason.replace('_', ' ')} | {r.best_epoch} | "
            f"{r.best_val['roc_auc']:.4f} | {r.best_val['pr_auc']:.4f} | {r.best_val['f1']:.4f} | "
            f"{r.train_seconds / 60:.1f} min | {'reused' if r.reused else 'trained now'} |"
            for label, r in results.items()]
    return "\n".join([header, *rows])


# ---------------------------------------------------------------- command line

def cli(argv: Sequence[str]) -> int:
    """``python -m starunet train``: train one configuration into a run directory."""
    from starunet.fusion import FUSIONS
    from starunet.model import ACTIVATIONS

    parser = argparse.ArgumentParser(
        prog="python -m starunet train",
        description="Train one configuration into a run directory (config.json, history.csv, "
                    "checkpoint_last.pt, checkpoint_best.pt, result.json).")
    parser.add_argument("--preset", choices=list(PRESETS), default="quick",
                        help="smoke: seconds; quick: minutes on a CPU; full: the source protocol (GPU)")
    parser.add_argument("--fusion", choices=list(FUSIONS), default="star")
    parser.add_argument("--activation", choices=list(ACTIVATIONS), default="none")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--device", choices=list(DEVICE_CHOICES), default="auto")
    parser.add_argument("--out", type=Path, default=None,
                        help="run directory (default: <runs>/<preset>/<fusion>-<activation>-s<seed>-<hash>)")
    parser.add_argument("--resume", action="store_true", help="continue an unfinished run in --out")
    parser.add_argument("--force", action="store_true", help="retrain even if --out holds a run")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    args = parser.parse_args(list(argv))
    run_dir, existed = None, True
    try:  # everything knowable before training is checked first
        check_seeds([args.seed])
        config = preset_config(args.preset, fusion=args.fusion, activation=args.activation, seed=args.seed)
        run_dir = args.out if args.out is not None else run_dir_for(config)
        check_writable_dir(run_dir, "run folder")
        select_device(args.device)
        existed = run_dir.exists()
        # a second writer is refused before data is loaded; this reference holds the lock until the command ends
        _held_lock = RunDirLock.acquire(run_dir)
        result = train(config, run_dir, resume=args.resume, force=args.force, device=args.device,
                       compile=args.compile)
    except (ValueError, FileNotFoundError, RunDirConflictError, NonFiniteLossError) as err:
        if not isinstance(err, RunDirLockedError):  # another writer's folder is not ours to tidy
            _remove_unstarted(run_dir, existed)
        print(f"error: {cli_message(err)}", file=sys.stderr)
        return 1 if isinstance(err, NonFiniteLossError) else 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: {_interrupted_message(args, run_dir, existed)}", file=sys.stderr)
        return 130  # the shell's code for a SIGINT
    print(result.summary())
    return 0


def _saved_epochs(run_dir: Path | None) -> int:
    """Epochs in the run folder's resume state (the truth; history.csv may lag by one)."""
    last = None if run_dir is None else run_dir / LAST_CHECKPOINT
    return torch.load(last, map_location="cpu", weights_only=True)["epoch"] if last and last.is_file() else 0


def _remove_unstarted(run_dir: Path | None, existed: bool) -> None:
    """Remove a run folder this command created when no epoch was saved in it: a
    failed or interrupted start leaves nothing half-written behind."""
    if run_dir is None or existed or _saved_epochs(run_dir):
        return
    for name in (CONFIG_FILE, HISTORY_FILE, LOCK_FILE):
        (run_dir / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: something else is in it, keep it
        run_dir.rmdir()


def _interrupted_message(args: argparse.Namespace, run_dir: Path | None, existed: bool) -> str:
    """One line after Ctrl-C: what is saved, and the command that continues from it."""
    epochs = _saved_epochs(run_dir)
    if not epochs:
        _remove_unstarted(run_dir, existed)
        return "no epoch had finished, so nothing was saved; run the same command again to start over"
    command = [python_command(), "-m", "starunet", "train", "--preset", args.preset, "--fusion", args.fusion,
               "--activation", args.activation, "--seed", str(args.seed)]
    command += ["--device", args.device] if args.device != "auto" else []
    command += ["--compile"] if args.compile else []
    command += ["--out", str(run_dir), "--resume"]
    return (f"epoch {epochs} is saved in {run_dir} ({LAST_CHECKPOINT}); continue with: "
            f"{shlex.join(command)}")
