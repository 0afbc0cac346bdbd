"""Segmenters as one: the mean probability of several runs (``load_segmenter("a,b")``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from braincam.errors import BraincamError
from braincam.models.segment import (
    load_segmenter,
    save_segmenter,
    segmenter_sources,
    threshold_at_half,
)
from braincam.models.unet import MeanProbability, unet


def write(seg: Path, widths: tuple[int, ...], size: int = 32, seed: int = 0, **rule) -> Path:
    torch.manual_seed(seed)
    save_segmenter(unet(widths).eval(), seg / "model.safetensors",
                   {"size": size, "preprocess": {"size": size, "crop": True}, "threshold": 0.5,
                    **rule})
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


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.6])
def test_the_reported_probability_crosses_half_where_the_threshold_is_crossed(threshold):
    prob = np.random.default_rng(1).random((4, 50, 50), dtype=np.float32)
    prob[0, 0, :3] = [0.0, 1.0, threshold]
    shifted = threshold_at_half(prob, threshold)
    assert shifted.dtype == np.float32
    np.testing.assert_array_equal(shifted >= 0.5, prob >= threshold)
    order = np.argsort(prob, axis=None)  # the ranking of the pixels is kept
    assert (np.diff(shifted.ravel()[order]) >= 0).all()
    if threshold == 0.5:
        np.testing.assert_array_equal(shifted, prob)


def test_a_runs_decision_rule_averages_the_mirror_image_and_moves_the_threshold(tmp_path):
    """meta flip_average and threshold: predict() is the mean of the image's and the mirror
    image's probabilities, reported so that 0.5 marks the run's threshold; a mean of several
    segmenters keeps each member's rule and averages what they report."""
    ruled = load_segmenter(write(tmp_path / "a", (16, 8, 8, 8, 8), flip_average=True,
                                 threshold=0.4), "cpu")
    assert ruled.flip_average and ruled.threshold == 0.4
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40), dtype=np.uint8)
    plain = ruled.probabilities(images)
    mean = (plain + ruled.probabilities(images[:, :, ::-1].copy())[:, :, ::-1]) / 2
    assert np.abs(mean - plain).max() > 0.01  # the network is not mirror-symmetric
    got = ruled.predict(images)
    np.testing.assert_allclose(got, threshold_at_half(mean, 0.4), atol=1e-6)
    np.testing.assert_array_equal(got >= 0.5, mean >= 0.4)
    other = load_segmenter(write(tmp_path / "b", (16, 8, 8, 8, 8), seed=1), "cpu")
    both = load_segmenter([tmp_path / "a", tmp_path / "b"], "cpu")
    assert not both.flip_average and both.threshold == 0.5
    assert both.meta["member_rules"] == [{"flip_average": True, "threshold": 0.4},
                                         {"flip_average": False, "threshold": 0.5}]
    np.testing.assert_allclose(both.predict(images), (got + other.predict(images)) / 2,
                               atol=1e-5)
    # not the members' plain mean at 0.5, which the rule of the first member would not give
    plain_mean = (plain + other.probabilities(images)) / 2
    assert np.abs(both.predict(images) - plain_mean).max() > 0.01
    itself = load_segmenter([tmp_path / "a", tmp_path / "a"], "cpu")  # a mean of one run
    np.testing.assert_allclose(itself.predict(images), got, atol=1e-5)


def test_reading_a_segmenter_leaves_torchs_random_state_alone(tmp_path):
    """Reading a guide must not move a later training's draws, the first read in a process
    (cold caches: ``_encoder_shapes`` cleared) as every later one."""
    from braincam.models.unet import _encoder_shapes

    seg = write(tmp_path / "seg", (16, 8, 8, 8, 8))
    _encoder_shapes.cache_clear()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    for _ in range(2):
        load_segmenter(seg, "cpu")
        assert torch.equal(torch.get_rng_state(), state)
