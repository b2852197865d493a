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
    from starunet.data import load_stare

    return load_stare(source=stare_source, root=tmp_path_factory.mktemp("stare-cache"))
