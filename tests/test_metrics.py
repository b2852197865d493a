"""Tests of starunet.metrics: hand-computed counts, agreement with scikit-learn,
masking, pooling over lists, clear errors, and the human baseline on real STARE."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from fakes import fake_records
from starunet.data import split_ids
from starunet.stare import StareRecord
from starunet.metrics import (METRIC_NAMES, confusion_counts, downsample_curve, f1_optimal_threshold, human_baseline,
                              rates_from_counts, roc_pr_curves, segmentation_metrics)


def random_case(n=5000, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    target = rng.random(n) < 0.15
    prob = np.clip(0.35 * target + 0.65 * rng.random(n), 0, 1).astype(np.float32)
    if ties:
        prob = np.round(prob, 1)  # many equal scores, as with quantised outputs
    return prob, target


def test_hand_computed_example():
    prob = np.array([[0.9, 0.2, 0.6], [0.4, 0.5, 0.1]])
    target = np.array([[1, 1, 0], [0, 1, 0]], bool)
    # predicted (>= 0.5): [[1,0,1],[0,1,0]] -> tp: (0,0),(1,1); fp: (0,2); fn: (0,1); tn: (1,0),(1,2)
    assert confusion_counts(prob, target) == {"tp": 2, "fp": 1, "tn": 2, "fn": 1}
    m = segmentation_metrics(prob, target)
    assert m["se"] == pytest.approx(2 / 3) and m["sp"] == pytest.approx(2 / 3)
    assert m["pre"] == pytest.approx(2 / 3) and m["acc"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 / 3)
    # ranks: positives 0.9, 0.5, 0.2 vs negatives 0.6, 0.4, 0.1 -> 6 of 9 pairs ordered correctly
    assert m["roc_auc"] == pytest.approx(6 / 9)
    # AP = mean precision at the rank of each positive (ranks 1, 3, 5 by score): 1/1, 2/3, 3/5
    assert m["pr_auc"] == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3 + 1 / 3 * 3 / 5)
    assert tuple(m) == METRIC_NAMES


@pytest.mark.parametrize("seed", range(3))
def test_confusion_counts_match_a_plain_loop(seed):
    prob, target = random_case(2000, seed)
    mask = np.random.default_rng(seed + 10).random(2000) < 0.7
    counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for p, t, m in zip(prob, target, mask):
        if m:
            key = ("t" if (p >= 0.3) == t else "f") + ("p" if p >= 0.3 else "n")
            counts[key] += 1
    assert confusion_counts(prob, target, mask, threshold=0.3) == counts


@pytest.mark.parametrize("ties", [False, True])
def test_agreement_with_scikit_learn(ties):
    prob, target = random_case(20000, seed=3, ties=ties)
    m = segmentation_metrics(prob, target)
    pred = prob >= 0.5
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(target, prob), abs=1e-9)
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(target, prob), abs=1e-9)
    assert m["f1"] == pytest.approx(skm.f1_score(target, pred), abs=1e-12)
    assert m["acc"] == pytest.approx(skm.accuracy_score(target, pred), abs=1e-12)
    assert m["se"] == pytest.approx(skm.recall_score(target, pred), abs=1e-12)
    assert m["sp"] == pytest.approx(skm.recall_score(~target, ~pred), abs=1e-12)
    assert m["pre"] == pytest.approx(skm.precision_score(target, pred), abs=1e-12)


def test_pixels_outside_the_mask_are_ignored():
    prob, target = random_case(4000, seed=4)
    mask = np.zeros(4000, bool)
    mask[:3000] = True
    reference = segmentation_metrics(prob, target, mask)
    rng = np.random.default_rng(5)
    garbage_prob, garbage_target = prob.copy(), target.copy()
    garbage_prob[3000:] = rng.random(1000)
    garbage_target[3000:] = rng.random(1000) < 0.5
    assert segmentation_metrics(garbage_prob, garbage_target, mask) == reference
    assert segmentation_metrics(prob[:3000], target[:3000]) == reference


def test_list_input_pools_like_the_concatenation():
    parts = [random_case(n, seed) for n, seed in ((300, 1), (500, 2), (200, 3))]
    masks = [np.random.default_rng(k).random(len(p)) < 0.8 for k, (p, _) in enumerate(parts)]
    pooled = segmentation_metrics([p.reshape(-1, 10) for p, _ in parts], [t.reshape(-1, 10) for _, t in parts],
                                  [m.reshape(-1, 10) for m in masks])
    concatenated = segmentation_metrics(np.concatenate([p for p, _ in parts]),
                                        np.concatenate([t for _, t in parts]), np.concatenate(masks))
    assert pooled == pytest.approx(concatenated, abs=1e-12)


def test_torch_tensors_and_integer_targets_are_accepted():
    prob, target = random_case(1000, seed=6)
    expected = segmentation_metrics(prob, target)
    tensor = torch.from_numpy(prob).requires_grad_(True)
    assert segmentation_metrics(tensor, torch.from_numpy(target.astype(np.int64))) == expected


def test_rates_from_counts_zero_division():
    assert rates_from_counts(tp=0, fp=0, tn=5, fn=3)["pre"] == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(prob=np.zeros((2, 3)), target=np.zeros((3, 2))), r"shapes differ \(prob \(2, 3\), target \(3, 2\)\)"),
    (dict(prob=[np.zeros(3), np.zeros(4)], target=[np.zeros(3), np.zeros(3)]), r"image 1: shapes differ"),
    (dict(prob=[np.zeros(3)], target=[np.zeros(3), np.zeros(3)]), "got 1 prob, 2 target"),
    (dict(prob=np.full(4, 0.5), target=np.array([0, 1, 0, 1]), mask=np.zeros(4, bool)), "mask selects no pixels"),
    (dict(prob=np.full(4, 0.5), target=np.zeros(4)), "no vessel pixels"),
    (dict(prob=np.full(4, 0.5), target=np.array([0, 1, 0, 1]), mask=np.array([0, 1, 0, 1], bool)), "only vessel"),
    (dict(prob=np.array([0.1, 2.0]), target=np.array([0, 1])), r"probabilities in \[0, 1\].*sigmoid"),
    (dict(prob=np.array([0.1, np.nan]), target=np.array([0, 1])), "finite probabilities"),
    (dict(prob=np.array([0.1, 0.9]), target=np.array([0, 255])), "label > 0"),
    (dict(prob=np.array([0.1, 0.9]), target=np.array([0, 1]), threshold=1.5), "threshold must be in"),
    (dict(prob=[], target=[]), "empty list"),
])
def test_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        segmentation_metrics(**kwargs)


@pytest.mark.parametrize("ties", [False, True])
def test_f1_optimal_threshold_beats_every_other_threshold(ties):
    prob, target = random_case(n=3000, seed=3, ties=ties)
    best = f1_optimal_threshold(prob, target)
    best_f1 = segmentation_metrics(prob, target, threshold=best)["f1"]
    # brute force over every distinct score (and the conventional 0.5)
    for t in [*np.unique(prob), 0.5]:
        assert segmentation_metrics(prob, target, threshold=float(t))["f1"] <= best_f1 + 1e-12
    assert best in set(np.unique(prob).tolist())


def test_f1_optimal_threshold_pools_inside_the_mask_and_refuses_no_vessels():
    prob = np.array([[0.9, 0.8], [0.2, 0.1]], dtype=np.float32)
    target = np.array([[1, 0], [1, 0]], dtype=bool)
    # scored alone, the pixel at 0.8 is background: the best cut keeps only 0.9 (F1 2/3)
    # unless the 0.2 vessel is also kept (F1 2*2/(3+2) = 0.8 at t = 0.2)
    assert f1_optimal_threshold(prob, target) == pytest.approx(0.2)
    mask = np.array([[1, 1], [0, 1]], dtype=bool)  # drop the 0.2 vessel: keep 0.9 only
    assert f1_optimal_threshold(prob, target, mask) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="no vessel pixels"):
        f1_optimal_threshold(prob, np.zeros_like(target))
    # equal F1 at 0.9 (TP 1, FP 0, FN 1) and at 0.6 (TP 2, FP 2): the higher threshold wins
    assert f1_optimal_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 0, 1], bool)) == pytest.approx(0.9)


def test_human_baseline_scores_vk_against_ah_inside_the_fov():
    rng = np.random.default_rng(7)
    records = []
    for k, stare_id in enumerate(("im0001", "im0002", "im0003")):
        label = rng.random((20, 30)) < 0.2
        records.append(StareRecord(id=stare_id, image=np.zeros((20, 30, 3), np.uint8), label=label,
                                   label_vk=label ^ (rng.random((20, 30)) < 0.05), fov=rng.random((20, 30)) < 0.8))
    chosen = records[1:]
    expected = segmentation_metrics([r.label_vk.astype(float) for r in chosen], [r.label for r in chosen],
                                    [r.fov for r in chosen])
    assert human_baseline(records, ids=["im0002", "im0003"]) == expected
    with pytest.raises(ValueError, match=r"records lack ids \['im0162'"):
        human_baseline(records)  # default ids = the test split


def test_real_human_baseline(stare_records):
    m = human_baseline(stare_records)
    # binary predictions have a single ROC operating point: AUC = (se + sp) / 2
    assert m["roc_auc"] == pytest.approx((m["se"] + m["sp"]) / 2, abs=1e-12)
    test = [r for r in stare_records if r.id in split_ids().test]
    counts = confusion_counts([r.label_vk.astype(float) for r in test], [r.label for r in test],
                              [r.fov for r in test])
    assert sum(counts.values()) == sum(int(r.fov.sum()) for r in test)
    assert m == pytest.approx({**rates_from_counts(**counts), "roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"]})


def test_downsample_curve_keeps_the_ends_and_the_limit():
    x = np.linspace(0, 1, 10_000)
    y = np.sqrt(x)
    xs, ys = downsample_curve(x, y, max_points=50)
    assert len(xs) <= 50
    assert (xs[0], ys[0], xs[-1], ys[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(xs) > 0)  # order kept
    short_x, _ = downsample_curve(x[:20], y[:20], max_points=50)
    assert len(short_x) == 20  # short curves are left alone


def test_roc_pr_curves_are_small_and_well_formed():
    records = fake_records(n=2, shape=(80, 80))
    rng = np.random.default_rng(3)
    probs = [np.clip(r.label * 0.3 + rng.random(r.label.shape) * 0.7, 0, 1) for r in records]
    curves = roc_pr_curves(probs, [r.label for r in records], [r.fov for r in records], max_points=100)
    roc, pr = curves["roc"], curves["pr"]
    assert len(roc["fpr"]) <= 100 and len(pr["recall"]) <= 100
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(pr["recall"]) >= 0)
    json.dumps(curves)  # storable as is
