"""Statistics over seeds: the 2x2 grid's configurations, summaries (mean +- std over
seeds), paired differences b - a with confidence intervals, and the verdicts they turn
into. Pure numpy (and scipy's t quantiles) on result rows: nothing here trains, loads a
model or writes a file.

The primary statistic of a comparison is the **pooled** metric (over the FOV pixels of
all test images, one value per run, as ``metrics.csv`` holds it): its per-seed
difference b − a, averaged over the seeds both configurations have, with a t-interval
over seeds (n − 1 degrees of freedom). The run-to-run noise is what the seeds measure;
the test images are held fixed, so that interval speaks about *these* test images. The
pooled metric cannot be recomputed on a bootstrap sample of images from the committed
files (they keep per-image metrics, not per-image scores), so test-image uncertainty
is shown by the secondary, **per-image** statistic: the mean over seeds and images of
the per-image difference, with an interval that adds the seed and image components
(:func:`crossed_interval`). The two are never mixed: every :class:`PairedDifference`
says which one it is. ``tests/test_stats.py`` checks the coverage of both intervals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from scipy.stats import t as t_dist

from starunet.metrics import METRIC_NAMES

# the study's 2x2 grid: skip fusion x activation
FUSIONS_COMPARED = ("sum", "star")
ACTIVATIONS_COMPARED = ("none", "relu")
# the 2x2 grid's questions, as PairedDifference.comparison names them: star − sum at each
# activation, and whether the product replaces the activation (star/none − sum/relu)
MAIN_COMPARISONS = ("star − sum, without ReLU", "star − sum, with ReLU", "star/none − sum/relu")
# the threshold-dependent metrics again at the validation images' F1-optimal threshold
TUNED_METRICS = ("f1_tuned", "se_tuned", "pre_tuned")
TUNED_COLUMNS = ["val_threshold", *TUNED_METRICS]
OLDER_EVALUATION = ("they were evaluated by an older starunet; rerun the `reproduce` command that made them "
                    "(finished runs are reused, only the evaluations are redone)")

METRIC_LABELS = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "f1": "F1", "acc": "Acc",
                 "se": "Se", "sp": "Sp", "pre": "Pre", "val_threshold": "val. threshold",
                 "f1_tuned": "F1 (val. thr.)", "se_tuned": "Se (val. thr.)", "pre_tuned": "Pre (val. thr.)"}
FUSION_LABELS = {"sum": "sum (+)", "star": "star (*)"}
ACTIVATION_LABELS = {"none": "without ReLU", "relu": "with ReLU",
                     "none vs relu": "star without ReLU against sum with ReLU"}


# ---------------------------------------------------------------- statistics over seeds

HEADLINE_METRICS = ("roc_auc", "pr_auc", "f1")  # threshold-free ranking quality + the balanced F1


def config_order(fusion: str, activation: str) -> tuple:
    """Sort key: activations none, relu, then others; within each, sum before star."""
    def rank(value, known):
        return (known.index(value), "") if value in known else (len(known), value)

    return rank(activation, ACTIVATIONS_COMPARED) + rank(fusion, FUSIONS_COMPARED)


def summarize_over_seeds(rows: Iterable[Mapping]) -> dict[tuple[str, str], dict]:
    """Group metric rows (one per run) by ``(fusion, activation)``.

    Each value: ``{"n": runs, "seeds": [...], "mean": {metric: ...}, "std": {metric: ...}}``
    over :data:`METRIC_NAMES` and, where every run of the group has them, the
    :data:`TUNED_COLUMNS`; std is the sample std over seeds (ddof=1; NaN for one seed).
    """
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for row in rows:
        groups.setdefault((str(row["fusion"]), str(row["activation"])), []).append(row)
    summary = {}
    for key, group in sorted(groups.items(), key=lambda item: config_order(*item[0])):
        tuned = [c for c in TUNED_COLUMNS if all(r.get(c, "") != "" for r in group)]
        values = {m: np.array([float(r[m]) for r in group]) for m in (*METRIC_NAMES, *tuned)}
        summary[key] = {
            "n": len(group),
            "seeds": sorted(int(r["seed"]) for r in group),
            "mean": {m: float(v.mean()) for m, v in values.items()},
            "std": {m: float(v.std(ddof=1)) if len(v) > 1 else math.nan for m, v in values.items()},
        }
    return summary


class Config(NamedTuple):
    """One configuration of the grid: a fusion op and an activation (a tuple, so it
    compares equal to ``("star", "none")``); printed ``star/none``."""
    fusion: str
    activation: str

    def __str__(self) -> str:
        return f"{self.fusion}/{self.activation}"

    def run_key(self, seed: int | str) -> str:
        """The name of this configuration's run with ``seed`` in result files (:func:`run_key`)."""
        return run_key(self.fusion, self.activation, seed)


