"""Tensor augmentation: exact geometry on hand cases, masks follow images, seeded."""

from __future__ import annotations

import pytest
import torch

from braincam.train.augment import AugmentConfig, augment

IDENTITY = AugmentConfig(
    rotate_deg=0.0, scale=(1.0, 1.0), shift=0.0, hflip=0.0, gamma=(1.0, 1.0),
    contrast=(1.0, 1.0), brightness=0.0,
)


def _batch(b: int = 4, s: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    images = torch.rand(b, 1, s, s)
    masks = images[:, 0] > 0.5
    return images, masks


def test_identity_settings_change_nothing():
    images, masks = _batch()
    out, out_masks = augment(images, masks, torch.Generator().manual_seed(0), IDENTITY)
    torch.testing.assert_close(out, images, atol=1e-6, rtol=0)
    assert torch.equal(out_masks, masks)


def test_flip_mirrors_images_and_masks():
    images, masks = _batch()
    config = AugmentConfig(**{**vars(IDENTITY), "hflip": 1.0})
    out, out_masks = augment(images, masks, torch.Generator().manual_seed(0), config)
    torch.testing.assert_close(out, images.flip(-1), atol=1e-6, rtol=0)
    assert torch.equal(out_masks, masks.flip(-1))


def test_geometry_moves_masks_with_images_and_intensity_stays_in_range():
    images = torch.zeros(8, 1, 32, 32)
    images[:, :, 8:20, 10:24] = 0.8  # a bright rectangle: its mask is where the image is bright
    masks = images[:, 0] > 0.5
    out, out_masks = augment(images, masks, torch.Generator().manual_seed(3))
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out_masks, masks)
    brightest = out[:, 0] > out[:, 0].amax(dim=(1, 2), keepdim=True) * 0.6
    agreement = (brightest == out_masks).float().mean()
    assert agreement > 0.95


def test_same_generator_seed_same_augmentation():
    images, masks = _batch()
    a = augment(images, masks, torch.Generator().manual_seed(5))
    b = augment(images, masks, torch.Generator().manual_seed(5))
    c = augment(images, masks, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_contrast_remap_is_a_monotone_curve_inside_the_head_only():
    images, _ = _batch(b=6, s=16)
    masks = torch.zeros(6, 16, 16, dtype=torch.bool)
    masks[:, 3:13, 3:13] = True
    config = AugmentConfig(**{**vars(IDENTITY), "remap": 1.0})
    out, _ = augment(images, masks, torch.Generator().manual_seed(0), config)
    torch.testing.assert_close(out[:, 0][~masks], images[:, 0][~masks], atol=1e-6, rtol=0)
    directions = set()
    for x, y in zip(images[:, 0][masks[0:1].expand(6, -1, -1)].view(6, -1),
                    out[:, 0][masks[0:1].expand(6, -1, -1)].view(6, -1), strict=True):
        order = x.argsort()
        steps = y[order].diff()
        assert (steps >= -1e-6).all() or (steps <= 1e-6).all()  # monotone in x
        directions.add(bool(steps.sum() > 0))
        assert not torch.allclose(x, y)
    assert directions == {True, False}  # some images inverted, some not


@pytest.mark.parametrize(("option", "on"), [("remap", 0.5), ("zoom_views", 0.5), ("crop", 8)])
def test_an_option_off_draws_no_random_numbers(option, on):
    images, masks = _batch()
    generator = torch.Generator().manual_seed(3)
    augment(images, masks, generator, AugmentConfig(**{option: 0}))
    reference = torch.Generator().manual_seed(3)
    for _ in range(8):  # the similarity, flip and intensity draws: one number per image each
        torch.rand(len(images), generator=reference)
    assert torch.equal(generator.get_state(), reference.get_state())
    out_a, _ = augment(images, masks, torch.Generator().manual_seed(3),
                       AugmentConfig(**{option: on}))
    out_b, _ = augment(images, masks, torch.Generator().manual_seed(3))
    assert out_a.shape != out_b.shape or not torch.allclose(out_a, out_b)


def test_stacked_masks_move_like_the_head_mask_and_the_first_is_remap_region():
    """(B, K, S, S) masks: each warped exactly as it would be alone; contrast remapping stays
    inside the first (the head), whatever the others hold."""
    images, head = _batch(b=6, s=16)
    tumour = torch.zeros_like(head)
    tumour[:, 5:9, 4:11] = True
    config = AugmentConfig(remap=1.0)
    out, stacked = augment(images, torch.stack([head, tumour], 1),
                           torch.Generator().manual_seed(4), config)
    alone_out, alone_head = augment(images, head, torch.Generator().manual_seed(4), config)
    _, alone_tumour = augment(images, tumour, torch.Generator().manual_seed(4), config)
    assert stacked.shape == (6, 2, 16, 16)
    assert torch.equal(stacked[:, 0], alone_head) and torch.equal(stacked[:, 1], alone_tumour)
    assert torch.equal(out, alone_out)
    assert not torch.equal(stacked[:, 1], tumour)  # it moved


def _ramps(b: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose value is the column's (then the row's) centre as a fraction of the side."""
    ramp = (torch.arange(s) + 0.5) / s
    return ramp.view(1, 1, 1, s).expand(b, 1, s, s), ramp.view(1, 1, s, 1).expand(b, 1, s, s)


def test_zoomed_views_stay_inside_the_image_at_their_zoom():
    """A 2x view shows half the image's columns and rows, never the zero padding outside."""
    columns, rows = _ramps(64, 32)
    config = AugmentConfig(**{**vars(IDENTITY), "zoom_views": 1.0, "zoom_view_range": (2.0, 2.0)})
    for image in (columns, rows):
        out, _ = augment(image, None, torch.Generator().manual_seed(0), config)
        span = out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))
        assert out.min() > 0  # no padding: the view lies inside the image
        torch.testing.assert_close(span, torch.full_like(span, 0.5), atol=0.04, rtol=0)
    centres = out.mean(dim=(1, 2, 3))
    assert centres.min() < 0.4 and centres.max() > 0.6  # the views move about the image


