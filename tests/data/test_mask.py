"""Head mask on synthetic heads, and the regions derived from it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from braincam.data.mask import (
    background,
    brain_region,
    fill_holes,
    head_mask,
    rim_band,
    rim_width,
)


def _disc(size=64, radius=22, centre=(30, 34)):
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _head(size=64, seed=0):
    """A noisy bright disc with a dark ring inside (CSF) and a dark core (ventricle)."""
    rng = np.random.default_rng(seed)
    disc = _disc(size)
    grey = np.where(disc, 0.6, 0.03) + rng.normal(0, 0.03, (size, size))
    grey[_disc(size, 17) & ~_disc(size, 15)] = 0.05  # dark ring: must not split the head
    grey[_disc(size, 4)] = 0.02  # dark hole: must be filled
    grey[2, 2] = 0.9  # bright speck outside: not the largest component
    return np.clip(grey, 0, 1).astype(np.float32), disc


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_head_mask_matches_a_disc():
    grey, disc = _head()
    mask = head_mask(grey)
    assert mask.dtype == bool and mask.shape == grey.shape
    assert _iou(mask, disc) > 0.95
    assert not mask[2, 2]


def test_head_mask_accepts_uint8():
    grey, _ = _head(seed=1)
    u8 = np.rint(grey * 255).astype(np.uint8)
    np.testing.assert_array_equal(head_mask(u8), head_mask(grey))


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_constant_image_has_no_head(value):
    assert not head_mask(np.full((32, 32), value, np.float32)).any()


def test_rim_and_brain_partition_the_mask():
    disc = _disc(64, 22)
    width = rim_width(disc.shape)
    assert width == round(0.05 * 64) == 3
    rim, brain = rim_band(disc, width), brain_region(disc)
    assert not (rim & brain).any()
    np.testing.assert_array_equal(rim | brain, disc)
    # the interior is the disc shrunk by the band width: radius 22 - 3 = 19
    assert abs(brain.sum() - np.pi * 19**2) < 0.06 * np.pi * 19**2
    np.testing.assert_array_equal(background(disc), ~disc)


def test_image_border_is_not_a_head_border():
    mask = np.zeros((40, 40), bool)
    mask[:, :20] = True  # head cut off by the left and top/bottom frame
    rim = rim_band(mask, 3)
    assert rim[:, 17:20].all() and not rim[:, :17].any()
    assert not rim_band(np.ones((8, 8), bool), 2).any()


def test_ring_cut_by_the_frame_is_closed_and_filled():
    """A head cut off at the bottom of the frame: its bright skull ring is open there, the dark
    brain inside is below Otsu's threshold; the mask must still be the whole head."""
    yy, xx = np.mgrid[:80, :80]
    r2 = (yy - 60) ** 2 + (xx - 40) ** 2
    grey = np.full((80, 80), 0.02, np.float32)
    grey[r2 <= 36**2] = 0.25  # dark brain
    grey[(r2 <= 36**2) & (r2 >= 32**2)] = 0.9  # bright ring, leaves the frame at the bottom
    mask = head_mask(grey)
    assert _iou(mask, r2 <= 36**2) > 0.95
    assert not mask[0, 0] and not mask[79, 0]  # corners outside the head stay background


def test_head_in_large_pieces_becomes_their_hull():
    """A dark head whose bright parts are two large separate blobs (scalp fat, a lesion): the
    mask spans both, not just the larger one."""
    grey = np.full((80, 80), 0.02, np.float32)
    grey[10:70, 10:70] = 0.2  # dark head, below Otsu's threshold
    grey[12:30, 12:68] = 0.9  # bright piece 1 (1008 px)
    grey[50:68, 20:60] = 0.9  # bright piece 2 (720 px)
    mask = head_mask(grey)
    assert mask[15, 15] and mask[60, 40] and mask[40, 40]  # both pieces and between them
    assert not mask[2, 2]


def test_dark_brain_without_a_closed_ring_takes_the_lower_threshold():
    """A sagittal-like slice: dark brain (0.25) under a bright scalp arc over its top only and a
    bright lesion. Otsu's threshold falls between brain and fat, so its mask is the arc (the
    lesion is not tissue-joined); Li's lower threshold finds the whole head."""
    yy, xx = np.mgrid[:96, :96]
    r2 = (yy - 52) ** 2 + (xx - 48) ** 2
    head = r2 <= 38**2
    grey = np.full((96, 96), 0.02, np.float32)
    grey[head] = 0.25
    grey[head & (r2 >= 33**2) & (yy < 40)] = 0.95  # open arc: fat over the top of the head
    grey[(yy - 60) ** 2 + (xx - 60) ** 2 <= 7**2] = 0.95  # lesion
    grey += np.random.default_rng(0).normal(0, 0.01, grey.shape).astype(np.float32)
    mask = head_mask(np.clip(grey, 0, 1))
    assert _iou(mask, head) > 0.95
    assert not mask[2, 2] and not mask[93, 93]


def test_fill_holes_fills_enclosed_regions_only_as_scipy_does():
    ring = np.zeros((9, 10), bool)
    ring[1:8, 1:8] = True
    ring[3:6, 3:6] = False  # a hole
    ring[0:3, 8] = True
    open_bay = ring.copy()
    open_bay[4, 0:3] = False  # a bay open to the border stays open
    assert fill_holes(ring)[3:6, 3:6].all() and fill_holes(ring).sum() == ring.sum() + 9
    assert not fill_holes(open_bay)[4, 0]
    diagonal = np.ones((5, 5), bool)
    diagonal[2, 2] = diagonal[1, 1] = diagonal[0, 0] = False  # 8-connected to the corner only
    rng = np.random.default_rng(0)
    cases = [ring, open_bay, diagonal, np.zeros((4, 4), bool), np.ones((3, 5), bool),
             np.zeros((0, 0), bool)] + [rng.random((n, n + 2)) < d for n in (1, 3, 20, 60)
                                         for d in (0.4, 0.6, 0.8) for _ in range(5)]
    for case in cases:
        np.testing.assert_array_equal(fill_holes(case), ndimage.binary_fill_holes(case))
