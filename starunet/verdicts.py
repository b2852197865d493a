"""``verdicts.csv``: every verdict a results folder supports, machine-readable.

A grid folder (``results/reference``, ``long``, ``full``) and a learning-curves folder
(``results/curves``) each get one, written by the code that writes the folder
(:func:`starunet.grid.write_grid_provenance`, :func:`starunet.curves.evaluate_curves`)
and regenerated for committed folders by ``python -m starunet verdicts FOLDER...``.
Each row is one :class:`~starunet.stats.PairedDifference`: the primary ``pooled``
statistic first, then the secondary ``per_image`` one, then, where every run was also
scored with tiled inference, ``pooled_tiles`` (the primary statistic under the other
inference method: the verdicts' sensitivity to it), each its own Bonferroni family
over the headline metrics of every comparison in the folder. The READMEs' verdict
tables and sentences are rendered from these rows (:mod:`starunet.report`), and
``tests/test_verdicts.py`` checks that the committed files match the committed metrics.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

from starunet.config import PROJECT_ROOT, display_path
from starunet.io import read_csv, write_csv_atomic, write_text_atomic
from starunet.provenance import training_conditions
from starunet.results import (CURVES_DIR, FAST_DIR, FULL_REFERENCE_DIR, LONG_REFERENCE_DIR, REFERENCE_DIR, CurveResults,
                              GridResults, load_curves, load_results)
from starunet.source import SOURCE_RESULTS
from starunet.stats import (HEADLINE_METRICS, MAIN_COMPARISONS, MARGINS, METRIC_LABELS, MOST_SEEDS_PLANNED,
                            PairedDifference, differences, grid_pairs, parse_run_key, per_image_differences,
                            per_image_matrix, pooled_differences, pooled_per_seed, seeds_to_decide)

VERDICTS_FILE = "verdicts.csv"
TILES_STATISTIC = "pooled_tiles"  # the pooled statistic with the other inference method
COLUMNS = ["comparison", "config_a", "config_b", "metric", "statistic", "n_seeds", "n_images", "estimate", "low",
           "high", "margin", "verdict", "adjusted_level"]

# The comparisons of the learning curves (notebook 06), each at the largest budget both
# configurations reached: (a, b), each (fusion, activation).
CURVE_COMPARISONS: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
    (("sum", "none"), ("star", "none")),
    (("sum", "none"), ("star_bn", "none")),
    (("sum", "none"), ("sum_star_bn", "none")),
    (("sum", "relu"), ("star", "relu")),
    (("sum", "relu"), ("star", "none")),
    (("sum", "relu"), ("sum_star_bn", "none")),
)


def tiles_runs(results: GridResults) -> list[dict]:
    """The grid's runs scored with the other inference method (``tiles``), as rows like
    ``metrics.csv``'s; empty unless every run of the grid has a ``tiles`` row."""
    rows = {}
    for r in results.inference_methods:
        if r["method"] == "tiles":
            (fusion, activation), seed = parse_run_key(r["run"])
            rows[(fusion, activation, seed)] = {
                "fusion": fusion, "activation": activation, "seed": str(seed),
                "n_test_images": len(results.provenance.get("test_ids", [])), **r}
    keys = [(r["fusion"], r["activation"], int(r["seed"])) for r in results.runs]
    return [rows[k] for k in keys] if keys and all(k in rows for k in keys) else []


def grid_differences(results: GridResults, metrics: Sequence[str] = HEADLINE_METRICS) -> list[PairedDifference]:
    """Every comparison the grid answers (:func:`~starunet.stats.grid_pairs`): the pooled
    statistic, then the per-image one, then (where every run was also scored with tiled
    inference) the pooled one under ``tiles``: the verdicts' sensitivity to the method."""
    pairs = grid_pairs(results.summary())
    if not pairs:
        return []
    tiles = tiles_runs(results)
    sensitivity = [replace(d, statistic=TILES_STATISTIC) for d in pooled_differences(tiles, pairs, metrics)] if tiles else []
    return (pooled_differences(results.runs, pairs, metrics) + per_image_differences(results.per_image, pairs, metrics)
            + sensitivity)


