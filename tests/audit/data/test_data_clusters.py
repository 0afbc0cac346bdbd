"""Acquisition clusters: k by silhouette, crosstab and Cramer's V."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from braincam.audit.data.clusters import cramers_v, find_clusters
from braincam.audit.data.properties import ImageProperties


def _props(means: np.ndarray, rng: np.random.Generator) -> ImageProperties:
    """Images whose statistics all move with the scanner's mean brightness, plus noise."""
    n = len(means)
    table = pd.DataFrame({
        "mean": means, "std": means / 2 + rng.normal(0, 0.01, n), "p1": np.zeros(n),
        "p50": means + rng.normal(0, 0.01, n), "p99": means + 0.3, "bg_mean": np.zeros(n),
        "bg_std": np.zeros(n), "sharpness": means / 100 + rng.uniform(0, 1e-4, n),
    })
    centres = (np.arange(32) + 0.5) / 32
    hist = np.exp(-0.5 * ((centres[None] - means[:, None]) / 0.1) ** 2)  # a bump at the mean
    hist = hist / hist.sum(1, keepdims=True) + np.abs(rng.normal(0, 0.002, (n, 32)))
    return ImageProperties([], table, {"hist": hist}, [], np.zeros(n, np.uint64), [])


def test_two_scanners_that_follow_labels():
    rng = np.random.default_rng(0)
    means = np.r_[rng.normal(0.2, 0.01, 40), rng.normal(0.5, 0.01, 40)]
    labels = ["no_tumor"] * 40 + ["tumor"] * 40
    sources = ["a"] * 40 + ["b"] * 40
    out = find_clusters(_props(means, rng), labels, sources)
    assert out["k"] == 2 and out["silhouette"] > 0.5
    assert out["cramers_v"] == pytest.approx(1.0) and out["cramers_v_source"] == pytest.approx(1.0)
    assert sorted(sum(row.values()) for row in out["crosstab"].values()) == [40, 40]
    assert set(out["silhouette_by_k"]) == {str(k) for k in range(2, 9)}


def test_clusters_independent_of_labels():
    rng = np.random.default_rng(1)
    means = np.r_[rng.normal(0.2, 0.01, 40), rng.normal(0.5, 0.01, 40)]
    labels = ["no_tumor", "tumor"] * 40  # each scanner holds both classes equally
    out = find_clusters(_props(means, rng), labels, ["a"] * 80)
    assert out["cramers_v"] < 0.1 and out["cramers_v_source"] is None


def test_cramers_v_values():
    assert cramers_v(np.array([[10, 0], [0, 10]])) == pytest.approx(1.0)
    assert cramers_v(np.array([[5, 5], [5, 5]])) == pytest.approx(0.0)
    assert cramers_v(np.array([[5, 5]])) is None
