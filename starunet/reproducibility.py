"""Is a run reproducible? :func:`kill_and_resume_check` trains a config twice, once
straight through and once killed and resumed, and compares the weights bit for bit
(the appendix notebook 07 shows it on a tiny config; ``tests/test_train.py`` on
every engine change). Sits above :mod:`starunet.training`, which it drives.
"""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from starunet.presets import TrainConfig
from starunet.runs import HISTORY_FILE, LAST_CHECKPOINT, load_checkpoint, read_history
from starunet.training import train


class _Killed(Exception):
    """Stands in for a kill in :func:`kill_and_resume_check`."""


@dataclass
class ResumeCheck:
    """What :func:`kill_and_resume_check` found."""
    killed_after_epoch: int
    same_weights: bool     # checkpoint_last.pt of the resumed run == the uninterrupted run's, bit for bit
    same_history: bool     # history.csv byte-identical


def kill_and_resume_check(config: TrainConfig, records: Sequence, kill_after_epoch: int = 1,
                          device: str = "cpu", precision: str = "auto") -> ResumeCheck:
    """Train ``config`` twice in a temporary folder: once straight through, once
    killed after ``kill_after_epoch`` epochs (an exception from the epoch callback,
    as Ctrl-C or a dead kernel would) and resumed with ``resume=True``. Compares the
    final weights and histories; the appendix notebook 07 shows it on a tiny config."""
    if not 1 <= kill_after_epoch < config.max_epochs:
        raise ValueError(f"kill_after_epoch must be in 1..{config.max_epochs - 1} (max_epochs - 1), "
                         f"got {kill_after_epoch}")

    def kill(history: list[dict[str, float]]) -> None:
        if len(history) == kill_after_epoch:
            raise _Killed

    with tempfile.TemporaryDirectory() as tmp:
        straight, interrupted = Path(tmp) / "straight", Path(tmp) / "interrupted"
        train(config, straight, records=records, device=device, progress=False, precision=precision)
        with contextlib.suppress(_Killed):
            train(config, interrupted, records=records, device=device, progress=False, callback=kill,
                  precision=precision)
        killed_after = len(read_history(interrupted))
        train(config, interrupted, records=records, device=device, progress=False, resume=True,
              precision=precision)
        a, b = (load_checkpoint(d / LAST_CHECKPOINT)["model"] for d in (straight, interrupted))
        same_history = (straight / HISTORY_FILE).read_bytes() == (interrupted / HISTORY_FILE).read_bytes()
        return ResumeCheck(killed_after, a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
                           same_history)
