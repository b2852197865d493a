"""The experiment grid: fusion x activation x seed, trained (or reused), evaluated and
written to one folder that says how it was made.

:func:`reproduce` (``python -m starunet reproduce``) trains every run of the grid
through :func:`starunet.training.train` (one after another, or as its runner decides:
:mod:`starunet.runners`), scores it with :func:`starunet.evaluate.evaluate_run` and
writes, atomically, ``metrics.csv`` (one row per run), ``per_image.csv``,
``curves.json``, small prediction PNGs, ``provenance.json`` and a ``README.md``
(:func:`starunet.report.provenance_readme`). Re-running resumes: finished runs and
evaluations are reused (evaluations are cached under ``evaluations/``, keyed by the
checkpoint, the test images, the method and :data:`starunet.evaluate.EVALUATION_VERSION`).
An interrupted or failing grid still writes what it finished and names what it lacks.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from starunet.config import default_runs_dir, display_path, git_commit, smoke_mode
from starunet.data import select_records
from starunet.stare import load_stare
from starunet.device import DEVICE_CHOICES, PRECISION_CHOICES, hardware_record, resolve_precision, select_device
from starunet.evaluate import EVALUATION_VERSION, RunEvaluation, evaluate_run
from starunet.fusion import FUSIONS
from starunet.inference import DEFAULT_METHOD, INFERENCE_METHODS, check_inference_method, compare_inference_methods
from starunet.io import read_csv, write_bytes_atomic, write_csv_atomic, write_json_atomic, write_text_atomic
from starunet.metrics import METRIC_NAMES
from starunet.model import ACTIVATIONS
from starunet.preflight import PreflightError, check_positive, check_seeds, check_writable_dir, cli_message
from starunet.report import provenance_readme
from starunet.results import GridResults, course_check_dir, is_committed_grid, load_results, own_results_dir
from starunet.stats import (ACTIVATIONS_COMPARED, FUSIONS_COMPARED, HEADLINE_METRICS, TUNED_COLUMNS, TUNED_METRICS,
                            run_key)
from starunet.presets import PRESETS, parse_recipe, preset_config
from starunet.runners import GridRunError, InProcessRunner, RunFailure
from starunet.runs import RESULT_FILE, load_model, run_dir_for
from starunet.verdicts import grid_verdict_rows, write_verdicts

METRICS_COLUMNS = ["fusion", "activation", "seed", *METRIC_NAMES]
PANEL_COUNT = 2  # test images saved as prediction PNGs for the qualitative panels


def own_grid(reference: GridResults) -> tuple[list[str], list[str]]:
    """The fusions and activations of ``reference`` that notebook 04 trains (the 2x2 of
    :data:`~starunet.stats.FUSIONS_COMPARED` x :data:`~starunet.stats.ACTIVATIONS_COMPARED`):
    a wider reference (``results/fast`` adds the normalised products) is compared on those."""
    p = reference.provenance
    return ([f for f in p.get("fusions", FUSIONS_COMPARED) if f in FUSIONS_COMPARED],
            [a for a in p.get("activations", ACTIVATIONS_COMPARED) if a in ACTIVATIONS_COMPARED])


def finished_reference_seeds(reference: GridResults, runs_dir: str | Path | None = None) -> list[int]:
    """The seeds of ``reference`` whose whole :func:`own_grid` the reader has trained
    (finished runs of the same configs, e.g. by notebook 04) under ``runs_dir``."""

    p = reference.provenance
    fusions, activations = own_grid(reference)
    preset = p.get("preset")
    if preset is None or not fusions or not activations:
        return []

    def finished(seed: int) -> bool:
        return all((run_dir_for(preset_config(preset, fusion=f, activation=a, seed=seed), runs_dir)
                    / RESULT_FILE).is_file() for f in fusions for a in activations)
    return [int(s) for s in p.get("seeds", []) if finished(int(s))]


def own_runs_beside_reference(reference: GridResults, records: Sequence | None = None,
                              runs_dir: str | Path | None = None, out: str | Path | None = None,
                              log=None) -> GridResults | None:
    """The reader's own finished runs of the reference grid's configurations, evaluated
    like the reference (:func:`reproduce` into :func:`course_check_dir`: their training
    is reused, not redone), or None when the reader has trained none of them."""
    seeds = finished_reference_seeds(reference, runs_dir)
    if not seeds:
        return None
    p = reference.provenance
    fusions, activations = own_grid(reference)
    return reproduce(p["preset"], seeds, out=out or course_check_dir(), fusions=fusions,
                     activations=activations, runs_dir=runs_dir, method=p.get("method", DEFAULT_METHOD),
                     records=records, log=log or (lambda message: None), overwrite=True,
                     command=f"python -m starunet reproduce --preset {p['preset']} --seeds "
                             f"{' '.join(map(str, seeds))}")


# 2: starunet.inference (BatchNorm folded), test metrics within 1e-6 of version 1
# 3: + the validation-tuned threshold (TUNED_COLUMNS); version-2 numbers unchanged
METRICS_EXTRA_COLUMNS = ["preset", "epochs", "best_epoch", "stop_reason", "train_seconds", "eval_seconds",
                         "method", "n_test_images", "device", "precision", "config_hash"]


PER_IMAGE_COLUMNS = ["fusion", "activation", "seed", "image_id", *METRIC_NAMES, "f1_tuned"]


INFERENCE_COLUMNS = ["run", "method", "seconds", "seconds_per_image", *METRIC_NAMES]


def grid_configs(preset: str, seeds: Sequence[int], fusions: Sequence[str] = FUSIONS_COMPARED,
                 activations: Sequence[str] = ACTIVATIONS_COMPARED, recipe: Mapping | None = None) -> list:
    """The :class:`~starunet.presets.TrainConfig` of every run of the grid, seed by seed
    (so an interrupted grid has whole seeds done), with ``recipe``'s changes, validated."""

    seeds = list(seeds)
    if not seeds:
        raise ValueError("give at least one seed, e.g. --seeds 2024 2025 2026")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    for name, values in (("fusions", fusions), ("activations", activations)):
        if not values or len(set(values)) != len(values):
            raise ValueError(f"{name} must be a non-empty list of distinct names, got {list(values)}")
    return [preset_config(preset, fusion=f, activation=a, seed=s, **(recipe or {}))
            for s in seeds for a in activations for f in fusions]


