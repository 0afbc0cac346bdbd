"""Image files -> records: folder layouts, class names, ``boxes.csv`` and unreadable files.

A dataset root is laid out in one of two ways, detected per root:

- split folders: ``ROOT/<split>/<class>/<images>`` where ``<split>`` is ``Training``/``train``
  (-> ``"train"``), ``Validation``/``val`` (-> ``"val"``) or ``Testing``/``test`` (-> ``"test"``);
- class folders: ``ROOT/<class>/<images>`` (split ``None``).

Class folder names go through :func:`braincam.labels.normalise_label`. Several roots are simply
concatenated. Images may sit in sub-folders of a class folder.

Tumour masks: ``ROOT/masks/<relative path of the image, suffix .png>`` (e.g.
``masks/glioma/12.png`` for ``glioma/12.jpg``; the phantom generator writes this layout) is the
image's expert tumour mask (grey value >= 128 = tumour), attached as ``ImageRecord.mask``. The
``masks`` folder is never read as data. A mask that cannot be decoded, differs in size from its
image, is empty on a tumour image or marks tumour on a no-tumour image is not attached: a
warning and a ``SkippedFile`` entry for the mask (reason ends "image kept without it"); the
image stays, with its box if any. An empty mask on a no-tumour image is valid. A mask's name
replaces an image or DICOM suffix and is appended to any other name (``1.2.5`` ->
``1.2.5.png``); a 2D mask of a multi-frame file is set aside (it cannot name its frame), and
files under ``masks`` that annotate no image are named in a warning.

DICOM files (``.dcm``/``.dicom``, or any other name with a DICOM marker) are records too, one
per frame (``ImageRecord.slice`` is the frame of a multi-frame file, None for a single frame); a
NIfTI volume (``.nii``/``.nii.gz``) gives one record per axial slice whose head covers at least
``VOLUME_MIN_HEAD`` of the slice (``braincam.data.nifti``; volumes are read whole here). Run
files name such an image ``<path>#<k>`` (:func:`record_key`).

A NIfTI volume's tumour mask is a label volume of the same relative path under ``masks/``
(``masks/glioma/p1.nii.gz`` for ``glioma/p1.nii.gz``; voxels > 0 are tumour, on the image's
voxel grid), the layout of BraTS-style data. Each slice record gets it as its mask, and it
labels the slices: in a tumour class folder a slice without tumour voxels is a ``no_tumor``
image, so one patient's volume gives tumour and tumour-free slices. A label volume of another
shape or axis directions (affine), or empty on a tumour volume, is not attached (one skip entry
for the volume), nor is a slice of it with tumour voxels on a ``no_tumor`` volume (an entry
per slice). Each label volume is read and checked once.

Only file headers are read here (size, format) plus, for JPEG/PNG, the last bytes of the file to
spot truncation; a file without its end marker is decoded fully to decide. Corruption inside the
compressed data surfaces later, when the image is decoded (``PreprocessCache.load`` skips it).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from braincam.data.dicom import DICOM_SUFFIXES
from braincam.data.hashing import ContentStore, cache_root, content_hash_bytes, json_digest
from braincam.data.imageio import ImageReadError, read_mask, shown_size
from braincam.data.nifti import file_stem, is_nifti_name
from braincam.errors import BraincamError
from braincam.labels import CANONICAL, NO_TUMOR, normalise_label
from braincam.runs import atomic_write_text

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
VOLUME_MIN_HEAD = 0.1  # NIfTI slices whose head mask covers less of the slice are not records
MIN_SIDE = 8  # images smaller than this (in either direction) carry no usable anatomy
MASKS_DIR = "masks"
IGNORED_DIRS = frozenset({MASKS_DIR, "__macosx"})  # lower case; __MACOSX: zip resource forks
BOXES_FILE = "boxes.csv"
_MASK_EMPTY_FILE = "mask-empty-v3.npz"  # v3: 8-bit masks below half range mark pixels > 0
_SPLITS = {
    "training": "train", "train": "train",
    "validation": "val", "valid": "val", "val": "val",
    "testing": "test", "test": "test",
}
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
_TAIL_BYTES = 1024
_LAYOUTS = "expected ROOT/<class>/<images> or ROOT/<split>/<class>/<images>"


@dataclass(frozen=True)
class Box:
    """Tumour bounding box, YOLO-normalised: centre and size as fractions of the ORIGINAL
    width/height."""

    cx: float
    cy: float
    w: float
    h: float


@dataclass(frozen=True)
class ImageRecord:
    path: Path  # absolute
    source: str  # root directory name, e.g. "sartaj-brain-tumor-mri"; "_" added per repeat
    split: str | None  # original split "train" | "val" | "test", None for class folders
    label: str  # canonical label (braincam.labels)
    width: int  # original size in pixels
    height: int
    box: Box | None
    mask: Path | None = None  # expert tumour mask (ROOT/masks/...png), same size as the image
    slice: int | None = None  # frame of a multi-frame DICOM file / axial slice of a NIfTI volume

    @property
    def key(self) -> str:
        """How run files name the record: :func:`record_key`."""
        return record_key(self.path, self.slice)

    @property
    def stem(self) -> str:
        """A file-name stem for pictures of the record: :func:`image_stem` of its file,
        ``_s<k>`` added for slice or frame ``k``, as predict and explain name them."""
        return image_stem(self.path) + ("" if self.slice is None else f"_s{self.slice}")

    @property
    def image(self) -> tuple[Path, int | None]:
        """``(file, slice)``: the one image of the file that hashing compares
        (:func:`braincam.data.hashing.duplicates_of`); :func:`key_file` of :attr:`key`."""
        return self.path, self.slice


def record_key(path: Path | str, index: int | None) -> str:
    """How run files (``split.csv``, ``predictions.csv``, explanations, audits) name an image:
    its path, and ``<path>#<k>`` for slice or frame ``k`` of a volume or multi-frame file."""
    return str(path) if index is None else f"{path}#{index}"


