"""The lesson frame: how every notebook of the course opens.

A lesson's first cell (typed) says what it teaches. The next cell calls
``su.lesson_header("05")``, which shows three things no one types:

* the lesson's **result** in a few lines, computed now from the committed results by
  the function registered for it with :func:`lesson_result`;
* its **reading time**, counted from the notebook's own words and code lines;
* its **compute time**, as ``python -m starunet course`` measured it, with the machine
  (``notebooks/timings.csv``, written by :func:`record_timings`).

The rest of the frame is a convention that ``tests/test_lessons.py`` checks: exercises
under ``### Exercise N`` headings, each with a solution cell tagged ``solution`` (and
``hide-cell``), collapsed in JupyterLab, that asserts its answer; a ``## Summary`` and a
link to the next lesson at the end.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Iterable

from IPython.display import Markdown

from starunet.config import PROJECT_ROOT
from starunet.io import read_csv, write_csv_atomic

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
TIMINGS_CSV = NOTEBOOKS_DIR / "timings.csv"
TIMING_COLUMNS = ["notebook", "seconds", "runs_trained", "cpu", "cores", "measured"]
# Reading speeds: prose at an adult's silent-reading pace for technical text, code slower.
WORDS_PER_MINUTE = 200
CODE_LINES_PER_MINUTE = 20
SOLUTION_TAG = "solution"

_RESULTS: dict[str, Callable[[], list[str]]] = {}


def lesson_result(lesson: str) -> Callable[[Callable[[], list[str]]], Callable[[], list[str]]]:
    """Register the function that computes lesson ``lesson``'s result lines (3-5 strings
    of Markdown, each read from committed results or computed by the package)."""
    def register(fn: Callable[[], list[str]]) -> Callable[[], list[str]]:
        _RESULTS[lesson] = fn
        return fn
    return register


def notebook_path(lesson: str, directory: Path = NOTEBOOKS_DIR) -> Path:
    """``"05"`` -> ``notebooks/05_metric_comparison.ipynb``; a clear error listing the
    lessons there are otherwise."""
    matches = sorted(directory.glob(f"{lesson}_*.ipynb"))
    if len(matches) != 1:
        valid = ", ".join(sorted(p.name[:2] for p in directory.glob("[0-9][0-9]_*.ipynb")))
        raise ValueError(f"no lesson {lesson!r} in {directory}; valid: {valid}")
    return matches[0]


def reading_minutes(path: Path) -> int:
    """Minutes to read a notebook: its Markdown words at :data:`WORDS_PER_MINUTE` plus
    its non-blank code lines at :data:`CODE_LINES_PER_MINUTE`. Solutions and outputs
    are not counted: they are read only by whoever wants them."""
    cells = json.loads(Path(path).read_text())["cells"]
    words = lines = 0
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            words += len(source.split())
        elif cell["cell_type"] == "code" and SOLUTION_TAG not in cell.get("metadata", {}).get("tags", []):
            lines += sum(1 for line in source.splitlines() if line.strip())
    return max(1, math.ceil(words / WORDS_PER_MINUTE + lines / CODE_LINES_PER_MINUTE))


def _rough_duration(seconds: float) -> str:  # "59 s", "17 min": a lesson header's grain
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def compute_time(lesson: str, timings: Path = TIMINGS_CSV) -> str:
    """How long the lesson took to run, from :data:`TIMINGS_CSV`, with the machine and,
    where it trained, how many runs; the text says when no measurement is recorded."""
    rows = [r for r in read_csv(timings) if r["notebook"].startswith(f"{lesson}_")] if timings.exists() else []
    if not rows:
        return "not measured yet (`python -m starunet course --inplace --record-timings` records it)"
    row = rows[-1]
    text = f"{_rough_duration(float(row['seconds']))} on a {row['cores']}-core {row['cpu']} ({row['measured']})"
    if int(row["runs_trained"]):
        text += f", training {row['runs_trained']} runs; seconds once they exist"
    return text


def record_timings(rows: Iterable[dict], timings: Path = TIMINGS_CSV) -> None:
    """Merge measured rows (``TIMING_COLUMNS``) into ``timings``, one row per notebook."""
    merged = {r["notebook"]: r for r in read_csv(timings)} if timings.exists() else {}
    merged.update({r["notebook"]: {k: r[k] for k in TIMING_COLUMNS} for r in rows})
    write_csv_atomic(timings, [merged[k] for k in sorted(merged)], TIMING_COLUMNS)


def lesson_header(lesson: str, directory: Path = NOTEBOOKS_DIR, timings: Path = TIMINGS_CSV) -> Markdown:
    """The computed part of a lesson's frame: its result, reading and compute time."""
    if lesson not in _RESULTS:
        raise ValueError(f"no result registered for lesson {lesson!r}; registered: {', '.join(sorted(_RESULTS))}")
    result = "\n".join(f"- {line}" for line in _RESULTS[lesson]())
    return Markdown(f"**The result.**\n\n{result}\n\n"
                    f"**Reading time:** about {reading_minutes(notebook_path(lesson, directory))} min. "
                    f"**Compute time:** {compute_time(lesson, timings)}.")