def run_key(fusion: str, activation: str, seed: int | str) -> str:
    """The one name of a grid run in result files (metrics rows, curves, prediction
    PNGs), e.g. ``star-none-seed2024``. (Run folders add the preset and the config
    hash: :func:`starunet.runs.run_dir_for`.)"""
    return f"{fusion}-{activation}-seed{seed}"


def parse_run_key(key: str) -> tuple[Config, int]:
    """The inverse of :func:`run_key`: ``"star-none-seed2024"`` -> ``(Config("star", "none"), 2024)``."""
    fusion, activation, seed = key.rsplit("-", 2)
    return Config(fusion, activation), int(seed.removeprefix("seed"))


# ---------------------------------------------------------------- margins and verdicts

class Margin(NamedTuple):
    """An equivalence margin: differences inside ``±value`` are too small to matter."""
    value: float
    reason: str


# One declared margin per headline metric. A difference whose interval lies inside
# ±margin is "equivalent": smaller than anything a segmentation paper would claim.
MARGINS: dict[str, Margin] = {
    "roc_auc": Margin(0.005, "half the PR-AUC margin: with about 90 % background pixels in the FOV, ROC-AUC "
                             "(0.94-0.98 for every network here) moves about half as much as PR-AUC"),
    "pr_auc": Margin(0.01, "as F1: both summarise the vessel class, and PR-AUC spreads about as much as F1 "
                           "between networks"),
    "f1": Margin(0.01, "published STARE networks span 0.815-0.839 in F1 (bob.ip.binseg: U-Net, DRIU, HED, "
                       "M2U-Net, Little W-Net); 0.01 is less than half that spread and about a seventh of "
                       "the gap to the second annotator (0.759)"),
}
MARGINS["f1_tuned"] = Margin(MARGINS["f1"].value, "as F1")
VERDICTS = ("better", "worse", "equivalent", "inconclusive")
STATISTICS = ("pooled", "per_image")


def adjusted_level(level: float, family: int) -> float:
    """Bonferroni: the level of each of ``family`` intervals shown together, so that all
    of them hold at once with probability ``level`` (at least)."""
    return 1 - (1 - level) / max(family, 1)


def seed_interval(per_seed: np.ndarray, level: float = 0.95) -> tuple:
    """Mean over the last axis (seeds) and its t-interval with n − 1 degrees of freedom
    (NaN bounds for one seed: there is no run-to-run spread to measure). Vectorised."""
    per_seed = np.asarray(per_seed, dtype=float)
    n = per_seed.shape[-1]
    mean = per_seed.mean(axis=-1)
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan
    half = t_dist.ppf(0.5 + level / 2, n - 1) * per_seed.std(axis=-1, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


# The most seeds seeds_to_decide looks at: beyond it, a plan is not a plan.
MOST_SEEDS_PLANNED = 1000


def seeds_to_decide(per_seed: Sequence[float], margin: float, level: float = 0.95,
                    most: int = MOST_SEEDS_PLANNED) -> tuple[int | None, int | None]:
    """A planning estimate, not a result: if further seeds gave per-seed differences with
    the mean and sd of ``per_seed``, the fewest seeds whose t-interval at ``level`` would
    just exclude 0, and the fewest whose interval would just lie inside ±``margin``. None
    where no number up to ``most`` does, or none can: a mean of 0 is never detected, and a
    mean at or beyond the margin is never equivalent. Read it as an order of magnitude: even
    if that mean were the truth, a study of that size decides only about half the time, and
    the observed mean and sd are themselves uncertain, more so with few seeds."""
    d = np.asarray(per_seed, dtype=float)
    if d.size < 2:
        raise ValueError("seeds_to_decide needs the differences of at least 2 seeds: one has no spread to plan with")
    mean, sd = abs(float(d.mean())), float(d.std(ddof=1))
    n = np.arange(2, most + 1)
    half = t_dist.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n)

    def fewest(limit: float) -> int | None:
        fits = np.flatnonzero(half < limit) if limit > 0 else []
        return int(n[fits[0]]) if len(fits) else None
    return fewest(mean), fewest(margin - mean)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``mean(b) - mean(a)`` of two unpaired sets of runs (two recipes, or two machines,
    whose seeds share nothing) and its Welch t-interval (Welch-Satterthwaite degrees of
    freedom); NaN bounds when either side has one run: no run-to-run spread to measure."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(t_dist.ppf(0.5 + level / 2, df) * math.sqrt(va + vb))
    return diff, diff - half, diff + half


