"""Accuracy and mean average precision (numpy), in percent as the paper reports them."""
from __future__ import annotations

import numpy as np


def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    """(N, C) scores, (N,) int labels (or (N, C) multi-hot: top-1 among the labels) -> percent."""
    if len(scores) == 0:
        return float("nan")
    pred = scores.argmax(1)
    if labels.ndim == 2:
        hit = labels[np.arange(len(pred)), pred] > 0.5
    else:
        hit = pred == labels
    return 100.0 * float(hit.mean())


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of one class: mean precision at the rank of each positive (ties broken by order)."""
    order = np.argsort(-scores, kind="stable")
    t = targets[order] > 0.5
    if not t.any():
        return float("nan")
    hits = np.cumsum(t)
    precision = hits / np.arange(1, len(t) + 1)
    return float(precision[t].mean())


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """mAP over the classes that have at least one positive, in percent."""
    aps = [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    return 100.0 * float(np.mean(aps)) if aps else float("nan")


def video_metric(scores: np.ndarray, labels: np.ndarray, multi_label: bool) -> float:
    """The dataset's metric: mAP for multi-label data, top-1 accuracy otherwise (percent)."""
    if multi_label:
        return mean_average_precision(scores, labels)
    return top1(scores, labels)