def resolved_key(key: str) -> str:
    """``key`` with its file's path resolved (symlinks followed, absolute)."""
    file, index = key_file(key)
    return record_key(file.resolve(), index)


def key_file(key: str) -> tuple[Path, int | None]:
    """The file and slice a record key names (:attr:`ImageRecord.key`); a path that exists
    as it is written is a file's, ``#`` and all."""
    head, sep, tail = key.rpartition("#")
    if sep and tail.isdigit() and not Path(key).exists():
        return Path(head), int(tail)
    return Path(key), None


MASK_SET_ASIDE = "; image kept without it"  # ends the reason of a mask that was not used


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str

    @property
    def is_mask(self) -> bool:
        """A tumour mask set aside (its image is kept, without it), not a skipped image."""
        return self.reason.endswith(MASK_SET_ASIDE)


@dataclass
class Dataset:
    records: list[ImageRecord]
    skipped: list[SkippedFile]


def split_name(folder: str) -> str | None:
    """Canonical split for a folder name (``Training`` -> ``train``), None when not a split."""
    return _SPLITS.get(folder.lower())


def distinct_name(name: str, taken: set[str], reserved: tuple[str, ...] = ()) -> str:
    """``name`` with ``_`` appended while it is in ``taken`` or ``reserved``; added to
    ``taken``. Sources and sets of dataset folders are named by the folder's name, and two
    folders may share one."""
    while name in taken or name in reserved:
        name += "_"
    taken.add(name)
    return name


def source_names(roots: Sequence[Path]) -> list[str]:
    """The source name of each of ``roots`` (distinct folders, in order), as
    :func:`load_dataset` gives it: the folder's name, ``_`` appended while an earlier root has
    it."""
    taken: set[str] = set()
    return [distinct_name(Path(root).name, taken) for root in roots]


