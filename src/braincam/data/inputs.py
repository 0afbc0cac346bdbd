"""What a user hands to ``braincam predict`` or ``braincam.load(...).predict``, as slices.

An input is an image file, a DICOM file (one slice, or one per frame of a multi-frame file), a
NIfTI volume (its axial slices, :func:`braincam.data.nifti.choose_slices`), a folder, a numpy
array (grey ``H x W``, or ``H x W x 3/4`` colour) or a PIL image. In a folder and in each of its
subfolders, the DICOM files (by content: any file whose name is not an image or NIfTI name)
are one series named by that folder (ordered by :func:`braincam.data.dicom.series_key`), or,
when they belong to several series, one input per series (:func:`_series`); its image and
NIfTI files (by name) are inputs of their own. Hidden files and folders are ignored.

A file that cannot be read while the inputs are expanded (a DICOM or NIfTI header, a volume
without a slice of head) raises, or, when a ``skipped`` list is given, is added to it, so one
bad file in a folder costs only itself.

Every slice keeps the name of its input (``name``: the path as given, or ``<array N>``) and its
position in it (``slice``: 0-based over the series/volume/frames; None for a 2D image), and how
to read it (``file`` + ``index`` for :func:`braincam.data.imageio.read_grey`, or ``array``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braincam.data.dicom import (
    NO_IMAGE,
    DicomReadError,
    dicom_info,
    has_dicom_marker,
    series_key,
    window,
)
from braincam.data.imageio import LUMA, ImageReadError, is_dicom_file, pil_grey, read_grey
from braincam.data.nifti import (
    NiftiReadError,
    choose_slices,
    is_nifti,
    is_nifti_name,
    no_slice_reason,
    read_volume,
)
from braincam.data.records import (
    DICOM_SUFFIXES,
    IGNORED_DIRS,
    IMAGE_SUFFIXES,
    NOT_UTF8,
    SkippedFile,
    utf8_name,
)
from braincam.errors import BraincamError

DEFAULT_MIN_HEAD = 0.1  # volume slices with less head than this fraction are not predicted


@dataclass(frozen=True)
class InputSlice:
    name: str  # the input as given: a path, or "<array N>"
    slice: int | None  # position within a series/volume/multi-frame input; None for 2D
    file: Path | None = None  # where to read it from ...
    index: int | None = None  # ... and which frame/slice of that file
    array: np.ndarray | None = None  # grey float32 in [0, 1] for in-memory inputs

    @property
    def volume(self) -> bool:
        """Part of a multi-slice input (a volume row summarises those)."""
        return self.slice is not None


@dataclass(frozen=True)
class SliceChoice:
    """Which slices of a volume or series: every ``every``-th, and of NIfTI slices only those
    whose head mask covers at least ``min_head`` (0: all)."""

    every: int = 1
    min_head: float = DEFAULT_MIN_HEAD

    def __post_init__(self) -> None:
        if not isinstance(self.every, int | np.integer) or self.every < 1:
            raise BraincamError(f"--every must be a whole number >= 1, got {self.every!r}")
        if not isinstance(self.min_head, int | float) or not 0 <= self.min_head < 1:
            raise BraincamError(f"--min-head must be in [0, 1), got {self.min_head!r}")


def expand_inputs(inputs: object, choice: SliceChoice | None = None,
                  skipped: list[SkippedFile] | None = None) -> list[InputSlice]:
    """The slices of ``inputs`` (one input or a list of them), in the order given. Files that
    cannot be read raise, or are appended to ``skipped`` (module docstring); no slice at all,
    with nothing skipped, is an error."""
    choice = choice or SliceChoice()
    n_skipped = len(skipped) if skipped is not None else 0
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "USO":  # e.g. a column's values
        inputs = inputs.tolist()
    if isinstance(inputs, str | Path | np.ndarray) or _is_pil(inputs):
        inputs = [inputs]
    if not isinstance(inputs, Iterable):
        raise BraincamError(f"cannot read an input of type {type(inputs).__name__}")
    out: list[InputSlice] = []
    for n, item in enumerate(inputs):
        if isinstance(item, str | Path):
            out += _path_slices(Path(item), str(item), choice, skipped)
        elif isinstance(item, np.ndarray) or _is_pil(item):
            out.append(InputSlice(f"<array {n}>", None, array=as_grey(item)))
        else:
            raise BraincamError(
                f"input {n}: cannot read a {type(item).__name__}; give a path, a numpy array "
                "or a PIL image"
            )
    if not out and (skipped is None or len(skipped) == n_skipped):
        raise BraincamError("no images found in the inputs")
    return out


def read_slice(item: InputSlice) -> np.ndarray:
    """The slice as grey float32 ``H x W`` in [0, 1]."""
    if item.array is not None:
        return item.array
    return read_grey(item.file, index=item.index)


def as_grey(image: object) -> np.ndarray:
    """A numpy array or PIL image as grey float32 in [0, 1]: uint8 / 255, uint16 / 65535,
    other integers within [0, 255] / 255, booleans as 0 and 1, floats within [0, 1] as they
    are; any other array (raw scanner values, such as nibabel's ``get_fdata()`` or pydicom's
    ``pixel_array``) through the robust percentile window of a DICOM slice without one (NaN
    and +-inf count as 0). Colour: its luma (ITU-R 601) under the same rules of its type; uint8
    goes through PIL like a colour file (alpha composited on black, as a PNG or a PIL image
    reads), other types drop alpha."""
    if _is_pil(image):
        return pil_grey(image)
    array = np.asarray(image)
    colour = array.ndim == 3 and array.shape[-1] in (3, 4)
    if array.ndim != 2 and not colour:
        raise BraincamError(
            f"expected a grey H x W or colour H x W x 3 image array, got shape {array.shape}"
        )
    if array.size == 0:
        raise BraincamError(f"expected an image array with pixels, got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise BraincamError(f"expected an image array of numbers, got dtype {array.dtype}")
    if colour and array.dtype == np.uint8:  # as a colour image file is decoded
        from PIL import Image

        return pil_grey(Image.fromarray(np.ascontiguousarray(array)))
    values = np.asarray(array[..., :3] if colour else array).astype(np.float64)
    values[~np.isfinite(values)] = 0.0  # an inf would stretch the window over everything
    if colour:  # its luma, then the rules of a grey array of that type; a weighted mean lies
        values = np.minimum(values @ LUMA, values.max(axis=-1))  # within its channels
    if array.dtype == np.bool_:
        return values.astype(np.float32)
    if array.dtype == np.uint8:
        return (values / 255.0).astype(np.float32)
    if array.dtype == np.uint16:
        return (values / 65535.0).astype(np.float32)
    low, high = values.min(), values.max()
    if array.dtype.kind in "iu" and low >= 0 and high <= 255:
        return (values / 255.0).astype(np.float32)
    if array.dtype.kind == "f" and low >= 0 and high <= 1:
        return values.astype(np.float32)
    return window(values, None, None)  # raw scanner values: as a DICOM slice without a window


def _path_slices(path: Path, name: str, choice: SliceChoice,
                 skipped: list[SkippedFile] | None,
                 seen: set[str] | None = None) -> list[InputSlice]:
    """``seen``: the real folders already expanded (a link to a folder above ends there)."""
    if path.is_dir():
        return _folder_slices(path, choice, skipped, set() if seen is None else seen)
    if path.exists() and not path.is_file():  # a FIFO would block the read
        return _skip(path, ImageReadError(f"{path}: not a regular file"), skipped)
    if path.is_symlink() and not path.exists():
        return _skip(path, ImageReadError(f"{path}: a link to nothing"), skipped)
    try:
        return _file_slices(path, name, choice, skipped)
    except (ImageReadError, DicomReadError, NiftiReadError) as exc:
        return _skip(path, exc, skipped)


def _file_slices(path: Path, name: str, choice: SliceChoice,
                 skipped: list[SkippedFile] | None) -> list[InputSlice]:
    if not utf8_name(path):  # its name could not be written to predictions.csv
        raise ImageReadError(f"{path}: {NOT_UTF8}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror})") from None
    if is_dicom_file(path, head):
        frames = dicom_info(path).frames
        if frames == 1:
            return [InputSlice(name, None, path)]
        return [InputSlice(name, k, path, k) for k in range(0, frames, choice.every)]
    if is_nifti_name(path) or is_nifti(head):
        picked = choose_slices(read_volume(path), choice.every, choice.min_head)
        if not picked:  # a skip entry with a skipped list, else an error (_path_slices)
            raise NiftiReadError(f"{path}: {no_slice_reason(choice.min_head)}")
        return [InputSlice(name, k, path, k) for k in picked]
    return [InputSlice(name, None, path)]


def _folder_slices(folder: Path, choice: SliceChoice, skipped: list[SkippedFile] | None,
                   seen: set[str]) -> list[InputSlice]:
    """The folder's DICOM series, then its image and NIfTI files and subfolders by name; a
    dataset's ``masks`` subfolder (and ``__MACOSX``) is left out, as the dataset loader does.
    Each real folder is expanded once, so a link to a folder above ends there; a link to
    nothing is a skip entry."""
    real = os.path.realpath(folder)
    if real in seen:
        return []
    seen.add(real)
    series: list[Path] = []
    others: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or (entry.is_dir() and entry.name.lower() in IGNORED_DIRS):
            continue
        if not utf8_name(entry):  # a DICOM series file too: predictions.csv could not name it
            _skip(entry, ImageReadError(f"{entry}: {NOT_UTF8}"), skipped)
            continue
        named = entry.suffix.lower() in IMAGE_SUFFIXES or is_nifti_name(entry)
        if entry.is_dir() or (entry.is_file() and named) or (
                entry.is_symlink() and not entry.exists()):
            others.append(entry)
        elif entry.is_file():
            try:
                dicom = has_dicom_marker(entry)
            except OSError as exc:
                _skip(entry, ImageReadError(f"{entry}: cannot read ({exc.strerror})"), skipped)
                continue
            if dicom:
                series.append(entry)
            elif entry.suffix.lower() in DICOM_SUFFIXES:  # named DICOM, no DICOM header
                others.append(entry)
    out = _series(series, str(folder), choice, skipped) if series else []
    for entry in others:
        out += _path_slices(entry, str(entry), choice, skipped, seen)
    return out


def _series(files: Sequence[Path], name: str, choice: SliceChoice,
            skipped: list[SkippedFile] | None) -> list[InputSlice]:
    """Slices of the DICOM series of one folder: every frame of every readable file, in
    series order. Files of several series (Series Instance UID) are one input per series,
    ``<folder>#series<N>``: N the Series Number where each series has its own, else 1, 2, ...
    in Series Number order; there, a series of one file is that file's input, named by it
    (a folder of single-slice exports, each its own series)."""
    series: dict[str | None, list[tuple[tuple, Path, int]]] = {}
    numbers: dict[str | None, int | None] = {}
    for file in files:
        try:
            info = dicom_info(file)
        except DicomReadError as exc:
            _skip(file, exc, skipped)
            continue
        if not info.width * info.height:
            _skip(file, DicomReadError(f"{file}: {NO_IMAGE}"), skipped)
            continue
        series.setdefault(info.series, []).append((series_key(info, file.name), file,
                                                   info.frames))
        numbers.setdefault(info.series, info.series_number)
    order = sorted(series, key=lambda uid: (numbers[uid] is None, numbers[uid] or 0,
                                            min(file.name for _, file, _ in series[uid])))
    own = len(set(numbers.values())) == len(numbers) and None not in numbers.values()
    out: list[InputSlice] = []
    for n, uid in enumerate(order, start=1):
        if len(order) > 1 and len(series[uid]) == 1:  # a file of its own: named like one
            (_, file, frames), = series[uid]
            out += ([InputSlice(str(file), None, file)] if frames == 1 else
                    [InputSlice(str(file), k, file, k) for k in range(0, frames, choice.every)])
            continue
        label = name if len(order) == 1 else f"{name}#series{numbers[uid] if own else n}"
        slices: list[tuple[Path, int | None]] = []
        for _, file, frames in sorted(series[uid]):
            slices += [(file, None)] if frames == 1 else [(file, k) for k in range(frames)]
        out += [InputSlice(label, k, file, index)
                for k, (file, index) in enumerate(slices) if k % choice.every == 0]
    return out


def _skip(path: Path, exc: Exception, skipped: list[SkippedFile] | None) -> list[InputSlice]:
    """Add ``path`` with the reason of ``exc`` to ``skipped``, or without it raise it as the
    one error type of an unreadable input, :class:`ImageReadError`."""
    if skipped is None:
        raise exc if isinstance(exc, ImageReadError) else ImageReadError(str(exc))
    skipped.append(SkippedFile(path, str(exc).removeprefix(f"{path}: ")))
    return []


def _is_pil(obj: object) -> bool:
    from PIL import Image

    return isinstance(obj, Image.Image)
