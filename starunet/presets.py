"""What a training run is: :class:`TrainConfig` (every field that decides the numbers)
and the named training budgets (:data:`PRESETS`: smoke, quick, long, full, curves).

The config hash (:attr:`TrainConfig.config_hash`) names a run's folder
(:func:`starunet.runs.run_dir_for`), so a finished run of the same config is reused
and a changed one trains into a new folder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

from starunet.data import split_ids
from starunet.stare import STARE_IDS
from starunet.fusion import FUSIONS
from starunet.model import ACTIVATIONS
from starunet.preflight import seed_problem


# Bump when a change to the training code (starunet.training) changes the numbers a config produces: it is part
# of the config hash, so cached runs of the old engine are not silently reused.
ENGINE_VERSION = 1


MONITOR_CHOICES = ("pr_auc", "roc_auc", "f1", "loss")


# How the learning rate moves over the max_epochs * steps_per_epoch steps of a run:
# constant: lr throughout (the source's recipe); onecycle: linear warm-up from lr/25,
# then cosine down to lr/1e4 (OneCycleLR's defaults); cosine: linear warm-up from 0,
# then cosine down to 0. A pure function of the step, so a resumed run needs no
# scheduler state to continue exactly.
SCHEDULE_CHOICES = ("constant", "onecycle", "cosine")

# Fields added after runs were cached: left out of the hash while at these defaults,
# so every config that existed before them keeps its hash and run folder.
_HASH_DEFAULTS = {"schedule": "constant", "warmup": 0.0}


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
    lr: float = 5e-4                 # Adam; the peak lr of a schedule
    schedule: str = "constant"       # lr over the run: constant (the source), onecycle or cosine (SCHEDULE_CHOICES)
    warmup: float = 0.0              # onecycle/cosine: fraction of all steps spent warming up to lr
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
        fields = {k: v for k, v in self.to_dict().items()
                  if k != "preset" and not (k in _HASH_DEFAULTS and v == _HASH_DEFAULTS[k])}
        payload = json.dumps({"engine_version": ENGINE_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def split(self):
        """The ``Split(train, val, test)`` of image ids this config trains on."""
        return split_ids(STARE_IDS, n_test=self.n_test, val_ratio=self.val_ratio, seed=self.split_seed)

    def steps_per_epoch(self) -> int:
        return math.ceil(self.samples_per_epoch / self.batch_size)

    def total_steps(self) -> int:
        """Optimiser steps of a run that trains all ``max_epochs`` (the schedule's length)."""
        return self.max_epochs * self.steps_per_epoch()

    def learning_rate(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based) under ``schedule``."""
        if self.schedule == "constant":
            return self.lr
        total = self.total_steps()
        warm = round(self.warmup * total)
        start, end = (self.lr / 25, self.lr / 1e4) if self.schedule == "onecycle" else (0.0, 0.0)
        if step < warm:
            return start + (self.lr - start) * (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm - 1))
        return end + (self.lr - end) * 0.5 * (1 + math.cos(math.pi * progress))


def _config_problems(c: TrainConfig) -> list[str]:
    problems = []
    if c.fusion not in FUSIONS:
        problems.append(f"fusion={c.fusion!r} is unknown; valid: {', '.join(FUSIONS)}")
    if c.activation not in ACTIVATIONS:
        problems.append(f"activation={c.activation!r} is unknown; valid: {', '.join(ACTIVATIONS)}")
    if c.schedule not in SCHEDULE_CHOICES:
        problems.append(f"schedule={c.schedule!r} is unknown; valid: {', '.join(SCHEDULE_CHOICES)}")
    if not _is_number(c.warmup) or not 0 <= c.warmup < 1:
        problems.append(f"warmup={c.warmup!r} must be a fraction of the run's steps in [0, 1)")
    elif c.warmup and c.schedule == "constant":
        problems.append(f"warmup={c.warmup} needs a schedule that warms up (onecycle or cosine); "
                        "the constant schedule has none (set warmup=0)")
    if c.monitor not in MONITOR_CHOICES:
        problems.append(f"monitor={c.monitor!r} is unknown; valid: {', '.join(MONITOR_CHOICES)}")
    positive_ints = ("patch_size", "samples_per_epoch", "batch_size", "max_epochs", "patience",
                     "channel_multiplier")
    for name in positive_ints:
        value = getattr(c, name)
        if not is_int(value) or value < 1:
            problems.append(f"{name}={value!r} must be a positive integer")
    for name in ("seed", "split_seed"):
        problem = seed_problem(getattr(c, name), name)
        if problem:
            problems.append(problem)
    if is_int(c.patch_size) and c.patch_size % 16:
        problems.append(f"patch_size={c.patch_size} must be a multiple of 16 (the UNet halves it 4 times); "
                        f"e.g. {max(16, round(c.patch_size / 16) * 16)}")
    if not is_int(c.n_test) or not 0 <= c.n_test <= len(STARE_IDS) - 2:
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
    if c.val_images is not None and (not is_int(c.val_images) or c.val_images < 1):
        problems.append(f"val_images={c.val_images!r} must be None (all) or a positive integer")
    if c.val_crop is not None and (not is_int(c.val_crop) or c.val_crop < 16 or c.val_crop % 16):
        problems.append(f"val_crop={c.val_crop!r} must be None (full image) or a positive multiple of 16")
    if not isinstance(c.preset, str) or not c.preset.isidentifier():
        problems.append(f"preset={c.preset!r} must be a short name (letters, digits, _), used as a folder name")
    return problems


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# The source presets (quick, long, full, curves) differ only in how much training they
# buy; the recipe is the source's (Adam 5e-4 constant). `fast` changes the recipe:
# `quick` was sized from throughput probes on the project's 2-core CPU (AMD EPYC,
# channels-last; the CPU was shared with other jobs): a training step of batch 8
# took 0.35-0.37 s with 1 thread and 0.22-0.34 s (fastest steps) with 2, a
# validation epoch (2 full images + metrics) about 3 s. 12 epochs x 40
# steps is then ~3 min per run, ~12-14 min for the 2x2 grid (budget: 20 min). On
# the busy shared machine, with 1 thread, a whole star/none quick run took 319 s
# (best validation ROC-AUC 0.87, PR-AUC 0.47 at epoch 11: learning, still climbing).
# a one-cycle schedule (peak lr 2e-3, 15 % warm-up) over 16,384 patches, validated
# every 2,048, came near the quality that the source's recipe reaches after
# 30,000-65,000 patches in issue 20's one-seed probe (2-core AMD EPYC with native bf16:
# about 4.5 min of training a run in bf16; benchmarks/cpu.md). How near, over 10 seeds
# against results/full, is notebook 06's "The recipe behind `fast`".
PRESETS: dict[str, TrainConfig] = {
    # seconds: a pipeline check for CI and nbval, not a result
    "smoke": TrainConfig(samples_per_epoch=8, batch_size=8, max_epochs=2, patience=2,
                         val_images=1, val_crop=160, preset="smoke"),
    # minutes on a CPU (one-cycle, 16,384 patches; not shown to reach the full protocol's
    # quality: notebook 06): the course's default, and results/fast/'s 10-seed study
    "fast": TrainConfig(samples_per_epoch=2048, max_epochs=8, patience=8, lr=2e-3, schedule="onecycle",
                        warmup=0.15, preset="fast"),
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


RECIPE_FIXED = ("fusion", "activation", "seed", "preset")  # set by their own options, not by --set


def parse_recipe(items: Sequence[str], base: TrainConfig | None = None) -> dict[str, Any]:
    """``["lr=1e-3", "schedule=cosine"]`` -> ``{"lr": 0.001, "schedule": "cosine"}``: changes
    to a preset's recipe (``reproduce --set``), each converted to its field's type. A bad
    item raises ``ValueError`` naming it and the fields that can be set."""
    base = base or TrainConfig()
    settable = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in RECIPE_FIXED]
    changes: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in settable:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(settable)}")
        default = getattr(base, name)
        kind = int if default is None else type(default)  # val_crop, val_images: None or a size
        try:
            changes[name] = (text.lower() in {"1", "true", "yes"} if kind is bool else None if text == "None"
                             else kind(float(text)) if kind is int else kind(text))
        except ValueError:
            raise ValueError(f"--set {item!r}: {name} takes a {kind.__name__}") from None
    return changes
