"""Every Markdown table and generated text of the course: metric tables in the
source's layout, grid summaries, budget and threshold tables, the README that
:func:`starunet.grid.reproduce` writes into a grid folder, and the learning-curve
tables and README of notebook 06. Formatting only: the functions take numbers, a
:class:`~starunet.results.GridResults` or a :class:`~starunet.results.CurveResults`
and return text; nothing here trains, evaluates or writes files.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from starunet.config import display_path
from starunet.metrics import MAX_CURVE_POINTS, METRIC_NAMES
from starunet.presets import PRESETS
from starunet.provenance import (data_note, date_note, format_duration, parallel_note, partial_note, preset_changes,
                                 reuse_note, rerun_note, grid_title, training_conditions)
from starunet.results import CurveResults, GridResults
from starunet.runs import TrainingResult
from starunet.source import format_points, improvement_points
from starunet.stats import (ACTIVATION_LABELS, FUSIONS_COMPARED, HEADLINE_METRICS, METRIC_LABELS,
                            OLDER_EVALUATION, PairedDifference, budget_differences, config_order, pooled_per_seed,
                            parse_run_key, run_key, summarize_over_seeds)
from starunet.verdicts import (curve_verdict_rows, family_name, grid_verdict_rows, recorded_cell,
                               verdict_bullets, verdict_row, verdict_sections)


def format_value(mean: float, std: float | None = None, digits: int = 4) -> str:
    """``0.9512 ± 0.0031`` (or just the mean when there is no spread to show)."""
    spread = "" if std is None or math.isnan(std) else f" ± {std:.{digits}f}"
    return f"{mean:.{digits}f}{spread}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], numbers: bool = True) -> str:
    """A GitHub markdown table; the first column left-aligned, the others
    right-aligned when ``numbers`` (else left-aligned too)."""
    other = "---:" if numbers else ":---"
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join([":---"] + [other] * (len(header) - 1)) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def comparison_rows(a: Mapping[str, float], b: Mapping[str, float], name_a: str, name_b: str,
                    std_a: Mapping[str, float] | None = None, std_b: Mapping[str, float] | None = None,
                    change_label: str | None = None, metrics: Sequence[str] = METRIC_NAMES) -> list[list[str]]:
    """Three table rows: run A, run B, and the change B − A per metric in percentage
    points, as the source's "提升" row computes it (:func:`starunet.source.improvement_points`)."""
    def cells(values, std):
        return [format_value(values[m], None if std is None else std[m]) for m in metrics]

    points = improvement_points({m: a[m] for m in metrics}, b)
    return [[name_a, *cells(a, std_a)], [name_b, *cells(b, std_b)],
            [change_label or f"{name_b} − {name_a} (points)", *(format_points(points[m]) for m in metrics)]]


def comparison_table(a: Mapping[str, float], b: Mapping[str, float], name_a: str = "A", name_b: str = "B",
                     std_a: Mapping[str, float] | None = None, std_b: Mapping[str, float] | None = None,
                     metrics: Sequence[str] = METRIC_NAMES) -> str:
    """Markdown table comparing two runs (or two means over seeds) metric by metric,
    with a change row B − A in percentage points, ▲ (B higher) / ▼ (B lower)."""
    header = ["", *(METRIC_LABELS.get(m, m) for m in metrics)]
    return markdown_table(header, comparison_rows(a, b, name_a, name_b, std_a, std_b, metrics=metrics))


