"""Deletion / insertion / ROAD on a hand-built model whose evidence is known: it detects
fine vertical stripes in one square, so the square is the perfect explanation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from braincam.audit.model.base import AuditBatch, AuditSettings, ModelHandle
from braincam.audit.model.faithfulness import (
    FaithfulnessCheck,
    curve_auc,
    perturbation_curves,
    pixel_ranks,
    random_maps,
    road_scores,
)

S = 32
R = (slice(8, 20), slice(10, 22))  # the evidence square


class StripeDetector(nn.Module):
    """logit(tumor) = 12 * (mean |x[:, j] - x[:, j+1]| inside R - 0.5): high-frequency contrast
    that both the blurred baseline and ROAD's linear imputation remove."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = x[:, 0, R[0], R[1]]
        contrast = (patch[..., 1:] - patch[..., :-1]).abs().mean(dim=(1, 2))
        score = 12 * (contrast - 0.5)
        return torch.stack([torch.zeros_like(score), score], dim=1)


def to_input(images: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(images).float().unsqueeze(1) / 255


def stripes(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    images = rng.integers(60, 90, size=(n, S, S)).astype(np.uint8)
    square = np.zeros((R[0].stop - R[0].start, R[1].stop - R[1].start), np.uint8)
    square[:, ::2] = 255
    images[:, R[0], R[1]] = square
    return images


def perfect_maps(n: int) -> np.ndarray:
    maps = np.zeros((n, S, S))
    maps[:, R[0], R[1]] = 1.0
    return maps


@pytest.fixture(scope="module")
def handle() -> ModelHandle:
    return ModelHandle(StripeDetector().eval(), to_input, explain=None, batch_size=64)


def test_auc_is_the_trapezoid_on_unit_interval():
    assert curve_auc(np.linspace(1, 0, 21)[None])[0] == pytest.approx(0.5)
    assert curve_auc(np.ones((2, 5))) == pytest.approx([1.0, 1.0])


def test_pixel_ranks_put_the_largest_values_first_and_break_ties_at_random():
    maps = np.zeros((1, 4, 4))
    maps[0, 3, 3] = 2.0
    maps[0, 0, 1] = 1.0
    ranks = pixel_ranks(maps, seed=0)[0]
    assert ranks[15] == 0 and ranks[1] == 1
    assert sorted(ranks) == list(range(16))
    ties = pixel_ranks(np.zeros((1, 8, 8)), seed=0)[0]
    assert list(ties) != list(range(64))  # not in scan order


def test_random_maps_are_smooth_and_seeded():
    a, b = random_maps(2, 32, seed=3), random_maps(2, 32, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 32, 32)
    # neighbours differ far less than independent pixels would (about 1.15 std)
    assert np.abs(np.diff(a, axis=-1)).mean() < 0.5 * a.std()


def test_deletion_and_insertion_curve_endpoints(handle):
    images, maps = stripes(2), perfect_maps(2)
    targets = np.ones(2, int)
    deletion = perturbation_curves(images, maps, targets, handle.predict, "deletion", steps=10)
    insertion = perturbation_curves(images, maps, targets, handle.predict, "insertion", steps=10)
    full = handle.predict(images)[:, 1]
    assert deletion.shape == (2, 11)
    np.testing.assert_allclose(deletion[:, 0], full, atol=1e-6)
    np.testing.assert_allclose(insertion[:, -1], full, atol=1e-6)
    np.testing.assert_allclose(deletion[:, -1], insertion[:, 0], atol=1e-6)  # blurred image
    assert (full > 0.99).all() and (deletion[:, -1] < 0.01).all()
    # the evidence square is 144 / 1024 = 14% of the image: gone after 2 of 10 steps
    assert (deletion[:, 2] < 0.01).all() and (insertion[:, 2] > 0.99).all()
    with pytest.raises(ValueError, match="mode"):
        perturbation_curves(images, maps, targets, handle.predict, "shuffle")


def test_perfect_map_beats_random_maps(handle):
    batch = AuditBatch(
        images=stripes(6), head_masks=np.ones((6, S, S), bool), labels=np.ones(6, int),
        classes=("no_tumor", "tumor"), probs=handle.predict(stripes(6)),
        maps={"perfect": perfect_maps(6)}, handle=handle)
    result = FaithfulnessCheck(AuditSettings(faithfulness_images=None, road_images=0))(batch)
    s = result.summary["perfect"]
    assert s.n_images == 6 and s.n_road == 0 and s.road is None
    assert s.deletion_auc < 0.15 < s.random_deletion_auc
    assert s.insertion_auc > 0.85 > s.random_insertion_auc
    assert len(s.deletion_curve) == 21
    assert s.deletion_curve[0] == pytest.approx(batch.probs[:, 1].mean(), abs=1e-4)
    assert result.findings == []
    # an inverted map ranks the evidence last: flagged on both curves
    batch.maps = {"inverted": 1 - perfect_maps(6)}
    result = FaithfulnessCheck(AuditSettings(faithfulness_images=4, road_images=0))(batch)
    assert result.summary["inverted"].n_images == 4
    assert np.isnan(result.per_image["inverted"]["deletion_auc"]).sum() == 2
    assert {f.check for f in result.findings} == {"faithfulness.deletion",
                                                  "faithfulness.insertion"}


def test_road_prefers_the_perfect_map(handle):
    images, targets = stripes(2), np.ones(2, int)
    good = road_scores(handle, images, perfect_maps(2), targets, percentiles=(20, 80))
    bad = road_scores(handle, images, 1 - perfect_maps(2), targets, percentiles=(20, 80))
    assert (good > 0.3).all() and (bad < -0.3).all()
