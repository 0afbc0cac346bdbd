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

``make_pairs`` makes both edits for a set of images with tumour masks: the removed copy
``inpaint(x, T)`` and the control copy ``inpaint(x, C)``, ``C = control_region(T, brain(x))``
(``brain``: the head mask's interior, :func:`braincam.data.mask.brain_region`). The classifier
trains on them (``braincam train --counterfactual-pairs``), the segmenter too
(``braincam segment --counterfactual-share``), and the segmenter's held-out metrics test it
with them.

``view_pair`` cuts two square windows of one side from one slice, edits nothing, and so
makes a pair that only the lesion tells apart (same patient, scanner, sequence and
zoom; real tissue, no fill): the tumour window holds every tumour pixel, the clear window
no pixel of the tumour grown by ``margin_px``, and the two hold about as much brain
(the share of brain pixels differs by at most ``tolerance``), so that "less brain" cannot
stand in for "no tumour". ``crop_view`` resizes a window back to the image side, and
``make_views`` makes both views of every masked image (the model audit tests with them,
``braincam train --view-pairs`` trains on them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from braincam.data.mask import brain_region

log = logging.getLogger(__name__)

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


VIEW_SHARE = 0.4
VIEW_TOLERANCE = 0.1


@dataclass(frozen=True)
class ViewPair:
    """Top-left corners ``(y, x)`` of two windows of ``side`` pixels on one image."""

    side: int
    tumour: tuple[int, int]
    clear: tuple[int, int]


def window_sums(region: np.ndarray, side: int) -> np.ndarray:
    """``out[y, x] = region[y:y + side, x:x + side].sum()`` for every window inside the image
    ((H - side + 1, W - side + 1), from the summed-area table)."""
    table = np.pad(np.asarray(region, dtype=np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return table[side:, side:] - table[:-side, side:] - table[side:, :-side] + table[:-side, :-side]


def view_pair(
    tumour: np.ndarray,
    brain: np.ndarray,
    side: int,
    rng: np.random.Generator,
    margin_px: int = CONTROL_MARGIN,
    tolerance: float = VIEW_TOLERANCE,
) -> ViewPair | None:
    """A tumour window and a clear window of ``side`` pixels (module docstring).

    The tumour window is drawn uniformly among the windows that hold the tumour's bounding
    box; the clear window uniformly among the windows with no pixel of
    ``dilate(tumour, margin_px)`` whose brain share ``|W & brain| / side^2`` lies within
    ``tolerance`` of the tumour window's. None when the tumour is empty, its box does not fit
    in ``side``, or no clear window matches.
    """
    tumour = np.asarray(tumour, dtype=bool)
    brain = np.asarray(brain, dtype=bool)
    if tumour.shape != brain.shape:
        raise ValueError(f"tumour {tumour.shape} and brain {brain.shape} differ in shape")
    if not tumour.any() or side > min(tumour.shape):
        return None
    ys, xs = np.nonzero(tumour)
    n_rows, n_cols = tumour.shape[0] - side + 1, tumour.shape[1] - side + 1
    tops = np.arange(max(0, ys.max() - side + 1), min(ys.min(), n_rows - 1) + 1)
    lefts = np.arange(max(0, xs.max() - side + 1), min(xs.min(), n_cols - 1) + 1)
    if not (tops.size and lefts.size):
        return None
    y, x = int(rng.choice(tops)), int(rng.choice(lefts))
    share = window_sums(brain | tumour, side) / side**2
    clear = (window_sums(dilate(tumour, margin_px), side) == 0) & \
        (np.abs(share - share[y, x]) <= tolerance)
    top, left = np.nonzero(clear)
    if not top.size:
        return None
    k = int(rng.integers(top.size))
    return ViewPair(side, (y, x), (int(top[k]), int(left[k])))


def crop_view(
    image: np.ndarray, corner: tuple[int, int], side: int, nearest: bool = False
) -> np.ndarray:
    """The window of ``side`` pixels at ``corner`` of ``image`` (S, S), resized back to
    (S, S): bilinearly, or by nearest neighbour for a mask (``nearest``; a bool mask stays
    bool)."""
    y, x = corner
    window = np.ascontiguousarray(image[y:y + side, x:x + side])
    dtype = window.dtype
    flag = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    out = cv2.resize(window.astype(np.uint8) if dtype == np.bool_ else window, image.shape[::-1],
                     interpolation=flag)
    return out.astype(dtype)


@dataclass
class Views:
    """Lesion views (:func:`view_pair`) of images ``source``: ``tumour`` and ``clear`` uint8
    (M, S, S), with their head masks and the tumour view's tumour mask, bool (M, S, S)."""

    source: np.ndarray  # (M,) int
    tumour: np.ndarray
    clear: np.ndarray
    tumour_heads: np.ndarray
    clear_heads: np.ndarray
    tumour_masks: np.ndarray


def make_views(
    images: np.ndarray, heads: np.ndarray, tumours: np.ndarray, seed: int,
    share: float = VIEW_SHARE,
) -> Views:
    """The lesion views of every image whose tumour mask is not empty, windows of
    ``round(share * S)`` pixels placed with the generator ``default_rng([seed, i])`` of
    image ``i``, brain shares measured on its brain (:func:`braincam.data.mask.brain_region`);
    images where no pair fits are left out. ``images`` uint8, ``heads`` and ``tumours`` bool
    (N, S, S)."""
    side = round(share * images.shape[1])
    out: dict[str, list[np.ndarray]] = {k: [] for k in (
        "source", "tumour", "clear", "tumour_heads", "clear_heads", "tumour_masks")}
    for i in np.flatnonzero(tumours.reshape(len(tumours), -1).any(axis=1)):
        pair = view_pair(tumours[i], brain_region(heads[i]), side,
                         np.random.default_rng([seed, i]))
        if pair is None:
            continue
        out["source"].append(i)
        out["tumour"].append(crop_view(images[i], pair.tumour, side))
        out["clear"].append(crop_view(images[i], pair.clear, side))
        out["tumour_heads"].append(crop_view(heads[i], pair.tumour, side, nearest=True))
        out["clear_heads"].append(crop_view(heads[i], pair.clear, side, nearest=True))
        out["tumour_masks"].append(crop_view(tumours[i], pair.tumour, side, nearest=True))
    empty = {k: np.zeros((0, *images.shape[1:]), np.uint8 if k in ("tumour", "clear") else bool)
             for k in out if k != "source"}
    return Views(np.asarray(out.pop("source"), dtype=np.int64),
                 **{k: np.stack(v) if v else empty[k] for k, v in out.items()})


@dataclass
class Pairs:
    """The counterfactual copies: ``removed[i]`` and ``control[i]`` come from training image
    ``source[i]``; images uint8 (M, S, S)."""

    source: np.ndarray  # (M,) int, index into the training images
    removed: np.ndarray
    control: np.ndarray
    control_region: np.ndarray  # (M, S, S) bool, the control's inpainted region before dilation


def make_pairs(images: np.ndarray, head: np.ndarray, tumour: np.ndarray, seed: int) -> Pairs:
    """The removed and control copy of every image whose ``tumour`` mask is non-empty (module
    docstring), the control placed by a generator seeded with ``seed``; an image where no
    control fits gets neither (one warning). ``images`` uint8 (N, S, S); ``head``, ``tumour``
    bool (N, S, S)."""
    rng = np.random.default_rng(seed)
    source, removed, control, regions = [], [], [], []
    candidates = np.flatnonzero(tumour.reshape(len(tumour), -1).any(axis=1))
    for i in candidates:
        region = control_region(tumour[i], brain_region(head[i]), rng)
        if region is None:
            continue
        source.append(i)
        removed.append(inpaint(images[i], tumour[i]))
        control.append(inpaint(images[i], region))
        regions.append(region)
    if len(source) < len(candidates):
        log.warning("counterfactual pairs: no control region fits in %d of %d masked images; "
                    "they get no pair", len(candidates) - len(source), len(candidates))
    size = images.shape[1:]
    empty_images, empty_masks = np.zeros((0, *size), np.uint8), np.zeros((0, *size), bool)
    return Pairs(
        np.asarray(source, dtype=np.int64),
        np.stack(removed) if removed else empty_images,
        np.stack(control) if control else empty_images,
        np.stack(regions) if regions else empty_masks,
    )
