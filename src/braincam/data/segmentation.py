"""Images with their tumour masks, preprocessed: what the segmenter trains and is scored on.

A record's tumour mask is its expert mask in model-input coordinates
(:func:`braincam.data.preprocess.tumour_mask`); a no-tumour image's is empty. A tumour image
without a mask has no outline to learn or score: it is left out, or kept as a *weak* image
(``weak_labels``) that only its label describes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from braincam.data.hashing import duplicates_of
from braincam.data.imageio import ImageReadError
from braincam.data.preprocess import PreprocessCache, PreprocessConfig, tumour_mask
from braincam.data.records import ImageRecord, SkippedFile, record_key, without_skipped
from braincam.errors import BraincamError
from braincam.labels import NO_TUMOR

log = logging.getLogger(__name__)


@dataclass
class SegmentData:
    records: list[ImageRecord]
    images: torch.Tensor  # uint8 (N, S, S)
    masks: torch.Tensor  # bool (N, S, S), the tumour
    heads: torch.Tensor  # bool (N, S, S), the head mask of preprocessing
    skipped: list[SkippedFile]
    weak: torch.Tensor  # bool (N,), a tumour image without a mask (its mask left empty)


def load_segmentation_data(
    records: Sequence[ImageRecord], config: PreprocessConfig, progress: bool = False,
    weak_labels: bool = False,
) -> SegmentData:
    """Preprocessed images and their tumour masks (empty for no-tumour images); tumour images
    without a mask are left out with one warning (``weak_labels``: kept as weak images, their
    masks empty), unreadable images and masks skipped, and so is a tumour image whose mask
    covers no pixel of the model input (it would count as tumour-free)."""
    usable = [r for r in records if weak_labels or not is_weak(r)]
    if len(usable) < len(records):
        log.warning("%d tumour images have no mask and are left out",
                    len(records) - len(usable))
    cache = PreprocessCache()
    _, _, skipped = cache.load(usable, config, progress=progress)  # decodes and hashes once
    kept = without_skipped(usable, skipped)

    def mask_of(record: ImageRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray] | SkippedFile:
        """(tumour mask, image, head mask) in model-input coordinates, or the mask's skip
        entry."""
        prep = cache.get(record, config)
        if is_weak(record):
            return np.zeros_like(prep.mask), prep.image, prep.mask
        try:
            mask = tumour_mask(record, prep)
        except ImageReadError as exc:
            return SkippedFile(record.mask, str(exc).removeprefix(f"{record.mask}: "))
        if mask is not None and record.label != NO_TUMOR and not mask.any():
            where = Path(record_key(record.mask, record.slice))  # a label volume's slice
            return SkippedFile(where, f"the {record.label} mask covers no pixel of the "
                               f"{config.size} px model input (too small, or outside the head)")
        return (np.zeros_like(prep.mask) if mask is None else mask), prep.image, prep.mask

    with ThreadPoolExecutor(cache.workers) as pool:
        results = list(pool.map(mask_of, kept))
    bad = [r for r in results if isinstance(r, SkippedFile)]
    for s in bad:
        log.warning("skipping %s: %s", s.path, s.reason)
    pairs = [(r, res) for r, res in zip(kept, results, strict=True)
             if not isinstance(res, SkippedFile)]
    if not pairs:
        raise BraincamError("no usable image: none has a readable mask or is tumour-free")
    records_out = [r for r, _ in pairs]
    masks = torch.from_numpy(np.stack([res[0] for _, res in pairs]))
    images = torch.from_numpy(np.stack([res[1] for _, res in pairs]))
    heads = torch.from_numpy(np.stack([res[2] for _, res in pairs]))
    weak = torch.tensor([is_weak(r) for r in records_out], dtype=torch.bool)
    return SegmentData(records_out, images, masks, heads, skipped + bad, weak)


def is_weak(record: ImageRecord) -> bool:
    """A tumour image without an expert mask: trained by its label alone (``weak_labels``)."""
    return record.mask is None and record.label != NO_TUMOR


def copies_of_outlined(records: Sequence[ImageRecord], weak: np.ndarray) -> np.ndarray:
    """Bool per record: a weak image that is a copy of an image with a mask (byte-identical or
    near by pHash, :func:`braincam.data.hashing.duplicates_of`). Such a copy teaches nothing its
    outlined original does not, so it is left out (the split holds it with its original)."""
    out = np.zeros(len(records), dtype=bool)
    rows = np.flatnonzero(weak)
    outlined = [r.image for r in records if r.mask is not None]
    if len(rows) and outlined:
        out[rows] = duplicates_of([records[i].image for i in rows], outlined)
    return out
