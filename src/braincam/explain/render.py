"""Overlays: a map in colour over the grey MRI, optionally with the head outline and the
tumour box.

Colour map: ``inferno`` (matplotlib), perceptually uniform: lightness rises monotonically with
the value, so equal steps of the map look like equal steps, it survives greyscale printing and
colour-vision deficiency, and it draws no false edges (``jet``/``turbo`` do).

Blending is per pixel, weighted by the map: ``out = (1 - a m) grey + a m colour(m)`` with
``a = alpha``; where the map is 0 the MRI shows unchanged. The head outline is a cyan contour,
the tumour box a green rectangle, a segmenter's predicted tumour (``braincam segment``) a
magenta contour (no colour of ``inferno``, and the report's colour of predicted masks), all
``max(1, round(min(H, W) / 256))`` px wide.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import numpy as np

from braincam.data.preprocess import Preprocessed, uncrop
from braincam.data.records import Box
from braincam.runs import atomic_write_bytes

CMAP = "inferno"
ALPHA = 0.5
MASK_RGB = (0, 255, 255)
BOX_RGB = (0, 255, 0)
TUMOUR_RGB = (255, 0, 255)  # predicted tumour outline: magenta


@cache
def colour_table(cmap: str = CMAP) -> np.ndarray:
    """``(256, 3)`` uint8 RGB lookup table of a matplotlib colour map."""
    import matplotlib

    table = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(table * 255).astype(np.uint8)


def to_uint8(grey: np.ndarray) -> np.ndarray:
    """Grey image as uint8: uint8 stays, floats in [0, 1] are scaled by 255."""
    grey = np.asarray(grey)
    if grey.dtype == np.uint8:
        return grey
    return np.clip(np.rint(grey.astype(np.float32) * 255), 0, 255).astype(np.uint8)


def overlay(
    grey: np.ndarray,
    cam: np.ndarray,
    alpha: float = ALPHA,
    cmap: str = CMAP,
    mask: np.ndarray | None = None,
    box: tuple[float, float, float, float] | None = None,
    tumour: np.ndarray | None = None,
) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``: ``cam`` (``H x W`` in [0, 1]) over ``grey`` (``H x W``).

    ``mask``: bool head mask whose outline is drawn; ``box``: ``(x0, y0, x1, y1)`` pixels;
    ``tumour``: bool predicted tumour mask whose outline is drawn in :data:`TUMOUR_RGB`.
    """
    grey = to_uint8(grey)
    cam = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 0.0, 1.0)
    if cam.shape != grey.shape:
        raise ValueError(f"map {cam.shape} and image {grey.shape} differ in size")
    colour = colour_table(cmap)[np.rint(cam * 255).astype(np.uint8)].astype(np.float32)
    weight = (alpha * cam)[..., None]
    base = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    out = np.rint((1 - weight) * base + weight * colour).astype(np.uint8)
    width = max(1, round(min(grey.shape) / 256))
    for region, colour in ((mask, MASK_RGB), (tumour, TUMOUR_RGB)):
        if region is not None and region.any():
            contours, _ = cv2.findContours(
                region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
            )
            cv2.drawContours(out, contours, -1, colour, width)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), BOX_RGB, width)
    return out


def box_pixels(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    """A YOLO box (fractions of the image) as ``(x0, y0, x1, y1)`` pixels."""
    return (
        (box.cx - box.w / 2) * width, (box.cy - box.h / 2) * height,
        (box.cx + box.w / 2) * width, (box.cy + box.h / 2) * height,
    )


def overlay_original(
    original: np.ndarray,
    cam: np.ndarray,
    prep: Preprocessed,
    box: Box | None = None,
    draw_mask: bool = True,
    alpha: float = ALPHA,
    tumour: np.ndarray | None = None,
) -> np.ndarray:
    """Overlay on the ORIGINAL image: the model-input map (``S x S``) is mapped back through
    the preprocessing crop (:func:`braincam.data.preprocess.uncrop`; 0 outside the crop), as
    is the head mask; ``box`` is the record's YOLO box; ``tumour``: a predicted tumour mask
    already in original pixels (``H x W`` bool), outlined in magenta."""
    height, width = np.asarray(original).shape
    mask = uncrop(prep.mask.astype(np.float32), prep) >= 0.5 if draw_mask else None
    pixels = box_pixels(box, width, height) if box is not None else None
    return overlay(original, uncrop(cam, prep), alpha, mask=mask, box=pixels, tumour=tumour)


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG encoding of an RGB uint8 image."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG, atomically."""
    atomic_write_bytes(Path(path), png_bytes(rgb))