def load_dataset(roots: Sequence[Path | str]) -> Dataset:
    """Records of every usable image under ``roots``, sorted by (source, split, label, path).

    A record's source is its root's folder name, with ``_`` appended while an earlier root has
    it (``siteA/Testing``, ``siteB/Testing``: ``Testing``, ``Testing_``). Unreadable files are
    skipped with a logged warning and listed in ``Dataset.skipped``. Raises BraincamError for
    an unknown layout or folder name, or when no image is usable.
    """
    if isinstance(roots, str | Path):
        roots = [roots]
    if not roots:
        raise BraincamError("no dataset folder given")
    records: list[ImageRecord] = []
    skipped: list[SkippedFile] = []
    unique = list(dict.fromkeys(Path(os.path.abspath(r)) for r in roots))  # each root once
    real = {root: Path(os.path.realpath(root)) for root in unique}
    for inner in unique:
        same = next((o for o in unique if o != inner and real[o] == real[inner]), None)
        if same is not None:
            raise BraincamError(f"{inner} and {same} are one folder (through a link): its "
                                "images would be loaded twice; give it once")
        outer = next((o for o in unique if real[o] in real[inner].parents), None)
        if outer is not None:
            raise BraincamError(f"{inner} lies inside {outer}, also given: its images would be "
                                "loaded twice; give one of the two folders")
    for root, source in zip(unique, source_names(unique), strict=True):
        root_records, root_skipped = _load_root(root, source)
        records += root_records
        skipped += root_skipped
    if not records:
        where = ", ".join(str(r) for r in roots)
        raise BraincamError(f"no usable images found in {where} ({len(skipped)} files skipped)")
    records.sort(key=lambda r: (r.source, r.split or "", r.label, str(r.path)))
    skipped.sort(key=lambda s: str(s.path))
    return Dataset(records=records, skipped=skipped)


def records_at(
    roots: Sequence[Path | str], paths: Sequence[str], listed_in: Path
) -> list[ImageRecord]:
    """The records of ``roots`` at ``paths`` (record keys, :func:`record_key`), in that order
    (a run's ``split.csv`` rows; only the headers are read, no image is decoded). A path no
    longer among them is an error: the data changed since ``listed_in`` was written."""
    by_key = {r.key: r for r in load_dataset(roots).records}
    missing = [p for p in paths if p not in by_key]
    if missing:
        raise BraincamError(
            f"{len(missing)} images of {listed_in} are gone (first: {missing[0]}); "
            "the data changed since training"
        )
    return [by_key[p] for p in paths]


def without_skipped(
    records: Sequence[ImageRecord], skipped: Iterable[SkippedFile]
) -> list[ImageRecord]:
    """``records`` minus the skipped ones (by record key: a slice is skipped as
    ``<path>#<k>``), order kept (aligns records with the arrays ``PreprocessCache.load``
    returns)."""
    gone = {str(s.path) for s in skipped}
    return [r for r in records if r.key not in gone]


