"""Tests of starunet.evaluate: the metrics of one run on whole images."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import starunet.data as D
import starunet.evaluate as E
from fakes import fake_records
from starunet.data import image_to_tensor
from starunet.metrics import METRIC_NAMES
from starunet.model import UNet
from starunet.training import ValidationImage, validate


def test_pooled_metrics_match_hand_counts_and_sklearn():
    records = fake_records(n=3)
    rng = np.random.default_rng(1)
    probs = {r.id: rng.random(r.label.shape).astype(np.float32) for r in records}
    ev = E.evaluate_probabilities(probs, records)

    p = np.concatenate([probs[r.id][r.fov] for r in records])
    t = np.concatenate([r.label[r.fov] for r in records])
    pred = p >= 0.5
    tp, fp = np.sum(pred & t), np.sum(pred & ~t)
    fn, tn = np.sum(~pred & t), np.sum(~pred & ~t)
    expected = {"se": tp / (tp + fn), "sp": tn / (tn + fp), "pre": tp / (tp + fp),
                "acc": (tp + tn) / t.size, "f1": 2 * tp / (2 * tp + fp + fn),
                "roc_auc": roc_auc_score(t, p), "pr_auc": average_precision_score(t, p)}
    for m in METRIC_NAMES:
        assert ev.pooled[m] == pytest.approx(expected[m], abs=1e-9), m

    r0 = records[0]
    assert ev.per_image[r0.id]["roc_auc"] == pytest.approx(roc_auc_score(r0.label[r0.fov], probs[r0.id][r0.fov]))
    mean, std = ev.per_image_mean_std()["f1"]
    values = [ev.per_image[r.id]["f1"] for r in records]
    assert (mean, std) == pytest.approx((np.mean(values), np.std(values)))


def test_pixels_outside_the_fov_are_ignored():
    records = fake_records(n=2)
    rng = np.random.default_rng(2)
    probs = {r.id: rng.random(r.label.shape).astype(np.float32) for r in records}
    before = E.evaluate_probabilities(probs, records)
    changed_records, changed_probs = [], {}
    for r in records:  # flip everything outside the FOV, labels and predictions alike
        label = np.where(r.fov, r.label, ~r.label)
        changed_records.append(SimpleNamespace(id=r.id, image=r.image, label=label, fov=r.fov))
        changed_probs[r.id] = np.where(r.fov, probs[r.id], 1 - probs[r.id])
    after = E.evaluate_probabilities(changed_probs, changed_records)
    assert after.pooled == before.pooled
    assert after.per_image == before.per_image
    assert after.curves == before.curves


def test_evaluate_probabilities_rejects_missing_and_misshapen_maps():
    records = fake_records(n=2)
    with pytest.raises(ValueError, match="no probability map"):
        E.evaluate_probabilities({records[0].id: np.zeros(records[0].label.shape)}, records)
    bad = {r.id: np.zeros((8, 8)) for r in records}
    with pytest.raises(ValueError, match="whole image"):
        E.evaluate_probabilities(bad, records)


def test_select_records_names_unknown_ids():
    with pytest.raises(ValueError, match="im9999"):
        D.select_records(fake_records(n=2), ["im9999"])


def test_validation_and_test_scoring_give_the_same_metrics_on_the_same_image():
    """Validation during training (train.validate) and the test evaluation go through
    the same inference path, so on the same images they report the same metrics."""
    torch.manual_seed(0)
    model = UNet(fusion="star", activation=None, narrow=0.125)
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 48, 64))  # non-trivial BatchNorm running statistics
    records = fake_records(n=2, shape=(48, 64))
    val = validate(model, [ValidationImage(r.id, image_to_tensor(r.image), r.label, r.fov) for r in records])
    test = E.evaluate_model(model, records, batch_size=1).pooled
    assert set(METRIC_NAMES) <= set(val)
    for m in METRIC_NAMES:
        assert val[m] == pytest.approx(test[m], abs=1e-6), m