def curve_differences(results: CurveResults, statistic: str = "pooled", comparisons=CURVE_COMPARISONS,
                      metrics: Sequence[str] = HEADLINE_METRICS, level: float = 0.95) -> list[tuple[int, PairedDifference]]:
    """Each comparison at the largest budget both configurations reached (with a shared
    seed), one Bonferroni family; comparisons with a configuration not scored yet are
    left out. Returns ``(budget, difference)`` pairs."""
    items, budgets = [], []
    for a, b in comparisons:
        try:
            budget = results.largest_common_budget([a, b])
        except ValueError:
            continue
        rows = [r for r in (results.points if statistic == "pooled" else results.per_image)
                if r["patches"] == budget]
        for m in metrics:
            try:
                data = pooled_per_seed(rows, m, a, b) if statistic == "pooled" else per_image_matrix(rows, m, a, b)
            except ValueError:
                continue  # one of the two has no run at this budget with a shared seed
            items.append((a, b, m, data))
            budgets.append(budget)
    diffs = differences(items, statistic, level, n_images=len(results.provenance.get("test_ids", [])))
    return list(zip(budgets, diffs))


def verdict_row(d: PairedDifference, budget: int | None = None) -> dict:
    """One row of ``verdicts.csv`` (numbers as text, 6 decimals; NaN bounds left empty)."""
    def number(x: float) -> str:
        return "" if x != x else f"{x:.6f}"

    at = f" at {budget:,} patches" if budget is not None else ""
    return {"comparison": d.comparison + at, "config_a": str(d.config_a), "config_b": str(d.config_b),
            "metric": d.metric, "statistic": d.statistic, "n_seeds": str(d.n_seeds), "n_images": str(d.n_images),
            "estimate": number(d.mean), "low": number(d.low), "high": number(d.high), "margin": number(d.margin),
            "verdict": d.verdict, "adjusted_level": f"{d.level:.6f}"}


def grid_verdict_rows(results: GridResults) -> list[dict]:
    return [verdict_row(d) for d in grid_differences(results)]


def curve_verdict_rows(results: CurveResults) -> list[dict]:
    return [verdict_row(d, budget) for statistic in ("pooled", "per_image")
            for budget, d in curve_differences(results, statistic)]


def folder_verdict_rows(folder: str | Path) -> list[dict]:
    """The rows ``verdicts.csv`` of a grid or curves folder should hold, computed from
    its metrics."""
    folder = Path(folder)
    if (folder / "points.csv").is_file():
        return curve_verdict_rows(load_curves(folder))
    return grid_verdict_rows(load_results(folder))


def write_verdicts(folder: str | Path, rows: Sequence[dict] | None = None) -> Path:
    """Write ``verdicts.csv`` into a grid or curves folder (``rows`` default: computed)."""
    path = Path(folder) / VERDICTS_FILE
    write_csv_atomic(path, list(folder_verdict_rows(folder) if rows is None else rows), COLUMNS)
    return path


def read_verdicts(folder: str | Path) -> list[dict]:
    """The rows of a folder's ``verdicts.csv``, as text."""
    return read_csv(Path(folder) / VERDICTS_FILE)


def _family(rows: Sequence[Mapping]) -> tuple[int, float]:
    """The Bonferroni family size and each interval's level, read back from the rows."""
    levels = [float(r["adjusted_level"]) for r in rows if int(r["n_seeds"]) > 1]
    return (round(0.05 / (1 - levels[0])), levels[0]) if levels else (0, 0.95)


