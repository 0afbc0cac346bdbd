"""Metrics with bootstrap intervals and calibration, batched prediction, run evaluation."""

from braincam.evaluate.metrics import compute_metrics, expected_calibration_error
from braincam.evaluate.predict import predict
from braincam.evaluate.run import evaluate_run

__all__ = ["compute_metrics", "evaluate_run", "expected_calibration_error", "predict"]