def source_format_table(runs: Sequence[Mapping], activation: str, source: Mapping | None = None,
                        human: Mapping[str, float] | None = None, metrics: Sequence[str] = METRIC_NAMES) -> str:
    """The source's table for one activation setting: sum vs star (mean ± std over seeds
    of ``runs``, the rows of ``metrics.csv``) and the "提升" row, star − sum in percentage
    points as the source computes it, but **paired by seed**: the mean over the seeds both
    fusions have of the per-seed difference (a 3-seed mean against a 2-seed mean would mix
    the seeds' luck into it); then, when given, the source's published rows and the second
    human observer. ``source`` has the layout of :data:`starunet.source.SOURCE_RESULTS`
    (or None); ``human`` is a metric dict.
    """
    summary = summarize_over_seeds(runs)
    pair = [summary.get((f, activation)) for f in FUSIONS_COMPARED]
    if any(p is None for p in pair):
        raise ValueError(f"need both fusions {FUSIONS_COMPARED} with activation {activation!r}; "
                         f"have {sorted(summary)}")
    sum_, star = pair
    a, b = ("sum", activation), ("star", activation)
    paired = {m: pooled_per_seed(runs, m, a, b) for m in metrics}
    n = len(paired[metrics[0]])
    rows = comparison_rows(sum_["mean"], star["mean"], f"sum (+), ours, {sum_['n']} seed(s)",
                           f"star (*), ours, {star['n']} seed(s)", sum_["std"], star["std"], metrics=metrics)[:2]
    rows.append([f"提升 star − sum, ours (points; paired by seed, {n} seed(s))",
                 *(format_points(100 * float(paired[m].mean())) for m in metrics)])
    published = (source or {}).get(activation)
    if published:
        rows += comparison_rows(published["sum"], published["star"], "sum (+), source (published)",
                                "star (*), source (published)", change_label="提升 star − sum, source (points)",
                                metrics=metrics)
    if human:
        rows.append(["second observer (vk vs ah)", *(format_value(human[m]) for m in metrics)])
    header = [ACTIVATION_LABELS.get(activation, activation), *(METRIC_LABELS.get(m, m) for m in metrics)]
    return markdown_table(header, rows)


def summary_table(summary: Mapping[tuple[str, str], Mapping], metrics: Sequence[str] = METRIC_NAMES) -> str:
    """Markdown: one row per configuration, mean ± std over seeds of every metric."""
    header = ["fusion", "activation", "seeds", *(METRIC_LABELS.get(m, m) for m in metrics)]
    rows = [[fusion, activation, str(s["n"]), *(format_value(s["mean"][m], s["std"][m]) for m in metrics)]
            for (fusion, activation), s in summary.items()]
    return markdown_table(header, rows)


def results_markdown(results: GridResults, heading: str = "## Results: sum vs star skip fusion") -> str:
    """A short markdown report of a grid: where it comes from, mean ± std per
    configuration, and the verdicts of its ``verdicts.csv`` rows (:mod:`starunet.verdicts`)."""
    lines = [heading, "", f"From {results.describe()}.", "",
             "Pooled over the FOV pixels of the test images at threshold 0.5; mean ± std over seeds.", "",
             summary_table(results.summary()), ""]
    rows = grid_verdict_rows(results)
    if rows:
        lines += ["### Verdicts (`verdicts.csv`)", "", *verdict_sections(rows)]
    return "\n".join(lines) + "\n"


def inference_methods_markdown(rows: Sequence[Mapping]) -> str:
    """:func:`compare_inference_methods` rows, one table row per configuration and method (means
    over its runs), then what tiling costs and changes (tiles − pad, mean and range over runs)."""
    if not rows:
        return "No inference-method measurement in these results."
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for r in rows:
        groups.setdefault((str(parse_run_key(r["run"])[0]), r["method"]), []).append(r)
    table = markdown_table(
        ["configuration", "method", "runs", "seconds / image", *(METRIC_LABELS[m] for m in METRIC_NAMES)],
        [[config, method, str(len(g)), f"{np.mean([float(r['seconds_per_image']) for r in g]):.2f}",
          *(format_value(float(np.mean([float(r[m]) for r in g]))) for m in METRIC_NAMES)]
         for (config, method), g in groups.items()])
    pad = {r["run"]: r for r in rows if r["method"] == "pad"}
    pairs = [(pad[r["run"]], r) for r in rows if r["method"] == "tiles" and r["run"] in pad]
    if not pairs:
        return table
    ratio = np.mean([float(t["seconds_per_image"]) / max(float(p["seconds_per_image"]), 1e-9) for p, t in pairs])
    changes = {m: [float(t[m]) - float(p[m]) for p, t in pairs] for m in HEADLINE_METRICS}
    deltas = ", ".join(f"{METRIC_LABELS[m]} {np.mean(d):+.4f}" + (f" ({min(d):+.4f} to {max(d):+.4f})" if len(d) > 1 else "")
                       for m, d in changes.items())
    where = f"run `{pairs[0][0]['run']}`" if len(pairs) == 1 else f"{len(pairs)} runs (mean, and range over the runs)"
    return (table + f"\n\nMeasured on {where}: overlapping tiles took {ratio:.1f}x the time of the padded whole "
            f"image and changed {deltas} (tiles - pad).")


