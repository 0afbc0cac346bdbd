"""Decoding any image file to one grey array: the only place that turns bytes into pixels.

Every decoder output becomes float32 ``H x W`` in ``[0, 1]``:

- 8-bit grey/RGB: ``value / 255``; colour -> 8-bit luma ``0.299 R + 0.587 G + 0.114 B``
  (ITU-R 601: PIL's ``convert("L")``; for colour JPEGs libjpeg decodes its Y channel directly,
  the same weights without a colour-conversion pass, about 3x faster).
- 16-bit (``I;16`` PNG/TIFF): ``value / 65535`` (scaled by the dtype maximum, not the image
  maximum, so brightness differences between files survive).
- 32-bit integer (``I``, how some 16-bit PNGs and signed or 32-bit TIFFs open): ``/ 65535``
  when every value fits in 0..65535, else min-max scaled (a signed CT-like TIFF with values
  below 0 would otherwise read black).
- float (``F`` TIFF): kept when already in ``[0, 1]``, else min-max scaled.
- alpha (RGBA, LA, palette with transparency): composited on black, ``grey * alpha``, because
  MRI backgrounds are black.
- EXIF Orientation (a JPEG or TIFF stored rotated or mirrored): applied (:func:`upright`), so
  an image reads as viewers show it; sizes (:func:`shown_size`) are those of the upright image.

DICOM (``braincam.data.dicom``) and NIfTI (``braincam.data.nifti``) are recognised by content
(the ``DICM`` marker; a NIfTI header, gzipped or not), not by name; ``index`` picks a frame of a
multi-frame DICOM file or an axial slice of a volume.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from braincam.data.dicom import DICOM_SUFFIXES, DicomReadError, is_dicom, read_dicom
from braincam.data.nifti import NiftiReadError, is_nifti, read_nifti_slice
from braincam.errors import BraincamError

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_EXIF_ORIENTATION = 0x0112
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class ImageReadError(BraincamError):
    """An image file that cannot be decoded; the message is one line naming the file."""


def is_dicom_file(path: Path, head: bytes, data: bytes | None = None) -> bool:
    """Read as DICOM: the DICOM marker in ``head`` (the file's first 132 bytes or more), or a
    name ending ``.dcm``/``.dicom`` on a file that is no image PIL knows (a legacy file, without
    preamble or marker). ``data``: the whole file, where it is already read."""
    if is_dicom(head):
        return True
    return (path.suffix.lower() in DICOM_SUFFIXES
            and read_image_format(path if data is None else data) is None)


def read_image_format(source: bytes | Path | str) -> str | None:
    """The format PIL recognises in a file or its bytes (a PNG named ``.dcm``), else None."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            return im.format
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError):
        return None


def read_grey(
    path: Path | str, data: bytes | None = None, index: int | None = None,
    reduce_to: int | None = None,
) -> np.ndarray:
    """Decode ``path`` (or its already-read bytes ``data``) to float32 ``H x W`` in ``[0, 1]``;
    ``index``: the frame or slice of a DICOM or NIfTI file (see the module docstring).

    ``reduce_to`` (for thumbnails): a JPEG is decoded by libjpeg at the smallest scale of 1/1,
    1/2, 1/4 or 1/8 whose sides stay >= ``reduce_to`` px (other formats at full size).

    Raises :class:`ImageReadError` with a one-line reason for empty, truncated, corrupt or
    non-image files.
    """
    path = Path(path)
    try:
        if data is None:
            data = path.read_bytes()
        if not data:
            raise ImageReadError(f"{path}: empty file (0 bytes)")
        if is_dicom_file(path, data, data):
            return read_dicom(path, data, index)
        if data[:2] == b"\x1f\x8b" or is_nifti(data):
            return read_nifti_slice(path, data, index)
        if index not in (None, 0):
            raise ImageReadError(f"{path}: a 2D image has no slice {index}")
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG" and im.mode in ("RGB", "YCbCr"):
                # libjpeg outputs its Y (luma) channel: no colour pass
                im.draft("L", (reduce_to, reduce_to) if reduce_to else im.size)
            elif im.format == "JPEG" and reduce_to:
                im.draft(im.mode, (reduce_to, reduce_to))
            im.load()
            return pil_grey(upright(im))
    except (ImageReadError, DicomReadError, NiftiReadError) as exc:
        raise ImageReadError(str(exc)) from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not a readable image file") from None
    except (OSError, ValueError, TypeError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageReadError(f"{path}: cannot decode image ({reason})") from None


WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # PIL modes of > 8 bits a pixel


def read_mask(path: Path | str, data: bytes | None = None) -> np.ndarray:
    """The tumour pixels (bool ``H x W``) of a 2D mask file. An 8-bit mask (grey, palette or
    colour, with or without alpha) marks a pixel whose grey value (times alpha, as
    :func:`read_grey` reads it) is at least half its range, so 0/255 masks and their lossy
    re-encodings read the same; one where no pixel reaches half its range (an 8-bit 0/1 or
    label map, a dark red outline) marks every pixel above 0. A 16- or 32-bit grey mask, often
    a label map (0/1, 0/255 or tumour labels 1-4), marks every pixel above 0. Raises
    :class:`ImageReadError`."""
    path = Path(path)
    try:
        data = path.read_bytes() if data is None else data
        with Image.open(io.BytesIO(data)) as im:
            if im.mode in WIDE_MODES:
                return np.asarray(upright(im)) > 0
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not a readable image file") from None
    except (OSError, ValueError, TypeError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageReadError(f"{path}: cannot decode image ({reason})") from None
    grey = read_grey(path, data)
    return grey >= 0.5 if grey.max(initial=0.0) >= 0.5 else grey > 0


def upright(im: Image.Image) -> Image.Image:
    """``im`` turned and mirrored as its EXIF Orientation says (PIL's ``exif_transpose``);
    ``im`` itself when it has none."""
    return ImageOps.exif_transpose(im) if _orientation(im) not in (None, 1) else im


def shown_size(im: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of the image as :func:`read_grey` returns it, from the header alone
    (Pillow's TIFF plugin reports a turned TIFF's upright size itself)."""
    turned = _orientation(im) in _TURNED and im.format != "TIFF"
    return im.size[::-1] if turned else im.size


def _orientation(im: Image.Image) -> int | None:
    try:
        return im.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # PIL raises many kinds on a damaged EXIF block: read as stored
        return None


def pil_grey(im: Image.Image) -> np.ndarray:
    """Pixels of an opened PIL image as float32 grey in [0, 1] (rules in the module docstring)."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    if mode.startswith("I;16"):
        return np.asarray(im, dtype=np.float32) / 65535.0
    if mode == "I":
        arr = np.asarray(im, dtype=np.float64)
        if arr.min(initial=0) >= 0 and arr.max(initial=0) <= 65535:
            return (arr / 65535.0).astype(np.float32)
        return _min_max(arr)
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float32))
        return arr if arr.min(initial=0) >= 0.0 and arr.max(initial=0) <= 1.0 else _min_max(arr)
    if mode == "LA":
        arr = np.asarray(im, dtype=np.float32) / 255.0
        return arr[..., 0] * arr[..., 1]
    if "A" not in mode:
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    arr = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    return np.clip((arr[..., :3] @ LUMA) * arr[..., 3], 0.0, 1.0).astype(np.float32)


def _min_max(arr: np.ndarray) -> np.ndarray:
    """``arr`` scaled to [0, 1] by its own minimum and maximum (zeros when it is flat)."""
    lo, hi = float(arr.min()), float(arr.max())
    return ((arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)).astype(np.float32)