def verdict_rule(rows: Sequence[Mapping]) -> str:
    """How the verdicts of ``rows`` were decided, with the margins and the family sizes."""
    margins = ", ".join(f"{METRIC_LABELS[m]} ±{MARGINS[m].value:g}" for m in HEADLINE_METRICS)
    families = []
    for statistic, name in (("pooled", "pooled"), ("per_image", "per-image"), (TILES_STATISTIC, "pooled (tiles)")):
        size, level = _family([r for r in rows if r["statistic"] == statistic])
        if size:
            families.append(f"{size} {name} intervals at {100 * level:.2f} % each")
    return ("Each verdict: *equivalent* when the interval lies inside the declared margin "
            f"({margins}; `starunet.stats.MARGINS`), else *better* or *worse* when it excludes 0, else "
            "*inconclusive*; a comparison with one seed has no run-to-run interval and no verdict (one seed, "
            "preliminary). Bonferroni over each family shown together, so that all its intervals hold at "
            f"95 % together: {'; '.join(families) or 'no interval'}.")


def seeds_needed_rows(results: GridResults, comparisons: Sequence[str] | None = None) -> list[dict]:
    """Per pooled comparison of the grid (those named in ``comparisons``, default all) and
    headline metric: the verdict now and :func:`~starunet.stats.seeds_to_decide` at the level
    the verdict used (the grid's Bonferroni family), from the per-seed differences."""
    rows = []
    for d in pooled_differences(results.runs, grid_pairs(results.summary())):
        if d.n_seeds < 2 or (comparisons is not None and d.comparison not in comparisons):
            continue
        per_seed = pooled_per_seed(results.runs, d.metric, tuple(d.config_a), tuple(d.config_b))
        detect, equivalent = seeds_to_decide(per_seed, d.margin, d.level)
        rows.append({"comparison": d.comparison, "metric": d.metric, "n_seeds": d.n_seeds, "mean": d.mean,
                     "sd": float(per_seed.std(ddof=1)), "margin": d.margin, "verdict": d.verdict,
                     "level": d.level, "detect": detect, "equivalent": equivalent})
    return rows


def seeds_cell(n: int | None, possible: bool) -> str:
    """A :func:`~starunet.stats.seeds_to_decide` count as text: the number, "> 1,000" past the
    planning limit, "never" where no number of seeds can decide (``possible`` False: a mean of
    0 is never detected, one at or beyond the margin never equivalent)."""
    return f"{n:,}" if n is not None else (f"> {MOST_SEEDS_PLANNED:,}" if possible else "never")


def seeds_needed_markdown(rows: Sequence[Mapping]) -> str:
    """:func:`seeds_needed_rows` as a table."""
    lines = ["| comparison | metric | seeds now | mean | sd per seed | verdict now | seeds to exclude 0 | "
             "seeds to fit inside ±margin |", "| :--- | :--- | ---: | ---: | ---: | :--- | ---: | ---: |"]
    lines += [f"| {r['comparison']} | {METRIC_LABELS[r['metric']]} | {r['n_seeds']} | {r['mean']:+.4f} | "
              f"{r['sd']:.4f} | {r['verdict']} | {seeds_cell(r['detect'], r['mean'] != 0)} | "
              f"{seeds_cell(r['equivalent'], abs(r['mean']) < r['margin'])} (±{r['margin']:g}) |" for r in rows]
    return "\n".join(lines)


def verdict_bullets(rows: Sequence[Mapping]) -> list[str]:
    """One bullet per comparison of ``rows`` (``verdicts.csv`` rows of one statistic): its
    headline differences with their intervals and verdicts, computed, never typed."""
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for r in rows:
        groups.setdefault((r["statistic"], r["comparison"]), []).append(r)
    lines = []
    for (statistic, comparison), group in groups.items():
        first = group[0]
        n, images = int(first["n_seeds"]), first["n_images"]
        what, interval = ((f"pooled over the FOV pixels of {images} test images", ", t-interval over seeds")
                          if statistic == "pooled" else
                          (f"pooled over the FOV pixels of {images} test images, tiled inference",
                           ", t-interval over seeds") if statistic == TILES_STATISTIC else
                          (f"mean per-image difference over {images} test images", ", interval over seeds and images"))
        if n < 2:
            values = ", ".join(f"{METRIC_LABELS.get(r['metric'], r['metric'])} {float(r['estimate']):+.4f}"
                               for r in group)
            lines.append(f"- **{comparison}** ({what}): {values}; one seed, preliminary: no interval, no verdict.")
            continue
        values = "; ".join(f"{METRIC_LABELS.get(r['metric'], r['metric'])} {float(r['estimate']):+.4f} "
                           f"[{float(r['low']):+.4f}, {float(r['high']):+.4f}] {r['verdict']}" for r in group)
        lines.append(f"- **{comparison}** ({n} seeds, {what}{interval}): {values}.")
    return lines


