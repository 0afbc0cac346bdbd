"""Patient-proxy groups for numbered slice collections (Figshare), merged with duplicate groups.

The Figshare T1-CE release has no patient IDs, but its numbering keeps each patient's slices
together: file ``N`` and ``N + 1`` are usually adjacent slices of one patient. Rule: within one
folder, records whose file name is a number (``<class>/<N>.<ext>``) are sorted by ``N``;
``N`` and ``N + 1`` (both present, same label) join one group when the Pearson correlation of
their 32x32 thumbnails (grey image resized with ``INTER_AREA``) is at least
``NEIGHBOUR_CORRELATION = 0.55``. Groups are the resulting runs of consecutive numbers. A gap
in the numbering, a change of label or a drop in similarity starts a new patient.

Threshold: random pairs correlate at a median of 0.45 (datasets README); on the 3064 Figshare
slices the 3052 same-label neighbour pairs have median 0.93 with a long low tail and no clear
valley. 0.55 gives 236 groups, the count closest to the published 233 patients among 0.50-0.80
in steps of 0.05 (table in docs/results.md). Merging two patients costs a little split
freedom; splitting one patient leaks, so ties go to the lower threshold.

DICOM files: the records of one study (Study Instance UID, else Series Instance UID, else the
file's folder) share a group, so a scan's slices, which are files of their own, never straddle
a split. NIfTI volumes annotated by the same label volume (by content: a patient's sequences,
``t1`` and ``flair``, each linked to the patient's one tumour segmentation) share a group too.

Other records outside numbered folders get a group of their own (``<source>/<file path>``);
:func:`merged_groups` joins these ids with duplicate groups (connected components, i.e.
union-find), so a split keeps every patient group and every duplicate group on one side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from braincam.data.hashing import content_hash
from braincam.data.imageio import ImageReadError, read_grey
from braincam.data.nifti import is_nifti_name
from braincam.data.records import IMAGE_SUFFIXES, ImageRecord

NEIGHBOUR_CORRELATION = 0.55
THUMBNAIL = 32


def numbered(record: ImageRecord) -> int | None:
    """The record's slice number when its file name is a plain number (``12.jpg`` -> 12)."""
    stem = record.path.stem
    return int(stem) if stem.isdigit() else None


