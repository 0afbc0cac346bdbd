"""Localisation metrics on hand-made maps and boxes."""

from __future__ import annotations

import numpy as np
import pytest

from braincam.audit.model.base import AuditBatch
from braincam.audit.model.localization import (
    LocalizationCheck,
    pointing_hits,
    thresholded_iou,
)

S = 32


def box_mask(rect: tuple[int, int, int, int], size: int) -> np.ndarray:
    x0, y0, x1, y1 = rect
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def boxes_batch(maps: np.ndarray, boxes: np.ndarray) -> AuditBatch:
    n = len(maps)
    return AuditBatch(
        images=np.zeros((n, S, S), np.uint8), head_masks=np.ones((n, S, S), bool),
        labels=np.ones(n, int), classes=("no_tumor", "tumor"),
        probs=np.tile([0.2, 0.8], (n, 1)), maps={"gradcam": maps}, tumor_masks=boxes)


def test_map_inside_the_box_scores_perfectly():
    box = box_mask((8, 8, 16, 16), S)
    maps = np.where(box, 1.0, 0.0)[None]
    assert pointing_hits(maps, box[None])[0]
    assert thresholded_iou(maps, box[None])[0] == pytest.approx(1.0)
    result = LocalizationCheck()(boxes_batch(maps, box[None]))
    summary = result.summary["gradcam"]
    assert summary.energy_in_box == pytest.approx(1.0)
    assert summary.energy_in_box_ratio == pytest.approx(S * S / 64)
    assert summary.pointing_game == 1.0 and summary.iou == pytest.approx(1.0)
    assert result.findings == []


def test_uniform_map_is_at_chance_and_flagged():
    box = box_mask((0, 0, 8, 16), S)  # 1/8 of the image
    result = LocalizationCheck()(boxes_batch(np.ones((1, S, S)), box[None]))
    summary = result.summary["gradcam"]
    assert summary.energy_in_box == pytest.approx(0.125)
    assert summary.energy_in_box_ratio == pytest.approx(1.0)
    assert summary.iou == pytest.approx(0.125)  # the whole image is "hot"
    assert summary.pointing_game == 1.0  # every pixel is a maximum, some lie in the box
    ratio = [f for f in result.findings if f.check == "localization.energy_in_box_ratio"]
    assert ratio[0].severity == "warning" and ratio[0].threshold == 1.5


def test_peak_outside_the_box_misses_and_half_overlap_iou():
    box = box_mask((0, 0, 8, 8), S)
    m = np.zeros((S, S))
    m[20, 20] = 1.0
    m[0:8, 4:12] = 0.6  # hot region (>= 0.5 max) overlaps half of the box
    assert not pointing_hits(m[None], box[None])[0]
    # hot = 64 px of the strip + the peak; intersection 32, union 64 + 32 + 1
    assert thresholded_iou(m[None], box[None])[0] == pytest.approx(32 / 97)


def test_images_without_boxes_are_left_out():
    box = box_mask((8, 8, 16, 16), S)
    boxes = np.stack([box, np.zeros_like(box)])
    maps = np.stack([np.where(box, 1.0, 0.0), np.ones((S, S))])
    result = LocalizationCheck()(boxes_batch(maps, boxes))
    assert result.summary["gradcam"].n_images == 1
    assert result.summary["gradcam"].energy_in_box == pytest.approx(1.0)
    assert np.isnan(result.per_image["gradcam"]["energy_in_box"][1])


def test_no_annotations_give_null_numbers_and_no_findings():
    result = LocalizationCheck()(boxes_batch(np.ones((2, S, S)), None))
    summary = result.summary["gradcam"]
    assert summary.n_images == 0
    assert summary.pointing_game is None and summary.energy_in_box_ratio is None
    assert result.findings == []
