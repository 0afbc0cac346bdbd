"""Counterfactual image edits on hand-made arrays, and the check on a hand-built model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from braincam.audit.model.base import AuditBatch, ModelHandle
from braincam.audit.model.counterfactual import (
    CounterfactualCheck,
    background_fill,
    background_only,
    class_gap,
    control_masks,
    head_only,
    intensity_swap,
    macro_auc,
    remove_tumour,
    swap_references,
    tumour_probability,
)
from braincam.data.regions import make_views

S = 24


def head() -> np.ndarray:
    mask = np.zeros((S, S), bool)
    mask[4:20, 4:20] = True
    return mask


def test_background_only_fills_the_head_with_the_background_median():
    image = np.full((S, S), 10, np.uint8)
    image[0, :5] = 30  # a few brighter background pixels do not move the median
    image[head()] = 200
    out = background_only(image[None], head()[None])[0]
    assert background_fill(image[None], head()[None])[0] == 10
    assert (out[head()] == 10).all()
    assert (out[~head()] == image[~head()]).all()
    full = np.ones((1, S, S), bool)  # no background at all: fill 0
    assert background_only(image[None], full).max() == 0


def test_head_only_zeroes_the_background():
    image = np.full((1, S, S), 50, np.uint8)
    out = head_only(image, head()[None])[0]
    assert (out[~head()] == 0).all() and (out[head()] == 50).all()


def test_swap_references_pick_another_class():
    labels = np.array([0, 0, 1, 2, 2])
    refs = swap_references(labels, seed=0)
    assert all(labels[r] != labels[i] for i, r in enumerate(refs))
    assert (swap_references(np.array([1, 1]), seed=0) == -1).all()


def test_intensity_swap_takes_the_reference_histogram():
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 100, (S, S)).astype(np.uint8)
    bright = rng.integers(150, 256, (S, S)).astype(np.uint8)
    out = intensity_swap(np.stack([dark, bright]), np.array([1, -1]))
    gap = np.abs(np.sort(out[0].ravel()).astype(int) - np.sort(bright.ravel()))
    assert gap.mean() < 2 and gap.max() <= 5
    assert (out[1] == bright).all()  # no reference: unchanged
    # the order of the pixels is kept (monotone mapping)
    assert np.corrcoef(out[0].ravel(), dark.ravel())[0, 1] > 0.99


def test_remove_tumour_inpaints_the_region_from_its_surroundings():
    image = np.full((1, S, S), 80, np.uint8)
    tumour = np.zeros((1, S, S), bool)
    tumour[0, 9:14, 9:14] = True
    image[tumour] = 250
    out = remove_tumour(image, tumour)
    assert np.abs(out[0].astype(int) - 80).max() <= 2
    untouched = remove_tumour(image, np.zeros_like(tumour))
    assert (untouched == image).all()


def test_tumour_probability_uses_no_tumor_when_the_model_has_it():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    np.testing.assert_allclose(
        tumour_probability(probs, np.array([1, 2]), ("glioma", "no_tumor", "pituitary")),
        [0.8, 0.7])
    np.testing.assert_allclose(
        tumour_probability(probs, np.array([1, 2]), ("glioma", "meningioma", "pituitary")),
        [0.2, 0.6])


def test_class_gap_is_an_effect_size_and_auc_only_an_order():
    labels = np.array([0, 0, 1, 1])
    tiny = np.array([[0.5002, 0.4998], [0.5002, 0.4998], [0.5001, 0.4999], [0.5001, 0.4999]])
    assert macro_auc(labels, tiny) == 1.0  # a perfect order...
    assert class_gap(labels, tiny) == pytest.approx(0.0001)  # ...of a negligible effect
    strong = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])
    assert class_gap(labels, strong) == pytest.approx(0.5)  # (0.8 - 0.3 + 0.7 - 0.2) / 2
    assert class_gap(np.array([1, 1]), strong[:2]) is None
    assert macro_auc(np.array([1, 1]), strong[:2]) is None


class CornerReader(nn.Module):
    """Says no_tumor when the top-left corner is bright, tumor otherwise: a pure shortcut."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, 0, :3, :3].mean(dim=(1, 2))
        score = 20 * (corner - 0.5)
        return torch.stack([score, -score], dim=1)


def corner_batch() -> AuditBatch:
    n = 10
    labels = np.array([0, 1] * 5)
    images = np.full((n, S, S), 5, np.uint8)
    images[:, head()] = 120
    images[labels == 0, :3, :3] = 255  # the marker on no_tumor images
    tumours = np.zeros((n, S, S), bool)
    tumours[labels == 1, 8:12, 8:12] = True
    handle = ModelHandle(CornerReader(), lambda a: torch.as_tensor(a).float()[:, None] / 255,
                         explain=None)
    return AuditBatch(images=images, head_masks=np.repeat(head()[None], n, 0), labels=labels,
                      classes=("no_tumor", "tumor"), probs=handle.predict(images),
                      tumor_masks=tumours, handle=handle)