def crossed_interval(d: np.ndarray, level: float = 0.95) -> tuple:
    """Mean of ``d[..., seed, image]`` and an interval counting both sources of noise,
    training runs and test images (two-way crossed random effects). Its half-width
    adds the seed and image mean squares, each with its own t quantile
    (``sqrt((t_s² MS_s + t_i² MS_i) / (S·I))``); the residual variance is counted twice,
    which keeps it slightly conservative (coverage 96-99 % at 95 % in the test's
    simulations). NaN bounds with one seed."""
    d = np.asarray(d, dtype=float)
    n_s, n_i = d.shape[-2:]
    grand = d.mean(axis=(-2, -1))
    if n_s < 2 or n_i < 2:
        nan = np.full_like(grand, np.nan)
        return grand, nan, nan
    ms_seed = n_i * ((d.mean(axis=-1) - grand[..., None]) ** 2).sum(axis=-1) / (n_s - 1)
    ms_image = n_s * ((d.mean(axis=-2) - grand[..., None]) ** 2).sum(axis=-1) / (n_i - 1)
    q_seed, q_image = (t_dist.ppf(0.5 + level / 2, n - 1) for n in (n_s, n_i))
    half = np.sqrt((q_seed ** 2 * ms_seed + q_image ** 2 * ms_image) / (n_s * n_i))
    return grand, grand - half, grand + half


@dataclass(frozen=True)
class PairedDifference:
    """Difference ``b - a`` of a metric, configuration ``config_b`` minus ``config_a``,
    paired by seed: ``statistic`` ``"pooled"`` (per-seed difference of the pooled
    metric, t-interval over seeds) or ``"per_image"`` (mean per-image difference, seeds
    and images in the interval). ``level`` is the interval's level after the Bonferroni
    adjustment over the ``family`` of differences computed together. ``activation`` is
    the shared activation, or ``"<b's> vs <a's>"``."""
    activation: str
    metric: str
    mean: float
    low: float
    high: float
    n_seeds: int
    n_images: int
    level: float = 0.95
    config_a: Config = Config("sum", "none")
    config_b: Config = Config("star", "none")
    by_fusion: bool = True  # named by the fusions alone (paired_differences: one activation)
    statistic: str = "per_image"
    family: int = 1

    @property
    def a(self) -> str:
        """How ``config_a`` is named in tables and verdicts: ``sum`` (``by_fusion``)
        or ``sum/relu``."""
        return self.config_a.fusion if self.by_fusion else str(self.config_a)

    @property
    def b(self) -> str:
        return self.config_b.fusion if self.by_fusion else str(self.config_b)

    @property
    def margin(self) -> float:
        return MARGINS[self.metric].value if self.metric in MARGINS else math.nan

    @property
    def verdict(self) -> str:
        return verdict(self)

    @property
    def comparison(self) -> str:
        """``star − sum, without ReLU`` or ``star/none − sum/relu``."""
        if self.config_a.activation == self.config_b.activation:
            label = ACTIVATION_LABELS.get(self.activation, f"activation {self.activation}")
            return f"{self.config_b.fusion} − {self.config_a.fusion}, {label}"
        return f"{self.config_b} − {self.config_a}"


def verdict(diff: PairedDifference) -> str:
    """One of :data:`VERDICTS` (every metric here is higher-is-better): ``equivalent``
    when the interval lies inside ±margin (a difference too small to matter, even if it
    excludes 0); else ``better``/``worse`` when it excludes 0; else ``inconclusive``.
    One seed is always ``inconclusive``: no run-to-run interval, one seed, preliminary."""
    if diff.n_seeds < 2:
        return "inconclusive"
    return interval_verdict(diff.low, diff.high, diff.margin)


