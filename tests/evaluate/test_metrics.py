"""Metrics against hand-computed numbers and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from braincam.evaluate.metrics import compute_metrics, expected_calibration_error, group_rows

BINARY = ["no_tumor", "tumor"]


def _binary(p1):
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1 - p1, p1], axis=1)


def test_binary_hand_case():
    y = [0, 0, 1, 1, 1]
    m = compute_metrics(y, _binary([0.1, 0.6, 0.4, 0.8, 0.9]), BINARY, n_boot=200)
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["auc"] == pytest.approx(5 / 6)  # 5 of the 6 (positive, negative) pairs ordered
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["per_class"]["no_tumor"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert m["per_class"]["tumor"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )


@pytest.mark.parametrize("k", [2, 4])
def test_matches_sklearn_with_ties(k):
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, size=300)
    logits = rng.normal(size=(300, k)) + 1.5 * np.eye(k)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    prob = np.round(prob, 1) + 1e-9 * np.arange(k)  # many tied scores, argmax unambiguous
    prob /= prob.sum(1, keepdims=True)
    m = compute_metrics(y, prob, [f"c{i}" for i in range(k)], n_boot=0)
    pred = prob.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(y, pred), abs=1e-12
    )
    expected_auc = (
        skm.roc_auc_score(y, prob[:, 1])
        if k == 2
        else skm.roc_auc_score(y, prob, multi_class="ovr", average="macro")
    )
    assert m["auc"] == pytest.approx(expected_auc, abs=1e-12)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred)
    for i in range(k):
        got = m["per_class"][f"c{i}"]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == pytest.approx(
            (precision[i], recall[i], f1[i], support[i]), abs=1e-12
        )
    assert m["ci"] == {"accuracy": None, "balanced_accuracy": None, "auc": None}


def test_ece_hand_case():
    prob = _binary([0.9, 0.9, 0.7, 0.38])  # confidences 0.9, 0.9, 0.7, 0.62
    y = np.array([1, 0, 1, 0])
    # bin of 0.9: accuracy 1/2 -> 2/4 * 0.4; bin of 0.7: 1/4 * 0.3; bin of 0.62: 1/4 * 0.38
    assert expected_calibration_error(y, prob) == pytest.approx(0.2 + 0.075 + 0.095)
    assert expected_calibration_error(np.array([1, 1]), _binary([1.0, 1.0])) == 0.0


def test_bootstrap_interval_contains_the_estimate_and_is_repeatable():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    prob = _binary(np.clip(0.5 + 0.35 * (2 * y - 1) + rng.normal(0, 0.25, 200), 0.01, 0.99))
    m = compute_metrics(y, prob, BINARY, n_boot=500, seed=3)
    for name in ("accuracy", "balanced_accuracy", "auc"):
        lo, hi = m["ci"][name]
        assert lo <= m[name] <= hi
        assert hi - lo < 0.2
    assert compute_metrics(y, prob, BINARY, n_boot=500, seed=3)["ci"] == m["ci"]
    assert compute_metrics(y, prob, BINARY, n_boot=500, seed=4)["ci"] != m["ci"]


def test_the_group_bootstrap_draws_whole_groups_and_copies_do_not_narrow_it():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=100)
    prob = _binary(np.clip(0.5 + 0.2 * (2 * y - 1) + rng.normal(0, 0.3, 100), 0.01, 0.99))
    alone = compute_metrics(y, prob, BINARY, n_boot=400, seed=1, groups=np.arange(100))
    assert alone["n_groups"] == 100 and alone["ci_groups"] == alone["ci"]  # one image each
    copies = compute_metrics(np.repeat(y, 4), np.repeat(prob, 4, axis=0), BINARY, n_boot=400,
                             seed=1, groups=np.repeat(np.arange(100), 4))
    assert copies["n_groups"] == 100 and copies["ci_groups"] == alone["ci"]
    width = {key: np.diff(copies[key]["auc"])[0] for key in ("ci", "ci_groups")}
    assert width["ci_groups"] > 1.7 * width["ci"]  # four copies: about half as wide by image
    groups = np.array([7, 7, 7, 2, 5, 5])
    for row in group_rows(groups, 50, np.random.default_rng(0)):
        drawn = groups[row]
        times = [np.sum(drawn == g) / np.sum(groups == g) for g in (7, 2, 5)]
        assert all(t == int(t) for t in times) and sum(times) == 3  # three whole groups
    few = compute_metrics(y, prob, BINARY, n_boot=50, groups=np.arange(100) % 3)
    assert few["n_groups"] == 3 and few["ci_groups"] == dict.fromkeys(few["ci"])  # too few
    with pytest.raises(ValueError, match="one id per image"):
        compute_metrics(y, prob, BINARY, groups=np.arange(3))


def test_one_class_dataset_keeps_accuracy_and_recall():
    y = np.ones(4, dtype=int)
    m = compute_metrics(y, _binary([0.9, 0.8, 0.3, 0.7]), BINARY, n_boot=100)
    assert m["accuracy"] == m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["per_class"]["tumor"]["recall"] == pytest.approx(0.75)
    # no no_tumor image: its recall and F1 are undefined, its precision 0 of 1 prediction
    assert m["per_class"]["no_tumor"] == {"precision": 0.0, "recall": None, "f1": None,
                                          "support": 0}
    clear = compute_metrics(y, _binary([0.9, 0.8, 0.6, 0.7]), BINARY, n_boot=0)
    assert clear["per_class"]["no_tumor"] == {"precision": None, "recall": None, "f1": None,
                                              "support": 0}  # not 0.0: nothing to divide
    assert m["auc"] is None and m["ci"]["auc"] is None
    assert m["ci"]["accuracy"][0] <= 0.75 <= m["ci"]["accuracy"][1]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="prob must be"):
        compute_metrics([0, 1], np.ones((3, 2)) / 2, BINARY)
    with pytest.raises(ValueError, match="class indices"):
        compute_metrics([0, 2], np.ones((2, 2)) / 2, BINARY)