PER_IMAGE_LEAD = ("Secondary statistic, for the test-image noise the pooled one cannot show (the committed files keep "
                  "per-image metrics, not per-image scores, so the pooled metric cannot be recomputed on resampled "
                  "images):")
TILES_LEAD = ("Sensitivity to the inference method: the primary statistic again, with every run scored by "
              "overlapping 96x96 tiles instead of the padded whole image (`inference_methods.csv`):")


def verdict_sections(rows: Sequence[Mapping]) -> list[str]:
    """The Markdown lines of a folder's verdicts: the rule, the primary (pooled) bullets,
    then each other family present (per-image, tiles) under a sentence saying what it is."""
    lines = [verdict_rule(rows), "", *verdict_bullets([r for r in rows if r["statistic"] == "pooled"])]
    for statistic, lead in (("per_image", PER_IMAGE_LEAD), (TILES_STATISTIC, TILES_LEAD)):
        chosen = [r for r in rows if r["statistic"] == statistic]
        if chosen:
            lines += ["", lead, "", *verdict_bullets(chosen)]
    return lines


# The committed folders whose verdicts the top-level README shows, by the name it uses.
COMMITTED_FOLDERS = {"quick": REFERENCE_DIR, "long": LONG_REFERENCE_DIR, "full": FULL_REFERENCE_DIR, "curves": CURVES_DIR,
                     "fast": FAST_DIR}
FINDINGS_BEGIN = "<!-- findings: generated by starunet.verdicts.findings_markdown(); do not edit by hand -->"
FINDINGS_END = "<!-- end of findings -->"


def _cell(r: Mapping, with_verdict: bool = True) -> str:
    """One pooled verdict as a table cell."""
    if int(r["n_seeds"]) < 2:
        return f"{float(r['estimate']):+.4f} (one seed, preliminary)"
    verdict = f" {r['verdict']}" if with_verdict else ""
    return f"{float(r['estimate']):+.4f} [{float(r['low']):+.4f}, {float(r['high']):+.4f}]{verdict}"


def recorded_cell(d: PairedDifference, with_verdict: bool = True) -> str:
    """``d`` as a table cell, printed from its ``verdicts.csv`` row (6 decimals), so that
    every table shows an interval's bounds as the verdict sentences and findings do."""
    return _cell(verdict_row(d), with_verdict)


def family_name(d: PairedDifference) -> str:
    """The Bonferroni family ``d`` was adjusted in: ``headline`` (ROC-AUC, PR-AUC and F1 of
    every comparison, as in ``verdicts.csv``) or, for another metric, a family of its own."""
    return "headline" if d.metric in HEADLINE_METRICS else METRIC_LABELS.get(d.metric, d.metric)


