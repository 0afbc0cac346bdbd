"""Overlays: colour map, blending, outlines, mapping back through the preprocessing crop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from braincam.data.preprocess import Preprocessed
from braincam.data.records import Box
from braincam.explain.render import (
    ALPHA,
    BOX_RGB,
    MASK_RGB,
    colour_table,
    overlay,
    overlay_original,
    write_png,
)


def test_colour_table_is_inferno_and_monotone_in_lightness():
    table = colour_table().astype(float)
    assert table.shape == (256, 3)
    assert table[0].tolist() == [0, 0, 4] and table[-1].tolist() == [252, 255, 164]
    lab = cv2.cvtColor(table[None].astype(np.uint8), cv2.COLOR_RGB2LAB)[0].astype(float)
    assert np.all(np.diff(lab[::16, 0]) > 0)  # perceptual lightness rises with the value


def test_blend_weights_by_the_map():
    grey = np.full((8, 8), 100, np.uint8)
    cam = np.zeros((8, 8), np.float32)
    cam[:, 4:] = 1.0
    out = overlay(grey, cam)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert np.all(out[:, :4] == 100)  # map 0: the MRI unchanged
    expected = np.rint((1 - ALPHA) * 100 + ALPHA * colour_table()[255]).astype(np.uint8)
    assert np.all(out[:, 4:] == expected)


def test_mask_outline_and_box_are_drawn():
    grey = np.zeros((64, 64), np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    out = overlay(grey, np.zeros((64, 64)), mask=mask, box=(4, 4, 12, 12))
    assert out[16, 30].tolist() == list(MASK_RGB) and out[30, 30].tolist() == [0, 0, 0]
    assert out[4, 8].tolist() == list(BOX_RGB) and out[11, 8].tolist() == list(BOX_RGB)
    assert out[8, 8].tolist() == [0, 0, 0]  # the box is an outline
    with pytest.raises(ValueError, match="differ"):
        overlay(grey, np.zeros((32, 32)))


def test_overlay_on_the_original_goes_through_the_crop():
    """A 4x4 model-input map that is 1 in its left half lands in the left half of the crop
    box (x 20..40 of the crop 20..60), nowhere outside the crop."""
    original = np.full((50, 80), 0.5, np.float32)
    prep = Preprocessed(np.zeros((4, 4), np.uint8), np.ones((4, 4), bool), (20, 10, 60, 50),
                        (80, 50))
    cam = np.zeros((4, 4), np.float32)
    cam[:, :2] = 1.0
    out = overlay_original(original, cam, prep, box=Box(0.5, 0.5, 0.25, 0.4), draw_mask=False)
    grey = np.rint(0.5 * 255)
    assert out.shape == (50, 80, 3)
    assert np.all(out[:, :20] == grey) and np.all(out[:, 61:] == grey)  # outside the crop
    assert np.all(out[20:40, 22:28] != grey)  # coloured where the map is high
    assert np.all(out[38:48, 46:58] == grey)  # right half of the crop (below the box): map 0
    assert out[15, 35].tolist() == list(BOX_RGB)  # box top edge y = 0.3 * 50


def test_png_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    write_png(tmp_path / "sub" / "a.png", rgb)
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "sub" / "a.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, rgb)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.png"]  # no temp files left
