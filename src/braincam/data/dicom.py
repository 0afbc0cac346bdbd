"""DICOM files and series -> grey frames in [0, 1] (pydicom).

Per frame, in this order (DICOM PS3.3 C.11 and C.7.6.3):

1. modality LUT: ``v = slope * stored + intercept`` (Rescale Slope/Intercept, 1 and 0 when absent);
2. window: with Window Center ``c`` and Width ``w`` (the first pair when several are given),
   ``x = clip((v - (c - w / 2)) / w, 0, 1)``; without a window, robust percentiles of the frame,
   ``x = clip((v - p0.5) / (p99.5 - p0.5), 0, 1)``;
3. ``MONOCHROME1`` (high values dark) is inverted: ``x = 1 - x``; colour photometric
   interpretations become luma (ITU-R 601, as for image files).

Compressed transfer syntaxes decode through whichever pydicom pixel-data plugin is installed
(RLE always works; JPEG, JPEG-LS and JPEG 2000 need pylibjpeg/python-gdcm/...); without one the
error names the transfer syntax and the plugins to install. A series is the DICOM files of one
folder that share a Series Instance UID, ordered by Instance Number, then Image Position
(Patient) along the slice axis (its projection on the slice normal, the cross product of Image
Orientation (Patient)'s row and column directions; its z without an orientation), then name. A
file without an image (no Rows/Columns: a DICOMDIR, a report) is no slice of it.

Only these header fields are ever read: pixel attributes, Rescale Slope/Intercept, Window
Center/Width, Photometric Interpretation, Rows, Columns, Number of Frames, Instance Number,
Image Position and Orientation (Patient), Series Number, and the Series and Study Instance
UIDs (only to tell series apart and to keep a study's files on one side of a split; they are
never written). No patient-identifying field (name, ID, birth date, institution, dates) leaves
this module.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braincam.errors import BraincamError

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})  # a file so named is read as DICOM first
PERCENTILES = (0.5, 99.5)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_PLUGINS = {  # transfer-syntax name prefix -> pydicom plugins that decode it
    "JPEG-LS": "pyjpegls, or python-gdcm",
    "JPEG 2000": "pylibjpeg with pylibjpeg-openjpeg, or python-gdcm",
    "JPEG": "pylibjpeg with pylibjpeg-libjpeg, or python-gdcm",
}


NO_IMAGE = "DICOM file without an image (no Rows/Columns)"


class DicomReadError(BraincamError):
    """A DICOM file that cannot be decoded; one line naming the file."""


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """pydicom's warnings about header quirks silenced; braincam judges the values it reads
    itself and names the file (pydicom's messages do not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _not_a_value_warning(record: logging.LogRecord) -> bool:
    """pydicom logs each malformed header value (``Invalid value for VR IS: 'ab'``) as well
    as warning it: the log line, without the file's name, is dropped."""
    return not record.getMessage().startswith("Invalid value for VR")


logging.getLogger("pydicom").addFilter(_not_a_value_warning)


def is_dicom(data: bytes) -> bool:
    """DICOM Part 10 files carry ``DICM`` after a 128-byte preamble."""
    return data[128:132] == b"DICM"


def has_dicom_marker(path: Path | str) -> bool:
    """:func:`is_dicom` of the file's first bytes (by content, whatever its name); raises
    OSError when the file cannot be read."""
    with open(path, "rb") as fh:
        return is_dicom(fh.read(132))


@dataclass(frozen=True)
class DicomInfo:
    """The non-identifying header fields braincam keeps."""

    frames: int
    width: int
    height: int
    instance: int | None
    position: float | None  # Image Position (Patient) along the slice normal, mm
    series: str | None = None  # Series Instance UID: tells series apart, never written out
    series_number: int | None = None
    study: str | None = None  # Study Instance UID: groups a study's files, never written out


def _dataset(path: Path, data: bytes | None, header_only: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        source = io.BytesIO(data) if data is not None else str(path)
        with _quiet_pydicom():  # pydicom warns on tolerable header quirks
            return pydicom.dcmread(source, stop_before_pixels=header_only)
    except InvalidDicomError as exc:
        if path.suffix.lower() in DICOM_SUFFIXES:  # named DICOM: maybe a legacy one
            legacy = _legacy_dataset(path, data, header_only)
            if legacy is not None:
                return legacy
            raise DicomReadError(f"{path}: not a readable DICOM file (no 'DICM' marker, and "
                                 "no image dataset when read without it)") from None
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DicomReadError(f"{path}: not a readable DICOM file ({reason})") from None
    except (OSError, ValueError, EOFError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DicomReadError(f"{path}: not a readable DICOM file ({reason})") from None


def _legacy_dataset(path: Path, data: bytes | None, header_only: bool):
    """A ``.dcm`` file without the Part 10 preamble and ``DICM`` marker (older exports, ACR-NEMA
    style): read anyway, its transfer syntax the encoding pydicom detects, or None when it is
    no dataset with an image after all."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        source = io.BytesIO(data) if data is not None else str(path)
        with _quiet_pydicom():
            ds = pydicom.dcmread(source, stop_before_pixels=header_only, force=True)
        if not ds.get("Rows") or not ds.get("Columns"):
            return None
        if "TransferSyntaxUID" not in getattr(ds, "file_meta", ()):
            implicit, little = ds.original_encoding
            ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                              ExplicitVRLittleEndian if little
                                              else ExplicitVRBigEndian)
        return ds
    except Exception:  # forced reading of a non-DICOM file fails in many ways
        return None


def dicom_info(path: Path | str, data: bytes | None = None) -> DicomInfo:
    """Frame count, instance number and slice position from the header (pixels not read). An
    instance number or position that is not a number counts as missing; a frame count that is
    not a positive number makes the file unreadable."""
    ds = _dataset(Path(path), data, header_only=True)
    with _quiet_pydicom():  # pydicom warns on malformed numbers; they are judged here
        position = _position(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"))
        instance = _first(ds.get("InstanceNumber"))
        frames = _first(ds.get("NumberOfFrames", 1) or 1)
        rows, columns = (_first(ds.get(key, 0) or 0) for key in ("Rows", "Columns"))
        series = str(ds.get("SeriesInstanceUID", "") or "") or None
        study = str(ds.get("StudyInstanceUID", "") or "") or None
        number = _first(ds.get("SeriesNumber"))
    if frames is None or not frames >= 1 or not frames.is_integer():  # NaN and inf too
        raise DicomReadError(f"{path}: Number of Frames is not a positive whole number")
    return DicomInfo(
        frames=int(frames), width=int(columns or 0), height=int(rows or 0),
        instance=int(instance) if instance is not None and instance.is_integer() else None,
        position=position, series=series,
        series_number=int(number) if number is not None and number.is_integer() else None,
        study=study,
    )


def read_dicom(path: Path | str, data: bytes | None = None, frame: int | None = None) -> np.ndarray:
    """Frame ``frame`` (default 0) of a DICOM file as float32 ``H x W`` in [0, 1]."""
    path = Path(path)
    ds = _dataset(path, data)
    if "PixelData" not in ds:
        raise DicomReadError(f"{path}: DICOM file without pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    index = 0 if frame is None else int(frame)
    if not 0 <= index < frames:
        raise DicomReadError(f"{path}: frame {index} out of range (the file has {frames})")
    try:
        with _quiet_pydicom():  # of a multi-frame file, only the frame asked for is decoded
            pixels = ds.pixel_array if frames == 1 else _one_frame(ds, index)
    except Exception as exc:  # pydicom and its plugins raise many kinds on damaged data
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        name = getattr(syntax, "name", str(syntax))
        if getattr(syntax, "is_compressed", False):
            plugins = next((v for k, v in _PLUGINS.items() if name.startswith(k)), None)
            if "missing dependencies" in str(exc):
                raise DicomReadError(
                    f"{path}: cannot decode compressed pixel data ({name}); install a pydicom "
                    f"plugin for it: {plugins or 'python-gdcm'}") from None
            hint = (f"; if the file is intact, another pydicom plugin may decode it: {plugins}"
                    if plugins else "")
            raise DicomReadError(f"{path}: cannot decode compressed pixel data ({name}: "
                                 f"{_reason(exc)}){hint}") from None
        raise DicomReadError(f"{path}: cannot decode pixel data ({_reason(exc)})") from None
    pixels = np.asarray(pixels)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3:  # colour samples, last axis: RGB (pydicom converts YBR itself)
        return (pixels[..., :3].astype(np.float32) @ _LUMA / _max_value(ds)).astype(np.float32)
    slope, intercept = _first(ds.get("RescaleSlope")), _first(ds.get("RescaleIntercept"))
    values = pixels.astype(np.float64) * (slope or 1.0) + (intercept or 0.0)
    return window(values, _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth")),
                  invert=photometric == "MONOCHROME1")


def _one_frame(ds, index: int) -> np.ndarray:
    """Frame ``index`` of a multi-frame dataset, decoded alone (decoding every frame for each
    one makes a file of N frames cost N^2 frame decodes)."""
    from pydicom.pixels import pixel_array

    return pixel_array(ds, index=index)


def _reason(exc: BaseException) -> str:
    """One line of a pixel decoding error: pydicom puts its plugins' own reasons on the
    lines after "exceptions were raised by all available plugins:"; the first is kept."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith("plugins:"):
        return lines[1]
    return " ".join(lines).split(". ")[0] if lines else type(exc).__name__


def window(values: np.ndarray, centre: float | None, width: float | None,
           invert: bool = False) -> np.ndarray:
    """``clip((v - lo) / (hi - lo), 0, 1)`` with ``lo, hi = c -+ w/2`` from the window, else
    robust percentiles (module doc); ``invert`` gives ``1 - x``, computed as
    ``(hi - v) / (hi - lo)`` so that it rounds like the uninverted image."""
    if centre is not None and width is not None and width > 0:
        lo, hi = centre - width / 2.0, centre + width / 2.0
    else:
        lo, hi = (float(v) for v in np.percentile(values, PERCENTILES))
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    scaled = (hi - values) / (hi - lo) if invert else (values - lo) / (hi - lo)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def series_key(info: DicomInfo, name: str) -> tuple:
    """Where a file goes in its series (module docstring): by Instance Number, then Image
    Position (Patient) along the slice axis, then file name; missing values last."""
    return (info.instance is None, info.instance or 0,
            info.position is None, info.position or 0.0, name)


def _position(position, orientation) -> float | None:
    """Image Position (Patient) projected on the slice normal ``r x c`` (Image Orientation
    (Patient) = row and column direction cosines ``r``, ``c``), so that sagittal and coronal
    series order by their own axis; the z coordinate without a usable orientation; None
    without a usable position."""
    point = _numbers(position, 3)
    if point is None:
        return None
    directions = _numbers(orientation, 6)
    normal = None if directions is None else np.cross(directions[:3], directions[3:])
    if normal is None or not np.linalg.norm(normal) > 1e-6:
        return float(point[2])
    return float(point @ (normal / np.linalg.norm(normal)))


def _numbers(value, n: int) -> np.ndarray | None:
    """``n`` finite numbers of a multi-valued DICOM element, or None."""
    if value is None or isinstance(value, str) or not isinstance(value, Sequence) \
            or len(value) != n:
        return None
    numbers = np.array([_first(v) if _first(v) is not None else np.nan for v in value])
    return numbers if np.isfinite(numbers).all() else None


def _first(value) -> float | None:
    """The first of a multi-valued DICOM number, as float."""
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _max_value(ds) -> float:
    return float(2 ** int(ds.get("BitsStored", 8)) - 1)
