"""Tests of starunet.stats: summaries over seeds, paired differences, bootstrap, verdicts."""
from __future__ import annotations

import numpy as np
import pytest

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


def test_paired_bootstrap_tells_better_worse_and_noise(per_image_rows):
    rows = per_image_rows({"none": 0.05, "relu": 0.0})
    diffs = S.paired_differences(rows, metrics=["f1"])
    by_act = {d.activation: d for d in diffs}
    assert by_act["none"].verdict == "star better" and by_act["none"].low > 0
    assert by_act["relu"].verdict == "within noise" and by_act["relu"].low < 0 < by_act["relu"].high
    assert by_act["none"].mean == pytest.approx(0.05, abs=0.01)
    worse = S.paired_differences(per_image_rows({"none": -0.05}), metrics=["f1"])[0]
    assert worse.verdict == "star worse"
    again = S.paired_differences(rows, metrics=["f1"])
    assert again == diffs  # seeded bootstrap: deterministic


def test_paired_bootstrap_interval_contains_the_mean():
    d = np.random.default_rng(0).normal(0.01, 0.02, size=(3, 10))
    mean, low, high = S.paired_bootstrap(d, n_boot=2000)
    assert mean == pytest.approx(d.mean()) and low < mean < high


def test_only_paired_seeds_are_compared(per_image_rows):
    rows = per_image_rows({"none": 0.0})
    partial = [r for r in rows if not (r["fusion"] == "star" and r["seed"] == 2)]  # an interrupted grid
    assert S.paired_differences(partial, metrics=["f1"])[0].n_seeds == 2
    with pytest.raises(ValueError, match="run the full grid"):
        S.paired_differences([r for r in rows if r["fusion"] == "sum"], metrics=["f1"])


def test_verdict_sentence_reports_cis_and_overall_verdict(per_image_rows):
    diffs = S.paired_differences(per_image_rows({"none": 0.05, "relu": 0.0}))
    sentence = S.verdict_sentence(diffs, "none")
    assert sentence.startswith("Without ReLU (3 seed(s) x 10 test images), star − sum: ROC-AUC +0.05")
    assert "95% CI" in sentence and sentence.endswith("Verdict: star beats sum beyond run-to-run noise.")
    assert S.verdict_sentence(diffs, "relu").endswith("within run-to-run noise.")


def test_one_seed_verdict_does_not_claim_run_to_run_noise(per_image_rows):
    diffs = S.paired_differences(per_image_rows({"none": 0.05, "relu": 0.0}, n_seeds=1))
    sentence = S.verdict_sentence(diffs, "none")
    assert sentence.endswith("Verdict: star beats sum beyond test-image sampling noise "
                             "(one seed: run-to-run noise not measured).")
    assert "run-to-run noise not measured" in S.verdict_sentence(diffs, "relu")
    assert "within test-image sampling noise" in S.verdict_sentence(diffs, "relu")


def test_differences_carry_typed_configurations(per_image_rows):
    """A difference knows which two configurations it compares (no "sum/relu" string to
    parse back); star − sum under one activation is named by the fusions alone."""
    rows = per_image_rows({"none": 0.05, "relu": 0.0})
    same = S.paired_differences(rows, activations=["none"], metrics=["f1"], n_boot=50)[0]
    assert (same.config_a, same.config_b) == (("sum", "none"), ("star", "none"))
    assert (same.a, same.b) == ("sum", "star")
    across = S.replacement_differences(rows, metrics=["f1"], n_boot=50)[0]
    assert across.config_a == S.Config("sum", "relu") and str(across.config_b) == "star/none"
    assert (across.a, across.b, across.activation) == ("sum/relu", "star/none", "none vs relu")
    assert S.Config("star", "none").run_key(2024) == S.run_key("star", "none", 2024) == "star-none-seed2024"
