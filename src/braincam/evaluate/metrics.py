"""Classification metrics with 95% bootstrap intervals and calibration error.

``compute_metrics`` returns the dict ``M`` stored in ``metrics.json``::

    {"n", "accuracy", "balanced_accuracy", "auc", "ece",
     "per_class": {class: {"precision", "recall", "f1", "support"}},
     "confusion_matrix": [[...]],          # rows = true class, columns = predicted
     "ci": {"accuracy": [lo, hi], "balanced_accuracy": [lo, hi], "auc": [lo, hi]},
     "n_groups", "ci_groups": {...}}       # only where the images' groups are given

Undefined numbers are ``null`` (e.g. AUC of a one-class dataset).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

ECE_BINS = 15
CI_LEVEL = 0.95
BOOT_CHUNK = 4_000_000  # probabilities per bootstrap batch (32 MB of float64)
MIN_GROUPS = 10  # fewer groups give no group interval: resamples repeat the same few sets


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    prob: np.ndarray,
    classes: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    groups: Sequence[int] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics of predicted class probabilities ``prob`` (N, K) against class indices ``y_true``.

    - accuracy; balanced accuracy = mean recall over the classes present in ``y_true``
      (sklearn's definition; for a one-class dataset it is that class's recall);
    - AUC: binary, ROC AUC of ``prob[:, 1]`` for class 1; multiclass, one-vs-rest macro
      average over the classes present (sklearn's ``multi_class="ovr"``); null when fewer
      than two classes are present;
    - ECE: see :func:`expected_calibration_error`;
    - ci: 95% percentile bootstrap over images (``n_boot`` resamples, ``seed``); resamples
      where a number is undefined are left out of its interval;
    - ci_groups, with ``groups`` (a group id per image: copies of one image, slices of one
      patient): the same bootstrap over the ``n_groups`` groups, each drawn with all its
      images (null bounds under :data:`MIN_GROUPS` groups). Images of one group are not
      independent evidence, so this interval is the wider, honest one where groups hold
      several images.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y = np.asarray(y_true, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    k = len(classes)
    if prob.ndim != 2 or prob.shape != (len(y), k):
        raise ValueError(f"prob must be (N, {k}) for N={len(y)} labels, got {prob.shape}")
    if len(y) == 0:
        raise ValueError("no samples to score")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must be class indices in [0, {k})")
    pred = prob.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=range(k), zero_division=np.nan
    )
    f1[np.isnan(precision) | np.isnan(recall)] = np.nan  # the mean of an undefined number
    rows = np.arange(len(y))[None, :]
    metrics = {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": _nan_to_none(balanced_accuracy_rows(y[rows], pred[rows], k)[0]),
        "auc": _nan_to_none(auc_rows(y[rows], prob[rows])[0]),
        "per_class": {
            name: {
                "precision": _nan_to_none(precision[i]),  # null: no prediction of the class
                "recall": _nan_to_none(recall[i]),  # null: no image of the class
                "f1": _nan_to_none(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y, pred, labels=range(k)).tolist(),
        "ece": expected_calibration_error(y, prob),
        "ci": bootstrap_ci(y, prob, n_boot=n_boot, seed=seed),
    }
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise ValueError(f"groups must be one id per image ({len(y)}), got {groups.shape}")
        metrics["n_groups"] = int(len(np.unique(groups)))
        metrics["ci_groups"] = (
            bootstrap_ci(y, prob, n_boot=n_boot, seed=seed, groups=groups)
            if metrics["n_groups"] >= MIN_GROUPS else bootstrap_ci(y, prob, n_boot=0))
    return metrics


def bootstrap_ci(
    y: np.ndarray, prob: np.ndarray, n_boot: int = 1000, seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, list[float] | None]:
    """95% percentile intervals of accuracy, balanced accuracy and AUC over ``n_boot``
    resamples of the images with replacement (all resamples computed at once, vectorised),
    or, with ``groups``, of the groups (:func:`group_rows`: one resample at a time, since
    their sizes differ)."""
    names = ("accuracy", "balanced_accuracy", "auc")
    if n_boot <= 0:
        return dict.fromkeys(names)
    rng = np.random.default_rng(seed)
    pred = prob.argmax(1)
    if groups is None:
        idx = rng.integers(0, len(y), size=(n_boot, len(y)))
        chunk = max(1, BOOT_CHUNK // prob.size)  # bounds the (rows, n, K) copies' memory
        batches = np.array_split(idx, range(chunk, n_boot, chunk))
    else:
        batches = [row[None] for row in group_rows(groups, n_boot, rng)]
    parts = [((pred[rows] == y[rows]).mean(1),
              balanced_accuracy_rows(y[rows], pred[rows], prob.shape[1]),
              auc_rows(y[rows], prob[rows])) for rows in batches]
    values = {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}
    tail = (1 - CI_LEVEL) / 2 * 100
    out: dict[str, list[float] | None] = {}
    for name in names:
        finite = values[name][np.isfinite(values[name])]
        out[name] = (
            [float(v) for v in np.percentile(finite, [tail, 100 - tail])] if finite.size else None
        )
    return out


def group_rows(groups: np.ndarray, n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Image indices of ``n_boot`` cluster-bootstrap resamples: each draws as many groups as
    there are, with replacement, and takes every image of each drawn group."""
    _, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    members = np.argsort(inverse, kind="stable")  # the images of group g: one run of it
    starts = np.cumsum(sizes) - sizes
    rows = []
    for drawn in rng.integers(0, len(sizes), size=(n_boot, len(sizes))):
        lengths = sizes[drawn]
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows.append(members[np.repeat(starts[drawn], lengths) + within])
    return rows


