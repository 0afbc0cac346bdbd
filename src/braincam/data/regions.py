"""Image regions for counterfactuals: remove a region by inpainting, and find a control region.

``inpaint`` fills the region, dilated by ``dilate_px`` (a mask or box edge misses the tumour's
bright rim by a pixel or two), with OpenCV's Telea inpainting (``cv2.INPAINT_TELEA``, fast
marching: each pixel is a distance- and direction-weighted mean of the known pixels within
``INPAINT_RADIUS`` px, filled from the border inwards). Telea rather than Navier-Stokes
(``cv2.INPAINT_NS``): both give a smooth fill of a few-hundred-pixel hole in this texture-poor
grey tissue, Telea in one pass with no iteration, and the model audit used it before masks
existed, so box and mask results come from the same removal. Pixels outside the dilated region
are copied from the input, so the image differs from its original only there.

``control_region`` moves the tumour's exact shape (a translation: same pixels, same count) to a
place inside the given brain region that keeps ``margin_px`` pixels from the tumour, chosen
uniformly at random among all such places. Inpainting it is the control of tumour removal: the
same amount of inpainting, of the same shape, in tumour-free tissue of the same image, so that
the difference between the two effects is the tumour's own. The default margin, 2 x
``INPAINT_DILATE`` + ``INPAINT_RADIUS`` + 1, keeps the two dilated regions apart and out of
each other's inpainting radius (one fill never reads the other region's pixels).
"""

from __future__ import annotations

import cv2
import numpy as np

INPAINT_RADIUS = 5
INPAINT_DILATE = 2
CONTROL_MARGIN = 2 * INPAINT_DILATE + INPAINT_RADIUS + 1


def dilate(region: np.ndarray, px: int) -> np.ndarray:
    """``region`` grown by ``px`` pixels (a disc of radius ``px``); a copy when ``px <= 0``."""
    region = np.asarray(region, dtype=bool)
    if px <= 0:
        return region.copy()
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(region.astype(np.uint8), disc).astype(bool)


def inpaint(image: np.ndarray, region: np.ndarray, dilate_px: int = INPAINT_DILATE) -> np.ndarray:
    """``image`` (uint8 (S,S)) with ``dilate(region, dilate_px)`` inpainted (Telea, radius
    :data:`INPAINT_RADIUS`); pixels outside the dilated region are unchanged exactly. An empty
    region returns a copy."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"inpaint needs a 2-D uint8 image, not {image.dtype} {image.shape}")
    grown = dilate(region, dilate_px)
    if grown.shape != image.shape:
        raise ValueError(f"region {grown.shape} and image {image.shape} differ in shape")
    if not grown.any():
        return image.copy()
    filled = cv2.inpaint(image, grown.astype(np.uint8), INPAINT_RADIUS, cv2.INPAINT_TELEA)
    return np.where(grown, filled, image).astype(np.uint8)


def control_region(
    tumour: np.ndarray,
    brain: np.ndarray,
    rng: np.random.Generator,
    margin_px: int = CONTROL_MARGIN,
) -> np.ndarray | None:
    """``tumour``'s shape translated to a random place where it lies wholly inside ``brain``
    and farther than ``margin_px`` from the tumour (outside ``dilate(tumour, margin_px)``).

    Every such translation is equally likely. The feasible places are those where the shape
    covers no forbidden pixel (``~brain | dilate(tumour, margin_px)``): the cross-correlation
    of the forbidden map with the shape (``cv2.matchTemplate``, TM_CCORR) is zero there.
    None when the tumour is empty or no place fits.
    """
    tumour = np.asarray(tumour, dtype=bool)
    brain = np.asarray(brain, dtype=bool)
    if tumour.shape != brain.shape:
        raise ValueError(f"tumour {tumour.shape} and brain {brain.shape} differ in shape")
    if not tumour.any():
        return None
    ys, xs = np.nonzero(tumour)
    y0, x0 = ys.min(), xs.min()
    shape = tumour[y0:ys.max() + 1, x0:xs.max() + 1]
    h, w = shape.shape
    if h > tumour.shape[0] or w > tumour.shape[1]:
        return None
    forbidden = (~brain | dilate(tumour, margin_px)).astype(np.float32)
    overlap = cv2.matchTemplate(forbidden, shape.astype(np.float32), cv2.TM_CCORR)
    top, left = np.nonzero(overlap < 0.5)  # integer counts: 0 means no forbidden pixel
    if not top.size:
        return None
    k = int(rng.integers(top.size))
    out = np.zeros_like(tumour)
    out[top[k]:top[k] + h, left[k]:left[k] + w] = shape
    return out
