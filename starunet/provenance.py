"""A grid's provenance in words. ``provenance.json`` records how a results folder was
made (command, preset, data, machines, precision, dates, fan-out); these functions turn
those facts into the phrases that the grid READMEs (:func:`starunet.report.provenance_readme`),
the one-line summaries (:meth:`starunet.results.GridResults.describe`) and the README
findings (:mod:`starunet.verdicts`) share, so that each fact is worded in one place.
Pure functions of the provenance mapping: nothing here reads or writes files.
"""
from __future__ import annotations

import re
import shlex
from typing import Mapping

from starunet.data import split_ids


def format_duration(seconds: float) -> str:
    """``"1 h 05 min"`` or ``"3 min 07 s"``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def grid_title(p: Mapping) -> str:
    """What the grid compares: ``sum vs star skip fusion, with and without ReLU``."""
    activations = p.get("activations", [])
    if set(activations) == {"none", "relu"}:
        which = "with and without ReLU"
    else:
        names = {"none": "without activation", "relu": "with ReLU", "gelu": "with GELU", "silu": "with SiLU"}
        which = ", ".join(names.get(a, f"with {a}") for a in activations)
    return f"{' vs '.join(p.get('fusions', []))} skip fusion, {which}"


def preset_changes(p: Mapping) -> str:
    """The ``--set FIELD=VALUE`` changes of the recorded command (a recipe search), as
    `` with lr=4e-3 (changed by `--set`)``, or ``""`` for the preset as it is."""
    changes, group = [], None  # argparse keeps the last --set group; "--set=a=1" opens one too
    for token in shlex.split(p.get("command", "")):
        if token == "--set":
            group = changes = []
        elif token.startswith("--set="):
            group = changes = [token.removeprefix("--set=")]
        elif token.startswith("--"):
            group = None
        elif group is not None:
            group.append(token)
    return f" with {', '.join(changes)} (changed by `--set`)" if changes else ""


def data_note(p: Mapping) -> str:
    """Which images trained, validated and tested: the split is by image, fixed by its seed."""
    c = p["preset_config"]
    split = split_ids(n_test=c["n_test"], val_ratio=c["val_ratio"], seed=c["split_seed"])
    validation = " ".join(split.val[:c["val_images"]] if c.get("val_images") else split.val)
    if c.get("val_images"):
        validation += f", the first {c['val_images']} of {len(split.val)} only"
    if c.get("val_crop"):
        validation += f", centre-cropped to {c['val_crop']}x{c['val_crop']}"
    return (f"STARE's 20 vessel-labelled images, with annotator `ah`'s labels: {len(split.train)} train, "
            f"{len(split.val)} validate ({validation}; split seed {c['split_seed']}), "
            f"{len(split.test)} test: {' '.join(split.test)}")


def trained_on(provenance: Mapping) -> list[str]:
    """The machines the runs trained on (older provenance names only the evaluating one)."""
    return provenance.get("trained_on") or [provenance.get("hardware", {}).get("summary", "?")]


def training_precision(provenance: Mapping) -> str | None:
    """``"fp32"`` or ``"bf16"``: what every training step of a folder's runs computed in,
    or None when they differ. Folders made before precision was recorded trained in
    bf16 autocast on CUDA and fp32 on CPU."""
    recorded = provenance.get("precision")
    if recorded:
        names = recorded.split(" training steps")[0].split(", ")
        return names[0] if len(names) == 1 else None
    return "bf16" if all(d.startswith("cuda") for d in trained_on(provenance)) else "fp32"


def rerun_note(provenance: Mapping) -> str:
    """What a grid README adds to a recorded ``reproduce`` command that does not name its
    precision: ``auto`` picks by machine (bf16 on a CPU with native bf16, which the
    source-recipe grids, made before the flag, did not use), so the same numbers need
    the precision the runs trained in."""
    command, precision = provenance.get("command", ""), training_precision(provenance)
    named = re.search(r"--precision[ =](fp32|bf16)\b", command)
    if not command.startswith("python -m starunet reproduce") or named or precision is None:
        return ""
    return f" (its runs trained in {precision}: add `--precision {precision}` to train them so on any machine)"


def training_conditions(provenance: Mapping) -> str:
    """How a folder's runs were trained, in the terms a comparison across folders must
    name besides the budget: epoch size, stopping, device and precision (training ran in
    bf16 autocast on CUDA and fp32 on CPU; evaluation is fp32 everywhere)."""
    c = provenance["preset_config"]
    precision = provenance.get("precision") or f"{training_precision(provenance)} training steps, fp32 evaluation"
    stop = (f"up to {c['max_epochs']} epochs, early stopping with patience {c['patience']}"
            if c["patience"] < c["max_epochs"] else f"{c['max_epochs']} epochs, no early stopping")
    return f"{c['samples_per_epoch']:,}-patch epochs, {stop}; {'; '.join(trained_on(provenance))}, {precision}"


def parallel_note(p: Mapping) -> str:
    """How a fanned-out grid ran (absent from grids trained one run at a time)."""
    fan = p.get("fanout")
    return (f"; up to {fan['jobs']} runs at once ({fan['cluster']}, {fan['threads_per_job']} torch threads "
            "each)") if fan else ""


def partial_note(p: Mapping) -> str:
    """A grid that stopped short: why, and which runs it lacks."""
    partial = p.get("partial")
    if not partial:
        return ""
    return (f"; **partial: {partial['ended']}, {len(partial['missing'])} run(s) missing: "
            f"{', '.join(partial['missing'])}** (re-run the command to finish them)")


def reuse_note(p: Mapping) -> str:
    """What a grid invocation took over from earlier ones, in words."""
    note = f"{p['runs_reused']} trained by an earlier invocation and reused"
    if "evaluations_reused" in p:  # absent in provenance files of older versions
        reused = p["evaluations_reused"]
        note += (f"; all {reused} evaluations reused" if reused == p["runs"] else
                 f"; {reused} of {p['runs']} evaluations reused, the others computed now")
    return note


def date_note(p: Mapping) -> str:
    """When the recorded invocation ran; one that reused every run only assembled the
    folder, and its dates (and commit) are not those of the training, unless the folder's
    ``invocations`` or ``assembled`` record says what trained them."""
    note = f"started {p['started']}, finished {p['finished']}"
    if p.get("runs_reused") == p.get("runs") and not (p.get("invocations") or p.get("assembled")):
        note += (" (this invocation reused every run: it assembled the folder; earlier invocations, "
                 "whose dates and commit are not recorded, trained them)")
    return note