def balanced_accuracy_rows(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Balanced accuracy of each row of ``y``/``pred`` (B, n): the mean over classes present
    in the row of ``correct_c / count_c``."""
    b = y.shape[0]
    offset = (np.arange(b) * k)[:, None]
    count = np.bincount((y + offset).ravel(), minlength=b * k).reshape(b, k)
    hits = np.bincount((y + offset).ravel(), weights=(y == pred).ravel(), minlength=b * k)
    present = count > 0
    recall = np.where(present, hits.reshape(b, k) / np.maximum(count, 1), 0.0)
    return recall.sum(1) / present.sum(1)


def auc_rows(y: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """ROC AUC per row: ``y`` (B, n) class indices, ``prob`` (B, n, K).

    Binary (K = 2): AUC of ``prob[..., 1]``. Multiclass: the mean over classes with both
    positives and negatives in the row of the one-vs-rest AUC of ``prob[..., c]``. NaN when
    no class qualifies.
    """
    k = prob.shape[-1]
    classes = [1] if k == 2 else range(k)
    aucs = np.stack([_binary_auc_rows(y == c, prob[..., c]) for c in classes])
    with np.errstate(invalid="ignore"):
        counted = np.isfinite(aucs).sum(0)
        return np.where(counted > 0, np.nansum(aucs, 0) / np.maximum(counted, 1), np.nan)


def _binary_auc_rows(positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mann-Whitney form of the ROC AUC, row-wise:
    ``(sum of positive ranks - P (P + 1) / 2) / (P N)`` with average ranks for ties
    (a tie counts one half, as in sklearn's ``roc_auc_score``). NaN when P or N is 0."""
    ranks = rankdata(score, axis=-1)
    n_pos = positive.sum(-1)
    n_neg = positive.shape[-1] - n_pos
    rank_sum = (ranks * positive).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE (Guo et al. 2017): confidences ``max_k p_k`` fall into ``bins``
    equal-width bins ``(i/bins, (i+1)/bins]``; ``ECE = sum_b |B|/n * |acc(B) - conf(B)|``."""
    y = np.asarray(y)
    prob = np.asarray(prob, dtype=np.float64)
    conf = prob.max(1)
    correct = (prob.argmax(1) == y).astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.bincount(which, weights=correct - conf, minlength=bins)  # |B| (acc - conf) per bin
    return float(np.abs(gap).sum() / len(y))


def _nan_to_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
