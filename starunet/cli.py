"""Command line: ``python -m starunet COMMAND [options]``.

Each command lives in the module of its concept; this file only dispatches, so
``--help`` of a command is owned by the code that implements it. It is the top of the
tree, the one place where the course and the lab (:mod:`starunet.lab`, the tools of
whoever runs the experiments) meet: ``bench`` and ``gpu-session`` are lab modules, and
``reproduce`` is :func:`starunet.grid.cli` with the lab's parallel options
(:func:`starunet.lab.fanout.cli`). They are named here as strings and imported only
when their command runs; no module of the course imports the lab.

Every command exits with the same codes: 0 done; 2 the input is wrong (one line
naming the problem and the fix, before any work); 1 the work failed (a run, a
download's checksum, a notebook cell; what finished is kept); 130 interrupted by
Ctrl-C (one line saying how to go on).
"""
from __future__ import annotations

import importlib
import sys

# command -> (module, one-line help). Each module defines ``cli(argv) -> int``.
COMMANDS = {
    "fetch": ("starunet.stare", "download (or copy from a mirror), verify and cache STARE"),
    "train": ("starunet.training", "train one configuration into a run directory"),
    "reproduce": ("starunet.lab.fanout", "train/reuse the sum|star x none|relu grid over seeds and evaluate it"),
    "curves": ("starunet.curves", "train the learning-curve runs (snapshots at every doubling of patches)"),
    "verdicts": ("starunet.verdicts", "recompute verdicts.csv of grid or learning-curve folders from their metrics"),
    "bench": ("starunet.lab.bench", "measure training/inference speed against the hardware's peak"),
    "course": ("starunet.course", "execute all notebooks headless into one output folder"),
    "gpu-session": ("starunet.lab.gpu_session", "the rehearsed GPU session: env, CUDA tests, bench, full grid, curves"),
}


def _usage() -> str:
    lines = ["usage: python -m starunet COMMAND [options]", "", "commands:"]
    width = max(map(len, COMMANDS)) + 1
    lines += [f"  {name:<{width}} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "python -m starunet COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.cli(rest) or 0)
