"""The head mask and the regions derived from it: brain interior, skull-rim band, background.

``head_mask``: Gaussian blur (sigma = 0.5% of the image side, against JPEG noise) -> Otsu
threshold -> morphological closing with a disc of radius 1% of the side (joins a skull ring broken
by a small gap) -> each image side closed between the first and last head pixel on it (joins a
ring the frame cuts off, :func:`close_along_frame`) -> holes filled -> the largest connected
component, or the convex hull of the large pieces when the head fell apart (a dark brain below
Otsu's threshold between bright scalp and lesion). The two repairs are kept only when what they
add is tissue (median above halfway between background and the threshold), so a corner marker
or a label is never joined to the head. Filling before choosing matters: in T1 the dark skull
bone (or CSF) often separates a bright scalp ring from the brain; filling the ring makes the
whole head one region.

When the brain is darker than Otsu's threshold and no closed ring holds it (a sagittal slice
whose bright fat and lesion take the upper class, a T2 slice the frame cuts), that mask is a
fragment. Li's minimum cross-entropy threshold, lower than Otsu's on such images, separates the
black background from all tissue; its mask replaces Otsu's when Otsu's covers less than
``LOW_THRESHOLD_COVER`` (70%) of it. On the Sartaj data this changes 35 of 3264 masks, all
to larger ones.

The rim band is measured inwards from the mask border with the Euclidean distance transform, so
it has the same width everywhere; the image border is not a head border (a head cut off by the
frame is not eroded from the frame).

Widths: the skull and scalp take roughly 5% of the side of a typical axial slice framed to the
head, hence ``RIM_FRACTION = 0.05`` (about 11 px at 224 px).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_li

RIM_FRACTION = 0.05
_BLUR_FRACTION = 0.005
_CLOSE_FRACTION = 0.01
_PART_FRACTION = 0.01  # pieces of at least 1% of the image count as parts of the head
LOW_THRESHOLD_COVER = 0.7


def head_mask(grey: np.ndarray) -> np.ndarray:
    """Boolean mask of the head in a grey image (float in [0, 1] or uint8).

    A constant image (e.g. all black) has no head: the mask is all False.
    """
    grey = np.asarray(grey)
    u8 = grey if grey.dtype == np.uint8 else np.clip(np.rint(grey * 255.0), 0, 255).astype(np.uint8)
    if u8.size == 0 or u8.min() == u8.max():
        return np.zeros(u8.shape, dtype=bool)
    blurred = cv2.GaussianBlur(u8, (0, 0), sigmaX=max(0.5, _BLUR_FRACTION * min(u8.shape)))
    otsu, _ = cv2.threshold(blurred, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = _mask_above(blurred, otsu)
    low = threshold_li(blurred)
    if low < otsu:
        fuller = _mask_above(blurred, low)
        if mask.sum() < LOW_THRESHOLD_COVER * fuller.sum():
            return fuller
    return mask


def _mask_above(blurred: np.ndarray, threshold: float) -> np.ndarray:
    """The head as the pixels above ``threshold``: closed, filled, largest component, with the
    two repairs of the module docstring."""
    binary = (blurred > threshold).astype(np.uint8)
    radius = max(1, round(_CLOSE_FRACTION * min(blurred.shape)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    closed = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, disc).astype(bool)
    labels, _ = ndimage.label(fill_holes(closed))
    simple = _largest(labels)
    if not simple.any():
        return simple
    # repairs: a ring the frame cuts off, closed along the frame; a head in large pieces,
    # joined by their convex hull. Kept only when what they add is tissue, not background
    # (a corner marker or a label beside the head is not joined to it)
    framed = close_along_frame(closed)
    if not np.array_equal(framed, closed):  # else the same labels
        labels, _ = ndimage.label(fill_holes(framed))
    sizes = np.bincount(labels.ravel())[1:]
    parts = np.flatnonzero(sizes >= _PART_FRACTION * labels.size) + 1
    repaired = _hull(np.isin(labels, parts)) if parts.size > 1 else _largest(labels)
    added = repaired & ~simple
    if not added.any():
        return simple
    outside = blurred[~repaired] if not repaired.all() else np.percentile(blurred, 5)
    background_level = float(np.median(outside))
    is_tissue = np.median(blurred[added]) > (background_level + threshold) / 2
    return repaired | simple if is_tissue else simple


def fill_holes(binary: np.ndarray) -> np.ndarray:
    """``binary`` with its holes filled: the False regions (4-connected) that do not touch the
    image border become True. The result of ``scipy.ndimage.binary_fill_holes``, which grows
    the outside in from the border one pixel per pass, by one labelling of the False pixels:
    on real slices :func:`head_mask` runs 1.62x faster (docs/results.md, "First
    preprocessing")."""
    binary = np.asarray(binary, bool)
    if not binary.size:
        return binary.copy()
    outside, n = ndimage.label(~binary)
    border = np.concatenate([outside[0], outside[-1], outside[:, 0], outside[:, -1]])
    open_to_border = np.zeros(n + 1, dtype=bool)
    open_to_border[border] = True
    return binary | ~open_to_border[outside]


def _largest(labels: np.ndarray) -> np.ndarray:
    """The largest component of a label image (all False when it has none)."""
    sizes = np.bincount(labels.ravel())[1:]
    if not sizes.size:
        return np.zeros(labels.shape, dtype=bool)
    return labels == 1 + int(np.argmax(sizes))


def _hull(binary: np.ndarray) -> np.ndarray:
    """The filled convex hull of the True pixels of ``binary``."""
    hull = np.zeros(binary.shape, dtype=np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero(binary.astype(np.uint8))), 1)
    return hull.astype(bool)


