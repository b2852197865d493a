"""Tests of starunet.stats: summaries over seeds, paired differences, their intervals' coverage, verdicts."""
from __future__ import annotations

import numpy as np
import pytest

from scipy.stats import t as t_dist

from starunet import stats as S


def test_summarize_over_seeds_mean_std_and_order(grid_rows):
    summary = S.summarize_over_seeds(grid_rows())
    assert list(summary) == [("sum", "none"), ("star", "none"), ("sum", "relu"), ("star", "relu")]
    s = summary[("star", "none")]
    values = [0.811, 0.812, 0.813]
    assert s["n"] == 3 and s["seeds"] == [1, 2, 3]
    assert s["mean"]["f1"] == pytest.approx(np.mean(values))
    assert s["std"]["f1"] == pytest.approx(np.std(values, ddof=1))
    single = S.summarize_over_seeds(grid_rows(seeds=(1,)))
    assert np.isnan(single[("sum", "none")]["std"]["f1"])


def test_per_image_differences_tell_better_worse_and_inconclusive(per_image_rows):
    rows = per_image_rows({"none": 0.05, "relu": 0.0})
    diffs = S.paired_differences(rows, metrics=["f1"])
    by_act = {d.activation: d for d in diffs}
    assert by_act["none"].verdict == "better" and by_act["none"].low > 0
    assert by_act["relu"].low < 0 < by_act["relu"].high and by_act["relu"].statistic == "per_image"
    assert by_act["relu"].verdict in ("equivalent", "inconclusive")
    assert by_act["none"].mean == pytest.approx(0.05, abs=0.01)
    worse = S.paired_differences(per_image_rows({"none": -0.05}), metrics=["f1"])[0]
    assert worse.verdict == "worse"
    assert {d.family for d in diffs} == {2} and diffs[0].level == pytest.approx(1 - 0.05 / 2)


def test_only_paired_seeds_are_compared(per_image_rows):
    rows = per_image_rows({"none": 0.0})
    partial = [r for r in rows if not (r["fusion"] == "star" and r["seed"] == 2)]  # an interrupted grid
    assert S.paired_differences(partial, metrics=["f1"])[0].n_seeds == 2
    with pytest.raises(ValueError, match="run the full grid"):
        S.paired_differences([r for r in rows if r["fusion"] == "sum"], metrics=["f1"])


def _runs(values: dict) -> list[dict]:
    """Metric rows (one per run) from ``{(fusion, activation): {seed: f1}}``."""
    return [{"fusion": f, "activation": a, "seed": seed, "f1": v, "n_test_images": 10}
            for (f, a), by_seed in values.items() for seed, v in by_seed.items()]


def test_pooled_differences_pair_by_seed_with_a_t_interval():
    """The primary statistic: per-seed differences of the pooled metric, only the seeds both
    configurations have (a 3-seed sum against a 2-seed star pairs 2 seeds), t-interval n − 1 df."""
    runs = _runs({("sum", "relu"): {1: 0.70, 2: 0.72, 3: 0.90}, ("star", "relu"): {1: 0.71, 3: 0.93}})
    d = S.pooled_differences(runs, [(("sum", "relu"), ("star", "relu"))], ["f1"])[0]
    per_seed = np.array([0.01, 0.03])
    half = t_dist.ppf(0.975, 1) * per_seed.std(ddof=1) / np.sqrt(2)
    assert (d.n_seeds, d.n_images, d.statistic, d.family) == (2, 10, "pooled", 1)
    assert d.mean == pytest.approx(0.02) and (d.low, d.high) == pytest.approx((0.02 - half, 0.02 + half))
    assert d.comparison == "star − sum, with ReLU" and d.verdict == "inconclusive"


def test_one_seed_has_no_interval_and_decides_nothing():
    runs = _runs({("sum", "none"): {1: 0.70}, ("star", "none"): {1: 0.80}})
    d = S.pooled_differences(runs, [(("sum", "none"), ("star", "none"))], ["f1"])[0]
    assert d.mean == pytest.approx(0.1) and np.isnan(d.low) and np.isnan(d.high)
    assert d.verdict == "inconclusive" and d.family == 0


