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

Two additions beyond the tumour itself (Cheng et al., PLoS ONE 2015, showed on this dataset that
the tissue around the tumour carries much of the type information):

- **ring** (``ring_<family>_<Feature>``): first-order and texture features (no shape) of the
  peritumoural ring, :func:`ring_mask`: the tumour dilated by a disc of ``ring`` pixels, minus
  the tumour, inside the head. Fewer than :data:`MIN_PIXELS` ring pixels: the ring columns are
  NaN (the baseline imputes them), the image is not skipped.
- **location** (``location_*``, :func:`location_features`): where the tumour sits in the head.

The head mask is found once per image, on the reduced copy (:func:`find_head`), and serves the
intensity normalisation, the ring and the location.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from braincam.data.mask import head_mask
from braincam.data.preprocess import STANDARDIZE, standardise
from braincam.errors import BraincamError

TUMOUR_FAMILIES = ("shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
RING_FAMILIES = TUMOUR_FAMILIES[1:]  # the ring's shape is the tumour's, dilated: no shape2D
FAMILIES = (*TUMOUR_FAMILIES, "location")
LOCATION_FEATURES = ("dx", "dy", "distance", "edge_distance", "area_ratio")
MIN_PIXELS = 10  # fewer mask pixels than this: texture matrices are meaningless
HEAD_MASK_SIDE = 256
PAD = 4  # pixels kept around the mask's bounding box (NGTDM looks one pixel beyond the mask)
RING_PX = 8  # default ring width: 1.6% of the side of a 512 px Figshare slice; chosen a priori,
# not tuned on any test set or cross-validated score


@dataclass(frozen=True)
class RadiomicsConfig:
    """How features are computed (stored in ``radiomics.json``). ``ring``: width in pixels of
    the peritumoural ring (0: no ring features)."""

    standardize: str = "zscore-in-mask"
    bin_width: float = 1 / 32
    families: tuple[str, ...] = FAMILIES
    ring: int = RING_PX

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
        if not self.families:
            raise BraincamError(f"no feature family chosen; known: {FAMILIES}")
        if self.ring < 0 or int(self.ring) != self.ring:
            raise BraincamError("--ring must be a whole number of pixels >= 0")


@dataclass(frozen=True, eq=False)
class Head:
    """The head mask of one image: ``mask`` in the image's pixels, and ``small``, the mask as
    found on the copy reduced by ``scale`` (``small is mask`` and ``scale == 1`` when the image
    was not reduced)."""

    mask: np.ndarray
    small: np.ndarray
    scale: float = 1.0

    @classmethod
    def of(cls, mask: np.ndarray) -> Head:
        """A head given at full resolution."""
        mask = np.asarray(mask, dtype=bool)
        return cls(mask, mask, 1.0)


def find_head(grey: np.ndarray) -> Head:
    """The head mask of ``grey`` (float in [0, 1]), found on a copy whose longer side is at most
    :data:`HEAD_MASK_SIDE` pixels (4x fewer pixels for a 512 px slice) and scaled back."""
    import cv2

    grey = np.asarray(grey, dtype=np.float32)
    scale = HEAD_MASK_SIDE / max(grey.shape)
    if scale >= 1:
        return Head.of(head_mask(grey))
    small = head_mask(cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    full = cv2.resize(small.astype(np.uint8), grey.shape[::-1], interpolation=cv2.INTER_NEAREST)
    return Head(full.astype(bool), small, scale)


def normalised(grey: np.ndarray, standardize: str, head: Head | None = None) -> np.ndarray:
    """``grey`` (float in [0, 1]) standardised by statistics inside its head mask (``head``, or
    :func:`find_head`'s)."""
    grey = np.asarray(grey, dtype=np.float32)
    head = head if head is not None else find_head(grey)
    return standardise(grey, head.mask, standardize)


def disc(radius: int) -> np.ndarray:
    """A digital disc structuring element: the pixels within ``radius`` of the centre."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (yy**2 + xx**2 <= radius**2).astype(np.uint8)


def ring_mask(tumour: np.ndarray, head: np.ndarray, width: int) -> np.ndarray:
    """The peritumoural ring: ``dilate(tumour, disc(width)) & ~tumour & head`` (bool, the
    tumour's shape). Dilated inside a window around the tumour only (cheap)."""
    import cv2

    tumour = np.asarray(tumour, dtype=bool)
    ring = np.zeros_like(tumour)
    if width <= 0 or not tumour.any():
        return ring
    window = _window(tumour, width)
    grown = cv2.dilate(tumour[window].astype(np.uint8), disc(width)).astype(bool)
    ring[window] = grown & ~tumour[window] & np.asarray(head, dtype=bool)[window]
    return ring


def location_features(tumour: np.ndarray, head: Head) -> dict[str, float]:
    """Where the tumour sits in the head (formulas in docs/radiomics.md), ``location_*``:

    - ``dx``, ``dy``: tumour centroid minus head centroid, over the head's bounding-box width
      and height (x to the image's right, y down);
    - ``distance``: ``sqrt(dx^2 + dy^2)``;
    - ``edge_distance``: Euclidean distance from the tumour centroid to the nearest pixel outside
      the head (the image frame is not a head border; ~0 when the centroid is outside the head),
      over the head's equivalent radius ``sqrt(area_head / pi)``;
    - ``area_ratio``: tumour area over head area.

    All NaN when the head mask is empty; ``edge_distance`` NaN when nothing in the image is
    outside the head."""
    import cv2
    from scipy import ndimage

    names = [f"location_{n}" for n in LOCATION_FEATURES]
    t_moments = cv2.moments(np.asarray(tumour, dtype=np.uint8), binaryImage=True)
    h_moments = cv2.moments(head.mask.astype(np.uint8), binaryImage=True)
    if h_moments["m00"] == 0 or t_moments["m00"] == 0:
        return dict.fromkeys(names, float("nan"))
    ty, tx = t_moments["m01"] / t_moments["m00"], t_moments["m10"] / t_moments["m00"]
    hy, hx = h_moments["m01"] / h_moments["m00"], h_moments["m10"] / h_moments["m00"]
    rows, cols = np.flatnonzero(head.mask.any(axis=1)), np.flatnonzero(head.mask.any(axis=0))
    dx = (tx - hx) / (cols[-1] - cols[0] + 1)
    dy = (ty - hy) / (rows[-1] - rows[0] + 1)
    edge = float("nan")
    if not head.small.all():  # the distance map of the mask as found (the full one adds nothing)
        depth = cv2.distanceTransform(
            head.small.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
        )
        at = [[(ty + 0.5) * head.scale - 0.5], [(tx + 0.5) * head.scale - 0.5]]
        inside = ndimage.map_coordinates(depth, at, order=1, mode="nearest")[0]
        edge = float(inside) / head.scale / np.sqrt(h_moments["m00"] / np.pi)
    values = (dx, dy, np.hypot(dx, dy), edge, t_moments["m00"] / h_moments["m00"])
    return {n: float(v) for n, v in zip(names, values, strict=True)}


def feature_names(families: tuple[str, ...] | list[str]) -> list[str]:
    """pyradiomics' names (``<family>_<Feature>``) of the features ``families`` compute: every
    feature that is not deprecated, as ``enableFeatureClassByName`` enables them."""
    from radiomics import getFeatureClasses

    classes = getFeatureClasses()
    return [
        f"{family}_{name}"
        for family in families
        for name, deprecated in classes[family].getFeatureNames().items()
        if not deprecated
    ]


def _window(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    """The bounding box of ``mask``'s pixels grown by ``pad`` on each side (inside the image)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, x0 = max(rows[0] - pad, 0), max(cols[0] - pad, 0)
    return np.s_[y0 : rows[-1] + 1 + pad, x0 : cols[-1] + 1 + pad]


def _pyradiomics(
    image: np.ndarray, mask: np.ndarray, families: list[str], bin_width: float
) -> dict[str, float]:
    """pyradiomics' ``families`` of ``image`` inside ``mask``, without the ``original_`` prefix."""
    import SimpleITK as sitk
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)  # after the import, which sets it
    window = _window(mask, PAD)  # pyradiomics crops alike; cropping first saves its copies
    # of the whole image. Built per call: construction takes ~25 us (measured), execute()
    # works on a copy of the settings, so one extractor per process would save nothing
    extractor = featureextractor.RadiomicsFeatureExtractor(
        force2D=True, binWidth=bin_width, label=1, additionalInfo=False
    )
    extractor.disableAllFeatures()
    for family in families:
        extractor.enableFeatureClassByName(family)
    extractor.disableAllImageTypes()
    extractor.enableImageTypeByName("Original")
    result = extractor.execute(
        sitk.GetImageFromArray(image[window][None].astype(np.float32)),
        sitk.GetImageFromArray(mask[window][None].astype(np.uint8)),
    )
    return {
        key.removeprefix("original_"): float(value)
        for key, value in result.items()
        if key.startswith("original_")
    }


def extract(grey: np.ndarray, tumour: np.ndarray, config: RadiomicsConfig) -> dict[str, float]:
    """Features of one image: inside ``tumour`` (bool, same shape), in its ring
    (``ring_*``, with ``config.ring > 0``) and its location (``location_*``), for the families
    of ``config``. Raises ``BraincamError`` for an empty or tiny mask or a shape mismatch."""
    if grey.shape != tumour.shape:
        raise BraincamError(f"mask shape {tumour.shape} differs from image shape {grey.shape}")
    tumour = np.asarray(tumour, dtype=bool)
    if int(tumour.sum()) < MIN_PIXELS:
        raise BraincamError(f"tumour mask has {int(tumour.sum())} pixels (< {MIN_PIXELS})")
    grey = np.asarray(grey, dtype=np.float32)
    head = find_head(grey)
    image = normalised(grey, config.standardize, head)
    inside = [f for f in config.families if f in TUMOUR_FAMILIES]
    features = _pyradiomics(image, tumour, inside, config.bin_width) if inside else {}
    around = [f for f in config.families if f in RING_FAMILIES]
    if config.ring and around:
        ring = ring_mask(tumour, head.mask, config.ring)
        if int(ring.sum()) >= MIN_PIXELS:
            values = _pyradiomics(image, ring, around, config.bin_width)
        else:
            values = dict.fromkeys(feature_names(around), float("nan"))
        features.update({f"ring_{name}": value for name, value in values.items()})
    if "location" in config.families:
        features.update(location_features(tumour, head))
    return features