def compare_two_runs(results: GridResults, key_a: str, key_b: str) -> str:
    """Markdown: the pooled test metrics of two runs of a grid, B's relative change
    vs A (▲/▼), and on how many test images B beats A per metric."""
    a, b = results.run(key_a), results.run(key_b)
    table = comparison_table(a, b, key_a, key_b)
    per_image = {}
    for row in results.per_image:
        per_image.setdefault(run_key(row["fusion"], row["activation"], row["seed"]), {})[row["image_id"]] = row
    ids = sorted(set(per_image.get(key_a, {})) & set(per_image.get(key_b, {})))
    if not ids:
        return table + "\n"
    wins = {m: sum(per_image[key_b][i][m] > per_image[key_a][i][m] for i in ids) for m in METRIC_NAMES}
    counts = ", ".join(f"{METRIC_LABELS[m]} {wins[m]}" for m in METRIC_NAMES)
    return table + f"\n\nTest images (of {len(ids)}) on which `{key_b}` scores higher than `{key_a}`: {counts}.\n"


def reference_comparison_markdown(own: GridResults, reference: GridResults, digits: int = 4) -> str:
    """The reader's runs beside the same runs of the reference grid: per run and metric
    the reference value, the reader's, and the difference; then one computed sentence
    ("identical to 4 decimals on this machine" when every pooled metric agrees)."""
    common = [k for k in own.keys if k in reference.keys]
    if not common:
        return (f"Your runs ({own.describe()}) share no configuration and seed with the reference "
                f"grid ({reference.describe()}): nothing to compare.")
    rows, largest = [], 0.0
    for key in common:
        mine, ref = own.run(key), reference.run(key)
        for m in METRIC_NAMES:
            diff = float(mine[m]) - float(ref[m])
            largest = max(largest, abs(diff))
            rows.append([key, METRIC_LABELS[m], f"{float(ref[m]):.{digits}f}", f"{float(mine[m]):.{digits}f}",
                         f"{diff:+.{digits}f}"])
    table = markdown_table(["run", "metric", "reference", "yours", "yours − reference"], rows)
    machine = own.provenance.get("hardware", {}).get("summary", "this machine")
    if largest < 0.5 * 10**-digits:
        verdict = (f"All {len(common) * len(METRIC_NAMES)} pooled test metrics of your {len(common)} run(s) are "
                   f"**identical to {digits} decimals** to the reference's (yours on {machine}).")
    else:
        verdict = (f"Your {len(common)} run(s) differ from the reference by up to {largest:.{digits}f} "
                   f"(yours on {machine}; the reference on "
                   f"{reference.provenance.get('hardware', {}).get('summary', '?')}): another CPU, thread "
                   "count or torch build sums in another order, and the runs drift apart from there.")
    return f"{table}\n\n{verdict}\n"


def _training_length(results: GridResults, fusion: str, activation: str) -> str:
    """'E (B), P' of a configuration's runs: epochs trained, best epoch and training
    patches seen, means over seeds."""
    runs = [r for r in results.runs if r["fusion"] == fusion and r["activation"] == activation]
    per_epoch = int(results.provenance.get("preset_config", {}).get("samples_per_epoch", 0))
    epochs = float(np.mean([r["epochs"] for r in runs]))
    best = float(np.mean([r["best_epoch"] for r in runs]))
    return f"{epochs:.1f} ({best:.1f}), {epochs * per_epoch:,.0f}"


