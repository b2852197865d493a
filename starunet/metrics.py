"""Segmentation metrics, pooled over the pixels inside the field of view.

The retinal-vessel literature reports seven numbers per method, computed over all
FOV pixels of all test images together (pooled, not averaged per image):

* threshold-free: ``roc_auc`` (area under the ROC curve) and ``pr_auc`` (average
  precision, scikit-learn's step-wise area under the precision-recall curve);
* at a threshold (0.5): ``f1``, ``acc``, ``se`` (sensitivity = recall), ``sp``
  (specificity) and ``pre`` (precision), from the confusion counts.

Vessels cover only ~10 % of the FOV, so accuracy and specificity look high for any
method; ``pr_auc``, ``f1`` and ``se`` are the informative ones.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

METRIC_NAMES: tuple[str, ...] = ("roc_auc", "pr_auc", "f1", "acc", "se", "sp", "pre")


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on a GPU or with grad
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_list(x, name: str) -> list[np.ndarray]:
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"{name} is an empty list; pass one array per image")
        return [_as_numpy(a) for a in x]
    return [_as_numpy(x)]


def _pool(prob, target, mask) -> tuple[np.ndarray, np.ndarray]:
    """Flatten and concatenate the pixels inside ``mask``: (prob float, target bool)."""
    probs, targets = _as_list(prob, "prob"), _as_list(target, "target")
    masks = [None] * len(probs) if mask is None else _as_list(mask, "mask")
    if not len(probs) == len(targets) == len(masks):
        raise ValueError(f"got {len(probs)} prob, {len(targets)} target and {len(masks)} mask arrays; "
                         "pass one of each per image")
    pooled_prob, pooled_target = [], []
    for k, (p, t, m) in enumerate(zip(probs, targets, masks)):
        where = f"image {k}: " if len(probs) > 1 else ""
        if p.shape != t.shape or (m is not None and m.shape != p.shape):
            shapes = f"prob {p.shape}, target {t.shape}" + ("" if m is None else f", mask {m.shape}")
            raise ValueError(f"{where}shapes differ ({shapes}); all three must have the same shape")
        if m is not None:
            if m.dtype != bool:
                if not np.isin(m, (0, 1)).all():
                    raise ValueError(f"{where}mask must be boolean (or 0/1)")
                m = m.astype(bool)
            p, t = p[m], t[m]
        else:
            p, t = p.ravel(), t.ravel()
        if t.dtype != bool:
            if not np.isin(t, (0, 1)).all():
                raise ValueError(f"{where}target must be binary (bool or 0/1); for 0/255 labels pass label > 0")
            t = t.astype(bool)
        if not np.issubdtype(p.dtype, np.number) and p.dtype != bool:
            raise ValueError(f"{where}prob must be numeric, got dtype {p.dtype}")
        p = p.astype(np.float32, copy=False)
        if p.size and not (np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0):
            raise ValueError(f"{where}prob must hold finite probabilities in [0, 1] "
                             "(apply a sigmoid to logits first)")
        pooled_prob.append(p)
        pooled_target.append(t)
    p, t = np.concatenate(pooled_prob), np.concatenate(pooled_target)
    if p.size == 0:
        raise ValueError("the mask selects no pixels; check that it is the field of view and not empty")
    return p, t


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    return float(threshold)


def confusion_counts(prob, target, mask=None, threshold: float = 0.5) -> dict[str, int]:
    """Pixel counts ``tp, fp, tn, fn`` inside ``mask``; a pixel is predicted a vessel
    when ``prob >= threshold``. Arguments as in :func:`segmentation_metrics`."""
    p, t = _pool(prob, target, mask)
    return _counts(p >= _check_threshold(threshold), t)


def _counts(pred: np.ndarray, t: np.ndarray) -> dict[str, int]:
    tp = int(np.count_nonzero(pred & t))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return {"tp": tp, "fp": fp, "tn": int(t.size) - tp - fp - fn, "fn": fn}


def rates_from_counts(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """``f1, acc, se, sp, pre`` from confusion counts (precision is 0 when nothing is
    predicted positive, scikit-learn's ``zero_division=0`` convention)."""
    return {
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "acc": (tp + tn) / (tp + fp + tn + fn),
        "se": tp / (tp + fn) if tp + fn else 0.0,
        "sp": tn / (tn + fp) if tn + fp else 0.0,
        "pre": tp / (tp + fp) if tp + fp else 0.0,
    }


def _roc_pr_auc(p: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """ROC-AUC and average precision from ONE sort of the scores.

    The same algorithm as scikit-learn's ``roc_auc_score`` / ``average_precision_score``
    (one operating point per distinct score, trapezoids for ROC, the step-wise sum
    ``sum_k (R_k - R_{k-1}) P_k`` for AP), which sort the ~3 M pooled pixels several
    times; the tests check agreement with scikit-learn to 1e-9.
    """
    order = np.argsort(p)[::-1]  # descending; ties are grouped below, so stability does not matter
    p_sorted, hits = p[order], np.cumsum(t[order], dtype=np.int64)
    last_of_score = np.r_[np.flatnonzero(np.diff(p_sorted)), p.size - 1]
    tps = hits[last_of_score].astype(np.float64)
    fps = last_of_score + 1 - tps
    n_pos, n_neg = tps[-1], fps[-1]
    tpr, fpr = np.r_[0.0, tps / n_pos], np.r_[0.0, fps / n_neg]
    roc_auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    precision = tps / (tps + fps)
    pr_auc = float(np.sum(np.diff(tpr) * precision))  # recall == tpr
    return roc_auc, pr_auc


def segmentation_metrics(prob, target, mask=None, threshold: float = 0.5) -> dict[str, float]:
    """The seven vessel-segmentation metrics (:data:`METRIC_NAMES`), pooled inside ``mask``.

    Args:
        prob: predicted vessel probabilities in [0, 1] -- one array (or torch tensor)
            or a list of them, one per image.
        target: ground truth of the same shape(s), bool or 0/1.
        mask: where to score (the FOV), bool, same shape(s); ``None`` scores every pixel.
        threshold: ``prob >= threshold`` counts as a vessel for f1/acc/se/sp/pre.

    All pixels inside the masks are pooled before scoring. ``roc_auc`` and ``pr_auc``
    (average precision) come from one sort of the pooled scores (:func:`_roc_pr_auc`;
    the tests check them against scikit-learn to 1e-9, ties included). Raises ``ValueError`` for shapes that
    differ, an empty mask, or pooled pixels that are all vessel or all background
    (the AUCs are undefined). Speed: 10 full STARE images (~3.1 M FOV pixels) take
    about 1-1.5 s on the project's 2-core CPU (``python -m starunet bench``).
    """
    threshold = _check_threshold(threshold)
    p, t = _pool(prob, target, mask)
    n_pos = int(np.count_nonzero(t))
    if n_pos == 0 or n_pos == t.size:
        which = "no vessel" if n_pos == 0 else "only vessel"
        raise ValueError(f"the scored pixels contain {which} pixels ({t.size} pixels); ROC-AUC and "
                         "PR-AUC are undefined -- score several images together or check the mask")
    roc_auc, pr_auc = _roc_pr_auc(p, t)
    metrics = {"roc_auc": roc_auc, "pr_auc": pr_auc}
    metrics.update(rates_from_counts(**_counts(p >= threshold, t)))
    return {name: float(metrics[name]) for name in METRIC_NAMES}


def f1_optimal_threshold(prob, target, mask=None) -> float:
    """The threshold ``t`` at which ``prob >= t`` has the highest F1, pooled over the
    pixels inside ``mask`` (arguments as :func:`segmentation_metrics`).

    Meant for the *validation* images: a threshold chosen there and applied to the
    test images separates a network's calibration (where its 0.5 lies) from what it
    has learned. Every distinct score is a candidate, so the result is exact; ties in
    F1 go to the highest threshold. Raises ``ValueError`` when the pooled pixels hold
    no vessel (F1 is then 0 at every threshold).
    """
    p, t = _pool(prob, target, mask)
    n_pos = int(np.count_nonzero(t))
    if n_pos == 0:
        raise ValueError(f"the scored pixels contain no vessel pixels ({t.size} pixels); "
                         "no threshold has a non-zero F1 -- use images that show vessels")
    order = np.argsort(-p, kind="stable")
    scores, hits = p[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # last pixel of each distinct score
    tp = np.cumsum(hits)[last]
    predicted = last + 1  # pixels with a score >= scores[last]
    f1 = 2 * tp / (predicted + n_pos)  # 2TP / (2TP + FP + FN)
    return float(scores[last[int(np.argmax(f1))]])


def human_baseline(records: Sequence, ids: Sequence[str] | None = None) -> dict[str, float]:
    """The second observer as a "model": annotator vk scored against ah inside the FOV.

    ``records`` are :class:`starunet.stare.StareRecord` s; ``ids`` defaults to the test
    ids of :func:`starunet.data.split_ids`. vk's labels are binary, so its ROC curve has
    a single operating point (``roc_auc = (se + sp) / 2``) -- compare models with it on
    f1/se/sp/pre, where it is the usual "human performance" reference.
    """
    from starunet.data import split_ids  # here, not at the top: metrics stays numpy-only (data needs torch)

    ids = split_ids().test if ids is None else tuple(ids)
    by_id = {r.id: r for r in records}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"records lack ids {missing}; load them with starunet.load_stare(ids=...)")
    chosen = [by_id[i] for i in ids]
    return segmentation_metrics([r.label_vk.astype(np.float32) for r in chosen],
                                [r.label for r in chosen], [r.fov for r in chosen])


MAX_CURVE_POINTS = 500


def downsample_curve(x: np.ndarray, y: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Keep at most ``max_points`` points of a curve, evenly spaced along its length.

    Spacing by arc length (not by index) keeps the shape where the curve bends and
    drops the millions of nearly collinear points sklearn returns; both ends stay.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) <= max_points:
        return x, y
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    targets = np.linspace(0.0, arc[-1], max_points - 1)  # + the last point <= max_points
    idx = np.unique(np.clip(np.searchsorted(arc, targets), 0, len(x) - 1))
    idx = np.unique(np.concatenate([[0], idx, [len(x) - 1]]))
    return x[idx], y[idx]


def roc_pr_curves(probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], fovs: Sequence[np.ndarray],
                  max_points: int = MAX_CURVE_POINTS) -> dict:
    """Pooled ROC and PR curves inside the FOV, down-sampled for storage.

    Returns ``{"roc": {"fpr": [...], "tpr": [...]}, "pr": {"recall": [...], "precision": [...]}}``
    with values rounded to 5 decimals (plenty for a figure, small in git).
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    score = np.concatenate([np.asarray(p)[np.asarray(m, bool)] for p, m in zip(probs, fovs)])
    truth = np.concatenate([np.asarray(t, bool)[np.asarray(m, bool)] for t, m in zip(labels, fovs)])
    fpr, tpr, _ = roc_curve(truth, score)
    precision, recall, _ = precision_recall_curve(truth, score)
    fpr, tpr = downsample_curve(fpr, tpr, max_points)
    recall, precision = downsample_curve(recall[::-1], precision[::-1], max_points)

    def r(a):
        return [round(float(v), 5) for v in a]

    return {"roc": {"fpr": r(fpr), "tpr": r(tpr)}, "pr": {"recall": r(recall), "precision": r(precision)}}
