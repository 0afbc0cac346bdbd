"""Acquisition-source proxy: do images fall into intensity/texture clusters that follow labels?

Features: intensity mean, std, p1, p50, p99, background mean/std and log sharpness, each
standardised, plus the 32-bin histogram centred and scaled as one block so that its total
variance equals the number of scalar features (histogram shape and summary statistics weigh the
same; standardising every bin would let nearly empty, noisy bins dominate).

KMeans for k = 2..``MAX_K`` (``n_init=4``, fixed seed); k is the one with the best silhouette
score (on at most ``SILHOUETTE_SAMPLE`` images). The cluster x label crosstab is summarised by
Cramer's V = sqrt(chi2 / (n * (min(r, c) - 1))) (0: clusters ignore the label, 1: each cluster
holds one label); the same against the source folder when there are several sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats.contingency import association

from braincam.audit.data.properties import ImageProperties

MAX_K = 8
SILHOUETTE_SAMPLE = 1000
SEED = 0


def cluster_features(props: ImageProperties) -> np.ndarray:
    """(N, 8 + 32) clustering features, weighted as in the module docstring."""
    t = props.table
    scalars = t[["mean", "std", "p1", "p50", "p99", "bg_mean", "bg_std"]].to_numpy(np.float64)
    scalars = np.column_stack([scalars, np.log1p(t["sharpness"].to_numpy(np.float64))])
    scalars = (scalars - scalars.mean(0)) / np.where(scalars.std(0) > 0, scalars.std(0), 1.0)
    hist = props.vectors["hist"].astype(np.float64)
    hist = hist - hist.mean(0)
    total = np.sqrt((hist**2).sum(1).mean())
    hist = hist * (np.sqrt(scalars.shape[1]) / total if total > 0 else 0.0)
    return np.column_stack([scalars, hist])


def find_clusters(
    props: ImageProperties, labels: Sequence[str], sources: Sequence[str]
) -> dict[str, Any]:
    """``{"k", "silhouette", "silhouette_by_k", "crosstab", "cramers_v", "cramers_v_source"}``;
    ``k`` 1 and no V when there are too few distinct images to cluster."""
    from threadpoolctl import threadpool_limits

    x = cluster_features(props)
    n_distinct = len(np.unique(np.round(x, 6), axis=0))
    ks = [k for k in range(2, MAX_K + 1) if k < n_distinct]
    if not ks:
        return {"k": 1, "silhouette": None, "silhouette_by_k": {}, "crosstab": {},
                "cramers_v": None, "cramers_v_source": None}
    with threadpool_limits(1):  # one thread: see braincam.audit.data.probes.run_probes
        fits = {k: _fit(x, k) for k in ks}
    k = max(fits, key=lambda kk: fits[kk][0])
    assign = fits[k][1]
    table = pd.crosstab(assign, np.asarray(labels))
    return {
        "k": k,
        "silhouette": fits[k][0],
        "silhouette_by_k": {str(kk): fits[kk][0] for kk in ks},
        "crosstab": {f"cluster {c}": {str(lab): int(n) for lab, n in row.items()}
                     for c, row in table.iterrows()},
        "cramers_v": cramers_v(table.to_numpy()),
        "cramers_v_source": cramers_v(pd.crosstab(assign, np.asarray(sources)).to_numpy())
        if len(set(sources)) > 1 else None,
    }


def _fit(x: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """(silhouette, cluster per row) of KMeans with ``k`` clusters."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    assign = KMeans(n_clusters=k, n_init=4, random_state=SEED).fit_predict(x)
    sample = min(len(x), SILHOUETTE_SAMPLE)
    return float(silhouette_score(x, assign, sample_size=sample, random_state=SEED)), assign


def cramers_v(table: np.ndarray) -> float | None:
    """Cramer's V of a contingency table (None when it has a single row or column)."""
    if min(table.shape) < 2:
        return None
    return float(association(table, method="cramer"))
