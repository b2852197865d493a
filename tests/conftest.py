"""Shared fixtures. Tests that need the real STARE data use ``stare_source``:

* ``$STARUNET_STARE_SOURCE`` if set, else ``../shared/data/stare`` beside the
  checkout when it exists (how CI reaches its mirror);
* otherwise, on CI (``CI=true``) the test FAILS -- real-data tests must run there;
* otherwise the official download is used (needs network; cached afterwards).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_MIRROR = ROOT.parent / "shared" / "data" / "stare"


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def stare_source() -> str | None:
    """The STARE source for real-data tests (None = the official URL)."""
    env = os.environ.get("STARUNET_STARE_SOURCE")
    if env:
        if not Path(env).exists() and not env.startswith(("http://", "https://")):
            pytest.fail(f"STARUNET_STARE_SOURCE={env} does not exist")
        return env
    if SHARED_MIRROR.is_dir():
        return str(SHARED_MIRROR)
    if _on_ci():
        pytest.fail(f"CI=true but no STARE data: set STARUNET_STARE_SOURCE or provide {SHARED_MIRROR}")
    return None


@pytest.fixture(scope="session")
def stare_records(stare_source, tmp_path_factory):
    """All 20 STARE records, loaded once per test session into a private cache."""
    from starunet.stare import load_stare

    return load_stare(source=stare_source, root=tmp_path_factory.mktemp("stare-cache"))


@pytest.fixture
def per_image_rows():
    """Synthetic per-image rows of a sum/star grid: ``per_image_rows({"none": 0.05})``
    makes star 0.05 better than sum without ReLU, paired by seed and image (for the
    statistics tests of test_stats.py and the figures of test_evaluate.py)."""
    import numpy as np

    from starunet.metrics import METRIC_NAMES

    def make(shift_by_act: dict, n_seeds: int = 3, n_images: int = 10, noise: float = 0.01, seed: int = 0):
        rng = np.random.default_rng(seed)
        rows = []
        for act, shift in shift_by_act.items():
            for s in range(n_seeds):
                for i in range(n_images):
                    base = 0.7 + 0.05 * rng.standard_normal()
                    for fusion, value in (("sum", base), ("star", base + shift + noise * rng.standard_normal())):
                        rows.append({"fusion": fusion, "activation": act, "seed": s, "image_id": f"im{i}",
                                     **{m: value for m in METRIC_NAMES}})
        return rows
    return make


@pytest.fixture
def grid_rows():
    """Synthetic metric rows (one per run) of the 2x2 grid: star ``diff`` above sum, the
    same for every metric, seeds spread by 0.001."""
    from starunet.metrics import METRIC_NAMES

    def make(diff: float = 0.01, seeds=(1, 2, 3)):
        rows = []
        for act in ("none", "relu"):
            for fusion in ("sum", "star"):
                for s in seeds:
                    base = 0.8 + 0.001 * s + (diff if fusion == "star" else 0.0)
                    rows.append({"fusion": fusion, "activation": act, "seed": s, **{m: base for m in METRIC_NAMES}})
        return rows
    return make


@pytest.fixture
def tiny_preset(monkeypatch):
    """The smoke preset shrunk to seconds per run. The config travels to the job
    processes inside the pickled job, so the children train exactly this."""
    from fakes import tiny_smoke
    from starunet.presets import PRESETS

    tiny = tiny_smoke()
    monkeypatch.setitem(PRESETS, "smoke", tiny)
    return tiny