def test_a_corner_reading_model_survives_without_its_head():
    batch = corner_batch()
    assert batch.correct.all()
    result = CounterfactualCheck()(batch)
    s = result.summary
    assert s.background_only_survival == 1.0 and s.background_only_baseline == 0.5
    assert s.majority_share == 0.5
    assert s.background_only_survival_by_class == {"no_tumor": 1.0, "tumor": 1.0}
    # blanking the background removes the marker: exactly the no_tumor images flip
    flipped = result.per_image[""]["head_only_flipped"]
    np.testing.assert_array_equal(flipped, batch.labels == 0)
    assert s.head_only_flip_rate == 0.5 and s.head_only_change > 0.4
    assert s.tumor_removal_flip_rate == 0.0 and s.tumor_removal_prob_drop == pytest.approx(0.0)
    assert s.n_tumor_removal == 5 and s.n_intensity_swap == 10
    # accuracy beside each flip rate: all right with the background alone, chance without it
    assert s.accuracy == 1.0 and s.background_only_accuracy == 1.0
    assert s.head_only_accuracy == 0.5
    assert s.tumor_removal_accuracy == 1.0 and s.tumor_removal_original_accuracy == 1.0
    np.testing.assert_array_equal(result.per_image[""]["head_only_correct"], batch.labels == 1)
    checks = {f.check: f for f in result.findings}
    assert checks["counterfactual.background_only"].severity == "critical"
    assert s.background_only_gap == pytest.approx(1.0, abs=1e-3)
    assert checks["counterfactual.background_only_gap"].severity == "critical"
    assert checks["counterfactual.tumor_removal"].severity == "warning"
    assert checks["counterfactual.head_only"].value == 0.5


def test_occlusion_outside_the_head_is_reported_against_its_area():
    batch = corner_batch()
    occlusion = np.full((len(batch), S, S), np.nan)
    occlusion[:2] = 0.0
    occlusion[:2, :3, :3] = 1.0  # all sensitivity on the corner
    batch.occlusion = occlusion
    s = CounterfactualCheck()(batch).summary
    assert s.n_occlusion == 2
    assert s.occlusion_outside_head == pytest.approx(1.0)
    assert s.uniform_outside_head == pytest.approx(1 - head().mean())


class BrightSpotReader(nn.Module):
    """Says tumor when the brightest pixel is brighter than healthy tissue: the output depends
    only on the tumour, wherever it is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 40 * (x.amax(dim=(1, 2, 3)) - 0.75)
        return torch.stack([-score, score], dim=1)


def tumour_batch(n: int = 6, size: int = 48) -> AuditBatch:
    """Heads (a square of grey 120 with some texture) holding a bright 5x7 tumour at a place
    that varies with the image; expert masks mark the tumours."""
    rng = np.random.default_rng(0)
    heads = np.zeros((n, size, size), bool)
    heads[:, 4:44, 4:44] = True
    images = np.where(heads, 110, 5) + rng.integers(0, 20, heads.shape)
    masks = np.zeros_like(heads)
    for i in range(n):
        y, x = 10 + 4 * i, 30 - 3 * i
        masks[i, y:y + 5, x:x + 7] = True
    images = np.where(masks, 250, images).astype(np.uint8)
    handle = ModelHandle(BrightSpotReader(), lambda a: torch.as_tensor(a).float()[:, None] / 255,
                         explain=None)
    return AuditBatch(images=images, head_masks=heads, labels=np.ones(n, int),
                      classes=("no_tumor", "tumor"), probs=handle.predict(images),
                      tumor_masks=masks, expert_masks=masks, handle=handle)


def test_control_regions_avoid_the_tumour_and_keep_its_size():
    batch = tumour_batch()
    controls = control_masks(batch.expert_masks, batch.head_masks, seed=0)
    assert (controls.sum(axis=(1, 2)) == batch.expert_masks.sum(axis=(1, 2))).all()
    assert not (controls & batch.expert_masks).any()
    assert not (controls & ~batch.head_masks).any()


def test_removing_the_tumour_flips_a_tumour_reader_and_the_control_does_not():
    batch = tumour_batch()
    assert (batch.preds == 1).all()
    result = CounterfactualCheck()(batch)
    s = result.summary
    assert s.n_mask_removal == 6 and s.n_control_removal == 6
    assert s.mask_removal_flip_rate == 1.0 and s.control_removal_flip_rate == 0.0
    assert s.mask_removal_prob_drop > 0.99 and abs(s.control_removal_prob_drop) < 1e-6
    assert s.tumor_effect_flip_rate == 1.0
    assert s.tumor_effect_prob_drop == pytest.approx(s.mask_removal_prob_drop)
    assert "counterfactual.tumor_effect" not in {f.check for f in result.findings}


def test_a_corner_reader_has_no_tumour_effect():
    batch = tumour_batch()
    batch.handle = ModelHandle(CornerReader(), batch.handle.to_input, explain=None)
    batch.probs = batch.handle.predict(batch.images)
    result = CounterfactualCheck()(batch)
    s = result.summary
    assert s.mask_removal_flip_rate == 0.0 and s.tumor_effect_prob_drop == pytest.approx(0.0)
    effect = [f for f in result.findings if f.check == "counterfactual.tumor_effect"]
    assert effect and effect[0].severity == "warning"
    assert "counterfactual.tumor_removal" not in {f.check for f in result.findings}


class TissueReader(nn.Module):
    """Says tumor whenever the view holds grey tissue: reads the slice, not the lesion."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 40 * (x.mean(dim=(1, 2, 3)) - 0.2)
        return torch.stack([-score, score], dim=1)