def thumbnail(record: ImageRecord) -> np.ndarray:
    """32x32 float32 thumbnail of the grey image (``INTER_AREA``; JPEGs decoded at reduced
    scale, which gives the same thumbnail up to rounding)."""
    grey = read_grey(record.path, index=record.slice, reduce_to=2 * THUMBNAIL)
    return cv2.resize(grey, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two thumbnails (0 when either is constant)."""
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b) / denom if denom > 0 else 0.0


def neighbour_correlations(
    records: Sequence[ImageRecord], workers: int | None = None
) -> dict[tuple[int, int], float]:
    """Thumbnail correlation of every neighbour pair ``(i, j)`` (record indices): same source,
    numbers ``N`` and ``N + 1``, same label. Unreadable images have no pairs."""
    by_key = {(*_folder(r), numbered(r)): i for i, r in enumerate(records)
              if numbered(r) is not None}
    pairs = [
        (i, by_key[(source, folder, n + 1)])
        for (source, folder, n), i in by_key.items()
        if (source, folder, n + 1) in by_key
        and records[by_key[(source, folder, n + 1)]].label == records[i].label
    ]
    needed = sorted({k for pair in pairs for k in pair})

    def thumb(k: int) -> np.ndarray | None:
        try:
            return thumbnail(records[k])
        except ImageReadError:  # an unreadable slice just breaks its chain
            return None

    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        thumbs = dict(zip(needed, pool.map(thumb, needed), strict=True))
    return {
        (i, j): correlation(thumbs[i], thumbs[j])
        for i, j in pairs
        if thumbs[i] is not None and thumbs[j] is not None
    }


def patient_groups(
    records: Sequence[ImageRecord], threshold: float = NEIGHBOUR_CORRELATION
) -> list[str]:
    """One patient-proxy group id per record (rule in the module docstring): ``<source>/p<N>``
    with ``N`` the first slice number of the run (``<source>/<folder>/p<N>`` where several
    folders of the source hold an ``N``), or ``<source>/<file path>`` for a record outside
    numbered folders."""
    linked = {i: j for (i, j), c in neighbour_correlations(records).items() if c >= threshold}
    label_hashes: dict[Path, str] = {}
    known = [study_group(r) or label_volume_group(r, label_hashes) for r in records]
    ids = [k or f"{r.source}/{r.path}" for k, r in zip(known, records, strict=True)]
    order = sorted(  # numbered files of a DICOM study or a label volume keep its group
        (i for i, r in enumerate(records) if numbered(r) is not None and known[i] is None),
        key=lambda i: (*_folder(records[i]), numbered(records[i])),
    )
    folders: dict[tuple[str, int], set[str]] = {}  # (source, N) -> the folders holding an N
    for i in order:
        folders.setdefault((records[i].source, numbered(records[i])), set()).add(
            _folder(records[i])[1])
    heads = set(order) - set(linked.values())
    for i in order:
        if i in heads:
            source, folder = _folder(records[i])
            n = numbered(records[i])
            group = (f"{source}/p{n}" if len(folders[(source, n)]) == 1
                     else f"{source}/{folder}/p{n}")
            k = i
            ids[k] = group
            while k in linked:
                k = linked[k]
                ids[k] = group
    return ids


def _folder(record: ImageRecord) -> tuple[str, str]:
    """``(source, folder)`` of a record: numbers chain only within one folder, since
    ``Training/tumor/3.png`` and ``Testing/no_tumor/3.png`` are unrelated images."""
    return record.source, str(record.path.parent)


def study_group(record: ImageRecord) -> str | None:
    """``<source>/study <UID>`` for a DICOM record (series UID, else its folder, without a
    study UID; module docstring), None for other records."""
    from braincam.data.dicom import DicomReadError, dicom_info

    if record.path.suffix.lower() in IMAGE_SUFFIXES or is_nifti_name(record.path):
        return None
    try:
        info = dicom_info(record.path)
    except DicomReadError:  # unreadable: a group of its own
        return None
    uid = info.study or info.series
    return f"{record.source}/study {uid}" if uid else f"{record.source}/folder {record.path.parent}"


def label_volume_group(record: ImageRecord, hashes: dict[Path, str]) -> str | None:
    """``<source>/labels <content hash>`` for a slice whose mask is a NIfTI label volume (module
    docstring), None for other records; ``hashes`` memoises the hash of each mask file."""
    if record.slice is None or record.mask is None or not is_nifti_name(record.mask):
        return None
    if record.mask not in hashes:
        hashes[record.mask] = content_hash(record.mask)
    return f"{record.source}/labels {hashes[record.mask]}"


def merged_groups(duplicate: np.ndarray, patient: Sequence[str]) -> np.ndarray:
    """Group id per record (int64, 0..G-1 in order of first appearance) joining records that
    share a duplicate group or a patient group (connected components of both relations)."""
    duplicate = np.asarray(duplicate, dtype=np.int64)
    _, patient_idx = np.unique(np.asarray(patient, dtype=object).astype(str), return_inverse=True)
    n = len(duplicate)
    # bipartite graph: record nodes 0..n-1, duplicate-group nodes, then patient-group nodes
    dup_node = n + duplicate
    pat_node = n + duplicate.max(initial=-1) + 1 + patient_idx
    rows = np.concatenate([np.arange(n), np.arange(n)])
    cols = np.concatenate([dup_node, pat_node])
    size = int(max(cols.max(initial=0) + 1, n))
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    labels = labels[:n]
    _, first_index, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first_index))
    return rank[inverse].astype(np.int64)