def training_budget_table(grids: Mapping[str, GridResults], diffs: Mapping[str, Sequence[PairedDifference]]) -> str:
    """Markdown: per grid, activation and metric, sum and star (mean ± std over seeds),
    the paired difference star − sum with its CI and verdict, the Bonferroni family of
    the row, and how long each fusion trained (epochs, best epoch, patches seen; means
    over seeds). Rows of activation ``"none vs relu"`` compare star/none (column star)
    with sum/relu (column sum). Each difference is printed from its ``verdicts.csv`` row
    (:func:`~starunet.verdicts.recorded_cell`), so it reads as every other cell does."""
    header = ["preset", "activation", "metric", "sum", "star", "star − sum, pooled, paired by seed [interval]",
              "verdict", "family", "sum: epochs (best), patches", "star: epochs (best), patches"]
    rows, families = [], {}
    for name, chosen in diffs.items():
        summary = grids[name].summary()
        for d in chosen:
            sums, stars = summary[d.config_a], summary[d.config_b]
            family = family_name(d)
            families.setdefault(name, {})[family] = f"{d.family} interval{'s' * (d.family != 1)} at {100 * d.level:.2f} % each"
            rows.append([name, d.activation, METRIC_LABELS.get(d.metric, d.metric),
                         format_value(sums["mean"][d.metric], sums["std"][d.metric]),
                         format_value(stars["mean"][d.metric], stars["std"][d.metric]),
                         recorded_cell(d, with_verdict=False), d.verdict, f"{family} ({d.family})",
                         _training_length(grids[name], *d.config_a), _training_length(grids[name], *d.config_b)])
    text = "; ".join(f"`{name}` {family}: {size}" for name, named in families.items() for family, size in named.items())
    return markdown_table(header, rows, numbers=False) + ("\n\nBonferroni families, each holding at 95 % together "
                                                          f"(headline: ROC-AUC, PR-AUC and F1, as in `verdicts.csv`): {text}.")


def threshold_table(grids: Mapping[str, GridResults]) -> str:
    """Markdown: per grid and configuration, the validation images' F1-optimal
    threshold and the test F1 at the fixed 0.5 next to the test F1, Se and Pre at
    that threshold (mean ± std over seeds). Grids evaluated before the tuned
    threshold existed are an error naming the command that adds it."""
    header = ["preset", "fusion", "activation", "val. threshold", "F1 at 0.5", "F1 (val. thr.)",
              "Se (val. thr.)", "Pre (val. thr.)"]
    rows = []
    for name, results in grids.items():
        if not results.has_tuned_threshold:
            raise ValueError(f"{display_path(results.directory)} has no validation-tuned threshold: {OLDER_EVALUATION}")
        for (fusion, activation), s in results.summary().items():
            cells = [format_value(s["mean"][m], s["std"][m], digits=3 if m == "val_threshold" else 4)
                     for m in ("val_threshold", "f1", "f1_tuned", "se_tuned", "pre_tuned")]
            rows.append([name, fusion, activation, *cells])
    return markdown_table(header, rows, numbers=False)


def threshold_report(grids: Mapping[str, GridResults], level: float = 0.95,
                     headline: Mapping[str, Sequence[PairedDifference]] | None = None) -> str:
    """Notebook 05's "is the F1 gap only calibration?": :func:`threshold_table`, then F1 at
    0.5 (the rows of ``headline``, the budget table's differences, in verdicts.csv's family;
    recomputed alike by default) beside F1 at the validation threshold (a family of its
    own per grid). A grid scored before the tuned threshold existed gets a line instead."""
    tuned = {name: g for name, g in grids.items() if g.has_tuned_threshold}
    lines = [f"* `{name}` ({display_path(g.directory)}) has no validation-tuned threshold: {OLDER_EVALUATION}."
             for name, g in grids.items() if name not in tuned]
    if tuned:
        headline = budget_differences(tuned, level=level) if headline is None else headline
        own = budget_differences(tuned, metrics=("f1_tuned",), level=level)
        diffs = {name: [d for at_half, at_tuned in zip([d for d in headline[name] if d.metric == "f1"], own[name])
                        for d in (at_half, at_tuned)] for name in own}
        lines += ["", threshold_table(tuned), "", training_budget_table(tuned, diffs)]
    return "\n".join(lines).strip() + "\n"


def budget_verdicts_markdown(diffs: Mapping[str, Sequence[PairedDifference]]) -> str:
    """One bullet per grid and comparison (:func:`verdict_bullets`), each grid its own
    Bonferroni family."""
    lines = []
    for name, chosen in diffs.items():
        size = max((d.family for d in chosen), default=0)
        lines += [f"- Preset `{name}` (family of {size}): {line[2:]}"
                  for line in verdict_bullets([verdict_row(d) for d in chosen])]
    return "\n".join(lines)


