"""Training: one :class:`~starunet.presets.TrainConfig` in, one run folder out.

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

The config and its presets are :mod:`starunet.presets`; the run folder it trains
into (files, checkpoints, resume, ``load_model``) is :mod:`starunet.runs`.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from starunet.config import display_path, smoke_mode
from starunet.data import PatchDataset, image_to_tensor
from starunet.stare import load_stare
from starunet.device import (DEVICE_CHOICES, PRECISION_CHOICES, device_description, resolve_precision,
                             select_device, to_device, training_autocast)
from starunet.inference import inference_model, predict_logits
from starunet.metrics import segmentation_metrics
from starunet.fusion import FUSIONS
from starunet.io import write_json_atomic
from starunet.model import ACTIVATIONS, probabilities_from_logits
from starunet.preflight import (RunDirLock, RunDirLockedError, check_seeds, check_writable_dir, cli_message,
                                python_command)
from starunet.presets import PRESETS, TrainConfig, is_int, preset_config
from starunet.runs import (HISTORY_FILE, LAST_CHECKPOINT, RESULT_FILE, RunDirConflictError, TrainingResult, build_model,
                           cached_result, prepare_run_dir, read_history, remove_unstarted_run_dir, restore_checkpoint,
                           run_dir_for, save_checkpoints, saved_epochs)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped before saving it."""


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
                    epoch: int, progress: bool = False, stop: StopFlag | None = None,
                    lr_at: Callable[[int], float] | None = None, first_step: int = 0,
                    precision: str = "fp32") -> float:
    """One pass over ``loader``; returns the mean training loss.

    ``lr_at(step)`` sets the learning rate of each step (``first_step`` is the
    run-wide index of this epoch's first step; None keeps the optimiser's lr). The
    forward pass runs in ``precision`` ("fp32" or "bf16" autocast), the loss and
    the update in fp32. Raises :class:`NonFiniteLossError` on the first NaN/inf
    loss, *before* the optimiser applies it, so the model is never updated with it.
    ``stop()`` is checked before every step; when it returns True the epoch is abandoned.
    """
    from tqdm.auto import tqdm

    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress, unit="batch")
    for step, (image, label, fov) in enumerate(bar):
        if stop is not None and stop():
            bar.close()
            raise _StopRequested
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(first_step + step)
        image, label, fov = (t.to(device, non_blocking=True) for t in (image, label, fov))
        with training_autocast(device, precision):
            logits = model(image)
        loss = training_loss(logits, label, fov)
        value = loss.item()  # one host sync per step: negligible next to a UNet step
        if not math.isfinite(value):
            raise NonFiniteLossError(f"training loss became {value} at epoch {epoch}, step {step + 1}")
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


# ---------------------------------------------------------------- train

EpochCallback = Callable[[list[dict[str, float]]], None]