def write_skipped_csv(skipped: Sequence[SkippedFile], path: Path) -> None:
    """``skipped.csv`` with columns ``path,reason`` (header only when nothing was skipped)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows([shown_path(s.path), s.reason] for s in skipped)
    atomic_write_text(path, buf.getvalue())


NOT_UTF8 = "its name is not valid UTF-8 (a file from another system's zip?); rename it"


def utf8_name(path: Path) -> bool:
    """Whether ``path`` can be written as UTF-8 text (``split.csv``, ``predictions.csv``):
    Python holds the undecodable bytes of a file name as lone surrogates, which cannot."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_path(path: Path) -> str:
    """``path`` as UTF-8-safe text: undecodable bytes of its name become U+FFFD."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(
        d for d in folder.iterdir()
        if d.is_dir() and not d.name.startswith(".") and d.name.lower() not in IGNORED_DIRS
    )


def _class_label(folder: Path) -> str:
    label = normalise_label(folder.name)
    if label is None:
        raise BraincamError(
            f"{folder}: folder {folder.name!r} is not a known class "
            f"({', '.join(CANONICAL)} or an alias) nor a split (Training, Testing, train, val, "
            f"test); {_LAYOUTS}"
        )
    return label


def _load_root(root: Path, source: str) -> tuple[list[ImageRecord], list[SkippedFile]]:
    """Detect the layout of one root and read its image headers and boxes."""
    if not root.is_dir():
        raise BraincamError(f"{root}: not a directory; {_LAYOUTS}")
    subdirs = _visible_dirs(root)
    if not subdirs:
        raise BraincamError(f"{root}: no class or split folders found; {_LAYOUTS}")
    splits = [d.name for d in subdirs if split_name(d.name)]
    if splits and len(splits) < len(subdirs):
        others = ", ".join(repr(d.name) for d in subdirs if not split_name(d.name))
        raise BraincamError(f"{root}: holds split folders ({', '.join(splits)}) and other "
                            f"folders ({others}); a dataset folder holds split folders or "
                            f"class folders, not both: move the others out; {_LAYOUTS}")
    if splits:
        class_dirs = [
            (split_name(s.name), c, _class_label(c)) for s in subdirs for c in _visible_dirs(s)
        ]
    else:
        class_dirs = [(None, c, _class_label(c)) for c in subdirs]
    records: list[ImageRecord] = []
    skipped: list[SkippedFile] = []
    for split, folder, label in class_dirs:
        files, others = _image_files(folder)
        if not files:
            log.warning("%s: class folder contains no images", folder)
        _warn_left_out(folder, others)
        for file in files:
            named = utf8_name(file)  # any kind of file: run files could not name it otherwise
            if named and file.suffix.lower() not in IMAGE_SUFFIXES:
                found, problem = _volume_records(file, source, split, label)
                records += found
                skipped += [problem] if problem else []
                continue
            size, reason = _header_size(file) if named else ((0, 0), NOT_UTF8)
            if reason is not None:
                log.warning("skipping %s: %s", shown_path(file), reason)
                skipped.append(SkippedFile(file, reason))
                continue
            records.append(ImageRecord(file, source, split, label, *size, box=None))
    _warn_misplaced_masks(root, [s for s in subdirs if split_name(s.name)])
    if (root / BOXES_FILE).is_file():
        records = _attach_boxes(root, records, class_dirs)
    if (root / MASKS_DIR).is_dir():
        records, bad_masks = _attach_masks(root, records, [s.path for s in skipped])
        skipped += bad_masks
    return records, skipped


def mask_path(root: Path, image: Path) -> Path:
    """Where the tumour mask of ``image`` (a file under ``root``) lives:
    ``root/masks/<relative path>`` with suffix ``.png``; a NIfTI volume's is a label volume
    of the same relative path and name."""
    relative = image.relative_to(root)
    if is_nifti_name(image):
        return root / MASKS_DIR / relative
    return root / MASKS_DIR / relative.with_name(image_stem(relative) + ".png")


def image_stem(path: Path) -> str:
    """The file name without an image, DICOM or NIfTI suffix (``.nii.gz`` is one); any other
    name whole, its dots its own (the DICOM file ``1.2.840.5``)."""
    if is_nifti_name(path):
        return file_stem(path)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES | DICOM_SUFFIXES else path.name


def _attach_masks(
    root: Path, records: list[ImageRecord], skipped: Sequence[Path] = ()
) -> tuple[list[ImageRecord], list[SkippedFile]]:
    """Records with their valid mask attached, plus a skip entry for every bad mask; masks of
    no image, not even of a ``skipped`` one, are named in a warning.

    Whether a mask is empty needs a full decode (about 2 ms for a 512 px PNG), so the answer is
    cached by the mask file's content hash (``<cache>/mask-empty-v3.npz``)."""
    store = ContentStore(cache_root() / _MASK_EMPTY_FILE)
    known = len(store.values)
    out: list[ImageRecord] = []
    bad: list[SkippedFile] = []
    volumes: dict[Path, tuple[str | None, Sequence[bool]]] = {}  # mask of several slices: its check
    for r in records:
        path = mask_path(root, r.path)
        if not path.is_file():
            out.append(r)
            continue
        where = path
        if r.slice is not None and is_nifti_name(r.path):
            if path not in volumes:
                volumes[path] = _label_volume(path, r)
                if volumes[path][0] is not None:  # the whole label volume: one entry
                    _set_aside(bad, path, volumes[path][0])
            if volumes[path][0] is not None:
                out.append(r)
                continue
            reason, r = _slice_label(volumes[path][1], r)
            where = Path(record_key(path, r.slice))  # a label volume's slice: <mask>#<k>
        elif r.slice is not None:  # a frame of a multi-frame file: one entry for the file
            if path not in volumes:
                volumes[path] = ("one 2D mask for a file of several frames (a mask cannot "
                                 "name its frame)", [])
                _set_aside(bad, path, volumes[path][0])
            out.append(r)
            continue
        else:
            reason = _mask_problem(path, r, store)
        if reason is None:
            r = replace(r, mask=path)
        else:
            _set_aside(bad, where, reason)
        out.append(r)
    if len(store.values) > known:
        store.save()
    images = [r.path for r in records] + [p for p in skipped if p.is_file()]
    _warn_unused_masks(root, {mask_path(root, p) for p in images})
    return out, bad


def _set_aside(bad: list[SkippedFile], where: Path, reason: str) -> None:
    reason = f"{reason}{MASK_SET_ASIDE}"
    log.warning("tumour mask %s: %s", where, reason)
    bad.append(SkippedFile(where, reason))