@pytest.mark.parametrize("per_seed, expected", [
    ([0.040, 0.041, 0.042], "better"), ([-0.040, -0.041, -0.042], "worse"),
    ([0.001, 0.002, 0.0015], "equivalent"),  # excludes 0 but lies inside ±0.01: too small to matter
    ([-0.002, 0.002, 0.0], "equivalent"), ([-0.05, 0.05, 0.0], "inconclusive")])
def test_verdicts_use_the_declared_margin(per_seed, expected):
    runs = _runs({("sum", "none"): {s: 0.7 for s in range(3)},
                  ("star", "none"): {s: 0.7 + v for s, v in enumerate(per_seed)}})
    d = S.pooled_differences(runs, [(("sum", "none"), ("star", "none"))], ["f1"])[0]
    assert d.margin == S.MARGINS["f1"].value and d.verdict == expected


def test_every_headline_metric_declares_a_margin_with_a_reason():
    for m in S.HEADLINE_METRICS:
        assert 0 < S.MARGINS[m].value < 0.05 and len(S.MARGINS[m].reason) > 20


def test_bonferroni_level_over_the_family():
    assert S.adjusted_level(0.95, 1) == pytest.approx(0.95)
    assert S.adjusted_level(0.95, 9) == pytest.approx(1 - 0.05 / 9)
    runs = _runs({(f, a): {s: 0.7 + 0.01 * s for s in range(3)} for f in ("sum", "star") for a in ("none", "relu")})
    diffs = S.pooled_differences(runs, S.grid_pairs({(r["fusion"], r["activation"]) for r in runs}), ["f1"])
    assert len(diffs) == 3 and {d.family for d in diffs} == {3}