# -- The results of lessons 01-03 (one function each, registered with @lesson_result). ---------


@lesson_result("01")
def data_result() -> list[str]:
    """Lesson 01: the data, its split, how rare vessels are, the human yardstick.
    Computed from the STARE files (about a second: decoding 60 images)."""
    import numpy as np

    from starunet.data import split_ids, vessel_fraction
    from starunet.inference import DEFAULT_METHOD
    from starunet.metrics import confusion_counts, rates_from_counts
    from starunet.model import UNet
    from starunet.presets import TrainConfig
    from starunet.stare import IMAGE_SHAPE, load_stare

    records, split = load_stare(), split_ids()
    test = [r for r in records if r.id in split.test]
    human = rates_from_counts(**confusion_counts([r.label_vk.astype(np.float32) for r in test],
                                                 [r.label for r in test], [r.fov for r in test]))
    height, width = IMAGE_SHAPE
    patch = TrainConfig().patch_size
    return [f"**{len(records)} STARE fundus images** of {width}×{height} pixels, each labelled by two annotators, "
            f"split by image into **{len(split.train)} training, {len(split.val)} validation and "
            f"{len(split.test)} test images**, the same in every lesson.",
            f"Vessels are a minority class: **{vessel_fraction(records):.1%} of the pixels inside the field of "
            f"view** (annotator ah, pooled over all images). Saying \"no vessel\" everywhere would already be "
            f"{1 - vessel_fraction(test):.1%} accurate on the test images, so accuracy alone cannot rank models.",
            f"The human yardstick: the second annotator, scored against the first inside the field of view of "
            f"the {len(test)} test images, reaches **F1 {human['f1']:.3f}** (accuracy {human['acc']:.3f}, "
            f"sensitivity {human['se']:.3f}, precision {human['pre']:.3f}).",
            f"Models train on {patch}×{patch} patches centred in the field of view, reproducible from "
            f"(seed, epoch, index). Every reported score labels each whole image in one forward pass "
            f"(`{DEFAULT_METHOD}`: reflect-padded to a multiple of {2 ** UNet.levels}); overlapping "
            f"{patch}×{patch} tiles are the alternative, measured beside it as a sensitivity check (notebook 05)."]