def save_probability_png(path: str | Path, prob: np.ndarray) -> None:
    """Save a probability map as an 8-bit grayscale PNG (0..255), atomically."""

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG", optimize=True)
    write_bytes_atomic(path, buf.getvalue())


def _fingerprint(run_dir: Path, ids: Sequence[str], method: str) -> str:
    """Identifies one evaluation: the finished run (its result.json), test ids, method."""
    payload = (run_dir / "result.json").read_bytes() + json.dumps(
        [list(ids), method, EVALUATION_VERSION]).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def _evaluate_cached(run_dir: Path, records: Sequence, ids: Sequence[str], out: Path, key: str,
                     method: str, batch_size: int, device: str, panel_ids: Sequence[str]) -> tuple[RunEvaluation, bool]:
    """Evaluate a run unless ``out/evaluations/<key>.json`` already holds this exact
    evaluation (and its prediction PNGs exist). Returns ``(evaluation, reused)``."""
    cache = out / "evaluations" / f"{key}.json"
    fingerprint = _fingerprint(run_dir, ids, method)
    pngs = [out / "predictions" / f"{key}_{i}.png" for i in panel_ids]
    if cache.is_file() and all(p.is_file() for p in pngs):
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if stored.get("fingerprint") == fingerprint:
            return RunEvaluation.from_json(stored["evaluation"]), True
    evaluation = evaluate_run(run_dir, records, ids, method=method, batch_size=batch_size, device=device)
    for image_id, path in zip(panel_ids, pngs):
        save_probability_png(path, evaluation.probabilities[image_id])
    write_json_atomic(cache, {"fingerprint": fingerprint, "evaluation": evaluation.to_json()})
    return evaluation, False


def _inference_methods_cached(run_dir: Path, records: Sequence, ids: Sequence[str], out: Path, key: str,
                              batch_size: int, device: str) -> list[dict]:
    """Both inference methods measured on one trained run (cached like evaluations): the
    sensitivity of its scores to how a whole image is predicted."""
    cache = out / "evaluations" / f"{key}.methods.json"
    fingerprint = _fingerprint(run_dir, ids, "both")
    if cache.is_file():
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if stored.get("fingerprint") == fingerprint:
            return stored["rows"]
    model = load_model(run_dir, which="best", device=device)
    rows = [{"run": key, **row} for row in compare_inference_methods(
        model, select_records(records, ids), batch_size=batch_size, device=device)]
    write_json_atomic(cache, {"fingerprint": fingerprint, "rows": rows})
    return rows


