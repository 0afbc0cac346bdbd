"""Inpainting changes only its dilated region; the control region is the tumour's shape moved
into tumour-free brain."""

from __future__ import annotations

import numpy as np
import pytest

from braincam.data.regions import control_region, dilate, inpaint


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def phantom(seed=0, size=64):
    """A noisy grey head (disc of radius 28) with a bright blob (the tumour) at (20, 24)."""
    rng = np.random.default_rng(seed)
    head = disc((size, size), 32, 32, 28)
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