@lesson_result("02")
def star_result() -> list[str]:
    """Lesson 02: the algebra of the star operation and one toy comparison over the
    notebook's seeds, computed by :mod:`starunet.theory` and :mod:`starunet.toys`
    (a few seconds: nine toy networks; one seed, three networks, in smoke mode)."""
    import numpy as np

    from starunet import theory, toys
    from starunet.config import smoke_mode

    ts = np.linspace(-1.5, 1.5, 401)
    rng = np.random.default_rng(0)
    start, direction = rng.normal(size=8), rng.normal(size=8)

    def degree(fn) -> int:
        return theory.polynomial_degree(ts, theory.response_along_line(fn, start, direction, ts))

    stacked, chained = [], []
    for depth in (1, 2, 3, 4):
        layers = theory.star_stack(d=8, depth=depth, seed=depth)
        stacked.append(degree(lambda x: theory.apply_star_stack(x, layers)[-1][:, 0]))
        chained.append(degree(lambda x: theory.skip_star_chain(x, layers)[:, 0]))
    seeds = (0,) if smoke_mode() else (0, 1, 2)  # notebook 02's SEEDS
    runs = [toys.run_toy_experiment("circles", fusion, activation, depth=2, width=8, seed=seed)
            for fusion, activation in (("sum", "none"), ("star", "none"), ("sum", "relu")) for seed in seeds]
    linear, relu = (toys.paired_accuracy_differences(runs, "star/none", b)[0] for b in ("sum/none", "sum/relu"))

    def points(row) -> str:
        if row["n_seeds"] < 2:
            return f"{100 * row['diff']:+.1f} points"
        return (f"{100 * row['diff']:+.1f} points [{100 * row['low']:+.1f}, {100 * row['high']:+.1f}]: "
                f"{toys.difference_verdict(row)}")
    return [f"One star layer, `(W1 x + b1) ⊙ (W2 x + b2)`, is a linear model on all pairwise products of "
            f"`[x, 1]`: {theory.quadratic_feature_count(8)} features for 8 inputs, matched to a relative "
            f"error of {theory.star_identity_error(8, seed=8):.0e}.",
            f"Stacking doubles the degree: 1, 2, 3, 4 star layers measure degree "
            f"{', '.join(map(str, stacked))}, and two layers on 32 channels reach "
            f"{theory.implicit_dimension(32, 2):,} implicit dimensions.",
            f"In a U-Net one factor is always an encoder skip, so each product adds one degree instead: "
            f"{', '.join(map(str, chained))} after 1, 2, 3, 4 products.",
            f"Same {runs[0].n_params} weights, circles, "
            + (f"{len(seeds)} seeds (mean test accuracy; star − other paired by seed, with a "
               f"{linear['level']:.0%} t-interval over the seeds)" if len(seeds) > 1 else
               "one seed, preliminary (test accuracy; no interval)")
            + f": without activation, star fusion reaches {linear['mean_a']:.0%} and sum fusion, a straight line, "
            f"{linear['mean_b']:.0%} ({points(linear)}); the sum network with ReLU reaches {relu['mean_b']:.0%} "
            f"({points(relu)})."]


@lesson_result("03")
def model_result() -> list[str]:
    """Lesson 03: the ReLU-free U-Net's size, degree, resolution and the softmax
    pitfall, computed on the network itself, on one random input the size of a training
    patch (a second or two)."""
    import torch

    from starunet.model import UNet, count_parameters
    from starunet.presets import TrainConfig

    patch = TrainConfig().patch_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        star, total = UNet(), count_parameters(UNet(fusion="sum"))
        x = torch.rand(1, 3, patch, patch, dtype=torch.float64)
    deepest = count_parameters(star.encoder[-1]) + count_parameters(star.decoder[0])
    with torch.no_grad():
        star = star.double().eval()  # a fresh network's BatchNorm in eval mode is the identity
        for module in star.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        out = star(x)
        ratio = (star(2 * x).abs().sum() / out.abs().sum()).item()
    blocks = out[..., 0::2, 0::2]
    half = all(torch.equal(blocks, out[..., i::2, j::2]) for i in (0, 1) for j in (0, 1))
    degree = round(torch.log2(torch.tensor(ratio)).item())
    softmax = torch.softmax(out, dim=1)
    return [f"`su.UNet()` has **{count_parameters(star):,} parameters**, exactly as many as the sum network "
            f"({total:,}): the fusion `d ⊙ s` has no weights. {deepest / total:.0%} of them sit in the two "
            "deepest blocks.",
            f"Its only non-linearities are {UNet.levels} max-poolings and {len(star.fusions)} star fusions: "
            f"without biases, doubling the input multiplies the output by {ratio:.0f} = 2^{degree}: between "
            f"pooling kinks it is a polynomial of degree {degree}, one more per fusion.",
            (f"It predicts at half resolution: for a {patch}×{patch} input (the size of a training patch), "
             f"its {out.shape[-2]}×{out.shape[-1]} output is constant on every aligned 2×2 block" if half
             else "It predicts at full resolution")
            + ", since its shallowest skip is computed but unused; `use_shallowest_skip=True` fuses it.",
            f"The source's softmax over one output channel is {softmax.min().item():g} at every pixel, whatever "
            "the network computes: it passes no gradient, so this course uses a sigmoid."]