def _metrics_row(config, result, evaluation: RunEvaluation) -> dict:
    return {"fusion": config.fusion, "activation": config.activation, "seed": config.seed,
            **{m: round(evaluation.pooled[m], 6) for m in METRIC_NAMES},
            "val_threshold": round(evaluation.val_threshold, 6),
            **{m: round(evaluation.tuned[m], 6) for m in TUNED_METRICS},
            "preset": config.preset, "epochs": result.epochs, "best_epoch": result.best_epoch,
            "stop_reason": result.stop_reason, "train_seconds": result.train_seconds,
            "eval_seconds": evaluation.seconds, "method": evaluation.method,
            "n_test_images": len(evaluation.ids), "device": result.device, "precision": result.precision,
            "config_hash": config.config_hash}


def _per_image_rows(config, evaluation: RunEvaluation) -> list[dict]:
    return [{"fusion": config.fusion, "activation": config.activation, "seed": config.seed, "image_id": i,
             **{m: round(evaluation.per_image[i][m], 6) for m in METRIC_NAMES},
             "f1_tuned": round(evaluation.per_image_tuned[i]["f1_tuned"], 6)} for i in evaluation.ids]


def _write_grid_files(out: Path, rows: list[dict], per_image: list[dict], curves: dict,
                      inference_rows: list[dict]) -> None:
    """The grid's result files, rewritten (atomically) after every run."""
    write_csv_atomic(out / "metrics.csv", rows, METRICS_COLUMNS + TUNED_COLUMNS + METRICS_EXTRA_COLUMNS)
    write_csv_atomic(out / "per_image.csv", per_image, PER_IMAGE_COLUMNS)
    write_json_atomic(out / "curves.json", curves)
    if inference_rows:
        write_csv_atomic(out / "inference_methods.csv", inference_rows, INFERENCE_COLUMNS)


class GridConflictError(ValueError):
    """The output folder holds runs that the requested grid would silently drop."""


def check_output_folder(out: Path, configs: Sequence, method: str) -> None:
    """Refuse to write a grid into ``out`` when ``out/metrics.csv`` already holds runs
    that this grid does not contain (other seeds, fusions, activations, preset or
    inference method): the grid's files are rewritten from this call's runs, so
    those would be lost. A grid that contains them all (e.g. more seeds) is fine:
    their runs and evaluations are reused."""
    if not (out / "metrics.csv").is_file():
        return
    planned = {(c.fusion, c.activation, str(c.seed), c.preset, method) for c in configs}
    existing = [(r["fusion"], r["activation"], r["seed"], r.get("preset", ""), r.get("method", ""))
                for r in read_csv(out / "metrics.csv")]
    dropped = [e for e in existing if e not in planned]
    if dropped:
        names = ", ".join(f"{run_key(f, a, s)} ({p}, {m})" for f, a, s, p, m in dropped[:4])
        more = f" and {len(dropped) - 4} more" if len(dropped) > 4 else ""
        raise GridConflictError(
            f"{display_path(out)} already holds results that this grid would drop: {names}{more}. "
            f"{_conflict_fix(existing, configs, method)}")


def _conflict_fix(existing: Sequence[tuple], configs: Sequence, method: str) -> str:
    """How to resolve a :class:`GridConflictError`: a grid of another preset or
    inference method cannot be extended (its runs differ), only moved elsewhere; a
    grid of the same kind can, by asking for its seeds, fusions and activations too."""
    presets = {c.preset for c in configs}
    other = sorted({(p, m) for *_, p, m in existing if p not in presets or m != method})
    if other:
        held = "; ".join(f"preset {p}, method {m}" for p, m in other)
        return (f"That folder holds a grid of another kind ({held}): write this one to another --out "
                f"(e.g. --out runs/{configs[0].preset}-grid), or pass --overwrite to replace it")
    options = []
    for flag, index, attribute in (("--seeds", 2, "seed"), ("--fusions", 0, "fusion"),
                                   ("--activations", 1, "activation")):
        wanted = [str(getattr(c, attribute)) for c in configs]
        union = list(dict.fromkeys(wanted + [str(e[index]) for e in existing]))
        if flag == "--seeds":
            union = sorted(union, key=int)
        if flag == "--seeds" or union != list(dict.fromkeys(wanted)):
            options.append(f"{flag} {' '.join(union)}")
    return (f"Re-run with all of them (e.g. {' '.join(options)}; finished runs and evaluations are "
            "reused), choose another --out, or pass --overwrite to replace them")


