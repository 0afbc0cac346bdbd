"""Batched prediction: probabilities, batch-size independence, model state restored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from braincam.evaluate import predict
from braincam.models import build_model, to_model_input


def test_probabilities_do_not_depend_on_batching_and_mode_is_restored():
    torch.manual_seed(0)
    model = build_model("resnet10t", 3).train()
    images = np.random.default_rng(0).integers(0, 256, size=(5, 32, 32), dtype=np.uint8)
    small = predict(model, images, "cpu", batch_size=2)
    large = predict(model, images, "cpu", batch_size=64)
    assert model.training  # restored
    assert small.shape == (5, 3) and small.dtype == np.float32
    np.testing.assert_allclose(small.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(small, large, atol=1e-5)
    with torch.no_grad():
        reference = torch.softmax(model.eval()(to_model_input(images)), 1).numpy()
    np.testing.assert_allclose(small, reference, atol=1e-5)  # eval mode: dropout off


def test_empty_input_is_refused():
    with pytest.raises(ValueError, match="no images"):
        predict(build_model("resnet10t", 2), np.zeros((0, 32, 32), np.uint8), "cpu")