# -- The results of lessons 04-06 (one function each, registered with @lesson_result). ---------

def _interval_text(rows, metrics=("roc_auc", "pr_auc", "f1")) -> str:
    """A comparison's pooled verdicts.csv rows in one phrase: with two or more seeds each
    metric's estimate, interval and verdict; with one, the estimates and "one seed, preliminary"."""
    from starunet.stats import METRIC_LABELS

    by_metric = {r["metric"]: r for r in rows}
    chosen = [by_metric[m] for m in metrics if m in by_metric]
    n = int(chosen[0]["n_seeds"])
    if n < 2:
        values = ", ".join(f"{METRIC_LABELS[r['metric']]} {float(r['estimate']):+.3f}" for r in chosen)
        return f"one seed, preliminary: {values} (no interval, no verdict)"
    values = ", ".join(f"{METRIC_LABELS[r['metric']]} {float(r['estimate']):+.3f} "
                       f"[{float(r['low']):+.3f}, {float(r['high']):+.3f}] {r['verdict']}" for r in chosen)
    return f"{n} seeds: {values}"


def _family_size(rows) -> int:
    """The Bonferroni family of pooled ``verdicts.csv`` rows, read back from their level."""
    levels = [float(r["adjusted_level"]) for r in rows if int(r["n_seeds"]) > 1]
    return round(0.05 / (1 - levels[0])) if levels else 0


def fast_run_benchmark() -> dict[str, dict]:
    """One `fast` run trained alone on the benchmark machine, per training precision
    (``benchmarks/cpu.csv``): ``{"bf16": {"minutes", "device", "what"}, "fp32": ...}``;
    empty when the file or its rows are missing. The figure lessons 04 and 05 quote."""
    from starunet.recipes import benchmark_rows  # the one reader of benchmarks/cpu.csv

    return {r["variant"]: {"minutes": float(r["value"]), "device": r["device"], "what": r["what"]}
            for r in benchmark_rows() if r["what"].startswith("fast preset run") and r["unit"] == "min"}


def fast_run_line() -> str:
    """One sentence: a `fast` run alone, bf16 and fp32, and bf16's speed-up, all read from
    ``benchmarks/cpu.csv`` (an empty string without it)."""
    bench = fast_run_benchmark()
    if not {"bf16", "fp32"} <= set(bench):
        return ""
    bf16, fp32 = bench["bf16"]["minutes"], bench["fp32"]["minutes"]
    return (f"One `fast` run trained alone ({bench['bf16']['what']}; `benchmarks/cpu.csv`, {bench['bf16']['device']}): "
            f"{bf16:.2f} min with bf16 training steps, {fp32:.2f} min in fp32, so bf16 is {fp32 / bf16:.2f}× as fast.")