def train(config: TrainConfig, out_dir: str | Path | None = None, *, resume: bool = False,
          force: bool = False, device: str = "auto", precision: str = "auto", compile: bool = False,
          records: Sequence | None = None, callback: EpochCallback | None = None,
          progress: bool | None = None, snapshots: Sequence[int] = (),
          stop: threading.Event | StopFlag | None = None) -> TrainingResult:
    """Train ``config`` into ``out_dir`` (default :func:`run_dir_for`) and return its result.

    * A finished run of the same config in ``out_dir`` is reused (``force=True``
      retrains from scratch); an unfinished one continues with ``resume=True``
      from its last epoch end, ending with the same weights as an uninterrupted run.
    * ``device``: ``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"mps"``; ``compile=True``
      wraps the model in ``torch.compile`` (CUDA only, worth it for long runs).
    * ``precision``: ``"auto"`` | ``"fp32"`` | ``"bf16"``, what the training steps'
      forward passes compute in (:func:`starunet.device.resolve_precision`: auto is
      bf16 on GPUs and on CPUs with native bf16, fp32 elsewhere). Validation and test
      inference are always fp32. Recorded in ``result.json``; a run resumes only in
      the precision it started with.
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
    _check_snapshots(config, snapshots)
    run_dir = Path(out_dir) if out_dir is not None else run_dir_for(config)
    torch_device = select_device(device)
    requested, precision = precision, resolve_precision(precision, torch_device)
    cached = None if force else cached_result(run_dir, config)
    if cached is not None:
        if requested != "auto" and cached.precision != precision:
            raise RunDirConflictError(f"{display_path(run_dir)} holds a finished run trained in {cached.precision}, "
                                      f"not {precision}: use another out_dir (--out / --runs-dir), or force=True "
                                      "(--force) to retrain it")
        return cached
    train_records, val_records = split_records(config, records)  # fails before the folder is touched
    run_lock = prepare_run_dir(run_dir, config, resume, force)  # held until this call ends
    progress = (not smoke_mode() and sys.stderr.isatty()) if progress is None else progress
    stop = _stop_flag(stop)

    model = to_device(build_model(config), torch_device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    stopper = EarlyStopping(config.patience, higher_is_better=config.monitor != "loss")
    history: list[dict[str, float]] = []      # one row per finished epoch (history.csv)
    epoch_seconds: list[float] = []
    if (run_dir / LAST_CHECKPOINT).is_file():
        with run_lock.released_on_error():
            history, epoch_seconds = restore_checkpoint(run_dir, model, optimizer, stopper, precision)
    forward_model = torch.compile(model) if compile else model
    loader = make_patch_loader(config, train_records, torch_device)
    val_images = validation_images(config, val_records)
    done = stopper.should_stop or len(history) >= config.max_epochs  # killed before result.json
    epochs = range(len(history) + 1, 1 if done else config.max_epochs + 1)

    # fixed input shapes: let cuDNN pick the fastest kernels, for this run only
    with _cudnn_benchmark(torch_device.type == "cuda"), run_lock.released_on_error():
        for epoch in _epoch_bar(epochs, config, progress):
            start = time.perf_counter()
            loader.dataset.set_epoch(epoch)  # patch i of epoch e is a pure function of (seed, e, i)
            train_loss = _train_epoch(config, run_dir, history, forward_model, loader, optimizer,
                                      torch_device, epoch, progress, stop, precision)
            val = validate(model, val_images)  # fp32, BatchNorm folded, as the test images
            is_best = stopper.update(val[config.monitor], epoch)
            history.append({"epoch": epoch, "train_loss": train_loss,
                            **{f"val_{k}": v for k, v in val.items()}, "is_best": int(is_best)})
            epoch_seconds.append(round(time.perf_counter() - start, 3))
            patches = epoch * config.samples_per_epoch
            save_checkpoints(run_dir, model, optimizer, stopper, history, epoch_seconds, is_best,
                             patches if patches in snapshots else None, precision=precision)
            if callback is not None:
                callback(history)
            if stopper.should_stop:
                break

    best = history[stopper.best_epoch - 1]
    result = TrainingResult(run_dir=run_dir, config=config, best_epoch=stopper.best_epoch,
                            best_val={k[4:]: v for k, v in best.items() if k.startswith("val_")},
                            epochs=len(history),
                            stop_reason="early_stopping" if stopper.should_stop else "max_epochs",
                            train_seconds=round(sum(epoch_seconds), 2),
                            device=device_description(torch_device), precision=precision)
    write_json_atomic(run_dir / RESULT_FILE, {**result.to_dict(), "run_dir": run_dir.name,
                                              "epoch_seconds": epoch_seconds})
    return result


def _train_epoch(config: TrainConfig, run_dir: Path, history: list, model: nn.Module, loader, optimizer,
                 device: torch.device, epoch: int, progress: bool, stop: StopFlag, precision: str) -> float:
    """:func:`train_one_epoch` with the config's lr schedule, its two ways out named
    for the run: a stop request (:class:`TrainingStopped`) and a non-finite loss."""
    try:
        loss = train_one_epoch(model, loader, optimizer, device, epoch, progress, stop,
                               lr_at=config.learning_rate, first_step=(epoch - 1) * config.steps_per_epoch(),
                               precision=precision)
        if stop():  # validation takes seconds: do not start it for an epoch that is thrown away
            raise _StopRequested
        return loss
    except _StopRequested:
        raise TrainingStopped(run_dir, len(history), config.max_epochs) from None
    except NonFiniteLossError as err:
        saved = (f"the last good checkpoint ({LAST_CHECKPOINT}, epoch {len(history)}) in {run_dir} is intact"
                 if history else "no epoch had finished, so nothing was saved")
        raise NonFiniteLossError(f"{err}; the run stopped and {saved}. A lower lr (or a fusion "
                                 "that keeps activations bounded) usually avoids this.") from None


def _check_snapshots(config: TrainConfig, snapshots: Sequence[int]) -> None:
    bad = [n for n in snapshots if not is_int(n) or n < 1 or n % config.samples_per_epoch
           or n > config.samples_per_epoch * config.max_epochs]
    if bad:
        raise ValueError(f"snapshots {bad} are not epoch ends of this config; use multiples of "
                         f"samples_per_epoch={config.samples_per_epoch} up to "
                         f"{config.samples_per_epoch * config.max_epochs:,} patches")


def _epoch_bar(epochs: range, config: TrainConfig, progress: bool):
    """``epochs`` with a tqdm bar over the whole run (starting where a resume starts)."""
    from tqdm.auto import tqdm

    return tqdm(epochs, desc=f"{config.fusion}-{config.activation}", initial=epochs.start - 1,
                total=config.max_epochs, disable=not progress, unit="epoch")


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


# ---------------------------------------------------------------- command line

def cli(argv: Sequence[str]) -> int:
    """``python -m starunet train``: train one configuration into a run directory."""
    parser = argparse.ArgumentParser(
        prog="python -m starunet train",
        description="Train one configuration into a run directory (config.json, history.csv, "
                    "checkpoint_last.pt, checkpoint_best.pt, result.json).")
    parser.add_argument("--preset", choices=list(PRESETS), default="fast",
                        help="training budget and recipe: fast (default; about 5 min on a 2-core CPU with "
                             "native bf16, a one-cycle schedule on 16,384 patches, not shown converged), "
                             "smoke (seconds, a pipeline check), quick and long (the source's recipe, "
                             "under-trained), full (the source's protocol, a GPU's job), curves (learning curves)")
    parser.add_argument("--fusion", choices=list(FUSIONS), default="star",
                        help="how the decoder merges skip features (default: star, the element-wise product)")
    parser.add_argument("--activation", choices=list(ACTIVATIONS), default="none",
                        help="activation after each convolution block (default: none, the ReLU-free U-Net)")
    parser.add_argument("--seed", type=int, default=2024,
                        help="seed of the weights' initialisation and the patch stream (default: 2024)")
    parser.add_argument("--device", choices=list(DEVICE_CHOICES), default="auto",
                        help="where to train (default: auto, a GPU if there is one)")
    parser.add_argument("--precision", choices=list(PRECISION_CHOICES), default="auto",
                        help="what the training steps compute in (default: auto, bf16 on GPUs and on CPUs with "
                             "native bf16, else fp32); validation and test scoring are always fp32")
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
                       precision=args.precision, compile=args.compile)
    except (ValueError, FileNotFoundError, RunDirConflictError, NonFiniteLossError) as err:
        if not isinstance(err, RunDirLockedError):  # another writer's folder is not ours to tidy
            remove_unstarted_run_dir(run_dir, existed)
        print(f"error: {cli_message(err)}", file=sys.stderr)
        return 1 if isinstance(err, NonFiniteLossError) else 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: {_interrupted_message(args, run_dir, existed)}", file=sys.stderr)
        return 130  # the shell's code for a SIGINT
    print(result.summary())
    return 0


def _interrupted_message(args: argparse.Namespace, run_dir: Path | None, existed: bool) -> str:
    """One line after Ctrl-C: what is saved, and the command that continues from it."""
    epochs = saved_epochs(run_dir)
    if not epochs:
        remove_unstarted_run_dir(run_dir, existed)
        return "no epoch had finished, so nothing was saved; run the same command again to start over"
    command = [python_command(), "-m", "starunet", "train", "--preset", args.preset, "--fusion", args.fusion,
               "--activation", args.activation, "--seed", str(args.seed)]
    command += ["--device", args.device] if args.device != "auto" else []
    command += ["--precision", args.precision] if args.precision != "auto" else []
    command += ["--compile"] if args.compile else []
    command += ["--out", str(run_dir), "--resume"]
    return (f"epoch {epochs} is saved in {run_dir} ({LAST_CHECKPOINT}); continue with: "
            f"{shlex.join(command)}")
