"""Atomic writes: complete or absent, never truncated; ordinary permissions."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from starunet.io import atomic_path, read_csv, torch_save_atomic, write_csv_atomic, write_json_atomic


def test_failed_write_leaves_the_old_file_and_no_temporaries(tmp_path):
    target = tmp_path / "result.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a fil")
            raise RuntimeError("killed mid-write")
    assert target.read_text().strip().startswith("{") and '"a": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_written_files_get_umask_permissions_not_mkstemp_0600(tmp_path):
    target = tmp_path / "table.csv"
    write_csv_atomic(target, [{"x": 1, "y": 2}], ["x", "y"])
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert read_csv(target) == [{"x": "1", "y": "2"}]


def test_torch_checkpoint_roundtrip_with_weights_only(tmp_path):
    target = tmp_path / "ckpt.pt"
    torch_save_atomic({"w": torch.arange(3), "epoch": 2}, target)
    loaded = torch.load(target, weights_only=True)
    assert loaded["epoch"] == 2 and torch.equal(loaded["w"], torch.arange(3))
