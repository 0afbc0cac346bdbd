"""NIfTI volumes (``.nii``, ``.nii.gz``) -> axial grey slices in [0, 1] (nibabel).

The volume is reoriented to the closest canonical orientation (``nibabel.as_closest_canonical``,
RAS+: axis 0 runs from the patient's left to right, axis 1 from posterior to anterior, axis 2
from inferior to superior), so slice ``k`` is the axial plane ``data[:, :, k]``, counted from
the feet.
It is shown in the radiological convention of 2D MRI exports: anterior at the top, the patient's
right on the image's left, i.e. ``image[r, c] = data[X - 1 - c, Y - 1 - r, k]``. A 4D file uses its
first volume.

Intensities, one mapping for the whole volume so slices stay comparable: with the header's
display range (``cal_min < cal_max``) ``x = clip((v - cal_min) / (cal_max - cal_min), 0, 1)``,
else robust percentiles of all voxels, ``x = clip((v - p0.5) / (p99.5 - p0.5), 0, 1)``.

Slice choice (:func:`choose_slices`): every ``k``-th slice, and of those only the ones whose head
mask (``braincam.data.mask.head_mask``) covers at least ``min_head`` of the slice.

Masks back into the volume (:func:`write_mask_volume`): display slices are turned back into the
canonical grid, ``data[x, y, k] = image[Y - 1 - y, X - 1 - x]``, and the canonical grid back into
the file's own axis order and directions (``nibabel.orientations``), so the mask file has the
input's voxel grid and affine and lies on the scan in any viewer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from braincam.data.dicom import PERCENTILES
from braincam.data.mask import head_mask
from braincam.errors import BraincamError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_HEADER_SIZES = (348, 540)  # NIfTI-1, NIfTI-2
MAX_VOLUME_BYTES = 2 << 30  # a gzipped volume's bytes once inflated: larger ones are refused
_CACHED_VOLUMES = 4  # a volume and its label volume, for two volumes at a time
_MM_PER_UNIT = {"meter": 1000.0, "mm": 1.0, "micron": 0.001}  # the header's spatial units
_volumes: OrderedDict[str, np.ndarray] = OrderedDict()
_lock = threading.Lock()


class NiftiReadError(BraincamError):
    """A NIfTI file that cannot be read; one line naming the file."""


def is_nifti_name(path: Path | str) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def file_stem(path: Path | str) -> str:
    """The file name without its suffix, ``.nii.gz`` counted as one (``t1.nii.gz`` -> ``t1``)."""
    path = Path(path)
    return path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem


def is_nifti(data: bytes) -> bool:
    """A NIfTI-1/2 header (``sizeof_hdr`` 348 or 540, either byte order), gzipped or not."""
    head = data[:4]
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
                head = fh.read(4)
        except (OSError, EOFError):
            return False
    if len(head) < 4:
        return False
    return any(struct.unpack(f"{e}i", head)[0] in _HEADER_SIZES for e in "<>")


def is_nifti_file(path: Path | str) -> bool:
    """A NIfTI file by name (``.nii``, ``.nii.gz``) or, failing that, by content."""
    if is_nifti_name(path):
        return True
    try:
        return is_nifti(Path(path).read_bytes())
    except OSError:
        return False


def read_volume(path: Path | str, data: bytes | None = None) -> np.ndarray:
    """The whole volume as float32 ``(Z, H, W)`` in [0, 1]: axial slices in display orientation
    (module docstring). The last volumes read are kept in memory, keyed by content."""
    return _cached(Path(path), data, "grey")


def read_label_volume(path: Path | str, data: bytes | None = None) -> np.ndarray:
    """A label volume (a tumour mask of a volume: voxels > 0 are tumour) as bool ``(Z, H, W)``
    in the display orientation of :func:`read_volume`, so slice ``k`` of the mask lies on slice
    ``k`` of its image. Cached like :func:`read_volume`."""
    return _cached(Path(path), data, "labels")


def _cached(path: Path, data: bytes | None, kind: str) -> np.ndarray:
    if data is None:
        data = _file_bytes(path)
    key = f"{kind}:{hashlib.blake2b(data, digest_size=16).hexdigest()}"
    with _lock:
        if key in _volumes:
            _volumes.move_to_end(key)
            return _volumes[key]
    volume = _decode(path, data, labels=kind == "labels")
    with _lock:
        _volumes[key] = volume
        while len(_volumes) > _CACHED_VOLUMES:
            _volumes.popitem(last=False)
    return volume


def read_nifti_slice(path: Path | str, data: bytes | None = None,
                     index: int | None = None) -> np.ndarray:
    """Axial slice ``index`` (default: the middle one) as float32 ``H x W`` in [0, 1]."""
    volume = read_volume(path, data)
    k = len(volume) // 2 if index is None else int(index)
    if not 0 <= k < len(volume):
        raise NiftiReadError(f"{path}: slice {k} out of range (the volume has {len(volume)})")
    return volume[k]


def choose_slices(volume: np.ndarray, every: int = 1, min_head: float = 0.0) -> list[int]:
    """Indices of every ``every``-th slice whose head mask covers >= ``min_head`` of it."""
    if every < 1:
        raise BraincamError(f"slice step must be >= 1, got {every}")
    picked = range(0, len(volume), every)
    if min_head <= 0:
        return list(picked)
    return [k for k in picked if volume[k].max() > 0 and head_mask(volume[k]).mean() >= min_head]


def no_slice_reason(min_head: float) -> str:
    """Why a volume none of whose slices :func:`choose_slices` keeps gives no image."""
    return f"no slice whose head covers {min_head:.0%} of it"


def write_mask_volume(source: Path | str, masks: Mapping[int, np.ndarray],
                      out: Path | str) -> tuple[int, float]:
    """Write ``masks`` (display slice index -> bool ``H x W`` in the orientation of
    :func:`read_volume`) as a uint8 0/1 volume on the voxel grid of the NIfTI file ``source``
    (its shape, axis order and affine; slices not given are 0) to ``out`` (gzipped when it ends
    in ``.gz``), atomically. Returns (tumour voxels, their volume in mL from the header's voxel
    size and spatial units, millimetres when unset)."""
    import nibabel as nib

    from braincam.runs import atomic_write_bytes

    source = Path(source)
    image = _image(source, _file_bytes(source))
    flat = len(image.shape) == 2
    image = _with_slice_axis(image)
    canonical = nib.as_closest_canonical(image)
    x, y, z = canonical.shape[:3]
    grid = np.zeros((x, y, z), np.uint8)
    for k, mask in masks.items():
        if not 0 <= k < z:
            raise BraincamError(f"{source}: no slice {k} (the volume has {z})")
        if np.shape(mask) != (y, x):
            raise BraincamError(f"{source}: slice {k} mask is {np.shape(mask)}, the volume's "
                                f"slices are {(y, x)}")
        grid[:, :, k] = np.asarray(mask, bool)[::-1, ::-1].T
    turn = nib.orientations.ornt_transform(nib.io_orientation(canonical.affine),
                                           nib.io_orientation(image.affine))
    grid = np.ascontiguousarray(nib.orientations.apply_orientation(grid, turn))
    if flat:  # back to the source's own 2D grid
        grid = grid[:, :, 0]
    header = image.header.copy()
    header.set_data_shape(grid.shape)
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    header["cal_min"], header["cal_max"] = 0, 1
    written = type(image)(grid, image.affine, header)
    raw = written.to_bytes()
    atomic_write_bytes(Path(out), gzip.compress(raw, 6) if str(out).endswith(".gz") else raw)
    voxels = int(grid.sum())
    unit = _MM_PER_UNIT.get(image.header.get_xyzt_units()[0], 1.0)  # "unknown": millimetres
    return voxels, voxels * float(np.prod(image.header.get_zooms()[:3])) * unit**3 / 1000


def slice_size(path: Path | str) -> tuple[int, int]:
    """``(width, height)`` of the file's axial slices as :func:`read_volume` shows them, from
    the header alone (the voxels stay on disk): the extents of the stored axes that the
    closest canonical orientation makes X and Y; a 2D image is one slice, as there."""
    import nibabel as nib

    image = nib.load(str(path))
    shape = (*image.shape[:2], 1) if len(image.shape) == 2 else image.shape[:3]
    ras = list(nib.io_orientation(image.affine)[:3, 0])  # each stored axis's RAS axis
    return shape[ras.index(0)], shape[ras.index(1)]


def orientation(path: Path | str) -> str:
    """The directions of the file's stored axes from its affine, header only (``"RAS"``,
    ``"LPS"``, ...): two files of one voxel grid lie on each other only if they agree."""
    import nibabel as nib

    try:
        return "".join(nib.aff2axcodes(nib.load(str(path)).affine))
    except Exception as exc:  # nibabel raises several types for a bad header
        raise NiftiReadError(f"{path}: cannot read NIfTI header ({exc})") from None


def _with_slice_axis(image):
    """A 2D image (one slice stored as ``X x Y``) as ``X x Y x 1`` with the same affine, so
    that it reorients like a volume; other images unchanged."""
    if len(image.shape) != 2:
        return image
    return type(image)(np.asarray(image.dataobj)[..., None], image.affine, image.header)


def _file_bytes(path: Path) -> bytes:
    """The bytes of ``path``; NiftiReadError naming the file when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NiftiReadError(f"{path}: cannot read file ({exc.strerror})") from None