def reproduce(preset: str, seeds: Sequence[int], out: str | Path | None = None,
              fusions: Sequence[str] = FUSIONS_COMPARED, activations: Sequence[str] = ACTIVATIONS_COMPARED,
              device: str = "auto", runs_dir: str | Path | None = None, method: str = DEFAULT_METHOD,
              batch_size: int = 4, records: Sequence | None = None, command: str | None = None,
              log=None, overwrite: bool = False, runner=None, precision: str = "auto",
              recipe: Mapping | None = None) -> GridResults:
    """Train (or reuse) and evaluate the fusion x activation grid for every seed.

    Runs go to :func:`starunet.runs.run_dir_for` under ``runs_dir`` (finished
    runs are reused, interrupted ones resumed); results to ``out`` (default
    :func:`own_results_dir`): ``metrics.csv``, ``per_image.csv``, ``curves.json``,
    ``inference_methods.csv``, ``predictions/*.png``, ``provenance.json`` and a
    generated ``README.md``. Returns the results read back. An ``out`` holding runs
    outside this grid raises :class:`GridConflictError` unless ``overwrite``.

    ``runner`` trains the runs (a :class:`starunet.runners.Runner`): by default
    :class:`~starunet.runners.InProcessRunner`, one after another here
    (``InProcessRunner(threads=2)`` sets the torch threads); the lab's
    ``starunet.lab.fanout.FanOut(jobs=4)`` trains them in parallel jobs
    (``reproduce --jobs 4``). Each run is evaluated as it finishes; runs that fail are
    reported together at the end (:class:`starunet.runners.GridRunError`) after the
    others are evaluated. ``precision``: what the runs train in
    (:func:`starunet.training.train`; the resolved one is in each row of ``metrics.csv``).
    ``recipe``: changes to the preset (``{"lr": 1e-3}``, ``reproduce --set lr=1e-3``).
    """


    log = log or (lambda message: print(message, flush=True))
    check_inference_method(method)
    configs = grid_configs(preset, seeds, fusions, activations, recipe)  # fails fast on bad names
    runner = (runner if runner is not None else InProcessRunner()).validate()
    torch_device = select_device(device)
    resolve_precision(precision, torch_device)  # a bad name fails before any work
    out = Path(out) if out is not None else own_results_dir()
    if not overwrite:
        check_output_folder(out, configs, method)
    started, start = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.perf_counter()
    commit = git_commit()  # now: the files this call writes may be tracked ones (results/reference)
    test_ids = tuple(configs[0].split().test)
    panel_ids = tuple(sorted(test_ids)[:PANEL_COUNT])
    records = load_stare() if records is None else records
    threads_before = torch.get_num_threads()
    if runner.process_threads() is not None:
        torch.set_num_threads(runner.process_threads())
    try:
        return _run_grid(configs, runner, out, runs_dir, torch_device, device, records, test_ids, panel_ids, method,
                         batch_size, log, command, preset, seeds, fusions, activations, started, start, commit,
                         precision)
    finally:
        torch.set_num_threads(threads_before)


def _trained_runs(configs: Sequence, runner, runs_dir, torch_device, device: str, records: Sequence, log,
                  precision: str = "auto"):
    """``(index, TrainingResult | RunFailure)`` of every config, as ``runner`` trains them."""

    yield from runner.train_runs(configs, [run_dir_for(c, runs_dir) for c in configs], device, str(torch_device),
                                 log, records, precision)