def _simulate(rng, n_draws: int, n_seeds: int, true_diff: float, run_sd: float, n_images: int = 10,
              image_sd: float = 0.02, residual_sd: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Per-image differences d[draw, seed, image] of simulated grids: a run-to-run effect
    per seed, an image effect shared by every seed (the test images are the same for all
    runs, so the seeds' differences are correlated through them) and residual noise.
    Returns ``(d, the difference conditional on each draw's test images)``."""
    seed_effect = rng.normal(0, run_sd, (n_draws, n_seeds, 1))
    image_effect = rng.normal(0, image_sd, (n_draws, 1, n_images))
    d = true_diff + seed_effect + image_effect + rng.normal(0, residual_sd, (n_draws, n_seeds, n_images))
    return d, true_diff + image_effect.mean(axis=(1, 2))


@pytest.mark.parametrize("n_seeds", [3, 5, 10])
def test_intervals_cover_the_truth_at_their_level(n_seeds):
    """Coverage: 2,000 simulated grids per setting, run-to-run sd 0.01 and 0.03, image sd
    0.02 correlated per image. The seed-level t-interval (pooled statistic) covers the
    difference on these test images, the crossed interval (per-image statistic) the
    difference over images at large, each in at least 93 % of the draws."""
    rng = np.random.default_rng(n_seeds)
    for true_diff in (0.0, 0.02):
        for run_sd in (0.01, 0.03):
            d, on_these_images = _simulate(rng, 2000, n_seeds, true_diff, run_sd)
            _, low, high = S.seed_interval(d.mean(axis=2), 0.95)  # one value per run, as a pooled metric
            assert np.mean((low <= on_these_images) & (on_these_images <= high)) >= 0.93
            _, low, high = S.crossed_interval(d, 0.95)
            assert np.mean((low <= true_diff) & (true_diff <= high)) >= 0.93


def test_seeds_to_decide_is_the_fewest_seeds_whose_interval_would_decide():
    per_seed = [0.01, 0.02, 0.03]  # mean 0.02, sd 0.01

    def half(n):
        return t_dist.ppf(0.975, n - 1) * 0.01 / np.sqrt(n)
    detect, equivalent = S.seeds_to_decide(per_seed, margin=0.03)
    assert half(detect) < 0.02 <= half(detect - 1)             # excludes 0 at n, not at n - 1
    assert half(equivalent) < 0.01 <= half(equivalent - 1)     # inside ±0.03 needs a half-width below 0.01
    assert S.seeds_to_decide([-0.01, 0.0, 0.01], margin=0.03)[0] is None    # a mean of 0 is never detected
    assert S.seeds_to_decide([-0.01, -0.02, -0.03], margin=0.03) == (detect, equivalent)  # the sign does not matter
    assert S.seeds_to_decide(per_seed, margin=0.02)[1] is None             # a mean at the margin is never equivalent
    assert S.seeds_to_decide([0.0, 0.02], margin=0.012, most=5) == (None, None)  # beyond `most` seeds
    assert all(n > 5 for n in S.seeds_to_decide([0.0, 0.02], margin=0.012))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        S.seeds_to_decide([0.02], margin=0.01)


def test_welch_interval_matches_scipy_and_covers_unpaired_differences():
    """Two recipes' runs share no seed: the difference of their means, Welch's interval
    (scipy's unequal-variance t-test gives the same bounds), covering the truth in ≥ 93 %
    of 2,000 draws with unequal spreads and 5 against 3 runs; one run: no interval."""
    from scipy.stats import ttest_ind

    a, b = [0.875, 0.881, 0.869, 0.872, 0.878], [0.886, 0.890, 0.882]
    diff, low, high = S.welch_interval(a, b)
    expected = ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(np.mean(b) - np.mean(a)) and (low, high) == pytest.approx(tuple(expected))
    rng = np.random.default_rng(7)
    hits = [(lo <= 0.01 <= hi) for lo, hi in
            (S.welch_interval(rng.normal(0.87, 0.005, 5), rng.normal(0.88, 0.02, 3))[1:] for _ in range(2000))]
    assert np.mean(hits) >= 0.93
    assert np.isnan(S.welch_interval([0.8], b)[1])


def test_differences_carry_typed_configurations(per_image_rows):
    """A difference knows which two configurations it compares (no "sum/relu" string to
    parse back); star − sum under one activation is named by the fusions alone."""
    rows = per_image_rows({"none": 0.05, "relu": 0.0})
    same = S.paired_differences(rows, activations=["none"], metrics=["f1"], level=0.95)[0]
    assert (same.config_a, same.config_b) == (("sum", "none"), ("star", "none"))
    assert (same.a, same.b) == ("sum", "star")
    across = S.replacement_differences(rows, metrics=["f1"], level=0.95)[0]
    assert across.config_a == S.Config("sum", "relu") and str(across.config_b) == "star/none"
    assert (across.a, across.b, across.activation) == ("sum/relu", "star/none", "none vs relu")
    assert S.Config("star", "none").run_key(2024) == S.run_key("star", "none", 2024) == "star-none-seed2024"


def test_grid_pairs_compare_every_fusion_with_sum_and_the_relu_free_ones_with_sum_relu():
    two_by_two = {(f, a) for f in ("sum", "star") for a in ("none", "relu")}
    assert S.grid_pairs(two_by_two) == [(("sum", "none"), ("star", "none")), (("sum", "relu"), ("star", "relu")),
                                        (("sum", "relu"), ("star", "none"))]
    wide = two_by_two | {("star_bn", "none"), ("star_bn", "relu"), ("sum_star_bn", "none")}
    assert S.grid_pairs(wide)[3:] == [(("sum", "none"), ("star_bn", "none")), (("sum", "relu"), ("star_bn", "relu")),
                                      (("sum", "relu"), ("star_bn", "none")),
                                      (("sum", "none"), ("sum_star_bn", "none")),
                                      (("sum", "relu"), ("sum_star_bn", "none"))]


def test_a_run_key_parses_back_into_its_configuration_and_seed():
    key = S.run_key("sum_star_bn", "relu", 2031)
    assert key == "sum_star_bn-relu-seed2031" and S.parse_run_key(key) == (S.Config("sum_star_bn", "relu"), 2031)
