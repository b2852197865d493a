"""Checks every command runs before it does any work, and the run folder's lock.

A command that will fail because of its arguments or its output folder must
say so before it downloads, trains or executes a notebook: these checks are
cheap and shared by ``train``, ``fetch``, ``reproduce``, ``course`` and
``bench``. Each raises :class:`PreflightError` (a ``ValueError``) with one line
naming the problem and the fix.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Iterator

# torch.manual_seed takes an unsigned 64-bit integer ("Overflow when unpacking long
# long" above it); numpy's default_rng, which draws the patches and the split, takes
# any non-negative integer. So the seed range is torch's.
SEED_LIMIT = 2**64

LOCK_FILE = ".lock"


class PreflightError(ValueError):
    """A command's argument or output folder would make it fail later."""


class RunDirLockedError(PreflightError):
    """Another live process is writing the run folder."""


def seed_problem(value: object, name: str = "seed") -> str | None:
    """Why ``value`` cannot seed a run, or None when it can."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < SEED_LIMIT:
        return (f"{name}={value!r} must be an integer in [0, 2**64 - 1] "
                f"(torch.manual_seed takes unsigned 64-bit seeds); e.g. 2024")
    return None


def check_seeds(seeds: list[int], option: str = "--seed") -> None:
    """Raise :class:`PreflightError` for the first seed outside the valid range."""
    for seed in seeds:
        if seed_problem(seed) is not None:
            raise PreflightError(f"{option} {seed} is out of range: seeds must be integers from 0 to "
                                 f"2**64 - 1 = {SEED_LIMIT - 1} (torch.manual_seed's range); e.g. {option} 2024")


def check_positive(value: float, option: str, integer: bool = True) -> None:
    """Raise :class:`PreflightError` unless ``value`` is > 0 (an int when ``integer``)."""
    kind = "a positive integer" if integer else "a positive number"
    if (integer and not isinstance(value, int)) or not value > 0:
        raise PreflightError(f"{option} {value} must be {kind}; e.g. {option} {4 if integer else 1}")


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (what a ``mkdir -p`` would write into)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable_dir_problem(path: str | Path) -> str | None:
    """Why files cannot be written into folder ``path`` (created if missing), or None.

    Tries it: a temporary file is created and removed in the folder, or in the
    nearest existing ancestor when the folder does not exist yet, so nothing is left
    behind. Permission bits are not enough: root ignores them, while read-only mounts
    and full disks stop root too.
    """
    path = Path(path)
    base = _nearest_existing(path)
    if not base.is_dir():
        return f"{base} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=base, prefix=".starunet-write-check-"):
            pass
    except OSError as err:
        reason = {errno.EROFS: "it is on a read-only file system", errno.EACCES: "permission denied",
                  errno.EPERM: "permission denied", errno.ENOSPC: "the disk is full",
                  errno.ENOENT: "it takes no new files (a system folder such as /proc or /sys)"}
        return f"{base} is not writable: {reason.get(err.errno, err.strerror or str(err))}"
    return None


def check_writable_dir(path: str | Path, what: str, option: str = "--out") -> None:
    """Raise :class:`PreflightError` unless ``what`` (e.g. "run folder") can be written at ``path``."""
    problem = writable_dir_problem(path)
    if problem is not None:
        raise PreflightError(f"cannot write the {what} {path}: {problem}; choose another {option} "
                             "or make that folder writable")


# Python-API phrasing in shared error messages, and its command-line form.
_CLI_WORDS = {
    "pass source= (or set STARUNET_STARE_SOURCE)": "pass --source (or set STARUNET_STARE_SOURCE)",
    "use device='auto' or 'cpu'": "use --device auto or --device cpu",
    "Pass force=True (--force)": "Pass --force",
    "force=True (--force)": "--force",
    "Pass resume=True (--resume)": "Pass --resume",
    "another out_dir (--out)": "another --out",
}


def cli_message(err: BaseException) -> str:
    """``err``'s message as a command-line user should read it: options instead of
    the keyword arguments the Python API takes."""
    text = str(err)
    for api, cli in _CLI_WORDS.items():
        text = text.replace(api, cli)
    return text


def plain_help(docstring: str | None) -> str:
    """A module docstring as ``--help`` text: reStructuredText roles and literals
    (``:class:`X```, double backticks) become plain words, so a terminal shows none
    of the markup the API documentation needs."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], docstring or "")
    return text.replace("``", "'")


def python_command() -> str:
    """This interpreter as a user can type it from the current folder (e.g.
    ``.venv/bin/python``): a printed command then runs as shown, venv or not."""
    try:
        relative = os.path.relpath(sys.executable)
    except ValueError:  # another drive (Windows)
        return sys.executable
    return sys.executable if relative.startswith("..") else relative


# ---------------------------------------------------------------- the run folder's lock

class RunDirLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock`` while a process writes the run.

    The kernel drops a flock when its holder dies, so a crashed or killed run never
    leaves a stale lock; the file's text (PID and host) only names the holder in the
    error message. The lock lives beside the run's files, never in them: nothing
    that results compare changes. Within one process the lock is re-entrant (a
    notebook that re-runs a cell reuses the lock it holds).
    """

    _held: "weakref.WeakValueDictionary[str, RunDirLock]" = weakref.WeakValueDictionary()

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir, self._fd = run_dir, fd

    @classmethod
    def holds(cls, run_dir: str | Path) -> bool:
        """True when this process holds ``run_dir``'s lock."""
        held = cls._held.get(os.path.abspath(run_dir))
        return held is not None and held._fd is not None

    @classmethod
    def acquire(cls, run_dir: str | Path) -> "RunDirLock":
        """Lock ``run_dir`` (created if missing) or raise :class:`RunDirLockedError`."""
        run_dir = Path(run_dir)
        key = os.path.abspath(run_dir)
        held = cls._held.get(key)
        if held is not None and held._fd is not None:
            return held
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = path.read_text(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirLockedError(
                f"{run_dir} is being written by {holder}; wait for it to finish (or stop it), "
                "or train into another --out")
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode())
        lock = cls(run_dir, fd)
        cls._held[key] = lock
        return lock

    @contextlib.contextmanager
    def released_on_error(self) -> Iterator[None]:
        """Release the lock at once if the block raises: a failed or interrupted run
        must not stay locked while a traceback (a notebook's last error) keeps its
        frame, and so this object, alive."""
        try:
            yield
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __del__(self) -> None:
        try:
            self.release()
        except (OSError, TypeError):  # interpreter shutdown: the OS drops the lock anyway
            pass


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the lock is advisory only there
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True
