"""Localisation metrics on hand-made maps and boxes."""

from __future__ import annotations

import numpy as np
import pytest

from braincam.audit.model.base import AuditBatch
from braincam.audit.model.localization import (
    LocalizationCheck,
    _ratio_severity,
    pointing_hits,
    size_thirds,
    thresholded_iou,
    topk_overlap,
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
    assert summary.pointing_game == 0.0  # a constant map points nowhere
    ratio = [f for f in result.findings if f.check == "localization.energy_in_box_ratio"]
    assert ratio[0].severity == "warning" and ratio[0].threshold == 1.5


def test_energy_ratios_below_chance_are_critical_and_below_one_and_a_half_a_warning():
    assert _ratio_severity(0.99) == ("critical", 1.0)
    assert _ratio_severity(1.0) == ("warning", 1.5)
    assert _ratio_severity(1.49) == ("warning", 1.5)
    assert _ratio_severity(1.5) is None


def test_a_constant_map_misses_though_every_pixel_ties_for_its_maximum():
    box = box_mask((8, 8, 16, 16), S)
    maps = np.stack([np.zeros((S, S)), np.full((S, S), 0.5), np.where(box, 1.0, 1.0 - 1e-9)])
    assert list(pointing_hits(maps, np.stack([box] * 3))) == [False, False, True]


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


def masks_batch(maps: np.ndarray, masks: np.ndarray, groups=None) -> AuditBatch:
    n = len(maps)
    return AuditBatch(
        images=np.zeros((n, S, S), np.uint8), head_masks=np.ones((n, S, S), bool),
        labels=np.ones(n, int), classes=("no_tumor", "tumor"),
        probs=np.tile([0.2, 0.8], (n, 1)), maps={"gradcam": maps}, expert_masks=masks,
        group_labels=groups)


def test_topk_iou_and_dice_equal_a_hand_computation():
    mask = np.zeros((S, S), bool)
    mask[4:8, 4:8] = True  # 16 px
    m = np.zeros((S, S))
    m[6:10, 4:8] = 1.0  # the 16 hottest pixels: rows 6-9, half of them in the mask
    m[0, 0] = 0.5  # 17th: not in the top 16
    iou, dice = topk_overlap(m[None], mask[None])
    # |H & T| = 8, |H| = |T| = 16: Dice = 2*8/32, IoU = 8/(16+16-8)
    assert dice[0] == pytest.approx(0.5)
    assert iou[0] == pytest.approx(8 / 24)
    iou, dice = topk_overlap(np.where(mask, 1.0, 0.0)[None], mask[None])
    assert iou[0] == dice[0] == 1.0
    assert np.isnan(topk_overlap(m[None], np.zeros((1, S, S), bool))[1][0])


def test_mask_pointing_game_and_energy_ratio_on_a_synthetic_map():
    mask = np.zeros((S, S), bool)
    mask[10:14, 10:18] = True  # 32 px = 1/32 of the image
    hit = np.full((S, S), 0.1)
    hit[mask] = 1.0  # energy in mask: 32 / (32 + 0.1 * 992)
    miss = hit.copy()
    miss[30, 30] = 2.0  # the peak leaves the mask
    result = LocalizationCheck()(masks_batch(np.stack([hit, miss]), np.stack([mask, mask])))
    s = result.summary["gradcam"].mask
    assert s.n_images == 2 and s.pointing_game == 0.5
    e_hit, e_miss = 32 / (32 + 99.2), 32 / (32 + 99.2 - 0.1 + 2.0)
    assert s.energy_in_mask == pytest.approx((e_hit + e_miss) / 2)
    assert s.mask_area == pytest.approx(1 / 32)
    assert s.energy_in_mask_ratio == pytest.approx(32 * (e_hit + e_miss) / 2)
    assert s.dice == pytest.approx((1 + 31 / 32) / 2)  # the peak takes one top-k place
    # the box numbers stay empty: no box was given
    assert result.summary["gradcam"].n_images == 0


def test_mask_numbers_by_class_and_by_size_thirds():
    sides = [2, 3, 4, 5, 6, 7]  # areas grow: two small, two medium, two large
    masks = np.zeros((6, S, S), bool)
    for i, side in enumerate(sides):
        masks[i, :side, :side] = True
    maps = np.stack([np.where(masks[i], 1.0, 0.0) if i % 2 else np.ones((S, S))
                     for i in range(6)])
    groups = np.array(["glioma", "pituitary"] * 3)
    s = LocalizationCheck()(masks_batch(maps, masks, groups)).summary["gradcam"].mask
    assert set(s.by_size) == {"small", "medium", "large"}
    assert [s.by_size[k]["n_images"] for k in ("small", "medium", "large")] == [2, 2, 2]
    assert s.by_size["small"]["mask_area"] == pytest.approx((4 + 9) / 2 / S**2)
    assert s.by_class["pituitary"]["dice"] == 1.0  # odd images: the map is the mask
    assert s.by_class["glioma"]["energy_in_mask_ratio"] == pytest.approx(1.0)  # uniform maps
    assert s.by_class["glioma"]["n_images"] == 3


def test_occlusion_sizes_are_the_datasets_thirds():
    """Occlusion runs on a few images; their size classes are those of the whole dataset,
    so a row "large" means the same tumours for every method."""
    from dataclasses import replace

    sides = [2, 3, 4, 5, 6, 7]
    masks = np.zeros((6, S, S), bool)
    for i, side in enumerate(sides):
        masks[i, :side, :side] = True
    occlusion = np.full((6, S, S), np.nan)
    occlusion[[2, 3]] = masks[[2, 3]].astype(float)  # the two medium tumours alone
    batch = replace(masks_batch(np.ones((6, S, S)), masks), occlusion=occlusion)
    sizes = LocalizationCheck()(batch).summary["occlusion"].mask.by_size
    assert sizes["medium"]["n_images"] == 2
    assert all((sizes.get(k) or {}).get("n_images", 0) == 0 for k in ("small", "large"))


def test_size_thirds_cut_at_the_quantiles():
    areas = np.array([0.1, np.nan, 0.3, 0.2, 0.6, 0.5, 0.4])
    assert list(size_thirds(areas)) == ["small", "", "medium", "small", "large", "large",
                                        "medium"]


def test_mask_findings_replace_the_box_findings():
    mask = np.zeros((S, S), bool)
    mask[:4, :4] = True
    batch = masks_batch(np.ones((1, S, S)), mask[None])
    batch.tumor_masks = mask[None]
    checks = {f.check for f in LocalizationCheck()(batch).findings}
    assert checks == {"localization.energy_in_mask_ratio", "localization.mask_pointing_game"}


def test_pointing_ceiling_counts_the_masks_a_coarse_map_can_point_into():
    # a 4 x 4 map at 32 px can peak on rows/columns 0-3, 11-12, 19-20 and 28-31 only
    masks = np.zeros((3, S, S), bool)
    masks[0, 6:10, 6:10] = True  # between the nodes: no map of that grid points into it
    masks[1, 10:14, 10:14] = True  # holds the pixels around node (1, 1)
    masks[2, 0:2, 0:2] = True  # on the corner plateau
    batch = masks_batch(np.ones((3, S, S)), masks)
    assert LocalizationCheck()(batch).summary["gradcam"].mask.pointing_ceiling is None
    batch.map_grids = {"gradcam": (4, 4)}
    result = LocalizationCheck()(batch)
    assert list(result.per_image["gradcam"]["mask_pointing_reachable"]) == [0.0, 1.0, 1.0]
    assert result.summary["gradcam"].mask.pointing_ceiling == pytest.approx(2 / 3)
    info = [f for f in result.findings if f.check == "localization.pointing_ceiling"]
    assert [f.severity for f in info] == ["info"] and info[0].value == pytest.approx(2 / 3)
    assert "can point into 67% of the 3 tumour masks at most" in info[0].message
    masks[0] = masks[1]  # every mask reachable: no finding
    assert not [f for f in LocalizationCheck()(batch).findings
                if f.check == "localization.pointing_ceiling"]


def test_no_resized_map_points_into_a_mask_beyond_the_ceiling():
    import torch

    from braincam.explain import normalise

    rng = np.random.default_rng(0)
    n = 300
    raw = rng.random((n, 4, 4))
    masks = np.zeros((n, S, S), bool)
    for i, (y, x) in enumerate(rng.integers(0, S - 6, (n, 2))):
        masks[i, y:y + 6, x:x + 6] = True
        raw[i, (y + 3) // 8, (x + 3) // 8] += 1.0  # the map peaks in the mask's cell
    maps = normalise(torch.from_numpy(raw), (S, S)).numpy()
    batch = masks_batch(maps, masks)
    batch.map_grids = {"gradcam": (4, 4)}
    cols = LocalizationCheck()(batch).per_image["gradcam"]
    hits, reachable = cols["mask_pointing_hit"], cols["mask_pointing_reachable"]
    assert hits.sum() > 50 and 0 < reachable.mean() < 1
    assert not (hits.astype(bool) & ~reachable.astype(bool)).any()


def test_ratios_compare_energy_and_area_over_the_same_images():
    """An all-zero map has no energy share: its image leaves the ratio's area mean too."""
    side = 10
    box = np.zeros((2, side, side), bool)
    box[0, :5, :] = True  # image 0: half the image, its map all zero
    box[1, 0, 0] = True  # image 1: one pixel holding half its map's energy
    maps = np.zeros((2, side, side), np.float32)
    maps[1, 0, 0] = maps[1, 9, 9] = 1.0
    batch = AuditBatch(images=np.zeros((2, side, side), np.uint8),
                       head_masks=np.ones((2, side, side), bool), labels=np.array([1, 1]),
                       classes=("no_tumor", "tumor"), probs=np.array([[0.2, 0.8]] * 2),
                       maps={"gradcam": maps}, tumor_masks=box, expert_masks=box.copy())
    summary = LocalizationCheck()(batch).summary["gradcam"]
    assert summary.energy_in_box_ratio == pytest.approx(0.5 / 0.01)
    assert summary.mask.energy_in_mask_ratio == pytest.approx(0.5 / 0.01)
    assert summary.box_area == pytest.approx((0.5 + 0.01) / 2)  # the pointing game's chance


def test_topk_overlap_counts_tied_pixels_by_their_expected_share():
    plateau = np.zeros((1, 16, 16))
    plateau[0, :8, :8] = 1.0  # 64 tied maxima
    top_row = np.zeros((1, 16, 16), bool)
    top_row[0, 0, :4] = True
    square = np.zeros((1, 16, 16), bool)
    square[0, 4:6, 4:6] = True
    for region in (top_row, square):  # both lie on the plateau: the same score
        iou, dice = topk_overlap(plateau, region)
        assert dice[0] == pytest.approx(4 / 64)
        assert iou[0] == pytest.approx((4 / 64 * 4) / (8 - 4 / 64 * 4))
    for flat in (np.zeros((1, 16, 16)), np.full((1, 16, 16), np.nan)):
        corner = np.zeros((1, 16, 16), bool)
        corner[0, 0, 0] = True  # first in pixel order
        assert np.isnan(topk_overlap(flat, corner)).all()
    ramp = np.arange(256, dtype=float).reshape(1, 16, 16)
    best = ramp >= 252  # the 4 highest pixels exactly
    assert topk_overlap(ramp, best)[1][0] == 1.0