def provenance_readme(results: GridResults) -> str:
    """The README of a grid output folder, generated from its provenance and results
    (written by :func:`reproduce`; never edited by hand)."""
    p = results.provenance
    config = ", ".join(f"{k}={v}" for k, v in p["preset_config"].items() if k != "preset")
    table = markdown_table(["what", "how"], [
        ["command", f"`{p['command']}`{rerun_note(p)}"],
        ["preset", f"`{p['preset']}`{preset_changes(p)}; all fields: {config}"],
        ["seeds", ", ".join(str(s) for s in p["seeds"])],
        ["grid", f"fusion {' / '.join(p['fusions'])} x activation {' / '.join(p['activations'])}: "
                 f"{p['runs']} runs ({reuse_note(p)}){partial_note(p)}"],
        ["data", data_note(p)],
        ["training", training_conditions(p)],
        ["inference", f"`{p['method']}` (whole images; see starunet.evaluate)"],
        ["hardware", p["hardware"]["summary"]],
        ["software", f"torch {p['torch']}, numpy {p['numpy']}, Python {p['python']}, {p['platform']}"],
        ["code", f"git commit {p['git_commit']}"],
        ["date", date_note(p)],
        ["duration", f"{format_duration(p['wall_seconds'])} for "
                     f"{'these invocations' if p.get('invocations') else 'this invocation'}; training "
                     f"{format_duration(p['train_seconds_total'])} and evaluation "
                     f"{format_duration(p['eval_seconds_total'])} summed over all runs{parallel_note(p)}"],
        *([["invocations", "; ".join(f"`{i['command']}`: {i['outcome']}" for i in p["invocations"])]]
          if p.get("invocations") else []),
        *([["assembled", p["assembled"]]] if p.get("assembled") else []),
    ], numbers=False)
    smoke = ("\n**Smoke preset or smoke mode** (`STARUNET_SMOKE=1`): a pipeline check, not a result.\n"
             if p["preset"] == "smoke" or p.get("smoke_mode") else "")
    files = "\n".join([
        "- `metrics.csv`: one row per run, the seven metrics pooled over the test images' FOV pixels "
        "(threshold 0.5); `val_threshold`, the threshold that maximises F1 on the run's validation images, "
        "and F1, Se and Pre of the test images at it (`*_tuned`); plus training facts",
        "- `per_image.csv`: the same metrics (and `f1_tuned`) per test image (the secondary, per-image statistic)",
        f"- `curves.json`: ROC and PR curve points per run (at most {MAX_CURVE_POINTS} each)",
        "- `inference_methods.csv`: whole-image (`pad`) vs overlapping-tile (`tiles`) inference, timed and "
        f"scored on {len({r['run'] for r in results.inference_methods})} of the {len(results.runs)} runs",
        f"- `predictions/`: probability maps (8-bit PNG) of the first seed's runs on {', '.join(p['panel_ids'])}",
        "- `evaluations/`: per-run evaluation cache (lets a re-run skip finished work)",
        "- `verdicts.csv`: every comparison's difference, interval, margin and verdict (pooled, per-image and, where "
        "every run was scored both ways, pooled under tiled inference; `python -m starunet verdicts` recomputes it)"
        + ("; here only its header: one configuration, nothing to compare"
           if len(p["fusions"]) * len(p["activations"]) == 1 else ""),
        "- `provenance.json`: the facts above, machine-readable",
    ])
    return (f"# Grid results: {grid_title(p)}\n\n"
            f"Generated by `python -m starunet reproduce` at the end of its run; do not edit by hand, "
            f"re-run the command instead (finished runs are reused).\n{smoke}\n"
            f"## How these numbers were made\n\n{table}\n\n"
            f"{results_markdown(results, heading='## Results')}\n## Files\n\n{files}\n")


def presets_markdown() -> str:
    """A Markdown table of how the presets differ (everything else is the source recipe)."""
    header = ["preset", "patches/epoch", "steps/epoch", "max epochs", "patience", "max steps", "lr", "validation"]
    rows = []
    for name, c in PRESETS.items():
        val = "all val images" if c.val_images is None else f"{c.val_images} image(s)"
        val += ", full size" if c.val_crop is None else f", {c.val_crop}x{c.val_crop} centre crop"
        rows.append([f"`{name}`", f"{c.samples_per_epoch:,}", c.steps_per_epoch(), c.max_epochs, c.patience,
                     f"{c.total_steps():,}", f"{c.lr:g} {c.schedule}" + (f", {c.warmup:.0%} warm-up" * bool(c.warmup)), val])
    return markdown_table(header, rows)