def _warn_unused_masks(root: Path, used: set[Path]) -> None:
    """A warning naming the files under ``masks/`` that are no image's mask (a mask named
    after another suffix, a typo, an image since removed): they annotate nothing."""
    unused = sorted(p for p in (root / MASKS_DIR).rglob("*")
                    if p.is_file() and not p.name.startswith(".") and p not in used)
    if unused:
        log.warning("%d files under %s are the mask of no image (e.g. %s); a mask is "
                    "masks/<relative path of the image, suffix .png>", len(unused),
                    root / MASKS_DIR, unused[0].relative_to(root))


def _mask_problem(path: Path, record: ImageRecord, store: ContentStore) -> str | None:
    """Why the mask at ``path`` cannot annotate ``record``, or None when it can."""
    try:
        data = path.read_bytes()
        key = content_hash_bytes(data)
        with Image.open(io.BytesIO(data)) as im:
            width, height = shown_size(im)
        if (width, height) != (record.width, record.height):
            return f"mask is {width}x{height} px, image is {record.width}x{record.height}"
        if key not in store.values:  # the rule every reader of the mask applies
            store.values[key] = int(not read_mask(path, data).any())
    except UnidentifiedImageError:
        return "not a readable image file"
    except ImageReadError as exc:
        return f"cannot decode mask ({str(exc).removeprefix(f'{path}: ')})"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"cannot decode mask ({' '.join(str(exc).split())})"
    if store.values[key] and record.label != NO_TUMOR:
        return f"empty mask on a {record.label} image"
    if not store.values[key] and record.label == NO_TUMOR:
        return "tumour pixels in the mask of a no_tumor image"
    return None


def _label_volume(path: Path, record: ImageRecord) -> tuple[str | None, list[bool]]:
    """Whether the label volume at ``path`` can annotate the volume of ``record`` (None, or
    why not), and per slice whether it has tumour voxels. It cannot when it is unreadable,
    of another shape or orientation (a mirrored mask would mark healthy brain), or empty on
    a tumour volume."""
    from braincam.data.nifti import orientation, read_label_volume, read_volume

    try:
        labels, shape = read_label_volume(path), read_volume(record.path).shape
        axes = orientation(path), orientation(record.path)
    except BraincamError as exc:
        return str(exc).removeprefix(f"{path}: "), []
    if labels.shape != shape:
        return (f"mask volume is {'x'.join(map(str, labels.shape))} voxels, image volume is "
                f"{'x'.join(map(str, shape))}"), []
    if axes[0] != axes[1]:
        return f"mask volume is stored {axes[0]}, image volume {axes[1]} (affines differ)", []
    tumour = labels.reshape(len(labels), -1).any(axis=1).tolist()
    if record.label != NO_TUMOR and not any(tumour):
        return f"empty mask volume on a {record.label} volume", []
    return None, tumour


def _slice_label(tumour: Sequence[bool], record: ImageRecord) -> tuple[str | None, ImageRecord]:
    """Whether a slice of a usable label volume can annotate ``record`` (None, or why not),
    and the record labelled by it: on a tumour volume a slice without tumour voxels is a
    ``no_tumor`` image (module docstring)."""
    if record.label == NO_TUMOR:
        return ("tumour voxels on a no_tumor slice" if tumour[record.slice] else None), record
    return None, record if tumour[record.slice] else replace(record, label=NO_TUMOR)


def _volume_records(
    file: Path, source: str, split: str | None, label: str
) -> tuple[list[ImageRecord], SkippedFile | None]:
    """Records of a DICOM file (one per frame) or a NIfTI volume (one per slice with head)."""
    from braincam.data.dicom import NO_IMAGE, dicom_info
    from braincam.data.nifti import choose_slices, no_slice_reason, read_volume

    try:
        if is_nifti_name(file):
            volume = read_volume(file)
            slices = choose_slices(volume, min_head=VOLUME_MIN_HEAD)
            (height, width), reason = volume.shape[1:], None
            if not slices:
                reason = no_slice_reason(VOLUME_MIN_HEAD)
        else:
            info = dicom_info(file)
            width, height = info.width, info.height
            slices = [None] if info.frames == 1 else list(range(info.frames))
            reason = NO_IMAGE if not width * height else None
    except BraincamError as exc:
        reason = str(exc).removeprefix(f"{file}: ")
    reason = reason or _too_small((width, height))
    if reason is not None:
        log.warning("skipping %s: %s", shown_path(file), reason)
        return [], SkippedFile(file, reason)
    return [ImageRecord(file, source, split, label, width, height, None, slice=k)
            for k in slices], None


