"""Crop, resize, standardise, and an on-disk cache so no file is decoded twice.

``preprocess``: head mask (``braincam.data.mask``) -> crop to the mask's bounding box plus a margin
of 2% of the box's longer side (like the seed notebook's ``brain_crop``, which crops to the extreme
points of the largest contour) -> resize to ``size x size`` with ``INTER_AREA`` (the aspect ratio is
not kept, as in the seed; ``resize`` picks PIL's nearest/bilinear/bicubic/lanczos filter
instead, for models trained with it) -> optional intensity standardisation -> optional zeroing
of the background -> uint8.

Standardisations (statistics over the head mask unless said otherwise; output in [0, 1] then
``round(255 * x)``):

- ``none``: the decoded intensities.
- ``minmax``: ``(x - min) / (max - min)`` over the whole image.
- ``zscore-in-mask``: ``z = (x - mean) / std``, clipped to [-3, 3] and mapped linearly to
  [0, 1] by ``(z + 3) / 6``: 0 is 3 SD below the head mean, 128 the mean, 255 3 SD above.
- ``percentile``: ``(x - p1) / (p99 - p1)`` clipped to [0, 1].
- ``histmatch``: quantile mapping of the in-mask intensities onto a fixed reference distribution,
  Beta(2, 2.5) on [0, 1] (smooth, unimodal, mean 0.44: a typical in-head histogram with a dark
  CSF tail), so every image has the same in-head histogram; pixels outside the mask follow the
  same monotone mapping.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from scipy.special import betaincinv

from braincam.data.hashing import (
    cache_root,
    content_hash_bytes,
    phash,
    remember_phashes,
    slice_hash,
)
from braincam.data.imageio import ImageReadError, read_grey, read_mask
from braincam.data.mask import brain_region, head_mask
from braincam.data.nifti import is_nifti_name, read_label_volume
from braincam.data.records import Box, ImageRecord, SkippedFile
from braincam.errors import BraincamError
from braincam.runs import atomic_write_bytes, read_npz

log = logging.getLogger(__name__)

STANDARDIZE = ("none", "minmax", "zscore-in-mask", "percentile", "histmatch")
CROP_MARGIN = 0.02
RESIZE = {"area": None, "nearest": Image.Resampling.NEAREST,
          "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
          "lanczos": Image.Resampling.LANCZOS}
HISTMATCH_BETA = (2.0, 2.5)
_REMEMBERED_HASHES = 100_000  # file hashes a cache object keeps (about 20 MB)
CACHE_VERSION = 8  # bump when preprocessing or decoding changes: old entries are never read
_QUANTILES = np.linspace(0.0, 1.0, 1025)


@dataclass(frozen=True)
class PreprocessConfig:
    size: int = 224
    crop: bool = True  # crop to the head mask's bounding box
    standardize: str = "none"  # none | minmax | zscore-in-mask | percentile | histmatch
    mask_background: bool = False  # set pixels outside the head mask to 0 (mitigation)
    mask_skull: bool = False  # set pixels outside the brain interior (head minus rim) to 0
    resize: str = "area"  # area (OpenCV INTER_AREA) | nearest | bilinear | bicubic | lanczos (PIL)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE:
            raise BraincamError(
                f"unknown resize method {self.resize!r}; choose one of {', '.join(RESIZE)}"
            )
        if self.standardize not in STANDARDIZE:
            raise BraincamError(
                f"unknown standardisation {self.standardize!r}; choose one of "
                f"{', '.join(STANDARDIZE)}"
            )
        if not isinstance(self.size, Integral) or isinstance(self.size, bool):
            raise BraincamError(f"image size must be a whole number of px, got {self.size!r}")
        if self.size < 8:
            raise BraincamError(f"image size must be at least 8 px, got {self.size}")


def preprocess_config(meta: dict[str, Any]) -> PreprocessConfig:
    """The preprocessing a checkpoint was trained with (its meta's ``preprocess``): every
    stage that feeds the model must prepare images exactly so."""
    try:
        return PreprocessConfig(**meta["preprocess"])
    except (KeyError, TypeError) as exc:
        raise BraincamError(
            f"the checkpoint's meta has no valid preprocess entry ({exc})") from None


@dataclass
class Preprocessed:
    image: np.ndarray  # uint8 (size, size), grey
    mask: np.ndarray  # bool (size, size), head mask in output coordinates
    crop: tuple[int, int, int, int]  # (x0, y0, x1, y1) in original pixels, x1/y1 exclusive
    original_size: tuple[int, int]  # (width, height)


def preprocess(grey: np.ndarray, config: PreprocessConfig) -> Preprocessed:
    """One grey image (float in [0, 1] or uint8, ``H x W``) -> model-ready uint8 ``S x S``."""
    grey = np.asarray(grey)
    if grey.ndim != 2:
        raise BraincamError(f"expected a grey H x W image, got shape {grey.shape}")
    grey = grey.astype(np.float32) / 255.0 if grey.dtype == np.uint8 else grey.astype(np.float32)
    height, width = grey.shape
    mask = head_mask(grey)
    x0, y0, x1, y1 = crop_box(mask, margin=CROP_MARGIN) if config.crop else (0, 0, width, height)
    size = (config.size, config.size)
    image = resize_image(grey[y0:y1, x0:x1], size, config.resize)
    head = mask[y0:y1, x0:x1].astype(np.float32)
    out_mask = cv2.resize(head, size, interpolation=cv2.INTER_AREA) >= 0.5
    image = standardise(image, out_mask, config.standardize)
    if config.mask_background or config.mask_skull:
        image = np.where(brain_region(out_mask) if config.mask_skull else out_mask, image, 0.0)
    u8 = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return Preprocessed(u8, out_mask, (x0, y0, x1, y1), (width, height))


def resize_image(image: np.ndarray, size: tuple[int, int], method: str = "area") -> np.ndarray:
    """Float32 ``H x W`` -> ``size`` (width, height): OpenCV ``INTER_AREA`` for ``area``, else
    PIL's filter of that name on the float image (PIL's antialiased downscaling, the resizing
    that Keras and torchvision pipelines built on PIL use)."""
    if method == "area":
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    resampled = Image.fromarray(image.astype(np.float32), mode="F").resize(size, RESIZE[method])
    return np.asarray(resampled, dtype=np.float32)


def crop_box(mask: np.ndarray, margin: float = CROP_MARGIN) -> tuple[int, int, int, int]:
    """Bounding box ``(x0, y0, x1, y1)`` (x1/y1 exclusive) of ``mask`` grown on every side by
    ``round(margin * longer box side)``, clipped to the image; the whole image for an empty mask."""
    height, width = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, 0, width, height
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    pad = round(margin * max(x1 - x0, y1 - y0))
    return (
        int(max(0, x0 - pad)), int(max(0, y0 - pad)),
        int(min(width, x1 + pad)), int(min(height, y1 + pad)),
    )


def standardise(image: np.ndarray, mask: np.ndarray, method: str) -> np.ndarray:
    """Float image in [0, 1] -> standardised float image in [0, 1] (formulas in the module doc).
    Statistics come from the mask, or from the whole image when the mask is empty."""
    if method == "none":
        return image
    region = image[mask] if mask.any() else image.ravel()
    if method == "minmax":
        lo, hi = float(image.min()), float(image.max())
        return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    if method == "zscore-in-mask":
        std = float(region.std())
        z = (image - float(region.mean())) / std if std > 0 else np.zeros_like(image)
        return (np.clip(z, -3.0, 3.0) + 3.0) / 6.0
    if method == "percentile":
        lo, hi = np.percentile(region, [1.0, 99.0])
        return np.clip((image - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(image)
    if method == "histmatch":
        source = np.quantile(region, _QUANTILES)
        target = betaincinv(*HISTMATCH_BETA, _QUANTILES)
        knots, inverse = np.unique(source, return_inverse=True)
        values = np.bincount(inverse, target) / np.bincount(inverse)
        return np.interp(image, knots, values).astype(np.float32)
    raise BraincamError(f"unknown standardisation {method!r}; choose one of {STANDARDIZE}")


def uncrop(map_sxs: np.ndarray, prep: Preprocessed) -> np.ndarray:
    """A map over the model input (``S x S``, e.g. a CAM) in original image pixels (``H x W``):
    resized (bilinear) onto the crop box, 0 outside it."""
    width, height = prep.original_size
    x0, y0, x1, y1 = prep.crop
    out = np.zeros((height, width), dtype=np.float32)
    out[y0:y1, x0:x1] = cv2.resize(
        np.asarray(map_sxs, dtype=np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR
    )
    return out


def box_to_output(box: Box, prep: Preprocessed) -> tuple[float, float, float, float]:
    """A YOLO box (fractions of the original image) as ``(x0, y0, x1, y1)`` in model-input pixels,
    clipped to the input: ``x_out = (x_orig - crop_x0) * S / crop_width``."""
    width, height = prep.original_size
    x0, y0, x1, y1 = prep.crop
    out_h, out_w = prep.image.shape
    sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
    bx0, bx1 = (box.cx - box.w / 2) * width, (box.cx + box.w / 2) * width
    by0, by1 = (box.cy - box.h / 2) * height, (box.cy + box.h / 2) * height
    return (
        float(np.clip((bx0 - x0) * sx, 0, out_w)), float(np.clip((by0 - y0) * sy, 0, out_h)),
        float(np.clip((bx1 - x0) * sx, 0, out_w)), float(np.clip((by1 - y0) * sy, 0, out_h)),
    )


def box_mask(box: Box, prep: Preprocessed) -> np.ndarray:
    """Boolean ``S x S`` mask of the pixels whose centres fall inside the box (model input)."""
    x0, y0, x1, y1 = box_to_output(box, prep)
    out_h, out_w = prep.image.shape
    ys, xs = np.arange(out_h) + 0.5, np.arange(out_w) + 0.5
    return ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]


def read_tumour_mask(path: Path | str, size: tuple[int, int],
                     index: int | None = None) -> np.ndarray:
    """A tumour mask file as bool ``H x W`` in the original image's pixels (grey value >= 128 is
    tumour, so 0/255 masks and their lossy re-encodings read the same), or slice ``index`` of a
    NIfTI label volume (voxels > 0). ``size`` is the image's ``(width, height)``; raises
    ImageReadError (one line) for an unreadable file or another size."""
    if index is not None and is_nifti_name(path):
        try:
            labels = read_label_volume(path)
        except BraincamError as exc:
            raise ImageReadError(str(exc)) from None
        mask = labels[index] if 0 <= index < len(labels) else np.zeros((0, 0), bool)
        if mask.shape != (size[1], size[0]):
            raise ImageReadError(f"{path}: no {size[0]}x{size[1]} slice {index} in the mask")
        return mask
    mask = read_mask(path)
    if mask.shape != (size[1], size[0]):
        raise ImageReadError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} px, image is {size[0]}x{size[1]}"
        )
    return mask


def mask_to_output(mask_hxw: np.ndarray, prep: Preprocessed) -> np.ndarray:
    """An original-size bool mask cropped and resized to the model input by nearest neighbour,
    sampling at output pixel centres: output pixel ``(i, j)`` takes original pixel
    ``(y0 + floor((i + 0.5) * crop_h / S), x0 + floor((j + 0.5) * crop_w / S))``. A pixel is thus
    inside exactly when its centre maps inside the mask, the rule :func:`box_mask` applies to
    boxes (a rectangular mask gives the box's mask)."""
    x0, y0, x1, y1 = prep.crop
    out_h, out_w = prep.image.shape
    rows = y0 + np.floor((np.arange(out_h) + 0.5) * (y1 - y0) / out_h).astype(np.int64)
    cols = x0 + np.floor((np.arange(out_w) + 0.5) * (x1 - x0) / out_w).astype(np.int64)
    return np.asarray(mask_hxw, dtype=bool)[np.ix_(rows, cols)]


def tumour_mask(record: ImageRecord, prep: Preprocessed) -> np.ndarray | None:
    """The record's tumour as bool ``S x S`` in model-input coordinates: its expert mask
    (:func:`mask_to_output`) when it has one, else its box (:func:`box_mask`), else None.
    Raises ImageReadError when the mask file has become unreadable."""
    if record.mask is not None:
        return mask_to_output(read_tumour_mask(record.mask, prep.original_size, record.slice),
                              prep)
    if record.box is not None:
        return box_mask(record.box, prep)
    return None


class PreprocessCache:
    """Preprocessed images on disk, one uncompressed ``.npz`` (image uint8, mask as packed bits,
    crop, original size; 56 KB at 224 px, read in well under a millisecond) per
    (file content, config). Key: ``sha1("v<CACHE_VERSION>|<sha1 of file bytes>|<config fields>")``,
    so renamed or copied files hit and edited files miss. A hit reads the file bytes (to hash them)
    and the npz; it never decodes the image. The file hash is remembered for the cache object's
    life by (path, size, modification time), so the slices of one volume, or a file loaded again
    at another size, read and hash the file once.
    """

    def __init__(self, cache_dir: Path | str | None = None, workers: int | None = None) -> None:
        self.root = cache_root(cache_dir)
        self.dir = self.root / "preprocess"
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._hashes: dict[tuple[str, int, int], str] = {}

    def key(self, file_hash: str, config: PreprocessConfig) -> str:
        fields = f"v{CACHE_VERSION}|{file_hash}|{config.size}|{int(config.crop)}|" \
            f"{config.standardize}|{int(config.mask_background)}" \
            f"{'|skull' if config.mask_skull else ''}" \
            f"{'' if config.resize == 'area' else '|resize=' + config.resize}"  # earlier keys kept
        return content_hash_bytes(fields.encode())

    def get(
        self, record: ImageRecord | Path | str, config: PreprocessConfig, index: int | None = None
    ) -> Preprocessed:
        """The preprocessed image for a record (or a path, with ``index`` the frame or slice of
        a DICOM/NIfTI file); raises ImageReadError when the file cannot be read or decoded."""
        return self._get(record, config, index)[0]

    def load(
        self, records: Sequence[ImageRecord], config: PreprocessConfig, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray, list[SkippedFile]]:
        """Images uint8 ``(N, S, S)`` and masks bool ``(N, S, S)`` of the records that could be
        read, in record order, plus the files skipped (logged); ``records.without_skipped`` aligns
        the records with the arrays. Misses are decoded in a thread pool (PIL and OpenCV release
        the GIL); the pHash of each decoded image goes to the hashing cache at the same time, so
        hashing the records afterwards (``make_split``, the data audit) decodes nothing."""
        with ThreadPoolExecutor(self.workers) as pool:
            results = pool.map(lambda r: self._try_get(r, config), records)
            if progress:
                from tqdm import tqdm

                results = tqdm(results, total=len(records), desc="preprocess", unit="img")
            results = list(results)
        done = [r[0] for r in results if isinstance(r, tuple)]
        skipped = [r for r in results if isinstance(r, SkippedFile)]
        remember_phashes(
            {r[1]: r[2] for r in results if isinstance(r, tuple) and r[2] is not None}, self.root
        )
        size = config.size
        images = np.stack([p.image for p in done]) if done else np.zeros((0, size, size), np.uint8)
        masks = np.stack([p.mask for p in done]) if done else np.zeros((0, size, size), bool)
        return images, masks, skipped

    def _get(
        self, record: ImageRecord | Path | str, config: PreprocessConfig, index: int | None = None
    ) -> tuple[Preprocessed, str, int | None]:
        """(preprocessed, content hash, pHash of the decoded image or None on a hit). The content
        hash of a frame/slice ``k`` of a file is ``sha1("<file hash>#<k>")``."""
        if isinstance(record, ImageRecord):
            path, index = Path(record.path), record.slice
        else:
            path = Path(record)
        file_hash, data = self._file_hash(path)
        file_hash = slice_hash(file_hash, index)
        file = self._file(self.key(file_hash, config))
        cached = _read_npz(file, config.size)
        if cached is not None:
            return cached, file_hash, None
        grey = read_grey(path, data if data is not None else _read_bytes(path), index)
        prep = preprocess(grey, config)
        buf = io.BytesIO()
        np.savez(
            buf, image=prep.image, mask=np.packbits(prep.mask),
            crop=np.array(prep.crop), original_size=np.array(prep.original_size),
        )
        atomic_write_bytes(file, buf.getvalue())
        return prep, file_hash, phash(grey)

    def _file_hash(self, path: Path) -> tuple[str, bytes | None]:
        """The sha1 of the file's bytes, and the bytes when they had to be read for it."""
        try:
            stat = path.stat()
        except OSError as exc:
            raise ImageReadError(f"{path}: cannot read file ({exc.strerror})") from None
        seen = (str(path), stat.st_size, stat.st_mtime_ns)
        known = self._hashes.get(seen)  # one lookup: another thread may clear the dict
        if known is not None:
            return known, None
        data = _read_bytes(path)
        file_hash = content_hash_bytes(data)
        if len(self._hashes) >= _REMEMBERED_HASHES:  # a long-lived Model predicting many files
            self._hashes.clear()
        self._hashes[seen] = file_hash
        return file_hash, data

    def _try_get(
        self, record: ImageRecord, config: PreprocessConfig
    ) -> tuple[Preprocessed, str, int | None] | SkippedFile:
        try:
            return self._get(record, config)
        except ImageReadError as exc:
            log.warning("skipping %s", exc)
            return SkippedFile(Path(record.key), str(exc).removeprefix(f"{record.path}: "))

    def _file(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npz"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror})") from None


def _read_npz(file: Path, size: int) -> Preprocessed | None:
    """A cache entry, or None when absent or unreadable (then it is recomputed and replaced)."""
    try:
        data = read_npz(file)
        image, mask = data["image"], data["mask"]
        crop, original = data["crop"], data["original_size"]
    except (OSError, KeyError, ValueError, EOFError):
        return None
    if image.shape != (size, size) or mask.shape != (-(-size * size // 8),):
        return None
    mask = np.unpackbits(mask, count=size * size).reshape(size, size).astype(bool)
    return Preprocessed(
        image, mask, tuple(int(v) for v in crop), (int(original[0]), int(original[1]))
    )
