"""Statistics over seeds: the 2x2 grid's configurations, summaries (mean +- std over
seeds), paired differences b - a per test image and seed with a bootstrap confidence
interval over seeds and images, and the verdicts they turn into. Pure numpy on rows of
per-image metrics: nothing here trains, loads a model or writes a file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from starunet.metrics import METRIC_NAMES

# the study's 2x2 grid: skip fusion x activation
FUSIONS_COMPARED = ("sum", "star")
ACTIVATIONS_COMPARED = ("none", "relu")
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


@dataclass(frozen=True)
class PairedDifference:
    """Mean paired difference ``b - a`` of a per-image metric, configuration
    ``config_b`` minus ``config_a``, with a bootstrap confidence interval ``[low, high]``.
    ``activation`` is the shared activation, or ``"<b's> vs <a's>"``."""
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

    @property
    def a(self) -> str:
        """How ``config_a`` is named in tables and verdicts: ``sum`` (``by_fusion``)
        or ``sum/relu``."""
        return self.config_a.fusion if self.by_fusion else str(self.config_a)

    @property
    def b(self) -> str:
        return self.config_b.fusion if self.by_fusion else str(self.config_b)

    @property
    def verdict(self) -> str:
        return verdict(self)


def verdict(diff: PairedDifference) -> str:
    """``"<b> better"`` / ``"<b> worse"`` when the CI excludes 0, else ``"within noise"``
    (every metric here is higher-is-better)."""
    if diff.low > 0:
        return f"{diff.b} better"
    if diff.high < 0:
        return f"{diff.b} worse"
    return "within noise"


def _paired_matrix(per_image_rows: Sequence[Mapping], activation: str, metric: str, a: str, b: str) -> np.ndarray:
    """``d[seed, image] = metric(b) - metric(a)`` for fusions ``a`` and ``b`` with the
    same activation (see :func:`_config_matrix`)."""
    return _config_matrix(per_image_rows, metric, (a, activation), (b, activation))


def _config_matrix(per_image_rows: Sequence[Mapping], metric: str, a: tuple[str, str],
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


def config_differences(per_image_rows: Sequence[Mapping], a: tuple[str, str], b: tuple[str, str],
                       metrics: Sequence[str] = HEADLINE_METRICS, n_boot: int = 4000, level: float = 0.95,
                       seed: int = 0) -> list[PairedDifference]:
    """Configuration ``b`` minus configuration ``a`` (each ``(fusion, activation)``),
    paired by seed and test image, with bootstrap CIs; ``activation`` of the results is
    the shared one, or ``"<b's> vs <a's>"``."""
    activation = a[1] if a[1] == b[1] else f"{b[1]} vs {a[1]}"
    out = []
    for m in metrics:
        d = _config_matrix(per_image_rows, m, a, b)
        mean, low, high = paired_bootstrap(d, n_boot=n_boot, level=level, seed=seed)
        out.append(PairedDifference(activation, m, mean, low, high, d.shape[0], d.shape[1], level,
                                    Config(*a), Config(*b), by_fusion=False))
    return out


def replacement_differences(per_image_rows: Sequence[Mapping], metrics: Sequence[str] = HEADLINE_METRICS,
                            n_boot: int = 4000, level: float = 0.95, seed: int = 0) -> list[PairedDifference]:
    """The course's question asked directly: the ReLU-free star network (star/none)
    minus the additive network WITH ReLU (sum/relu), paired by seed and test image,
    with bootstrap CIs. ``activation`` of the results is ``"none vs relu"``."""
    return config_differences(per_image_rows, ("sum", "relu"), ("star", "none"), metrics, n_boot, level, seed)


def paired_bootstrap(d: np.ndarray, n_boot: int = 4000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``d[seed, image]`` and a percentile bootstrap CI that resamples seeds
    AND images with replacement (two sources of noise: training runs and test images).

    With one seed only the image-to-image variation is captured.
    """
    rng = np.random.default_rng(seed)
    n_s, n_i = d.shape
    si = rng.integers(0, n_s, size=(n_boot, n_s))
    ii = rng.integers(0, n_i, size=(n_boot, n_i))
    boots = d[si[:, :, None], ii[:, None, :]].mean(axis=(1, 2))
    alpha = (1 - level) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha])
    return float(d.mean()), float(low), float(high)