def _run_grid(configs, runner, out, runs_dir, torch_device, device, records, test_ids, panel_ids, method,
              batch_size, log, command, preset, seeds, fusions, activations, started, start, commit,
              precision: str = "auto") -> GridResults:
    """The body of :func:`reproduce`: train, evaluate each run as it finishes, write."""
    done: dict[int, tuple[dict, list[dict], dict, list[dict]]] = {}
    failures, reused, evaluations_reused = [], 0, 0

    def write_provenance(ended: str | None = None) -> GridResults:
        """provenance.json and README.md of the runs evaluated so far; ``ended`` says why
        a grid stopped short (interrupted, or runs failed) and names the missing runs."""
        provenance = {
            "command": command or f"starunet.grid.reproduce(preset={preset!r}, seeds={list(seeds)!r})",
            "preset": preset, "preset_config": {k: v for k, v in configs[0].to_dict().items()
                                                if k not in ("fusion", "activation", "seed")},
            "seeds": list(seeds), "fusions": list(fusions), "activations": list(activations),
            "method": method, "test_ids": list(test_ids), "panel_ids": list(panel_ids),
            "hardware": hardware_record(torch_device), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform(terse=True),
            "git_commit": commit, "smoke_mode": smoke_mode(),
            "started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "wall_seconds": round(time.perf_counter() - start, 1), "runs": len(configs), "runs_reused": reused,
            "evaluations_reused": evaluations_reused,
        }
        if runner.provenance() is not None:  # absent for one run at a time, so such grids' files stay as they were
            provenance["fanout"] = runner.provenance()
        if ended is not None:
            provenance["partial"] = {"ended": ended, "missing": [
                run_key(c.fusion, c.activation, c.seed) for n, c in enumerate(configs) if n not in done]}
        return write_grid_provenance(out, provenance)

    try:
        with contextlib.closing(_trained_runs(configs, runner, runs_dir, torch_device, device, records, log,
                                              precision)) as runs:
            for n, result in runs:
                if isinstance(result, RunFailure):
                    failures.append(result)
                    log(f"    {result.describe()}")
                    continue
                config = configs[n]
                key = run_key(config.fusion, config.activation, config.seed)
                evaluation, cached = _evaluate_cached(result.run_dir, records, test_ids, out, key, method,
                                                      batch_size, str(torch_device),
                                                      panel_ids if config.seed == configs[0].seed else ())
                reused, evaluations_reused = reused + int(result.reused), evaluations_reused + int(cached)
                done[n] = (_metrics_row(config, result, evaluation), _per_image_rows(config, evaluation),
                           evaluation.curves, _inference_methods_cached(result.run_dir, records, test_ids, out, key,
                                                                        batch_size, str(torch_device)))
                _write_grid_files(out, *_grid_parts(done, configs))
                prefix = f"[{len(done) + len(failures)}/{len(configs)}] {key} " if runner.parallel else "    "
                log(f"{prefix}{'reused' if result.reused else 'trained'}; test " +
                    ", ".join(f"{m} {evaluation.pooled[m]:.4f}" for m in HEADLINE_METRICS))
    except KeyboardInterrupt:
        if done:  # the folder's files already hold these runs: describe them, and what is missing
            write_provenance("interrupted")
        raise
    if failures:
        write_provenance(f"{len(failures)} run(s) failed")
        raise GridRunError(sorted(failures, key=lambda f: f.index), len(configs))
    results = write_provenance()
    log(f"results -> {display_path(out)}")
    return results


def write_grid_provenance(out: Path, provenance: dict) -> GridResults:
    """Write ``provenance`` (with the training and evaluation seconds summed from
    ``metrics.csv``), ``verdicts.csv`` and the README generated from them into the grid
    folder ``out``."""
    rows = read_csv(out / "metrics.csv")
    provenance = {**provenance,
                  "train_seconds_total": round(sum(float(r["train_seconds"]) for r in rows), 1),
                  "eval_seconds_total": round(sum(float(r["eval_seconds"]) for r in rows), 1)}
    precisions = sorted({r["precision"] for r in rows if r.get("precision")})  # absent before it was recorded
    if precisions:
        provenance["precision"] = ", ".join(precisions) + " training steps, fp32 evaluation"
    write_json_atomic(out / "provenance.json", provenance)
    results = load_results(out, kind="reference" if is_committed_grid(out) else "own")
    write_verdicts(out, grid_verdict_rows(results))  # verdicts.csv: what the README's verdicts say
    write_text_atomic(out / "README.md", provenance_readme(results))
    return results


def _grid_parts(done: Mapping[int, tuple], configs: Sequence) -> tuple[list, list, dict, list]:
    """``(rows, per_image, curves, inference_rows)`` of the evaluated runs, in the grid's
    order (whatever order parallel jobs finished in)."""
    rows, per_image, curves, inference_rows = [], [], {}, []
    for n in sorted(done):
        row, image_rows, run_curves, methods = done[n]
        rows.append(row)
        per_image += image_rows
        inference_rows += methods
        curves[run_key(configs[n].fusion, configs[n].activation, configs[n].seed)] = run_curves
    return rows, per_image, curves, inference_rows


