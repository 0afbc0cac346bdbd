"""Grouped cross-validation of the radiomics baseline."""

from __future__ import annotations

import numpy as np
import pytest

from braincam.radiomics import cross_validate, grouped_folds
from braincam.radiomics.baseline import L1_GRID


def test_a_group_never_spans_two_folds():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, size=300)
    y = rng.integers(0, 3, size=300)
    fold = grouped_folds(y, groups, k=5, seed=0)

    assert set(fold) == set(range(5))
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1


@pytest.mark.parametrize("model", ["logistic-l1", "gradient-boosting"])
def test_informative_features_score_high_and_noise_near_chance(model):
    rng = np.random.default_rng(0)
    n = 180
    y = np.repeat(np.arange(3), n // 3)
    groups = np.arange(n) // 3  # groups of three images of one class
    noise = rng.normal(size=(n, 6))
    signal = noise.copy()
    signal[:, 0] += 5 * y  # one feature carries the class
    names = [f"f{i}" for i in range(6)]
    classes = ["glioma", "meningioma", "pituitary"]

    good = cross_validate(signal, y, groups, classes, names, model, folds=3, n_boot=0)
    blind = cross_validate(noise, y, groups, classes, names, model, folds=3, n_boot=0)

    assert good.metrics["accuracy"] > 0.9
    assert blind.metrics["accuracy"] < 0.55
    assert np.allclose(good.prob.sum(1), 1)
    if model == "logistic-l1":
        assert good.top_features[0][0] == "f0"
        assert len(good.chosen_c) == 3 and set(good.chosen_c) <= set(L1_GRID)