def test_zoomed_views_take_their_share_and_often_leave_a_corner_tumour_out():
    columns, _ = _ramps(400, 32)
    tumour = torch.zeros(400, 32, 32, dtype=torch.bool)
    tumour[:, :6, :6] = True  # the top-left corner: in a 2x view with probability 0.375^2
    config = AugmentConfig(**{**vars(IDENTITY), "zoom_views": 0.5, "zoom_view_range": (2.0, 2.0)})
    out, masks = augment(columns, tumour, torch.Generator().manual_seed(0), config)
    zoomed = (out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))) < 0.75
    assert 0.42 < zoomed.float().mean() < 0.58
    assert torch.equal(masks[~zoomed], tumour[~zoomed])
    empty = ~masks[zoomed].flatten(1).any(1)
    assert 0.78 < empty.float().mean() < 0.94  # 1 - 0.375^2 = 0.86


def test_crops_are_windows_at_the_input_scale_inside_the_image():
    """A 16 px crop of a 32 px ramp spans half its columns and rows at the input's own slope,
    its mask is the same window of the input mask, and the windows move about the image."""
    columns, rows = _ramps(64, 32)
    tumour = torch.rand(64, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.5
    config = AugmentConfig(**{**vars(IDENTITY), "crop": 16})
    first = []  # the window's first column, then its first row
    for image in (columns, rows):
        out, masks = augment(image, tumour, torch.Generator().manual_seed(0), config)
        assert out.shape == (64, 1, 16, 16) and masks.shape == (64, 16, 16)
        span = out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))
        torch.testing.assert_close(span, torch.full_like(span, 15 / 32), atol=1e-4, rtol=0)
        assert out.min() > 0  # inside the image
        first.append((out[:, 0, 0, 0] * 32 - 0.5).round().long())
    cols, starts = first
    for i in range(64):
        window = tumour[i, starts[i]:starts[i] + 16, cols[i]:cols[i] + 16]
        assert (masks[i] == window).float().mean() > 0.9  # nearest neighbour at sub-pixel shifts
    assert starts.min() <= 3 and starts.max() >= 13


def test_crops_of_zoomed_views_stay_inside_the_view():
    """A 16 px crop of a 2x view of a 32 px ramp spans a quarter of the ramp, never the padding
    outside the image, and the windows still move about the image."""
    columns, rows = _ramps(64, 32)
    config = AugmentConfig(**{**vars(IDENTITY), "zoom_views": 1.0, "zoom_view_range": (2.0, 2.0),
                              "crop": 16})
    for image in (columns, rows):
        out, _ = augment(image, None, torch.Generator().manual_seed(0), config)
        span = out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))
        torch.testing.assert_close(span, torch.full_like(span, 7.5 / 32), atol=1e-4, rtol=0)
        assert out.min() > 0  # inside the view, so inside the image
        centres = out.mean(dim=(1, 2, 3))
        assert centres.min() < 0.3 and centres.max() > 0.7


def test_whole_images_are_shrunk_not_cropped():
    """Images flagged ``whole`` keep all of the image (a corner tumour included) at the crop's
    side; the others often lose a corner tumour."""
    columns, _ = _ramps(200, 32)
    tumour = torch.zeros(200, 32, 32, dtype=torch.bool)
    tumour[:, :8, :8] = True
    whole = torch.arange(200) % 2 == 0
    out, masks = augment(columns, tumour, torch.Generator().manual_seed(0),
                         AugmentConfig(**{**vars(IDENTITY), "crop": 16}), whole)
    span = out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))
    torch.testing.assert_close(span[whole], torch.full_like(span[whole], 30 / 32), atol=1e-4,
                               rtol=0)
    torch.testing.assert_close(masks[whole].sum(dim=(1, 2)).float(),
                               torch.full((100,), 16.0))  # the 8 px corner at half the side
    kept = masks[~whole].flatten(1).any(1).float().mean()
    assert 0.15 < kept < 0.45  # a window starting within 8 px on both axes: about 0.25
