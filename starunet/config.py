"""Environment switches and default locations shared by the whole package.

Everything a reader may want to change without editing code is an environment
variable, read here and nowhere else:

* ``STARUNET_SMOKE=1`` -- smoke mode: notebooks and presets shrink to seconds
  (tiny data subsets, a few iterations). CI and nbval use it; readers never need it.
* ``STARUNET_STARE_SOURCE`` -- where STARE comes from (URL, mirror directory or
  extracted folder); see :func:`starunet.stare.load_stare`.
* ``STARUNET_DATA`` -- the data cache directory.
* ``STARUNET_RUNS`` -- where training runs (checkpoints, histories) are written.
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else the platform's processor
    or architecture string: what result tables say they were measured on."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """The checked-out commit (``+ local changes`` when tracked files differ from it), or
    ``unknown``, for provenance files. ``$STARUNET_GIT_COMMIT``, when set, wins: a copy
    of the tree sent to a GPU machine may carry an older ``.git`` than the code it holds.
    Changes under ``results/`` do not count: they are grids' own outputs (a second grid
    run after a first one would otherwise always report local changes)."""
    if os.environ.get("STARUNET_GIT_COMMIT"):
        return os.environ["STARUNET_GIT_COMMIT"]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + (" + local changes" if dirty else "")


def smoke_mode() -> bool:
    """True when ``STARUNET_SMOKE`` is set to 1/true/yes/on."""
    return os.environ.get("STARUNET_SMOKE", "").strip().lower() in _TRUE


def _user_cache() -> Path:
    # XDG on Linux, ~/Library/Caches on macOS, %LOCALAPPDATA% on Windows.
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "starunet"
    if os.uname().sysname == "Darwin":
        return Path.home() / "Library" / "Caches" / "starunet"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "starunet"


def stare_source() -> str | None:
    """``$STARUNET_STARE_SOURCE`` (a URL, a mirror folder or an extracted folder), or
    None when unset: :func:`starunet.stare.load_stare` then uses the official site."""
    return os.environ.get("STARUNET_STARE_SOURCE") or None


def default_data_root() -> Path:
    """The STARE cache directory: ``$STARUNET_DATA`` or a per-user cache folder."""
    env = os.environ.get("STARUNET_DATA")
    return Path(env).expanduser() if env else _user_cache() / "data"


def default_runs_dir() -> Path:
    """Where training runs live: ``$STARUNET_RUNS``, else ``runs/`` in a source
    checkout (next to the notebooks, easy to find), else the user cache.

    Smoke-mode runs go to a ``smoke/`` subfolder so they never mix with real ones.
    """
    env = os.environ.get("STARUNET_RUNS")
    if env:
        base = Path(env).expanduser()
    elif (PROJECT_ROOT / "pyproject.toml").is_file():
        base = PROJECT_ROOT / "runs"
    else:
        base = _user_cache() / "runs"
    return base / "smoke" if smoke_mode() else base


def display_path(path: str | Path) -> str:
    """``path`` fit to print in a notebook or a result file, without the machine's
    absolute paths: relative to the repository when inside it, else ``<runs>/...``
    relative to the runs directory, else ``.../`` and its last two parts."""
    path = Path(path).resolve()
    for base, prefix in ((PROJECT_ROOT, ""), (default_runs_dir().resolve(), "<runs>/")):
        try:
            return prefix + path.relative_to(base).as_posix()
        except ValueError:
            continue
    return ".../" + "/".join(path.parts[-2:])