def paired_differences(per_image_rows: Sequence[Mapping], activations: Sequence[str] | None = None,
                       metrics: Sequence[str] = METRIC_NAMES, a: str = "sum", b: str = "star",
                       n_boot: int = 4000, level: float = 0.95, seed: int = 0) -> list[PairedDifference]:
    """Star − sum (``b - a``) per activation and metric, paired by seed and test
    image, with bootstrap CIs (see :func:`paired_bootstrap`)."""
    if activations is None:
        activations = sorted({str(r["activation"]) for r in per_image_rows})
    out = []
    for act in activations:
        for m in metrics:
            d = _paired_matrix(per_image_rows, act, m, a, b)
            mean, low, high = paired_bootstrap(d, n_boot=n_boot, level=level, seed=seed)
            out.append(PairedDifference(act, m, mean, low, high, d.shape[0], d.shape[1], level,
                                        Config(a, act), Config(b, act)))
    return out


def verdict_sentence(diffs: Sequence[PairedDifference], activation: str,
                     metrics: Sequence[str] = HEADLINE_METRICS) -> str:
    """One sentence, computed from the CIs: does star beat sum for this activation?"""
    chosen = [d for d in diffs if d.activation == activation and d.metric in metrics]
    if not chosen:
        raise ValueError(f"no paired differences for activation {activation!r} and metrics {metrics}")
    d0 = chosen[0]
    parts = [f"{METRIC_LABELS.get(d.metric, d.metric)} {d.mean:+.4f} "
             f"[{100 * d.level:.0f}% CI {d.low:+.4f}, {d.high:+.4f}]: {d.verdict}" for d in chosen]
    better = sum(d.verdict == f"{d.b} better" for d in chosen)
    worse = sum(d.verdict == f"{d.b} worse" for d in chosen)
    # one seed resamples only the test images: the CI cannot see run-to-run noise
    noise = "run-to-run noise" if d0.n_seeds > 1 else "test-image sampling noise"
    caveat = "" if d0.n_seeds > 1 else " (one seed: run-to-run noise not measured)"
    if better == len(chosen):
        overall = f"{d0.b} beats {d0.a} beyond {noise}"
    elif worse == len(chosen):
        overall = f"{d0.b} is worse than {d0.a} beyond {noise}"
    elif better and not worse:
        overall = f"{d0.b} is better on {better} of {len(chosen)} headline metrics, the rest within noise"
    elif worse and not better:
        overall = f"{d0.b} is worse on {worse} of {len(chosen)} headline metrics, the rest within noise"
    elif better and worse:
        overall = "mixed: better on some headline metrics, worse on others"
    else:
        overall = f"the difference between {d0.b} and {d0.a} is within {noise}"
    label = ACTIVATION_LABELS.get(activation, activation)
    label = label[:1].upper() + label[1:]
    return (f"{label} ({d0.n_seeds} seed(s) x {d0.n_images} test images), {d0.b} − {d0.a}: "
            + "; ".join(parts) + f". Verdict: {overall}{caveat}.")


def budget_differences(grids: Mapping, activations: Sequence[str] = ACTIVATIONS_COMPARED,
                       metrics: Sequence[str] = HEADLINE_METRICS, n_boot: int = 4000,
                       level: float = 0.95, replacement: bool = True) -> dict[str, list[PairedDifference]]:
    """Star − sum per grid (``{preset: starunet.results.GridResults}``, one per training
    budget), for each of ``activations`` that the grid has both fusions for, as
    :func:`paired_differences` computes it, and (with ``replacement``) star/none −
    sum/relu (:func:`replacement_differences`) where the grid has both; grids with none
    of them are left out."""
    out = {}
    for name, results in grids.items():
        acts = [a for a in activations if a in results.paired_activations]
        diffs = paired_differences(results.per_image, acts, metrics, n_boot=n_boot, level=level) if acts else []
        if replacement and {("star", "none"), ("sum", "relu")} <= set(results.summary()):
            diffs += replacement_differences(results.per_image, metrics, n_boot=n_boot, level=level)
        if diffs:
            out[name] = diffs
    return out
