"""Attention shares on hand-made maps: uniform maps get the area fractions, concentrated maps
get everything, and the findings fire on the right groups."""

from __future__ import annotations

import numpy as np
import pytest

from braincam.audit.model.attention import (
    AttentionCheck,
    area_fraction,
    energy_share,
    head_regions,
)
from braincam.audit.model.base import AuditBatch

S = 48


def disc(radius: float, size: int = S) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return np.hypot(yy, xx) <= radius


def batch_of(maps: np.ndarray, labels: np.ndarray, regions=None) -> AuditBatch:
    n = len(maps)
    heads = np.repeat(disc(18)[None], n, axis=0)
    probs = np.eye(2)[labels] * 0.8 + 0.1
    return AuditBatch(
        images=np.zeros((n, S, S), np.uint8), head_masks=heads, labels=labels,
        classes=("no_tumor", "tumor"), probs=probs, maps={"gradcam": maps},
        regions=regions or {})


def test_energy_share_ignores_negative_values_and_flags_empty_maps():
    region = np.zeros((4, 4), bool)
    region[:2] = True
    maps = np.zeros((3, 4, 4))
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0  # 3 of 4 units inside
    maps[1, 0, 0], maps[1, 3, 3] = 1.0, -5.0  # negative energy does not count
    shares = energy_share(maps, region)
    assert shares[0] == pytest.approx(0.75)
    assert shares[1] == pytest.approx(1.0)
    assert np.isnan(shares[2])  # all zero: no energy to share


def test_uniform_map_gets_the_area_fractions():
    heads = np.stack([disc(18), disc(12)])
    regions = head_regions(heads)
    uniform = np.ones((2, S, S))
    for region in regions.values():
        np.testing.assert_allclose(energy_share(uniform, region), area_fraction(region))
    # brain, rim and background partition the image
    total = sum(r.astype(int) for r in regions.values())
    assert (total == 1).all()
    assert area_fraction(regions["background"])[1] == pytest.approx(1 - disc(12).mean())


def test_single_region_area_fraction_repeats():
    corner = np.zeros((S, S), bool)
    corner[:6, :6] = True
    np.testing.assert_allclose(area_fraction(corner, 3), [36 / S**2] * 3)


def test_maps_inside_the_brain_raise_no_finding():
    brain = head_regions(disc(18)[None])["brain"][0]
    maps = np.repeat(brain[None].astype(float), 10, axis=0)
    labels = np.array([0, 1] * 5)
    result = AttentionCheck()(batch_of(maps, labels))
    summary = result.summary["gradcam"]
    assert summary.brain == pytest.approx(1.0)
    assert summary.background == pytest.approx(0.0)
    assert summary.uniform_background == pytest.approx(1 - disc(18).mean())
    assert set(summary.by_class) == {"no_tumor", "tumor"}
    assert summary.by_class["tumor"]["n"] == 5
    assert result.findings == []
    np.testing.assert_allclose(result.per_image["gradcam"]["brain"], 1.0)


def test_corner_maps_of_one_class_are_flagged_for_that_class_and_region():
    brain = head_regions(disc(18)[None])["brain"][0]
    corner = np.zeros((S, S), bool)
    corner[:6, :6] = True
    labels = np.array([0] * 6 + [1] * 6)
    maps = np.stack([corner if y == 0 else brain for y in labels]).astype(float)
    result = AttentionCheck()(batch_of(maps, labels, {"marker": corner}))
    summary = result.summary["gradcam"]
    assert summary.regions["marker"] == pytest.approx(0.5)
    assert summary.uniform_regions["marker"] == pytest.approx(36 / S**2)
    assert summary.by_class["no_tumor"]["region_marker"] == pytest.approx(1.0)
    by_check = {(f.check, f.message.split(":")[0]): f for f in result.findings}
    marker = by_check[("attention.region.marker", "gradcam, class no_tumor")]
    assert marker.severity == "critical" and marker.value == pytest.approx(1.0)
    outside = by_check[("attention.outside_brain", "gradcam, class no_tumor")]
    assert outside.severity == "critical" and outside.value == pytest.approx(1.0)
    assert "a uniform map would put" in outside.message
    assert not any("class tumor" in f.message for f in result.findings)


def test_by_correctness_splits_on_the_prediction():
    maps = np.ones((4, S, S))
    labels = np.array([0, 0, 1, 1])
    batch = batch_of(maps, labels)
    batch.probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    summary = AttentionCheck()(batch).summary["gradcam"]
    assert summary.by_correctness["correct"]["n"] == 2
    assert summary.by_correctness["incorrect"]["n"] == 2


def test_a_zero_map_leaves_the_chance_level_with_its_share():
    """Image 0: a big head and an all-zero map (no share); image 1: a uniform map, exactly at
    chance. The outside-brain share then equals its chance: a warning (no better than a
    uniform map), not the critical finding of 1.5 times chance."""
    side = 64
    heads = np.zeros((2, side, side), bool)
    heads[0, 2:62, 2:62] = True
    heads[1, 20:44, 20:44] = True
    maps = np.zeros((2, side, side), np.float32)
    maps[1] = 1.0
    batch = AuditBatch(images=np.zeros((2, side, side), np.uint8), head_masks=heads,
                       labels=np.array([0, 0]), classes=("no_tumor", "tumor"),
                       probs=np.array([[0.9, 0.1]] * 2), maps={"gradcam": maps})
    result = AttentionCheck()(batch)
    summary = result.summary["gradcam"]
    assert summary.brain == pytest.approx(summary.uniform_brain)
    (finding,) = [f for f in result.findings if f.check == "attention.outside_brain"]
    assert finding.severity == "warning" and finding.value == pytest.approx(finding.threshold)


def test_empty_maps_are_counted_in_a_finding():
    """All-zero maps (a saturated probability output, a closed gate) carry no evidence: info
    below half of the images, a warning from half on."""
    brain = head_regions(disc(18)[None])["brain"][0].astype(float)
    labels = np.array([0, 1] * 4)
    for empty, severity in ((2, "info"), (4, "warning")):
        maps = np.repeat(brain[None], 8, axis=0)
        maps[:empty] = 0.0
        found = [f for f in AttentionCheck()(batch_of(maps, labels)).findings
                 if f.check == "attention.empty_maps"]
        assert [(f.severity, f.value) for f in found] == [(severity, empty / 8)]
        assert found[0].message.startswith(f"gradcam: {empty} of 8 maps are empty")
    maps = np.repeat(brain[None], 8, axis=0)
    assert not [f for f in AttentionCheck()(batch_of(maps, labels)).findings]