def interval_verdict(low: float, high: float, margin: float) -> str:
    """The rule of :func:`verdict` for any interval of a higher-is-better difference:
    ``equivalent`` inside ±margin, else ``better``/``worse`` when it excludes 0, else
    (and with no interval, NaN bounds) ``inconclusive``."""
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if -margin < low and high < margin:
        return "equivalent"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "inconclusive"


def per_image_matrix(per_image_rows: Sequence[Mapping], metric: str, a: tuple[str, str],
                   b: tuple[str, str]) -> np.ndarray:
    """``d[seed, image] = metric(b) - metric(a)`` for two ``(fusion, activation)``
    configurations, over the seeds and images both have (a seed with only one of
    them finished, e.g. in an interrupted grid, is left out)."""
    if any(r.get(metric, "") == "" for r in per_image_rows):
        raise ValueError(f"these per-image results have no {metric!r} values: {OLDER_EVALUATION}")
    table: dict[tuple[str, str, int, str], float] = {}
    for r in per_image_rows:
        table[(str(r["fusion"]), str(r["activation"]), int(r["seed"]), str(r["image_id"]))] = float(r[metric])
    seeds = sorted({k[2] for k in table if k[:2] == a} & {k[2] for k in table if k[:2] == b})
    images = sorted({k[3] for k in table if k[:2] == a} & {k[3] for k in table if k[:2] == b})
    d = np.full((len(seeds), len(images)), np.nan)
    for si, s in enumerate(seeds):
        for ii, i in enumerate(images):
            if (*a, s, i) in table and (*b, s, i) in table:
                d[si, ii] = table[(*b, s, i)] - table[(*a, s, i)]
    if d.size == 0 or np.isnan(d).any():
        raise ValueError(f"cannot pair {'/'.join(a)} and {'/'.join(b)} runs: every seed needs both "
                         "configurations evaluated on the same test images (run the full grid)")
    return d


def differences(items: Sequence[tuple], statistic: str, level: float = 0.95,
                n_images: int = 0) -> list[PairedDifference]:
    """``items`` of ``(a, b, metric, data)``: ``data`` per seed (``pooled``) or
    ``[seed, image]`` (``per_image``); intervals at the Bonferroni level of the family
    these items form (all shown together; those with one seed have no interval and do
    not count). ``n_images``: the test images a pooled value
    covers (per-image data says it itself)."""
    family = sum(np.shape(data)[0] > 1 for *_, data in items)  # one seed decides nothing: nothing to adjust for
    each = adjusted_level(level, family)
    out = []
    for a, b, metric, data in items:
        if statistic == "pooled":
            mean, low, high = seed_interval(data, each)
            images = n_images
        else:
            mean, low, high = crossed_interval(data, each)
            images = data.shape[1]
        activation = a[1] if a[1] == b[1] else f"{b[1]} vs {a[1]}"
        out.append(PairedDifference(activation, metric, float(mean), float(low), float(high), data.shape[0],
                                    images, each, Config(*a), Config(*b), by_fusion=a[1] == b[1],
                                    statistic=statistic, family=family))
    return out


def pooled_per_seed(runs: Sequence[Mapping], metric: str, a: tuple[str, str], b: tuple[str, str]) -> np.ndarray:
    """``metric(b) - metric(a)`` per seed that both configurations have, from rows with
    one pooled value per run (``metrics.csv``), in seed order."""
    values: dict[tuple[str, str], dict[int, float]] = {}
    for r in runs:
        if r.get(metric, "") != "":
            values.setdefault((str(r["fusion"]), str(r["activation"])), {})[int(r["seed"])] = float(r[metric])
    seeds = sorted(set(values.get(tuple(a), {})) & set(values.get(tuple(b), {})))
    if not seeds:
        raise ValueError(f"cannot pair {'/'.join(a)} and {'/'.join(b)} runs on {metric}: no seed has both "
                         "(run the full grid)")
    return np.array([values[tuple(b)][s] - values[tuple(a)][s] for s in seeds])


