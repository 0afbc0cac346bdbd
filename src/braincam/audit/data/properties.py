"""Per-image properties, measured in one pass and cached, and how well each separates classes.

In the style of cleanvision: one :class:`ImageProperty` class per concern, each turning an
:class:`ImageContext` (file bytes, header, decoded grey image, head mask) into named numbers.
``measure_properties`` decodes every file once (thread pool), runs every property in
:data:`PROPERTIES` and also takes the pHash there (:func:`braincam.data.hashing.phash`) so that
duplicate search needs no second decode. Results are cached by file content hash
(:class:`braincam.audit.data.cache.PropertyStore`), so a second audit reads only file bytes.

Units: intensities are the decoded grey values in [0, 1] (``braincam.data.imageio``). The head
mask, background and border statistics are measured on a working copy whose longer side is at
most ``WORK_SIDE`` px (INTER_AREA), which makes them cheap and comparable across image sizes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from braincam.audit.data.cache import PropertyStore
from braincam.data.dicom import is_dicom
from braincam.data.hashing import content_hash_bytes, phash, slice_hash
from braincam.data.imageio import ImageReadError, read_grey
from braincam.data.mask import head_mask
from braincam.data.nifti import is_nifti
from braincam.data.records import ImageRecord, SkippedFile

WORK_SIDE = 256
HIST_BINS = 32
BG_HIST_BINS = 16
THUMB_SIDE = 16
BORDER_FRACTION = 0.02  # frame band for the border mean, as a fraction of the shorter side

# IJG (libjpeg) standard luminance quantisation table, JPEG Annex K.1 (order irrelevant here).
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.float64)
_BIT_DEPTH = {"1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "LA": 8, "CMYK": 8, "YCbCr": 8,
              "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}


@dataclass
class ImageContext:
    """What the properties look at; derived arrays are computed once, on first use."""

    path: Path
    data: bytes
    grey: np.ndarray  # float32 (H, W) in [0, 1]
    format: str
    mode: str
    quantization: dict[int, Sequence[int]] | None

    @cached_property
    def counts(self) -> np.ndarray:
        """256-bin histogram of the full-resolution image (grey * 255, rounded)."""
        u8 = np.clip(np.rint(self.grey * 255.0), 0, 255).astype(np.uint8)
        return np.bincount(u8.ravel(), minlength=256).astype(np.float64)

    @cached_property
    def work(self) -> np.ndarray:
        """The grey image with its longer side reduced to at most ``WORK_SIDE`` px."""
        scale = WORK_SIDE / max(self.grey.shape)
        if scale >= 1:
            return self.grey
        return cv2.resize(self.grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)

    @cached_property
    def mask(self) -> np.ndarray:
        """Head mask of the working copy (:func:`braincam.data.mask.head_mask`)."""
        return head_mask(self.work)


class ImageProperty:
    """One family of per-image numbers. Subclasses list their output names: ``scalars``
    (floats), ``texts`` (categories) and ``vectors`` (name -> length)."""

    scalars: ClassVar[tuple[str, ...]] = ()
    texts: ClassVar[tuple[str, ...]] = ()
    vectors: ClassVar[dict[str, int]] = {}

    def compute(self, ctx: ImageContext) -> dict[str, Any]:
        raise NotImplementedError


class FileProperty(ImageProperty):
    """Container facts: size, aspect (width / height), format, colour mode, bit depth (NaN for
    DICOM and NIfTI), bytes (of the whole file for a slice or frame),
    and the JPEG quality estimated from the luminance quantisation table."""

    scalars = ("width", "height", "aspect", "bit_depth", "file_size", "jpeg_quality")
    texts = ("format", "mode")

    def compute(self, ctx: ImageContext) -> dict[str, Any]:
        height, width = ctx.grey.shape
        return {
            "width": width, "height": height, "aspect": width / height,
            "bit_depth": _BIT_DEPTH.get(ctx.mode, 8) if ctx.mode else float("nan"),
            "file_size": len(ctx.data),
            "jpeg_quality": jpeg_quality(ctx.quantization), "format": ctx.format,
            "mode": ctx.mode,
        }


class IntensityProperty(ImageProperty):
    """Mean, standard deviation, 1st/50th/99th percentiles and a ``HIST_BINS``-bin histogram
    (fractions of pixels) of all pixels, from the 256-level histogram."""

    scalars = ("mean", "std", "p1", "p50", "p99")
    vectors = {"hist": HIST_BINS}

    def compute(self, ctx: ImageContext) -> dict[str, Any]:
        stats = _hist_stats(ctx.counts)
        return stats | {"hist": ctx.counts.reshape(HIST_BINS, -1).sum(1) / ctx.counts.sum()}


class BackgroundProperty(ImageProperty):
    """Pixels outside the head: their fraction of the image, mean/std/99th percentile, a
    ``BG_HIST_BINS``-bin histogram, a ``THUMB_SIDE``^2 thumbnail with the head set to 0, and
    the mean of the frame band (``BORDER_FRACTION`` of the shorter side, at least 1 px)."""

    scalars = ("background_fraction", "border_mean", "bg_mean", "bg_std", "bg_p99")
    vectors = {"bg_hist": BG_HIST_BINS, "bg_thumb": THUMB_SIDE * THUMB_SIDE}

    def compute(self, ctx: ImageContext) -> dict[str, Any]:
        outside = ~ctx.mask
        values = ctx.work[outside]
        u8 = np.clip(np.rint(values * 255.0), 0, 255).astype(np.int64)
        counts = np.bincount(u8, minlength=256).astype(np.float64)
        stats = _hist_stats(counts) if values.size else dict.fromkeys(("mean", "std", "p99"), 0.0)
        band = max(1, round(BORDER_FRACTION * min(ctx.work.shape)))
        frame = np.ones(ctx.work.shape, dtype=bool)
        frame[band:-band, band:-band] = False
        return {
            "background_fraction": float(outside.mean()),
            "border_mean": float(ctx.work[frame].mean()),
            "bg_mean": stats["mean"], "bg_std": stats["std"], "bg_p99": stats["p99"],
            "bg_hist": counts.reshape(BG_HIST_BINS, -1).sum(1) / max(values.size, 1),
            "bg_thumb": _thumbnail(np.where(outside, ctx.work, 0.0)),
        }


class HeadProperty(ImageProperty):
    """The head mask's area fraction and bounding box (x0, y0, x1, y1 as fractions of the
    width/height; 0 for an empty mask): how the head is framed."""

    scalars = ("head_fraction", "head_x0", "head_y0", "head_x1", "head_y1")

    def compute(self, ctx: ImageContext) -> dict[str, Any]:
        mask = ctx.mask
        if not mask.any():
            return dict.fromkeys(self.scalars, 0.0)
        ys, xs = np.nonzero(mask)
        h, w = mask.shape
        return {"head_fraction": float(mask.mean()), "head_x0": xs.min() / w,
                "head_y0": ys.min() / h, "head_x1": (xs.max() + 1) / w,
                "head_y1": (ys.max() + 1) / h}


class SharpnessProperty(ImageProperty):
    """Variance of the Laplacian of the full-resolution image (Pech-Pacheco et al. 2000):
    low for blurred or upsampled images."""

    scalars = ("sharpness",)

    def compute(self, ctx: ImageContext) -> dict[str, Any]:
        return {"sharpness": float(cv2.Laplacian(ctx.grey, cv2.CV_32F).var())}


class ThumbnailProperty(ImageProperty):
    """The whole image shrunk to ``THUMB_SIDE`` x ``THUMB_SIDE`` (INTER_AREA, aspect not kept)."""

    vectors = {"thumb": THUMB_SIDE * THUMB_SIDE}

    def compute(self, ctx: ImageContext) -> dict[str, Any]:
        return {"thumb": _thumbnail(ctx.work)}


PROPERTIES: tuple[ImageProperty, ...] = (
    FileProperty(), IntensityProperty(), BackgroundProperty(), HeadProperty(),
    SharpnessProperty(), ThumbnailProperty(),
)
SCALARS = tuple(name for p in PROPERTIES for name in p.scalars)
TEXTS = tuple(name for p in PROPERTIES for name in p.texts)
VECTORS = {name: length for p in PROPERTIES for name, length in p.vectors.items()}


@dataclass
class ImageProperties:
    """Properties of the readable ``records`` (same order); ``skipped`` lists the others."""

    records: list[ImageRecord]
    table: pd.DataFrame  # one row per record: SCALARS and TEXTS columns
    vectors: dict[str, np.ndarray]  # name -> (N, length) float32
    content_hashes: list[str]
    phashes: np.ndarray  # uint64 (N,)
    skipped: list[SkippedFile]


def measure_properties(
    records: Sequence[ImageRecord],
    cache_dir: Path | str | None = None,
    workers: int | None = None,
) -> ImageProperties:
    """Measure every record (cached by content hash); undecodable files are skipped, not fatal."""
    store = PropertyStore(cache_dir, SCALARS, TEXTS, VECTORS)

    def one(record: ImageRecord) -> tuple[str, dict[str, Any] | None] | SkippedFile:
        try:
            data = record.path.read_bytes()
        except OSError as exc:
            return SkippedFile(Path(record.key), f"cannot read file ({exc.strerror or exc})")
        key = slice_hash(content_hash_bytes(data), record.slice)  # a slice: a key of its own
        if key in store:
            return key, None
        try:
            return key, measure_one(record.path, data, record.slice)
        except ImageReadError as exc:
            return SkippedFile(Path(record.key), str(exc).removeprefix(f"{record.path}: "))

    kept: list[ImageRecord] = []
    keys: list[str] = []
    skipped: list[SkippedFile] = []
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        for record, result in zip(records, pool.map(one, records), strict=True):
            if isinstance(result, SkippedFile):
                skipped.append(result)
                continue
            key, row = result
            if row is not None:
                store.add(key, row)
            kept.append(record)
            keys.append(key)
    store.save()
    table, vectors, phashes = store.rows(keys)
    return ImageProperties(kept, table, vectors, keys, phashes, skipped)


def measure_one(path: Path, data: bytes, index: int | None = None) -> dict[str, Any]:
    """Every property of one image file, or of frame/slice ``index`` of a DICOM or NIfTI file
    (plus its ``phash``); raises ImageReadError. DICOM and NIfTI files have the format ``DICOM``
    and ``NIfTI``, no colour mode and no bit depth."""
    grey = read_grey(path, data, index)
    if is_dicom(data) or is_nifti(data):
        fmt, mode, quantization = ("DICOM" if is_dicom(data) else "NIfTI"), "", None
    else:
        with Image.open(io.BytesIO(data)) as im:
            fmt, mode = im.format or "", im.mode
            quantization = getattr(im, "quantization", None)
    ctx = ImageContext(path, data, grey, fmt, mode, quantization)
    row: dict[str, Any] = {"phash": phash(grey)}
    for prop in PROPERTIES:
        row.update(prop.compute(ctx))
    return row


def jpeg_quality(quantization: dict[int, Sequence[int]] | None) -> float:
    """IJG quality (1-100) that would produce the luminance table, NaN for non-JPEG files.

    libjpeg scales the standard table T (Annex K, natural order as Pillow gives it) by
    ``s = 5000 / q`` (q < 50) or ``200 - 2 q`` (q >= 50) percent, clamping entries to
    [1, 255]. Inverting over the unclamped entries, ``s = 100 * sum(Q) / sum(T)``:
    ``q = (200 - s) / 2`` when ``s <= 100``, else ``5000 / s``; all entries 1 means 100.
    Exact up to rounding for IJG encoders; a comparable number for others.
    """
    if not quantization or 0 not in quantization:
        return float("nan")
    table = np.asarray(quantization[0], dtype=np.float64)
    if table.shape != _STD_LUMA.shape:
        return float("nan")
    free = (table > 1) & (table < 255)
    if not free.any():
        return 100.0 if table.max() <= 1 else 1.0
    scale = 100.0 * table[free].sum() / _STD_LUMA[free].sum()
    quality = (200.0 - scale) / 2.0 if scale <= 100 else 5000.0 / scale
    return float(np.clip(quality, 1.0, 100.0))


def _hist_stats(counts: np.ndarray) -> dict[str, float]:
    """Mean, std and percentiles p1/p50/p99 of values ``level / 255`` given 256 ``counts``.
    A percentile is the first level whose cumulative fraction reaches it."""
    levels = np.arange(256) / 255.0
    total = counts.sum()
    mean = float(levels @ counts / total)
    var = float(((levels - mean) ** 2) @ counts / total)
    cdf = np.cumsum(counts) / total
    pct = {f"p{q}": float(levels[np.searchsorted(cdf, q / 100.0)]) for q in (1, 50, 99)}
    return {"mean": mean, "std": var ** 0.5} | pct


def _thumbnail(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image.astype(np.float32), (THUMB_SIDE, THUMB_SIDE),
                      interpolation=cv2.INTER_AREA).ravel()