def _image(path: Path, data: bytes) -> Any:
    """The NIfTI-1/2 image of a file's bytes (gzipped or not), as stored."""
    import nibabel as nib

    raw = data
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
                raw = fh.read(MAX_VOLUME_BYTES + 1)  # a small file may inflate to any size
        except (OSError, EOFError, zlib.error) as exc:
            raise NiftiReadError(f"{path}: corrupt gzip data ({exc})") from None
        if len(raw) > MAX_VOLUME_BYTES:
            raise NiftiReadError(f"{path}: the volume inflates to more than "
                                 f"{MAX_VOLUME_BYTES >> 30} GiB; braincam reads smaller ones")
    if not is_nifti(raw):
        raise NiftiReadError(f"{path}: not a NIfTI file (no NIfTI-1/2 header)")
    try:
        kind = nib.Nifti2Image if _header_size(raw) == 540 else nib.Nifti1Image
        image = kind.from_bytes(raw)
        header = image.header
        declared = int(np.prod(header.get_data_shape(), dtype=np.int64)) * \
            header.get_data_dtype().itemsize
        held = len(raw) - int(header.get_data_offset())
    except Exception as exc:  # nibabel raises many kinds on damaged headers
        raise NiftiReadError(f"{path}: cannot read NIfTI volume ({_reason(exc)})") from None
    if declared > held:  # checked before the voxels are allocated: a header may claim any size
        raise NiftiReadError(f"{path}: truncated NIfTI volume (its header declares {declared} "
                             f"bytes of voxels, the file holds {max(held, 0)})")
    return image