def cli(argv: Sequence[str], add_runner_arguments=None, runner_from_args=None) -> int:
    """``python -m starunet reproduce``: the grid over seeds, evaluated (see :func:`reproduce`).

    ``add_runner_arguments(parser)`` adds the options of another runner (a
    :class:`starunet.runners.Runner`) and ``runner_from_args(args)`` builds it, or raises
    ``ValueError`` before any work: the command line's ``reproduce`` passes the lab's
    parallel jobs (``--jobs``, ``--cluster``; ``starunet.lab.fanout.cli``)."""

    parser = argparse.ArgumentParser(
        prog="python -m starunet reproduce",
        description="Train (or reuse) fusion x activation runs for every seed, evaluate them on the "
                    "test images and write metrics.csv, per_image.csv, curves.json, prediction PNGs, "
                    "provenance.json and README.md into --out. Re-running resumes.")
    parser.add_argument("--preset", choices=list(PRESETS), default="fast",
                        help="training budget and recipe (fast: about 5 CPU minutes a run, a one-cycle "
                             "schedule on 16,384 patches, not shown converged; "
                             "smoke: seconds; quick/long: the source's recipe, under-trained; full: the "
                             "source's protocol, a GPU's job)")
    parser.add_argument("--precision", choices=list(PRECISION_CHOICES), default="auto",
                        help="what training steps compute in (auto: bf16 on GPUs and CPUs with native bf16)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026], metavar="SEED",
                        help="the seeds of every configuration (default: 2024 2025 2026)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: {display_path(own_results_dir())}, where the course looks)")
    parser.add_argument("--device", choices=list(DEVICE_CHOICES), default="auto",
                        help="where to train and evaluate (default auto: a GPU if there is one, else the CPU)")
    parser.add_argument("--fusions", nargs="+", default=list(FUSIONS_COMPARED), choices=list(FUSIONS),
                        metavar="FUSION", help=f"skip fusions (default: sum star; valid: {', '.join(FUSIONS)})")
    parser.add_argument("--activations", nargs="+", default=list(ACTIVATIONS_COMPARED), choices=list(ACTIVATIONS),
                        metavar="ACT", help=f"activations (default: none relu; valid: {', '.join(ACTIVATIONS)})")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where training runs live (default: STARUNET_RUNS or runs/)")
    parser.add_argument("--method", choices=INFERENCE_METHODS, default=DEFAULT_METHOD,
                        help="whole-image inference: padded image (default) or averaged 96x96 tiles")
    parser.add_argument("--batch-size", type=int, default=4, help="images (or tiles) per inference batch")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="change the preset's recipe, e.g. --set lr=1e-3 max_epochs=4 (a recipe search)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace results in --out that this grid does not contain (default: refuse)")
    if add_runner_arguments is not None:
        add_runner_arguments(parser)
    args = parser.parse_args(list(argv))

    try:  # first: a missing optional package is named before any folder is written
        runner = runner_from_args(args) if runner_from_args is not None else InProcessRunner()
    except ValueError as err:
        print(f"error: {cli_message(err)}", file=sys.stderr)
        return 2
    problem = reproduce_problem(args)  # before anything is trained or downloaded
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    command = "python -m starunet reproduce " + shlex.join(list(argv))

    try:
        reproduce(args.preset, args.seeds, args.out, fusions=args.fusions, activations=args.activations,
                  device=args.device, runs_dir=args.runs_dir, method=args.method, batch_size=args.batch_size,
                  command=command, overwrite=args.overwrite, runner=runner, precision=args.precision,
                  recipe=parse_recipe(args.set, PRESETS[args.preset]))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {cli_message(err)}", file=sys.stderr)
        return 2
    except GridRunError as err:  # some runs failed, the others are evaluated in --out
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the runs in flight were stopped. Rerun the same command to go on: finished "
              "runs and evaluations are reused, unfinished runs resume from their last epoch.", file=sys.stderr)
        return 130
    return 0


def reproduce_problem(args) -> str | None:
    """What makes ``python -m starunet reproduce`` with parsed ``args`` fail before
    it trains anything, or None: seeds, batch size, the output and runs folders."""
    out = args.out if args.out is not None else own_results_dir()
    try:
        check_seeds(args.seeds, "--seeds")
        check_positive(args.batch_size, "--batch-size")
        check_writable_dir(out, "results folder")
        check_writable_dir(args.runs_dir or default_runs_dir(), "runs folder", "--runs-dir")
    except PreflightError as err:
        return str(err)
    return None