def run_results_markdown(results: Mapping[str, TrainingResult]) -> str:
    """A Markdown table of finished training runs (``{label: TrainingResult}``): length, best
    validation epoch and metrics, time."""
    header = ["run", "epochs", "stopped by", "best epoch", "val ROC-AUC", "val PR-AUC", "val F1", "train time", ""]
    rows = [[label, r.epochs, r.stop_reason.replace("_", " "), r.best_epoch, f"{r.best_val['roc_auc']:.4f}",
             f"{r.best_val['pr_auc']:.4f}", f"{r.best_val['f1']:.4f}", f"{r.train_seconds / 60:.1f} min",
             "reused" if r.reused else "trained now"] for label, r in results.items()]
    return markdown_table(header, rows)


# ---------------------------------------------------------------- learning curves (notebook 06)

def format_patches(n: int) -> str:
    """1024 -> "1k", 65536 -> "64k" (powers of two read better in binary k)."""
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def verdict_lines(diffs: Sequence[tuple[int, PairedDifference]]) -> list[str]:
    """One computed sentence per compared pair (``(budget, difference)`` pairs, see
    :func:`starunet.curves.budget_differences`): :func:`verdict_bullets` of their rows."""
    return [line[2:] for line in verdict_bullets([verdict_row(d, budget) for budget, d in diffs])]


def source_comparison_table(results: CurveResults, source: Mapping[str, Mapping[str, Mapping[str, float]]],
                            metrics: Sequence[str] = METRIC_NAMES) -> str:
    """The source's 提升 rows (star − sum, percentage points) beside ours at the largest
    budget both of our runs reached (means over the seeds both have): the absolute
    numbers are not comparable (another set of pixels, notebook 05), the differences may be."""
    rows = []
    for activation, published in source.items():
        pair = [("sum", activation), ("star", activation)]
        try:
            budget = results.largest_common_budget(pair)
        except ValueError:
            continue
        ours = {}
        for fusion, act in pair:
            chosen = [r for r in results.points if (r["fusion"], r["activation"]) == (fusion, act)
                      and r["patches"] == budget]
            ours[fusion] = {m: float(np.mean([r[m] for r in chosen])) for m in metrics}
            seeds = len(chosen)
        src = improvement_points(published["sum"], published["star"])
        mine = improvement_points(ours["sum"], ours["star"])
        rows.append([f"提升 star − sum, {activation}, source", *(format_points(src[m]) for m in metrics)])
        rows.append([f"提升 star − sum, {activation}, ours at {format_patches(budget)} ({seeds} seed(s))",
                     *(format_points(mine[m]) for m in metrics)])
    return markdown_table(["(percentage points)", *(METRIC_LABELS[m] for m in metrics)], rows)


def curve_table(results: CurveResults, metric: str = "pr_auc") -> str:
    """Markdown: one row per run, one column per budget, the test ``metric``."""
    budgets = sorted({r["patches"] for r in results.points})
    values = {(run_key(r["fusion"], r["activation"], r["seed"]), r["patches"]): r[metric]
              for r in results.points}
    rows = [[key, *(f"{values[(key, b)]:.4f}" if (key, b) in values else "" for b in budgets)]
            for key in results.keys()]
    return markdown_table([f"test {METRIC_LABELS.get(metric, metric)}", *map(format_patches, budgets)], rows)


