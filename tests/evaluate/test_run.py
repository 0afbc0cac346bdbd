import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from braincam.evaluate.run import ScoredSet, predictions_frame, significant


def test_significant_keeps_tiny_probabilities_apart():
    values = np.array([1.23456789e-9, 2e-9, 0.5, 0.123456789, 1.0])
    np.testing.assert_array_equal(significant(values), [1.23457e-9, 2e-9, 0.5, 0.123457, 1.0])


def test_auc_recomputed_from_predictions_matches_when_all_order_is_in_the_tail(tmp_path):
    """Every P(tumour) is below 1e-6: six decimals would tie them all at 0 (AUC 0.5)."""
    p_tumour = np.array([1e-9, 3e-9, 2e-8, 5e-8, 4e-7, 9e-7])
    y = np.array([0, 0, 1, 0, 1, 1])
    scored = ScoredSet("test", "test", [f"{i}.png" for i in range(6)], ["d"] * 6, y,
                       np.stack([1 - p_tumour, p_tumour], 1), None)
    path = tmp_path / "predictions.csv"
    predictions_frame([scored], ["no_tumor", "tumor"]).to_csv(path, index=False)
    again = pd.read_csv(path)["prob_tumor"].to_numpy()
    assert roc_auc_score(y, again) == roc_auc_score(y, p_tumour) == pytest.approx(8 / 9)
