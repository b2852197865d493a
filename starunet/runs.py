"""Run folders: where a run lives, what it holds, and how it is resumed and loaded.

A run folder (:func:`run_dir_for`: ``<runs>/<preset>/<fusion>-<activation>-s<seed>-<hash>``)
holds ``config.json``, ``history.csv`` (one row per epoch), ``checkpoint_last.pt``
(everything needed to resume: model, optimiser, early stopping, RNG states,
history), ``checkpoint_best.pt`` (weights), optional learning-curve snapshots and,
once finished, ``result.json``. Every file is written atomically
(:mod:`starunet.io`), and checkpoints hold only tensors and plain Python values so
they load with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from starunet.config import default_runs_dir, display_path, smoke_mode
from starunet.device import to_device
from starunet.io import read_numeric_csv, torch_save_atomic, write_csv_atomic, write_json_atomic
from starunet.metrics import METRIC_NAMES
from starunet.model import UNet
from starunet.preflight import LOCK_FILE, RunDirLock
from starunet.presets import ENGINE_VERSION, TrainConfig, is_int


CONFIG_FILE, HISTORY_FILE, RESULT_FILE = "config.json", "history.csv", "result.json"


LAST_CHECKPOINT, BEST_CHECKPOINT = "checkpoint_last.pt", "checkpoint_best.pt"


RUN_FILES = (CONFIG_FILE, HISTORY_FILE, RESULT_FILE, LAST_CHECKPOINT, BEST_CHECKPOINT)


class RunDirConflictError(FileExistsError):
    """The run directory already holds a different or unfinished run."""


class CorruptCheckpointError(ValueError):
    """A checkpoint file cannot be read (truncated by a full disk, a copy cut short,
    or not a checkpoint at all). Its message names the file and what to do."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on the CPU, with one clear error for a
    file that is not a whole checkpoint (instead of ``PytorchStreamReader``'s traceback)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # zip reader, unpickler and EOF errors all mean the same here
        run_dir = path.parent
        fix = (f"delete the run folder {display_path(run_dir)} and train it again (or rerun with --force), "
               "which retrains it from scratch")
        if path.name == LAST_CHECKPOINT:
            fix += f"; its weights of the best epoch, if intact, are in {BEST_CHECKPOINT}"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CorruptCheckpointError(f"{display_path(path)} is corrupt or truncated ({reason}): {fix}") from None


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


def build_model(config: TrainConfig) -> nn.Module:
    """The UNet of ``config``, initialised from ``torch.manual_seed(config.seed)``."""
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
    if is_int(which):
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
    model.load_state_dict(load_checkpoint(path)["model"])
    return to_device(model, device).eval()


def read_config(run_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` stored in ``run_dir/config.json``."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a run directory")
    return TrainConfig.from_json(path.read_text())


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    """``history.csv`` of a run as a list of rows (numbers parsed)."""
    return read_numeric_csv(Path(run_dir) / HISTORY_FILE)


@dataclass
class TrainingResult:
    """What :func:`train` returns (and ``result.json`` holds)."""
    run_dir: Path
    config: TrainConfig
    best_epoch: int
    best_val: dict[str, float]       # validation metrics at the best epoch
    epochs: int                      # epochs trained
    stop_reason: str                 # "early_stopping" or "max_epochs"
    train_seconds: float             # wall time summed over epochs (all sessions of a resumed run)
    device: str
    precision: str = "fp32"          # what the training steps computed in (runs before it existed: fp32)
    reused: bool = False             # True when a cached finished run was returned

    def summary(self) -> str:
        """Two lines for humans: what happened, the best validation metrics, the folder."""
        status = "reused a finished run" if self.reused else f"trained {self.epochs} epochs"
        metrics = ", ".join(f"{k} {self.best_val[k]:.4f}" for k in ("roc_auc", "pr_auc", "f1"))
        return (f"{self.config.fusion}-{self.config.activation}: {status} "
                f"({self.stop_reason.replace('_', ' ')}, {self.train_seconds:.0f} s of {self.precision} training); "
                f"best epoch {self.best_epoch}: validation {metrics}\n"
                f"run folder: {display_path(self.run_dir)}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(run_dir=str(self.run_dir), config=self.config.to_dict(),
                    config_hash=self.config.config_hash)
        data.pop("reused")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], run_dir: Path, reused: bool = True) -> "TrainingResult":
        fields = {k: data[k] for k in ("best_epoch", "best_val", "epochs", "stop_reason",
                                       "train_seconds", "device")}
        fields["precision"] = data.get("precision", "fp32")
        return cls(run_dir=run_dir, config=TrainConfig.from_dict(data["config"]), reused=reused, **fields)


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
    return ["epoch", "train_loss", "val_loss", *[f"val_{m}" for m in METRIC_NAMES], "is_best"]


def prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool, force: bool) -> RunDirLock:
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


def save_checkpoints(run_dir: Path, model: nn.Module, optimizer, stopper,
                     history: list[dict], epoch_seconds: list[float], is_best: bool,
                     snapshot_patches: int | None = None, precision: str = "fp32") -> None:
    """Best weights (if improved), a snapshot of them (if asked), then the full resume
    state (``stopper``: the run's :class:`~starunet.training.EarlyStopping`), then the
    CSV view of it. Each write is atomic; ``checkpoint_last.pt`` is the truth,
    history.csv a view. The snapshot is written before the resume state, so a kill
    between the two redoes the epoch and rewrites the same snapshot."""
    weights = model.state_dict()
    epoch = int(history[-1]["epoch"])
    if is_best:
        torch_save_atomic({"model": weights, "epoch": epoch, "val": history[-1]}, run_dir / BEST_CHECKPOINT)
    if snapshot_patches is not None:
        best = load_checkpoint(run_dir / BEST_CHECKPOINT)
        torch_save_atomic({**best, "patches": snapshot_patches}, run_dir / snapshot_name(snapshot_patches))
    torch_save_atomic({
        "model": weights, "optimizer": optimizer.state_dict(), "epoch": epoch,
        "early_stopping": dataclasses.asdict(stopper), "history": history,
        "epoch_seconds": epoch_seconds, "rng": _rng_state(), "engine_version": ENGINE_VERSION,
        "torch_threads": torch.get_num_threads(), "precision": precision,
    }, run_dir / LAST_CHECKPOINT)
    write_csv_atomic(run_dir / HISTORY_FILE, history, _history_fields())


def cached_result(run_dir: Path, config: TrainConfig) -> TrainingResult | None:
    result_path, config_path = run_dir / RESULT_FILE, run_dir / CONFIG_FILE
    if result_path.is_file() and config_path.is_file() and read_config(run_dir).config_hash == config.config_hash:
        return TrainingResult.from_dict(json.loads(result_path.read_text()), run_dir)
    return None


def restore_checkpoint(run_dir: Path, model: nn.Module, optimizer, stopper, precision: str = "fp32"):
    """Load the resume state of ``checkpoint_last.pt`` into the given objects (``stopper``:
    an :class:`~starunet.training.EarlyStopping`); returns ``(history, epoch_seconds)``.
    A run resumes only in the ``precision`` it was trained in (else its numbers would
    be neither run's)."""
    state = load_checkpoint(run_dir / LAST_CHECKPOINT)
    trained_in = state.get("precision", "fp32")  # absent in checkpoints of older versions: fp32
    if trained_in != precision:
        raise RunDirConflictError(
            f"{display_path(run_dir)} was trained in {trained_in} and would resume in {precision}: pass "
            f"precision={trained_in!r} (--precision {trained_in}) to continue it exactly, or force=True "
            "(--force) to start over")
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


def saved_epochs(run_dir: Path | None) -> int:
    """Epochs in the run folder's resume state (the truth; history.csv may lag by one)."""
    last = None if run_dir is None else run_dir / LAST_CHECKPOINT
    return load_checkpoint(last)["epoch"] if last and last.is_file() else 0


def remove_unstarted_run_dir(run_dir: Path | None, existed: bool) -> None:
    """Remove a run folder that did not exist before (``existed`` False) when no epoch
    was saved in it: a failed or interrupted start leaves nothing half-written behind."""
    if run_dir is None or existed or saved_epochs(run_dir):
        return
    for name in (CONFIG_FILE, HISTORY_FILE, LOCK_FILE):
        (run_dir / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: something else is in it, keep it
        run_dir.rmdir()


def describe_run_dir(run_dir: str | Path) -> str:
    """The files of a run directory with their sizes, one per line."""
    run_dir = Path(run_dir)
    lines = [f"{display_path(run_dir)}/"]
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_file():
            lines.append(f"  {name:<20} {path.stat().st_size / 1024:>9,.1f} KiB")
    return "\n".join(lines)
