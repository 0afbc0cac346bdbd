"""How well a single image property tells the classes apart.

For each numeric property: per-class summaries (mean, std, p5, p50, p95) and two separation
numbers between a class and the rest, both on the images where the property is defined:

- ``ks``: two-sample Kolmogorov-Smirnov statistic (``scipy.stats.ks_2samp``, largest gap
  between the two empirical CDFs) and its ``p_value``;
- ``auc``: ROC AUC of the property alone as a score, oriented so that 0.5 is chance and 1 is
  perfect whichever side is higher: ``max(A, 1 - A)``; ``higher_in`` names the class with the
  larger values.

Binary: the class is the positive class (index 1). Multiclass: one-vs-rest for every class and
the class with the largest AUC is reported (``class``, ``versus`` "rest"), with its KS and
p-value.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score


def separation(
    table: pd.DataFrame, labels: Sequence[str], classes: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """``{property: {"auc", "ks", "p_value", "class", "versus", "higher_in", "per_class"}}``
    for every numeric column of ``table``; categorical columns get
    ``{"per_class": {class: {value: n}}}``."""
    labels = np.asarray(labels)
    out: dict[str, dict[str, Any]] = {}
    for name in table.columns:
        column = table[name]
        if not pd.api.types.is_numeric_dtype(column):
            out[name] = {"per_class": {
                c: {str(k): int(v) for k, v in column[labels == c].value_counts().items()}
                for c in classes}}
            continue
        out[name] = _numeric(column.to_numpy(dtype=np.float64), labels, classes)
    return out


def _numeric(values: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    defined = np.isfinite(values)
    per_class = {c: _summary(values[defined & (labels == c)]) for c in classes}
    targets = [classes[1]] if len(classes) == 2 else list(classes)
    best: dict[str, Any] = {"auc": None, "ks": None, "p_value": None, "class": None,
                            "versus": None, "higher_in": None}
    x, y = values[defined], labels[defined]
    for target in targets:
        inside = y == target
        if inside.all() or not inside.any():
            continue
        auc = float(roc_auc_score(inside, x))
        with warnings.catch_warnings():  # small samples: scipy's notice of its method
            warnings.simplefilter("ignore", RuntimeWarning)
            ks = ks_2samp(x[inside], x[~inside])
        if best["auc"] is None or max(auc, 1 - auc) > best["auc"]:
            versus = _other(target, classes)
            best = {"auc": max(auc, 1 - auc), "ks": float(ks.statistic),
                    "p_value": float(ks.pvalue), "class": target, "versus": versus,
                    "higher_in": target if auc >= 0.5 else versus}
    return best | {"per_class": per_class}


def _other(target: str, classes: Sequence[str]) -> str:
    """The class on the other side of ``target`` vs rest: the other class, or "rest"."""
    rest = [c for c in classes if c != target]
    return rest[0] if len(rest) == 1 else "rest"


def _summary(values: np.ndarray) -> dict[str, float | int | None]:
    if values.size == 0:
        return {"n": 0, "mean": None, "std": None, "p5": None, "p50": None, "p95": None}
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {"n": int(values.size), "mean": float(values.mean()), "std": float(values.std()),
            "p5": float(p5), "p50": float(p50), "p95": float(p95)}