@lesson_result("04")
def training_result() -> list[str]:
    """Lesson 04: the `fast` preset as the course trains it, how long one run takes alone
    (``benchmarks/cpu.csv``, the primary figure), and what ``results/fast`` holds: which
    configurations and seeds, and how its runs shared the machine (their times are not
    one run's alone). Counts follow whatever the folder holds."""
    from starunet.presets import PRESETS
    from starunet.results import FAST_DIR
    from starunet.stats import ACTIVATIONS_COMPARED, FUSIONS_COMPARED

    c = PRESETS["fast"]
    schedule = {"onecycle": "one-cycle", "constant": "constant", "cosine": "cosine"}.get(c.schedule, c.schedule)
    lines = [f"The course trains with the `fast` preset: {c.samples_per_epoch * c.max_epochs:,} random "
             f"{c.patch_size}×{c.patch_size} patches ({c.max_epochs} epochs of {c.samples_per_epoch:,}, batch "
             f"{c.batch_size}: {c.total_steps():,} Adam steps) under a {schedule} learning rate peaking at "
             f"{c.lr:g} after a {c.warmup:.0%} warm-up; the weights of the best validation epoch are kept."]
    if fast_run_line():
        lines.append(fast_run_line())
    if (FAST_DIR / "metrics.csv").is_file():
        runs = read_csv(FAST_DIR / "metrics.csv")
        p = json.loads((FAST_DIR / "provenance.json").read_text(encoding="utf-8"))
        seeds: dict[tuple[str, str], set[str]] = {}
        for r in runs:
            seeds.setdefault((r["fusion"], r["activation"]), set()).add(r["seed"])
        counts = sorted({len(v) for v in seeds.values()})
        all_seeds = sorted({s for v in seeds.values() for s in v})
        ours = [k for k in seeds if k[0] in FUSIONS_COMPARED and k[1] in ACTIVATIONS_COMPARED]
        others = sorted({f for f, _ in seeds} - set(FUSIONS_COMPARED))
        per_config = f"{counts[0]}" + (f"–{counts[-1]}" if len(counts) > 1 else "")
        lines.append(f"`results/fast` holds {len(runs)} such runs: fusions {', '.join(sorted({f for f, _ in seeds}))} × "
                     f"activations {', '.join(sorted({a for _, a in seeds}))}, seed{'s' * (len(all_seeds) > 1)} "
                     f"{', '.join(all_seeds)} ({per_config} seed{'s' * (counts[-1] > 1)} per configuration). This "
                     f"lesson trains the {len(FUSIONS_COMPARED)}×{len(ACTIVATIONS_COMPARED)} grid "
                     f"({len(ours)} of those configurations)" + (f"; {', '.join(others)} are notebook 06's" if others
                                                                 else "") + ".")
        fan = p.get("fanout", {})
        minutes = sorted(float(r["train_seconds"]) / 60 for r in runs)
        lines.append(f"The study trained {fan.get('jobs', 1)} run(s) at a time with {fan.get('threads_per_job', '?')} "
                     f"torch thread(s) each on a shared machine ({p['hardware']['summary']}), so its runs' times "
                     f"({minutes[0]:.0f}–{minutes[-1]:.0f} min, median {minutes[len(minutes) // 2]:.0f}) are not the "
                     f"time of one run alone; precision: {p.get('precision', '?')}.")
    return lines


def _short_answer(pooled: dict[str, list[dict]]) -> str:
    """Lesson 05's answer in one line, counted from the pooled verdicts of its grids:
    star against sum at the same activation, then star/none against sum/relu."""
    from starunet.stats import HEADLINE_METRICS, MAIN_COMPARISONS, METRIC_LABELS

    def decided(comparisons: tuple[str, ...]) -> tuple[list[str], int]:
        rows = [(name, r) for name, rs in pooled.items() for r in rs
                if r["comparison"] in comparisons and r["metric"] in HEADLINE_METRICS
                and int(r["n_seeds"]) > 1]
        return [f"{r['verdict']} on {METRIC_LABELS[r['metric']]} in `{name}`" for name, r in rows
                if r["verdict"] != "inconclusive"], len(rows)

    same, n_same = decided(MAIN_COMPARISONS[:2])
    replace, n_replace = decided(MAIN_COMPARISONS[2:])
    if not n_same + n_replace:
        return ("**In short.** No comparison has two seeds yet, so none has an interval: every difference "
                "below is one seed, preliminary.")
    grids = " and ".join(f"`{name}`" for name in pooled)
    return (f"**In short** ({grids}, pooled, two or more seeds). star − sum at the same activation: {len(same)} of "
            f"{n_same} headline intervals decide"
            f"{' (' + '; '.join(same) + ')' if same else ': none detects a difference, and none shows equivalence'}. "
            f"The ReLU-free star network against the sum network with ReLU: {len(replace)} of {n_replace} decide"
            f"{' (' + '; '.join(replace) + ')' if replace else ''}. Inconclusive means the study cannot tell yet, "
            "not that there is no difference.")


