"""Inpainting changes only its dilated region; the control region is the tumour's shape moved
into tumour-free brain; lesion views hold the whole tumour or none of it, with as much brain."""

from __future__ import annotations

import numpy as np
import pytest

from braincam.data.regions import (
    control_region,
    crop_view,
    dilate,
    inpaint,
    view_pair,
    window_sums,
)


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def phantom(seed=0, size=64):
    """A noisy grey head (a centred disc, radius 28 at 64 px) with a bright blob (the tumour)
    at (20, 24)."""
    rng = np.random.default_rng(seed)
    head = disc((size, size), size // 2, size // 2, size * 7 // 16)
    tumour = disc((size, size), 20, 24, 5) | disc((size, size), 24, 28, 3)  # not convex
    image = np.where(head, 100, 0) + rng.integers(0, 20, (size, size))
    image = np.where(tumour, 230, image).astype(np.uint8)
    return image, head, tumour


@pytest.mark.parametrize("dilate_px", [0, 2, 4])
def test_inpaint_changes_only_the_dilated_region_and_removes_the_blob(dilate_px):
    image, _, tumour = phantom()
    out = inpaint(image, tumour, dilate_px=dilate_px)
    grown = dilate(tumour, dilate_px)
    assert grown.sum() >= tumour.sum()
    np.testing.assert_array_equal(out[~grown], image[~grown])
    # the bright blob (230) is filled from its surroundings (100..119)
    assert out[tumour].mean() < 140
    assert out.dtype == np.uint8


def test_inpaint_of_an_empty_region_is_the_image():
    image, _, _ = phantom()
    np.testing.assert_array_equal(inpaint(image, np.zeros_like(image, dtype=bool)), image)


def test_inpaint_rejects_a_float_image():
    image, _, tumour = phantom()
    with pytest.raises(ValueError, match="uint8"):
        inpaint(image.astype(np.float32), tumour)


@pytest.mark.parametrize("seed", range(20))
def test_control_region_is_the_same_shape_in_free_brain(seed):
    _, head, tumour = phantom()
    margin = 3
    control = control_region(tumour, head, np.random.default_rng(seed), margin_px=margin)
    assert control is not None
    assert control.sum() == tumour.sum()
    assert not (control & dilate(tumour, margin)).any()
    assert not (control & ~head).any()
    # a translation of the same shape: the bounding-box crops are equal
    def crop(m):
        ys, xs = np.nonzero(m)
        return m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    np.testing.assert_array_equal(crop(control), crop(tumour))


def test_control_region_varies_with_the_generator_and_repeats_with_its_seed():
    _, head, tumour = phantom()
    draws = [control_region(tumour, head, np.random.default_rng(s)) for s in range(10)]
    assert len({d.tobytes() for d in draws}) > 1
    again = control_region(tumour, head, np.random.default_rng(3))
    np.testing.assert_array_equal(again, draws[3])


def test_control_region_is_none_when_nothing_fits():
    _, _, tumour = phantom()
    small_brain = disc(tumour.shape, 20, 24, 9)  # room for the tumour only
    assert control_region(tumour, small_brain, np.random.default_rng(0)) is None
    empty = np.zeros_like(tumour)
    assert control_region(empty, small_brain, np.random.default_rng(0)) is None


def test_window_sums_match_a_direct_count():
    region = np.random.default_rng(0).random((12, 10)) > 0.5
    sums = window_sums(region, 4)
    assert sums.shape == (9, 7)
    assert sums[5, 2] == region[5:9, 2:6].sum()
    assert sums[8, 6] == region[8:12, 6:10].sum()


@pytest.mark.parametrize("seed", range(20))
def test_view_pair_holds_the_whole_tumour_or_none_of_it_with_as_much_brain(seed):
    _, head, tumour = phantom(size=96)
    margin, side = 4, 40
    pair = view_pair(tumour, head, side, np.random.default_rng(seed), margin_px=margin)
    assert pair is not None and pair.side == side

    def window(corner):
        out = np.zeros_like(tumour)
        out[corner[0]:corner[0] + side, corner[1]:corner[1] + side] = True
        return out

    held, clear = window(pair.tumour), window(pair.clear)
    assert held.sum() == clear.sum() == side * side  # both lie wholly inside the image
    assert not (tumour & ~held).any()
    assert not (clear & dilate(tumour, margin)).any()
    share = [(w & head).sum() / side**2 for w in (held, clear)]
    assert abs(share[0] - share[1]) <= 0.1


def test_view_pair_repeats_with_its_seed_and_is_none_when_nothing_fits():
    _, head, tumour = phantom(size=96)
    draws = [view_pair(tumour, head, 40, np.random.default_rng(s)) for s in range(10)]
    assert len({(d.tumour, d.clear) for d in draws}) > 1
    assert view_pair(tumour, head, 40, np.random.default_rng(3)) == draws[3]
    assert view_pair(np.zeros_like(tumour), head, 40, np.random.default_rng(0)) is None
    assert view_pair(tumour, head, 8, np.random.default_rng(0)) is None  # tumour box > side
    # the brain is a 16 x 16 square around the tumour: every tumour window holds >= 0.47 of
    # brain, every tumour-free window <= 0.31, so only a loose tolerance finds a pair
    brain, small = np.zeros((40, 40), bool), np.zeros((40, 40), bool)
    brain[:16, :16], small[5:9, 5:9] = True, True
    for seed in range(5):
        assert view_pair(small, brain, 16, np.random.default_rng(seed), margin_px=2) is None
        assert view_pair(small, brain, 16, np.random.default_rng(seed), margin_px=2,
                         tolerance=1.0) is not None


def test_crop_view_resizes_the_window_to_the_image_side():
    image = np.zeros((8, 8), np.uint8)
    image[2:4, 4:6] = 200
    view = crop_view(image, (2, 4), 2)
    assert view.shape == (8, 8) and (view == 200).all()
    np.testing.assert_array_equal(crop_view(image, (0, 0), 8), image)
