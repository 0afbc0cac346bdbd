"""Radiomic features of shapes whose values are known by hand."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

from braincam.errors import BraincamError
from braincam.radiomics import FAMILIES, RadiomicsConfig, extract
from braincam.radiomics.features import RING_FAMILIES


def disc(size: int, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] + 0.5
    return (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2


def test_the_library_is_installed_by_make_install():
    assert importlib.metadata.version("pyradiomics")


@pytest.mark.parametrize("radius", [20, 45])
def test_disc_features_match_their_analytic_values(radius):
    size = 2 * radius + 40
    tumour = disc(size, radius)
    yy, xx = np.mgrid[:size, :size]
    # inside: a checkerboard of 0.4 and 0.6 (mean 0.5, variance 0.01); outside: 0.1
    grey = np.where(tumour, np.where((yy + xx) % 2 == 0, 0.4, 0.6), 0.1).astype(np.float32)
    f = extract(grey, tumour, RadiomicsConfig(standardize="none", bin_width=0.05))

    assert f["shape2D_PixelSurface"] == pytest.approx(np.pi * radius**2, rel=0.02)
    assert f["shape2D_MeshSurface"] == pytest.approx(np.pi * radius**2, rel=0.02)
    # pyradiomics' marching-squares outline of a digitised circle is 5-7% longer than 2 pi r
    # (module docstring); the diameter is exact to a pixel
    assert f["shape2D_Perimeter"] == pytest.approx(2 * np.pi * radius, rel=0.07)
    assert f["shape2D_MaximumDiameter"] == pytest.approx(2 * radius, abs=1.5)
    assert f["firstorder_Mean"] == pytest.approx(0.5, abs=1e-3)
    assert f["firstorder_Variance"] == pytest.approx(0.01, rel=0.02)
    assert f["shape2D_Elongation"] == pytest.approx(1.0, abs=0.01)


def test_every_family_is_computed_and_texture_tells_textures_apart():
    tumour = disc(96, 30)
    rng = np.random.default_rng(0)
    smooth = np.where(tumour, 0.5, 0.1).astype(np.float32) + rng.normal(0, 0.01, tumour.shape)
    rough = np.where(tumour, 0.5, 0.1).astype(np.float32) + rng.normal(0, 0.1, tumour.shape)
    config = RadiomicsConfig(standardize="none", bin_width=0.02)
    a, b = extract(smooth, tumour, config), extract(rough, tumour, config)

    assert {name.split("_")[0] for name in a if not name.startswith("ring_")} == set(FAMILIES)
    assert {name.split("_")[1] for name in a if name.startswith("ring_")} == set(RING_FAMILIES)
    assert b["glcm_Contrast"] > 10 * a["glcm_Contrast"]
    assert b["firstorder_Entropy"] > a["firstorder_Entropy"] + 1


def test_intensities_are_normalised_inside_the_head():
    """The z-score comes from the head, so scaling the whole image leaves features unchanged."""
    tumour = disc(128, 15)
    yy, xx = np.mgrid[:128, :128]
    head = (yy - 64) ** 2 / 55**2 + (xx - 64) ** 2 / 45**2 <= 1
    rng = np.random.default_rng(1)
    grey = np.where(head, 0.4 + 0.05 * rng.standard_normal((128, 128)), 0.0)
    grey = np.clip(np.where(tumour, grey + 0.2, grey), 0, 1).astype(np.float32)
    config = RadiomicsConfig()
    a, b = extract(grey, tumour, config), extract(grey * 0.5, tumour, config)

    assert a["firstorder_Mean"] == pytest.approx(b["firstorder_Mean"], rel=1e-3)
    assert a["glcm_Contrast"] == pytest.approx(b["glcm_Contrast"], rel=0.05)


def test_bad_masks_and_settings_give_one_line_errors():
    grey = np.zeros((64, 64), np.float32)
    with pytest.raises(BraincamError, match="differs"):
        extract(grey, np.ones((32, 32), bool), RadiomicsConfig())
    with pytest.raises(BraincamError, match="pixels"):
        extract(grey, np.zeros((64, 64), bool), RadiomicsConfig())
    with pytest.raises(BraincamError, match="bin-width"):
        RadiomicsConfig(bin_width=0)
    with pytest.raises(BraincamError, match="families"):
        RadiomicsConfig(families=("wavelet",))
    with pytest.raises(BraincamError, match="family"):
        RadiomicsConfig(families=())
    with pytest.raises(BraincamError, match="--ring"):
        RadiomicsConfig(ring=-1)