@lesson_result("05")
def comparison_result() -> list[str]:
    """Lesson 05: the pooled verdicts of the main comparisons in the committed `full`
    and `fast` grids (their ``verdicts.csv``), seeds counted, never typed."""
    from starunet.stats import HEADLINE_METRICS, MAIN_COMPARISONS, MARGINS, METRIC_LABELS
    from starunet.verdicts import COMMITTED_FOLDERS, VERDICTS_FILE, read_verdicts

    folders = {name: COMMITTED_FOLDERS[name] for name in ("full", "fast")
               if (COMMITTED_FOLDERS[name] / VERDICTS_FILE).is_file()}
    pooled = {name: [r for r in read_verdicts(folder) if r["statistic"] == "pooled"]
              for name, folder in folders.items()}
    families = "; ".join(f"`{name}` {_family_size(rows)} intervals" for name, rows in pooled.items()
                         if _family_size(rows))
    margins = ", ".join(f"{METRIC_LABELS[m]} ±{MARGINS[m].value:g}" for m in HEADLINE_METRICS)
    images = next((r["n_images"] for rows in pooled.values() for r in rows), "?")
    lines = [_short_answer(pooled),
             f"Statistic: each seed's difference B − A of the test metric pooled over the FOV pixels of the "
             f"{images} test images; its mean and t-interval over seeds (Bonferroni per grid: {families or 'no interval'}), "
             f"judged against the margins {margins}."]
    for comparison in MAIN_COMPARISONS:
        parts = [f"`{name}` {_interval_text([r for r in rows if r['comparison'] == comparison])}"
                 for name, rows in pooled.items() if any(r["comparison"] == comparison for r in rows)]
        if parts:
            lines.append(f"**{comparison}**: " + "; ".join(parts) + ".")
    return lines


@lesson_result("06")
def curves_result() -> list[str]:
    """Lesson 06: the learning curves' verdicts at the largest budget (``results/curves``'s
    ``verdicts.csv``), how many runs still rise, and how much validation scores swing."""
    from starunet.results import CURVES_DIR
    from starunet.verdicts import read_verdicts

    rows = [r for r in read_verdicts(CURVES_DIR) if r["statistic"] == "pooled"]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["comparison"], []).append(r)
    several = {c: g for c, g in groups.items() if int(g[0]["n_seeds"]) > 1}
    lines = [f"**{c}** (pooled test metric, per-seed difference, t-interval, Bonferroni over "
             f"{_family_size(rows)}): {_interval_text(g)}." for c, g in several.items()]
    single = [(c.split(" at ")[0], c.partition(" at ")[2],
               float(next(r for r in g if r["metric"] == "pr_auc")["estimate"]))
              for c, g in groups.items() if c not in several]
    if single:
        budgets = sorted({at for _, at, _ in single})
        lines.append(f"One seed each, preliminary (PR-AUC difference at {', '.join(budgets)}; no interval, no "
                     "verdict): " + "; ".join(f"{c} {v:+.3f}" for c, _, v in single) + ".")
    runs = read_csv(CURVES_DIR / "runs.csv")
    rising = [r for r in runs if r["plateau"].startswith("still rising")]
    lines.append(f"{len(rising)} of the {len(runs)} runs are still rising at their last doubling by the plateau "
                 "rule (a doubling gains 0.005 test PR-AUC or more): the curves show where the networks stand "
                 "at that budget, not where they end.")
    swing: dict[str, list[float]] = {}
    for r in runs:
        swing.setdefault(r["activation"], []).append(float(r["val_pr_auc_swing"]))
    parts = []
    for activation, values in swing.items():
        low, high = f"{min(values):.3f}", f"{max(values):.3f}"
        name = {"none": "without ReLU", "relu": "with ReLU"}.get(activation, f"with {activation}")
        parts.append(f"{name} {low if low == high else f'{low}–{high}'} ({len(values)} runs)")
    lines.append("Median epoch-to-epoch swing of validation PR-AUC: " + "; ".join(parts) + ".")
    return lines
