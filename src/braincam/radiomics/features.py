"""Radiomic features inside the tumour mask, computed by pyradiomics.

Why pyradiomics: it is the reference implementation the Image Biomarker Standardisation
Initiative (IBSI) compares against, it is maintained, and it computes every family asked for
in 2D (``force2D``): shape 2D, first order, GLCM, GLRLM, GLSZM, GLDM and NGTDM. mirp is the
other IBSI-compliant choice; pyradiomics needs fewer dependencies here (SimpleITK only).

Preprocessing, per image, in the original pixels (no crop or resize, so shape features are in
pixels of the published image):

1. intensities as braincam reads them (grey, float in [0, 1]);
2. normalised inside the head mask (:func:`braincam.data.mask.head_mask`) with one of the
   standardisations ``braincam train`` offers (:func:`braincam.data.preprocess.standardise`),
   by default ``zscore-in-mask``: ``z = (x - mean_head) / sd_head`` clipped to [-3, 3] and
   mapped to [0, 1], so 1 unit = 6 head standard deviations;
3. grey levels discretised with a **fixed bin width** (default 1/32, i.e. 0.1875 head SD;
   32 bins over the clipped range), which keeps texture features comparable across images
   (IBSI recommends a fixed bin width for MRI after intensity normalisation).

The feature names are pyradiomics' (``original_<family>_<Feature>``) without the
``original_`` prefix, e.g. ``shape2D_PixelSurface``, ``glcm_Contrast``.

Known bias: pyradiomics' 2D ``Perimeter`` is the length of the marching-squares outline of the
binary mask, which overestimates a digitised circle's perimeter by about 5-7% at every radius
(``shape2D_PixelSurface`` and ``MeshSurface`` are within 1%).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from braincam.data.mask import head_mask
from braincam.data.preprocess import STANDARDIZE, standardise
from braincam.errors import BraincamError

FAMILIES = ("shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
MIN_PIXELS = 10  # fewer mask pixels than this: texture matrices are meaningless
HEAD_MASK_SIDE = 256
PAD = 4  # pixels kept around the mask's bounding box (NGTDM looks one pixel beyond the mask)


@dataclass(frozen=True)
class RadiomicsConfig:
    """How features are computed (stored in ``radiomics.json``)."""

    standardize: str = "zscore-in-mask"
    bin_width: float = 1 / 32
    families: tuple[str, ...] = FAMILIES

    def __post_init__(self) -> None:
        if self.standardize not in STANDARDIZE:
            raise BraincamError(
                f"unknown standardisation {self.standardize!r}; choose one of {STANDARDIZE}"
            )
        if self.bin_width <= 0:
            raise BraincamError("--bin-width must be positive")
        unknown = set(self.families) - set(FAMILIES)
        if unknown:
            raise BraincamError(f"unknown feature families {sorted(unknown)}; known: {FAMILIES}")


def normalised(grey: np.ndarray, standardize: str) -> np.ndarray:
    """``grey`` (float in [0, 1]) standardised by statistics inside its head mask.

    The head mask only supplies statistics, so it is found on a copy whose longer side is at
    most :data:`HEAD_MASK_SIDE` pixels (4x fewer pixels for a 512 px slice) and scaled back."""
    import cv2

    grey = grey.astype(np.float32)
    scale = HEAD_MASK_SIDE / max(grey.shape)
    if scale >= 1:
        return standardise(grey, head_mask(grey), standardize)
    small = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    head = cv2.resize(
        head_mask(small).astype(np.uint8), grey.shape[::-1], interpolation=cv2.INTER_NEAREST
    ).astype(bool)
    return standardise(grey, head, standardize)


def extract(grey: np.ndarray, tumour: np.ndarray, config: RadiomicsConfig) -> dict[str, float]:
    """Features of one image inside ``tumour`` (bool, same shape). Raises ``BraincamError``
    for an empty or tiny mask or a shape mismatch."""
    import SimpleITK as sitk
    from radiomics import featureextractor

    if grey.shape != tumour.shape:
        raise BraincamError(f"mask shape {tumour.shape} differs from image shape {grey.shape}")
    if int(tumour.sum()) < MIN_PIXELS:
        raise BraincamError(f"tumour mask has {int(tumour.sum())} pixels (< {MIN_PIXELS})")
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    image = normalised(grey, config.standardize)
    rows, cols = np.flatnonzero(tumour.any(axis=1)), np.flatnonzero(tumour.any(axis=0))
    y0, x0 = max(rows[0] - PAD, 0), max(cols[0] - PAD, 0)
    window = np.s_[y0 : rows[-1] + 1 + PAD, x0 : cols[-1] + 1 + PAD]  # pyradiomics crops alike,
    image, tumour = image[window], tumour[window]  # after checks on the whole image: skip those
    extractor = featureextractor.RadiomicsFeatureExtractor(
        force2D=True, binWidth=config.bin_width, label=1, additionalInfo=False
    )
    extractor.disableAllFeatures()
    for family in config.families:
        extractor.enableFeatureClassByName(family)
    extractor.disableAllImageTypes()
    extractor.enableImageTypeByName("Original")
    result = extractor.execute(
        sitk.GetImageFromArray(image[None].astype(np.float32)),
        sitk.GetImageFromArray(tumour[None].astype(np.uint8)),
    )
    return {
        key.removeprefix("original_"): float(value)
        for key, value in result.items()
        if key.startswith("original_")
    }