def pooled_differences(runs: Sequence[Mapping], pairs: Sequence[tuple[tuple[str, str], tuple[str, str]]],
                       metrics: Sequence[str] = HEADLINE_METRICS, level: float = 0.95) -> list[PairedDifference]:
    """The primary statistic: for each ``(a, b)`` of ``pairs`` and metric, the per-seed
    difference of the pooled metric b − a (``runs``: rows of ``metrics.csv``), its
    mean and t-interval over the seeds both have, Bonferroni-adjusted over all of them."""
    items = [(a, b, m, pooled_per_seed(runs, m, a, b)) for a, b in pairs for m in metrics]
    n_images = max((int(r.get("n_test_images") or 0) for r in runs), default=0)
    return differences(items, "pooled", level, n_images)


def per_image_differences(per_image_rows: Sequence[Mapping],
                          pairs: Sequence[tuple[tuple[str, str], tuple[str, str]]],
                          metrics: Sequence[str] = HEADLINE_METRICS, level: float = 0.95) -> list[PairedDifference]:
    """The secondary statistic: the mean over shared seeds and test images of the
    per-image difference b − a, with :func:`crossed_interval`, Bonferroni-adjusted."""
    items = [(a, b, m, per_image_matrix(per_image_rows, m, a, b)) for a, b in pairs for m in metrics]
    return differences(items, "per_image", level)


def config_differences(per_image_rows: Sequence[Mapping], a: tuple[str, str], b: tuple[str, str],
                       metrics: Sequence[str] = HEADLINE_METRICS, level: float = 0.95) -> list[PairedDifference]:
    """Configuration ``b`` minus configuration ``a`` (each ``(fusion, activation)``):
    the per-image statistic (:func:`per_image_differences`) of one pair."""
    return per_image_differences(per_image_rows, [(a, b)], metrics, level)


def replacement_differences(per_image_rows: Sequence[Mapping], metrics: Sequence[str] = HEADLINE_METRICS,
                            level: float = 0.95) -> list[PairedDifference]:
    """The course's question asked directly: the ReLU-free star network (star/none)
    minus the additive network WITH ReLU (sum/relu), per-image statistic.
    ``activation`` of the results is ``"none vs relu"``."""
    return config_differences(per_image_rows, ("sum", "relu"), ("star", "none"), metrics, level)


def paired_differences(per_image_rows: Sequence[Mapping], activations: Sequence[str] | None = None,
                       metrics: Sequence[str] = METRIC_NAMES, a: str = "sum", b: str = "star",
                       level: float = 0.95) -> list[PairedDifference]:
    """Star − sum (``b - a``) per activation and metric, the per-image statistic
    (secondary; see :func:`per_image_differences`), one Bonferroni family."""
    if activations is None:
        activations = sorted({str(r["activation"]) for r in per_image_rows})
    return per_image_differences(per_image_rows, [((a, act), (b, act)) for act in activations], metrics, level)


def grid_pairs(configs: Iterable[tuple[str, str]],
               activations: Sequence[str] = ACTIVATIONS_COMPARED) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """The comparisons a grid with ``configs`` answers: star − sum per activation of
    ``activations`` that has both, then star/none − sum/relu (the ReLU-free star network
    against the additive one with ReLU) where both exist; then the same two kinds for
    every other fusion of the grid (e.g. ``star_bn``, ``sum_star_bn``), in name order."""
    have = set(configs)
    pairs = []
    for fusion in ["star", *sorted({f for f, _ in have} - {"sum", "star"})]:
        pairs += [(("sum", act), (fusion, act)) for act in activations if {("sum", act), (fusion, act)} <= have]
        if {("sum", "relu"), (fusion, "none")} <= have:
            pairs.append((("sum", "relu"), (fusion, "none")))
    return pairs


def budget_differences(grids: Mapping, activations: Sequence[str] = ACTIVATIONS_COMPARED,
                       metrics: Sequence[str] = HEADLINE_METRICS, level: float = 0.95,
                       replacement: bool = True) -> dict[str, list[PairedDifference]]:
    """The primary (pooled) statistic of each grid (``{preset:
    starunet.results.GridResults}``, one per training budget): star − sum for each of
    ``activations`` that the grid has both fusions for and (with ``replacement``)
    star/none − sum/relu, one Bonferroni family per grid; grids with none of them are
    left out."""
    out = {}
    for name, results in grids.items():
        pairs = grid_pairs(results.summary(), activations)
        if not replacement:
            pairs = [p for p in pairs if p[0][1] == p[1][1]]
        if pairs:
            out[name] = pooled_differences(results.runs, pairs, metrics, level)
    return out