def coverage_line(grids: Mapping[str, GridResults]) -> str:
    """What the grids share, read from their runs and provenance, not typed: per grid the
    configurations and seeds (naming each configuration that lacks one of the grid's seeds)
    and whether every grid was scored on the same test images."""
    parts, tests = [], set()
    for name, grid in grids.items():
        seeds: dict[str, set[int]] = {}
        for r in grid.runs:
            seeds.setdefault(f"{r['fusion']}/{r['activation']}", set()).add(int(r["seed"]))
        every = sorted(set().union(*seeds.values())) if seeds else []
        short = [f"{config} lacks {', '.join(map(str, sorted(set(every) - s)))}" for config, s in seeds.items()
                 if s != set(every)]
        parts.append(f"`{name}` {', '.join(seeds)} × seeds {', '.join(map(str, every))}"
                     + (f" ({'; '.join(short)})" if short else ", every configuration with every seed"))
        tests.add(tuple(grid.provenance.get("test_ids", [])))
    same = (f"the same {len(next(iter(tests)))} test images in every grid" if len(tests) == 1
            else "**different test images** in different grids")
    return f"What the grids hold: {'; '.join(parts)}; {same}."


def _provenance(folder: Path) -> dict:
    return json.loads((Path(folder) / "provenance.json").read_text(encoding="utf-8"))


def seeds_needed_line(name: str, folder: Path) -> str:
    """The findings' planning line for one grid folder: per main comparison and metric still
    inconclusive, the seeds its observed per-seed differences would need to just exclude 0
    (:func:`seeds_needed_rows`); and how many could ever fit inside the margins."""
    rows = seeds_needed_rows(load_results(folder, kind="reference"), MAIN_COMPARISONS)
    if not rows:
        return ""
    parts = []
    for comparison in dict.fromkeys(r["comparison"] for r in rows):
        mine = [r for r in rows if r["comparison"] == comparison]
        cells = [f"{METRIC_LABELS[r['metric']]} " + (seeds_cell(r["detect"], r["mean"] != 0)
                 if r["verdict"] == "inconclusive" else f"decided ({r['verdict']})") for r in mine]
        parts.append(f"{comparison} ({mine[0]['n_seeds']} seeds now): {', '.join(cells)}")
    equivalent = sum(r["equivalent"] is not None for r in rows)
    return (f"How many seeds a verdict would need (a planning estimate from `{name}`: the seeds at which the "
            "interval, at its Bonferroni level, would just exclude 0 if further seeds had the observed mean and sd "
            "of the per-seed differences; even then such a study decides only about half the time; notebook 05, "
            f"section 4): {'; '.join(parts)}. To lie inside the margins, {equivalent} of these {len(rows)} would "
            f"need at most {MOST_SEEDS_PLANNED:,} seeds; the others more or, with a mean at or beyond the margin, "
            "no number of seeds.")


def source_line(folders: Mapping[str, Path]) -> str:
    """Where the source's published star − sum differences (its 提升 rows) fall against our
    pooled intervals of the same comparisons, counted over ``folders``."""
    inside, outside = 0, []
    for name, folder in folders.items():
        for r in read_verdicts(folder):
            a, b = r["config_a"].split("/"), r["config_b"].split("/")
            published = SOURCE_RESULTS.get(a[1]) if (a[0], b[0]) == ("sum", "star") and a[1] == b[1] else None
            if r["statistic"] != "pooled" or published is None or int(r["n_seeds"]) < 2:
                continue
            theirs = published["star"][r["metric"]] - published["sum"][r["metric"]]
            if float(r["low"]) <= theirs <= float(r["high"]):
                inside += 1
            else:
                outside.append(f"{r['comparison']} at `{name}` on {METRIC_LABELS[r['metric']]} ({theirs:+.4f})")
    return (f"The source's published star − sum differences lie inside {inside} of our "
            f"{inside + len(outside)} pooled intervals of the same comparisons"
            + (f"; outside: {'; '.join(outside)}." if outside else "."))


def _under_tiles(row: Mapping | None) -> str:
    """How a decided pooled verdict reads with tiled inference, or that it was not scored so."""
    if row is None:
        return " (tiled inference not scored on every run, so its sensitivity is unknown)"
    return f" (with tiled inference: {_cell(row)})"