def _too_small(size: tuple[int, int]) -> str | None:
    """The skip reason of an image, frame or slice of ``(width, height)`` below the minimum
    side, else None."""
    if min(size) < MIN_SIDE:
        return f"image too small ({size[0]}x{size[1]} px, minimum {MIN_SIDE})"
    return None


def _image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image, DICOM and NIfTI files under ``folder`` (:func:`files_under`), sorted: by name,
    and a file with any other name by its DICOM marker (DICOM files often have no suffix); and
    the other files. A link to nothing with such a name is kept: reading it gives its skip
    entry. Files under a ``masks`` (or ``__MACOSX``) subfolder are neither: masks are read from
    ``ROOT/masks`` alone, so such a folder is named in a warning."""
    images, other = [], []
    ignored: set[Path] = set()
    for p in files_under(folder):
        parts = p.relative_to(folder).parts[:-1]
        hit = next((k for k, part in enumerate(parts) if part.lower() in IGNORED_DIRS), None)
        if hit is not None:
            ignored.add(folder.joinpath(*parts[:hit + 1]))
            continue
        wanted = (p.suffix.lower() in IMAGE_SUFFIXES | DICOM_SUFFIXES or is_nifti_name(p)
                  or (p.is_file() and _has_dicom_marker(p)))
        (images if wanted else other).append(p)
    for skipped_dir in sorted(ignored):
        if skipped_dir.name.lower() == MASKS_DIR:
            log.warning("%s: not read (neither images nor masks): tumour masks live in "
                        "ROOT/masks/ under the image's relative path", skipped_dir)
    return sorted(images), other


def _warn_misplaced_masks(root: Path, split_dirs: Sequence[Path]) -> None:
    """Name each folder that looks like a masks folder but is not ``ROOT/masks`` (``Masks``,
    ``ROOT/Training/masks``): its masks would otherwise be left out without a word."""
    for parent in (root, *split_dirs):
        for folder in parent.iterdir():
            if (folder.name.lower() == MASKS_DIR and folder != root / MASKS_DIR
                    and folder.is_dir()):
                log.warning("%s: not read as masks: tumour masks live in %s under the image's "
                            "relative path", folder, root / MASKS_DIR)


def _warn_left_out(folder: Path, other: list[Path]) -> None:
    """Say which files of a class folder are not read (``other``: other image types, notes),
    so an unexpected file type is not lost without a word."""
    if other:
        log.warning("%s: %d file(s) left out, not an image (%s), DICOM or NIfTI file: %s",
                    folder, len(other), " ".join(sorted(IMAGE_SUFFIXES)),
                    ", ".join(p.name for p in other[:3]) + (", ..." if len(other) > 3 else ""))


def data_listing(root: Path | str) -> list[tuple[str, int, int]]:
    """``(relative path, size, mtime_ns)`` of every file the dataset loader walks under
    ``root`` (:func:`files_under`: hidden ones left out, linked folders followed), sorted; a
    link to nothing has size and time -1."""
    root = Path(root)
    out = []
    for path in files_under(root):
        try:
            stat = path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size = mtime = -1
        out.append((path.relative_to(root).as_posix(), size, mtime))
    return sorted(out)


def listing_digest(roots: Sequence[Path | str]) -> str:
    """SHA-256 of the :func:`data_listing` of each root (absolute path -> listing): another
    digest means a file was added, removed, edited or touched."""
    return json_digest({str(Path(r).resolve()): data_listing(r) for r in roots})


def files_under(folder: Path) -> Iterable[Path]:
    """The files under ``folder``, hidden files and folders (a leading dot) left out, through
    links to folders too (each real folder once, so a link to a folder above ends there);
    links to nothing are listed as files."""
    seen: set[str] = set()
    for current, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from (Path(current) / name for name in sorted(files) if not name.startswith("."))


def _has_dicom_marker(path: Path) -> bool:
    from braincam.data.dicom import has_dicom_marker

    try:
        return has_dicom_marker(path)
    except OSError:
        return False


def _header_size(path: Path) -> tuple[tuple[int, int], str | None]:
    """``((width, height), None)`` from the header, or ``((0, 0), reason)`` for a bad file."""
    if path.is_symlink() and not path.exists():
        return (0, 0), f"a link to {os.readlink(path)}, which does not exist"
    try:
        if path.stat().st_size == 0:
            return (0, 0), "empty file (0 bytes)"
        with Image.open(path) as im:
            size, fmt = shown_size(im), im.format
            if getattr(im, "n_frames", 1) > 1:  # a multi-page TIFF: read_grey reads page 1
                log.warning("%s: %d pages; only the first is read", path, im.n_frames)
            marker = _END_MARKERS.get(fmt or "")
            if marker is None or not _has_tail(path, marker):
                im.load()  # no end marker where expected: decode fully to decide
    except UnidentifiedImageError:
        return (0, 0), "not a readable image file"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return (0, 0), f"cannot decode image ({' '.join(str(exc).split())})"
    reason = _too_small(size)
    return ((0, 0), reason) if reason else (size, None)


def _has_tail(path: Path, marker: bytes) -> bool:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - _TAIL_BYTES))
        return marker in fh.read()


def _attach_boxes(
    root: Path,
    records: list[ImageRecord],
    class_dirs: list[tuple[str | None, Path, str]],
) -> list[ImageRecord]:
    """Attach ``ROOT/boxes.csv`` rows (``file,label,cx,cy,w,h``; ``file`` relative to the root,
    or to its class folder with ``label`` naming the class) to the matching records."""
    by_root = {_nfc(r.path.relative_to(root).as_posix()): i for i, r in enumerate(records)}
    by_class: dict[tuple[str, str], list[int]] = defaultdict(list)
    folder_of = {folder: label for _, folder, label in class_dirs}
    for i, r in enumerate(records):
        for folder, label in folder_of.items():
            if r.path.is_relative_to(folder):
                by_class[(label, _nfc(r.path.relative_to(folder).as_posix()))].append(i)
    boxes: dict[int, Box] = {}
    problems: list[str] = []
    for line, row in enumerate(_read_boxes_csv(root / BOXES_FILE), start=2):
        file = _nfc((row.get("file") or "").strip().replace("\\", "/").removeprefix("./"))
        index = by_root.get(file)
        if index is None:
            matches = by_class.get((normalise_label(row.get("label") or "") or "", file), [])
            index = matches[0] if len(matches) == 1 else None
        if index is None:
            problems.append(f"line {line}: no loaded image matches {file!r}")
            continue
        box = _parse_box(row)
        if box is None:
            problems.append(f"line {line}: cx,cy,w,h must be fractions in [0, 1], w and h > 0")
            continue
        if records[index].label == NO_TUMOR:  # a tumour box there would teach a wrong target
            problems.append(f"line {line}: a tumour box on the no_tumor image {file!r}")
            continue
        boxes.setdefault(index, box)
    if problems:
        log.warning(
            "%s: %d rows ignored (first: %s)", root / BOXES_FILE, len(problems), problems[0]
        )
    return [replace(r, box=boxes.get(i)) for i, r in enumerate(records)]


def _nfc(name: str) -> str:
    """``name`` in Unicode's composed form: macOS and some zips store file names decomposed
    ("e" + combining accent), while a spreadsheet writes them composed; both look the same."""
    return unicodedata.normalize("NFC", name)


def _read_boxes_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = {"file", "label", "cx", "cy", "w", "h"} - set(reader.fieldnames or [])
            if missing:
                raise BraincamError(
                    f"{path}: missing columns {', '.join(sorted(missing))}; "
                    "expected file,label,cx,cy,w,h (YOLO-normalised)"
                )
            return list(reader)
    except UnicodeDecodeError:
        raise BraincamError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except (OSError, csv.Error) as exc:
        raise BraincamError(f"{path}: cannot read ({' '.join(str(exc).split())})") from None


def _parse_box(row: dict[str, str]) -> Box | None:
    try:
        cx, cy, w, h = (float(row[k]) for k in ("cx", "cy", "w", "h"))
    except (TypeError, ValueError):
        return None
    values = (cx, cy, w, h)
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values) or w <= 0 or h <= 0:
        return None
    return Box(cx, cy, w, h)