def _decode(path: Path, data: bytes, labels: bool = False) -> np.ndarray:
    """The volume's axial slices in display orientation: grey in [0, 1], or with ``labels``
    the voxels > 0 as bool."""
    import nibabel as nib

    try:
        image = nib.as_closest_canonical(_with_slice_axis(_image(path, data)))
        values = np.asarray(image.dataobj, dtype=np.float32)
    except NiftiReadError:
        raise
    except Exception as exc:  # nibabel and numpy raise many kinds on odd volumes
        raise NiftiReadError(f"{path}: cannot read NIfTI volume ({_reason(exc)})") from None
    while values.ndim > 3:
        values = values[..., 0]
    if values.ndim != 3 or min(values.shape) < 1:
        raise NiftiReadError(f"{path}: expected a 3D volume, got shape {values.shape}")
    values = np.nan_to_num(values)
    if labels:
        return np.ascontiguousarray((values > 0)[::-1, ::-1, :].transpose(2, 1, 0))
    cal_min, cal_max = (float(image.header[k]) for k in ("cal_min", "cal_max"))
    if cal_max > cal_min:
        lo, hi = cal_min, cal_max
    else:
        lo, hi = (float(v) for v in np.percentile(values, PERCENTILES))
    scaled = np.clip((values - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(values)
    # (X, Y, Z) RAS -> (Z, rows = anterior first, cols = patient's right first)
    return np.ascontiguousarray(scaled[::-1, ::-1, :].transpose(2, 1, 0), dtype=np.float32)


def _reason(exc: BaseException) -> str:
    """An exception as one line: its text, else its type's name."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _header_size(raw: bytes) -> int:
    return next(
        (v for e in "<>" if (v := struct.unpack(f"{e}i", raw[:4])[0]) in _HEADER_SIZES), 0
    )