def findings_markdown(folders: Mapping[str, Path] | None = None) -> str:
    """The top-level README's findings: per folder and comparison, the pooled headline
    verdicts of its ``verdicts.csv``, then what they add up to, counted, never typed."""
    folders = COMMITTED_FOLDERS if folders is None else folders
    metrics = list(HEADLINE_METRICS)
    lines = ["| results | comparison (pooled, paired by seed) | seeds | "
             + " | ".join(METRIC_LABELS[m] for m in metrics) + " |",
             "| :--- | :--- | ---: | " + " | ".join(":---" for _ in metrics) + " |"]
    decided, widths = [], {m: [] for m in metrics}
    for name, folder in folders.items():
        every = read_verdicts(folder)
        rows = [r for r in every if r["statistic"] == "pooled" and r["metric"] in metrics]
        tiles = {(r["comparison"], r["metric"]): r for r in every if r["statistic"] == TILES_STATISTIC}
        groups: dict[str, dict[str, Mapping]] = {}
        for r in rows:
            groups.setdefault(r["comparison"], {})[r["metric"]] = r
            if int(r["n_seeds"]) > 1:
                widths[r["metric"]].append((float(r["high"]) - float(r["low"])) / 2)
                if r["verdict"] != "inconclusive":
                    decided.append(f"{r['comparison']} at `{name}` on {METRIC_LABELS[r['metric']]}: {r['verdict']}"
                                   + _under_tiles(tiles.get((r["comparison"], r["metric"]))))
        for comparison, by_metric in groups.items():
            first = next(iter(by_metric.values()))
            lines.append(f"| `{name}` | {comparison} | {first['n_seeds']} | "
                         + " | ".join(_cell(by_metric[m]) if m in by_metric else "" for m in metrics) + " |")
    n_intervals = sum(map(len, widths.values()))
    summary = (f"Of these {n_intervals} intervals with at least two seeds, "
               + (f"{len(decided)} decide a verdict ({'; '.join(decided)}); the others are inconclusive."
                  if decided else "none decides a verdict: all are inconclusive."))
    spread = "; ".join(f"{METRIC_LABELS[m]} ±{min(w):.3f} to ±{max(w):.3f} (margin ±{MARGINS[m].value:g})"
                       for m, w in widths.items() if w)
    conditions = "; ".join(f"`{name}`: {training_conditions(_provenance(folder))}" for name, folder in folders.items())
    planning = seeds_needed_line("fast", folders["fast"]) if "fast" in folders else ""
    return "\n".join([FINDINGS_BEGIN, "", *lines, "", summary,
                      f"The intervals' half-widths: {spread}.", *([planning] if planning else []), source_line(folders),
                      f"The folders differ in more than the training budget ({conditions}).", "", FINDINGS_END])


def write_findings(readme: str | Path = PROJECT_ROOT / "README.md") -> None:
    """Replace the findings block of ``readme`` (between its markers) by
    :func:`findings_markdown` of the committed folders."""
    text = Path(readme).read_text(encoding="utf-8")
    start, end = text.index(FINDINGS_BEGIN), text.index(FINDINGS_END) + len(FINDINGS_END)
    write_text_atomic(readme, text[:start] + findings_markdown() + text[end:])


def cli(argv: Sequence[str]) -> int:
    """``python -m starunet verdicts FOLDER...``: (re)write each folder's verdicts.csv."""
    parser = argparse.ArgumentParser(prog="python -m starunet verdicts",
                                     description="Recompute verdicts.csv of grid or learning-curve folders "
                                                 "from their metrics (e.g. results/full results/curves).")
    parser.add_argument("folders", type=Path, nargs="+", metavar="FOLDER",
                        help="grid folders (metrics.csv) or learning-curve folders (points.csv), e.g. results/fast")
    parser.add_argument("--readme", action="store_true",
                        help="then regenerate the findings block of the top-level README.md from the committed folders")
    args = parser.parse_args(list(argv))
    for folder in args.folders:
        try:
            path = write_verdicts(folder)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"verdicts -> {display_path(path)}")
    if args.readme:
        write_findings()
    return 0