def close_along_frame(binary: np.ndarray) -> np.ndarray:
    """``binary`` with each image side set to True between its first and last True pixel.

    A head cut off by the frame leaves its skull ring open there; the frame segment closes it,
    so filling holes fills the brain (without it the mask was the ring alone, or a bright
    fragment, and the crop cut the tumour away). Corners outside the head stay open to the
    frame: on each side the segment only spans the pixels the head touches.
    """
    out = binary.copy()
    for side in (out[0], out[-1], out[:, 0], out[:, -1]):  # views: writes reach ``out``
        hits = np.flatnonzero(side)
        if hits.size:
            side[hits[0]:hits[-1] + 1] = True
    return out


def rim_width(shape: tuple[int, ...], rim_fraction: float = RIM_FRACTION) -> int:
    """Rim band width in pixels: ``max(1, round(rim_fraction * min(H, W)))``."""
    return max(1, round(rim_fraction * min(shape[:2])))


def erode(mask: np.ndarray, width_px: int) -> np.ndarray:
    """Pixels of ``mask`` farther than ``width_px`` (Euclidean) from any non-mask pixel."""
    mask = np.asarray(mask, dtype=bool)
    if width_px <= 0 or mask.all():
        return mask.copy()
    return ndimage.distance_transform_edt(mask) > width_px


def rim_band(mask: np.ndarray, width_px: int) -> np.ndarray:
    """The band of ``mask`` within ``width_px`` of its border: ``mask & ~erode(mask, width_px)``
    (skull, scalp and the outermost cortex)."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~erode(mask, width_px)


def brain_region(mask: np.ndarray, rim_fraction: float = RIM_FRACTION) -> np.ndarray:
    """The brain interior: ``mask`` minus its rim band of ``rim_width(mask.shape, rim_fraction)``
    pixels, so ``brain_region | rim_band == mask`` with no overlap."""
    return erode(mask, rim_width(np.shape(mask), rim_fraction))


def background(mask: np.ndarray) -> np.ndarray:
    """Everything outside the head: ``~mask``."""
    return ~np.asarray(mask, dtype=bool)
