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


def test_the_l1_strength_is_chosen_without_the_held_out_fold(monkeypatch):
    """Every call of the inner search sees exactly the outer training rows, never a row of the
    fold it then predicts; the grid reaches well above the old top value (1.0)."""
    import braincam.radiomics.baseline as baseline

    rng = np.random.default_rng(1)
    n = 120
    y = np.repeat(np.arange(3), n // 3)
    groups = np.arange(n) // 2
    x = rng.normal(size=(n, 4))
    x[:, 0] += 3 * y
    x[:, 3] = np.arange(n)  # row id (a feature too, harmless): which rows a call was given
    seen: list[set[int]] = []
    choose = baseline._choose_c

    def spy(x_in, y_in, groups_in, seed, n_jobs=1):
        seen.append({int(v) for v in x_in[:, 3]})
        return choose(x_in, y_in, groups_in, seed, n_jobs)

    monkeypatch.setattr(baseline, "_choose_c", spy)
    result = cross_validate(x, y, groups, ["glioma", "meningioma", "pituitary"],
                            [f"f{i}" for i in range(4)], "logistic-l1", folds=4, n_boot=0)
    fold = grouped_folds(y, groups, 4, seed=0)

    assert len(seen) == 4
    for f, rows in enumerate(seen):
        assert rows == set(np.flatnonzero(fold != f).tolist())
    assert np.array_equal(result.fold, fold)
    assert min(L1_GRID) <= 0.01 and max(L1_GRID) >= 100 and len(L1_GRID) >= 7
    assert np.allclose(np.diff(np.log10(L1_GRID)), 0.5, atol=0.03)  # half-decade steps


def test_the_inner_search_gives_the_same_choice_in_parallel():
    rng = np.random.default_rng(2)
    n = 90
    y = np.repeat(np.arange(3), n // 3)
    groups = np.arange(n) // 3
    x = rng.normal(size=(n, 5)) + np.outer(y, [1.0, 0.5, 0, 0, 0])
    from joblib import parallel_config

    from braincam.radiomics.baseline import _choose_c

    with parallel_config(backend="threading"):  # the same ordering logic without process start-up
        parallel = _choose_c(x, y, groups, seed=0, n_jobs=2)
    assert parallel == _choose_c(x, y, groups, seed=0)