def view_batch(reader: nn.Module, classes=("no_tumor", "tumor"), n: int = 6) -> AuditBatch:
    """96-px heads (grey 110-129 from 8 to 88) with a bright 5x7 tumour near the head's edge,
    at a place that varies with the image, marked by expert masks."""
    rng = np.random.default_rng(1)
    size = 96
    heads = np.zeros((n, size, size), bool)
    heads[:, 8:88, 8:88] = True
    images = np.where(heads, 110, 5) + rng.integers(0, 20, heads.shape)
    masks = np.zeros_like(heads)
    for i, (y, x) in enumerate([(14, 20), (14, 60), (30, 70), (64, 70), (70, 20), (40, 14)][:n]):
        masks[i, y:y + 5, x:x + 7] = True
    images = np.where(masks, 250, images).astype(np.uint8)
    handle = ModelHandle(reader, lambda a: torch.as_tensor(a).float()[:, None] / 255,
                         explain=None)
    return AuditBatch(images=images, head_masks=heads, labels=np.ones(n, int), classes=classes,
                      probs=handle.predict(images), tumor_masks=masks, expert_masks=masks,
                      handle=handle)


def test_lesion_views_differ_only_by_the_tumour():
    batch = view_batch(BrightSpotReader())
    views = make_views(batch.images, batch.head_masks, batch.expert_masks, seed=0)
    assert views.source.tolist() == list(range(6))
    assert views.tumour.shape == views.clear.shape == (6, 96, 96)
    assert (views.tumour.max(axis=(1, 2)) >= 240).all()  # the tumour, enlarged
    assert (views.clear.max(axis=(1, 2)) < 140).all()  # tissue alone
    # both are mostly head tissue (110-129), not background (5-24)
    for images in (views.tumour, views.clear):
        assert (np.median(images.reshape(6, -1), axis=1) > 100).all()
    # the tumour view's mask marks the enlarged tumour: 0.4 x 96 = 38 px -> x 2.5 per side
    assert views.tumour_masks.dtype == views.clear_heads.dtype == bool
    np.testing.assert_allclose(views.tumour_masks.sum(axis=(1, 2)), 35 * (96 / 38) ** 2,
                               rtol=0.15)
    assert views.tumour[views.tumour_masks].mean() > 220  # on the tumour (250; edges blend)
    assert views.tumour[~views.tumour_masks].mean() < 140


def test_a_lesion_reader_tells_the_views_apart_and_a_tissue_reader_does_not():
    lesion = CounterfactualCheck()(view_batch(BrightSpotReader()))
    s = lesion.summary
    assert s.n_lesion_view == 6
    assert s.lesion_view_tumor_recall == 1.0 and s.lesion_view_clear_recall == 1.0
    assert s.lesion_view_balanced_accuracy == 1.0 and s.lesion_view_auc == 1.0
    assert s.lesion_view_paired == 1.0
    assert "counterfactual.lesion_views" not in {f.check for f in lesion.findings}

    tissue = CounterfactualCheck()(view_batch(TissueReader()))
    s = tissue.summary
    assert s.lesion_view_tumor_recall == 1.0 and s.lesion_view_clear_recall == 0.0
    assert s.lesion_view_balanced_accuracy == 0.5
    warning = [f for f in tissue.findings if f.check == "counterfactual.lesion_views"]
    assert warning and warning[0].value == 0.5 and warning[0].severity == "warning"


def test_lesion_views_need_a_no_tumour_class():
    s = CounterfactualCheck()(view_batch(BrightSpotReader(), classes=("glioma", "tumor"))).summary
    assert s.n_lesion_view == 0 and s.lesion_view_balanced_accuracy is None
