"""Segmenters as one: the mean probability of several runs (``load_segmenter("a,b")``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from braincam.errors import BraincamError
from braincam.models.segment import load_segmenter, save_segmenter, segmenter_sources
from braincam.models.unet import MeanProbability, unet


def write(seg: Path, widths: tuple[int, ...], size: int = 32, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_segmenter(unet(widths).eval(), seg / "model.safetensors",
                   {"size": size, "preprocess": {"size": size, "crop": True}, "threshold": 0.5})
    return seg


def test_the_mean_of_segmenters_is_the_mean_of_their_probabilities(tmp_path):
    a = write(tmp_path / "a", (16, 8, 8, 8, 8), seed=0)
    b = write(tmp_path / "b", (32, 16, 8, 8, 8), seed=1)
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40), dtype=np.uint8)
    one, other = (load_segmenter(d, "cpu").predict(images) for d in (a, b))
    both = load_segmenter(f"{a},{b}", "cpu")
    assert isinstance(both.model, MeanProbability) and both.meta["members"] == [str(a), str(b)]
    assert np.abs(one - other).max() > 0.01  # the members differ...
    np.testing.assert_allclose(both.predict(images), (one + other) / 2, atol=1e-5)  # ...and average
    assert segmenter_sources(f" {a} , {b},") == [a, b] and segmenter_sources(a) == [a]
    assert segmenter_sources([a, str(b)]) == [a, b]


def test_segmenters_of_different_sizes_do_not_average(tmp_path):
    a = write(tmp_path / "a", (16, 8, 8, 8, 8))
    b = write(tmp_path / "b", (16, 8, 8, 8, 8), size=64)
    with pytest.raises(BraincamError, match="differ in size"):
        load_segmenter([a, b], "cpu")
    with pytest.raises(ValueError, match="at least two"):
        MeanProbability([unet((16, 8, 8, 8, 8))])