def early_stopping_table(results: CurveResults, full: GridResults, metric: str = "pr_auc") -> str:
    """Did early stopping stop where the curves flatten? Markdown: per configuration of
    the grid ``full`` (preset ``full``), where early stopping stopped and which weights it
    kept (patches, means over seeds), their test ``metric``, and the curves' test
    ``metric`` at the budgets around them and at their largest."""
    label = METRIC_LABELS.get(metric, metric)
    epoch = int(full.provenance["preset_config"]["samples_per_epoch"])
    rows = []
    for fusion, activation in sorted({(r["fusion"], r["activation"]) for r in full.runs},
                                     key=lambda config: config_order(*config)):
        runs = [r for r in full.runs if (r["fusion"], r["activation"]) == (fusion, activation)]
        curve = {}
        for r in results.points:
            if (r["fusion"], r["activation"]) == (fusion, activation):
                curve.setdefault(r["patches"], []).append(r[metric])
        if not curve:
            continue
        best = float(np.mean([int(r["best_epoch"]) * epoch for r in runs]))
        below = max((b for b in curve if b <= best), default=min(curve))
        above = min((b for b in curve if b >= best), default=max(curve))
        values = [float(r[metric]) for r in runs]
        spread = f" ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else ""
        at = dict.fromkeys([below, above, max(curve)])
        rows.append([f"{fusion}/{activation}", str(len(runs)),
                     f"{np.mean([int(r['epochs']) * epoch for r in runs]):,.0f}", f"{best:,.0f}",
                     f"{np.mean(values):.4f}{spread}",
                     ", ".join(f"{np.mean(curve[b]):.4f} at {format_patches(b)}" for b in at)])
    header = ["configuration", "full: seeds", "full: stopped after (patches)", "full: kept weights of (patches)",
              f"full: test {label}", f"curves: test {label} (budgets around the kept weights, and the largest)"]
    return markdown_table(header, rows)


def runs_table(results: CurveResults) -> str:
    """Markdown: per run, how far it trained, how long, where its curve flattened and
    how much its validation PR-AUC swung between epochs."""
    rows = [[key, f"{r['patches']:,}", "yes" if r["finished"] else "no", f"{r['train_seconds'] / 60:.0f} min",
             r["plateau"], f"{r['val_pr_auc_swing']:.4f}", f"{r['val_pr_auc_max_drop']:.4f}"]
            for key, r in zip(results.keys(), results.runs)]
    header = ["run", "patches trained", "finished", "training time", "plateau (test PR-AUC)",
              "val PR-AUC swing (median)", "largest drop"]
    return markdown_table(header, rows)


def curves_readme(results: CurveResults) -> str:
    """The generated README of a curves folder: how it was made, then what it holds, and
    the verdicts of its ``verdicts.csv`` rows (:func:`starunet.verdicts.curve_verdict_rows`)."""
    rows = curve_verdict_rows(results)
    p = results.provenance
    config = p["preset_config"]
    lines = [
        "# Learning curves: test quality against training patches seen", "",
        "Generated by `starunet.curves.evaluate_curves` -- do not edit by hand.", "",
        f"- **Recipe**: preset `{p['preset']}`: Adam lr {config['lr']}, batch {config['batch_size']}, "
        f"{config['patch_size']}x{config['patch_size']} patches, {config['samples_per_epoch']} patches per "
        f"epoch, validated after each epoch on the split's validation images, up to "
        f"{config['samples_per_epoch'] * config['max_epochs']:,} patches, no early stopping: the best "
        "validation (PR-AUC) weights so far are kept and snapshotted at every doubling of patches seen.",
        f"- **Data**: {data_note(p)}.",
        f"- **Points**: {', '.join(f'{n:,}' for n in p['points'])} patches; every snapshot scored on the "
        f"{len(p['test_ids'])} test images (whole images, pooled inside the FOV, threshold 0.5, and "
        "again at the validation images' F1-optimal threshold).",
        "- **Commands**: `python -m starunet curves train --shard 0/2 --threads 1` and `--shard 1/2` "
        "side by side (two workers of one torch thread each), then "
        f"`{p['command']}`.",
        f"- **Trained on**: {'; '.join(p['trained_on'])}. Training times were measured while the two workers "
        "shared the machine with other work: read them as upper bounds, not benchmarks.",
        f"- **Evaluated on**: {p['evaluated_on']}, torch {p['torch']}, Python {p['python']}, commit "
        f"{p['git_commit']}, {p['finished']}.",
        f"- **Plateau rule**: {p['plateau_rule']} for every later doubling.", "",
        "## Runs", "", runs_table(results), "",
        "## Test PR-AUC per budget", "", curve_table(results, "pr_auc"), "",
        "## Test ROC-AUC per budget", "", curve_table(results, "roc_auc"), "",
        "## Test F1 (threshold 0.5) per budget", "", curve_table(results, "f1"), "",
    ]
    if rows:
        lines += ["## Paired differences at the largest budget reached (`verdicts.csv`)", "", *verdict_sections(rows), ""]
    return "\n".join(lines)
