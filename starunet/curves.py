"""Learning curves: how each configuration's test quality grows with training, up to
where it stops growing.

Every configuration of :data:`CURVE_RUNS` trains once with the source recipe (Adam
5e-4 constant, batch 8, 96x96 patches) for the ``curves`` preset's 65,536 patches,
validated every 512 patches. Early stopping is replaced by "keep the best validation
weights so far", and those weights are snapshotted at every doubling of patches seen
(1,024; 2,048; ...; 65,536: :func:`curve_points`). Each snapshot is then scored on the
test images like any grid run, so a point of a curve is "the model this configuration
would have delivered with that budget".
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from starunet.config import default_runs_dir, smoke_mode
from starunet.train import TrainConfig, preset_config, run_dir_for, train


@dataclass(frozen=True)
class CurveRun:
    """One learning curve: a fusion, an activation and a seed."""
    fusion: str
    activation: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.fusion}-{self.activation}-seed{self.seed}"


# Seed 2024 for every configuration, a second seed where the study's question lies
# (sum vs star without activation). Ordered so that two workers splitting the list
# round-robin each get one of the headline pair first.
CURVE_RUNS: tuple[CurveRun, ...] = (
    CurveRun("sum", "none", 2024), CurveRun("star", "none", 2024),
    CurveRun("star_bn", "none", 2024), CurveRun("sum_star_bn", "none", 2024),
    CurveRun("sum", "relu", 2024), CurveRun("star", "relu", 2024),
    CurveRun("sum", "none", 2025), CurveRun("star", "none", 2025),
)

FIRST_POINT = 1024  # patches: the first point of every curve (then every doubling)


def default_preset() -> str:
    return "smoke" if smoke_mode() else "curves"


def curve_config(run: CurveRun, preset: str | None = None) -> TrainConfig:
    """The :class:`TrainConfig` that trains ``run``'s curve."""
    return preset_config(preset or default_preset(), fusion=run.fusion, activation=run.activation,
                         seed=run.seed)


def curve_points(config: TrainConfig) -> tuple[int, ...]:
    """Patch counts at which a curve is sampled: every doubling from
    ``min(FIRST_POINT, total / 2)`` up to the run's ``total`` patches, each an epoch end."""
    total = config.samples_per_epoch * config.max_epochs
    points, p = [], min(FIRST_POINT, total // 2)
    while p <= total:
        if p % config.samples_per_epoch == 0:
            points.append(p)
        p *= 2
    if not points:
        raise ValueError(f"a {config.preset!r} run ({total:,} patches in epochs of "
                         f"{config.samples_per_epoch:,}) has no doubling at an epoch end")
    return tuple(points)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)``: this worker trains runs I, I+N, I+2N, ..."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/2), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: I must be in 0..N-1")
    return index, count


def train_curves(runs_dir: str | Path | None = None, runs: Sequence[CurveRun] = CURVE_RUNS,
                 preset: str | None = None, shard: tuple[int, int] = (0, 1), device: str = "auto",
                 progress: bool | None = None) -> list[Path]:
    """Train (or resume, or reuse) this shard's curve runs one after another; return
    their run folders. Interrupted runs continue from their last epoch."""
    configs = [curve_config(r, preset) for r in runs]  # validate every config before any work
    index, count = shard
    folders = []
    for config in configs[index::count]:
        folder = run_dir_for(config, runs_dir)
        train(config, folder, resume=True, device=device, progress=progress,
              snapshots=curve_points(config))
        folders.append(folder)
    return folders


def cli(argv: Sequence[str]) -> int:
    """``python -m starunet curves``: train the learning-curve runs."""
    parser = argparse.ArgumentParser(prog="python -m starunet curves",
                                     description="Train the learning-curve runs (resumable).")
    parser.add_argument("action", choices=["train"])
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where the run folders go (default: $STARUNET_RUNS or runs/)")
    parser.add_argument("--shard", default="0/1", help="I/N: train runs I, I+N, ... (for N parallel workers)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of this worker")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--preset", default=None, help="default: curves (smoke in smoke mode)")
    args = parser.parse_args(list(argv))
    try:
        shard = parse_shard(args.shard)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        folders = train_curves(args.runs_dir or default_runs_dir(), preset=args.preset, shard=shard,
                               device=args.device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(str(f) for f in folders))
    return 0
