"""A trained segmenter scored on dataset folders with tumour masks
(``braincam segment SEG --evaluate DATA... --out DIR``).

The images are prepared as the segmenter's own run prepared its training images (its meta's
``preprocess``) and predicted under its mask rule; the figures are those of a segment run's
``metrics.json`` (:func:`braincam.evaluate.segmentation.segmentation_metrics`): Dice and IoU
against the expert masks, detection rate, false-positive rate on tumour-free images, and
``weak`` for tumour images without a mask (share with any predicted pixel; as in training, a
copy of an outlined image given in the same call is left out of it, ``n_copies_left_out``
counts them). ``SEG`` may name
several runs (``SEG1,SEG2``): the mean of what they report, each under its own rule, is one
segmenter (:func:`braincam.models.segment.load_segmenter`).

An image that a segmenter trained or validated on, or a copy of one (same content or pHash
group, :func:`braincam.data.hashing.duplicates_of`), says little about new scans: ``unseen``
repeats every figure without them, and ``n_seen`` counts them.

Per image (``per_image.csv``): its Dice and IoU (tumour-free images: 1 when nothing is
predicted, else 0; none for tumour images without a mask), the shares of the model input that
the expert mask and the prediction cover, and whether it is seen. Overlays: for each label,
:data:`~braincam.evaluate.segmentation.OVERLAYS_PER_GROUP` unseen images (any, where a label
has no unseen one) spread from the worst Dice to the best; tumour images without a mask form
their own group per label, from the smallest predicted area to the largest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braincam.data.hashing import duplicates_of
from braincam.data.preprocess import preprocess_config
from braincam.data.records import SkippedFile, load_dataset
from braincam.data.segmentation import (
    SegmentData,
    copies_of_outlined,
    load_segmentation_data,
)
from braincam.evaluate.run import learnt_from
from braincam.evaluate.segmentation import (
    OVERLAYS_PER_GROUP,
    overlay_png,
    overlay_rows,
    per_image_table,
    segmentation_metrics,
    weak_metrics,
)
from braincam.models.segment import THRESHOLD, Segmenter, load_segmenter, segmenter_sources
from braincam.runs import RunDir

CHUNK = 256  # images predicted at a time: probabilities of thousands would not fit in memory


@dataclass
class SegmenterScore:
    metrics: dict[str, Any]  # metrics.json (fields in docs/segment.md)
    skipped: list[SkippedFile]
    per_image: pd.DataFrame  # per_image.csv (columns in docs/segment.md)
    overlays: dict[str, bytes]  # overlays/<name>: PNG bytes


def evaluate_segmenter(source: str | Path | Sequence[str | Path], roots: Sequence[Path | str],
                       device: str = "auto", progress: bool = False) -> SegmenterScore:
    """Score the segmenter of ``source`` (one segment run or several) on ``roots``."""
    segmenter = load_segmenter(source, device)
    members = segmenter_sources(source)
    dataset = load_dataset([Path(r) for r in roots])
    data = load_segmentation_data(dataset.records, preprocess_config(segmenter.meta), progress,
                                  weak_labels=True)
    learnt = [p for m in members for p in learnt_from(RunDir(m), meta={})]
    seen = duplicates_of([r.image for r in data.records], learnt)
    copies = copies_of_outlined(data.records, data.weak.numpy())  # as training leaves them
    pred = predicted(segmenter, data.images.numpy())
    metrics = scores(data, pred, ~copies, segmenter.threshold)
    metrics["weak"]["n_copies_left_out"] = int(copies.sum())
    metrics |= {
        "segmenters": [str(m) for m in members],
        "data": [str(Path(r).resolve()) for r in roots],
        "flip_average": segmenter.flip_average,
        "member_rules": segmenter.meta.get("member_rules"),
        "n_seen": int(seen.sum()),
        "unseen": scores(data, pred, ~seen & ~copies, segmenter.threshold),
    }
    table = per_image(data, pred, seen)
    return SegmenterScore(metrics, dataset.skipped + data.skipped, table,
                          overlays(data, pred, table))


def predicted(segmenter: Segmenter, images: np.ndarray) -> np.ndarray:
    """Bool tumour masks of grey uint8 ``(N, S, S)`` under the segmenter's rule."""
    out = np.zeros(images.shape, bool)
    for start in range(0, len(images), CHUNK):
        out[start:start + CHUNK] = segmenter.predict(images[start:start + CHUNK]) >= THRESHOLD
    return out


def scores(data: SegmentData, pred: np.ndarray, rows: np.ndarray, threshold: float
           ) -> dict[str, Any]:
    """The figures of the images where ``rows``: outlined and tumour-free images against
    their masks, weak images by whether anything is found."""
    weak = data.weak.numpy()
    outlined, unlined = np.flatnonzero(rows & ~weak), np.flatnonzero(rows & weak)
    labels = np.array([r.label for r in data.records])
    sources = np.array([r.source for r in data.records])
    return segmentation_metrics(pred[outlined], data.masks.numpy()[outlined],
                                labels[outlined], sources[outlined], threshold) | {
        "weak": weak_metrics(pred[unlined].any(axis=(1, 2)), labels[unlined]),
    }


def per_image(data: SegmentData, pred: np.ndarray, seen: np.ndarray) -> pd.DataFrame:
    """``per_image.csv``: :func:`~braincam.evaluate.segmentation.per_image_table` with
    ``seen`` after ``mask``."""
    table = per_image_table(data.records, pred, data.masks.numpy(), ~data.weak.numpy())
    table.insert(table.columns.get_loc("mask") + 1, "seen", seen)
    return table


def overlays(data: SegmentData, pred: np.ndarray, table: pd.DataFrame) -> dict[str, bytes]:
    """``overlays/<group>_<source>_<stem>_<score>.png`` (module docstring); ``<score>`` is
    ``dice<D>``, or ``found``/``missed`` for a tumour image without a mask."""
    weak = ~table["mask"].to_numpy()
    groups = np.where(weak, table["label"] + "_nomask", table["label"])
    keys = np.where(weak, table["predicted_share"], table["dice"].astype(float))
    pictures: dict[str, bytes] = {}
    for i in overlay_rows(groups, keys, OVERLAYS_PER_GROUP, ~table["seen"].to_numpy()):
        record = data.records[i]
        score = ("found" if pred[i].any() else "missed") if weak[i] else \
            f"dice{table['dice'].iloc[i]:.2f}"
        name = f"{groups[i]}_{record.source}_{record.stem}_{score}.png"
        if name in pictures:  # the same file name in two folders of one source
            name = name.replace(".png", f"_{i}.png")
        pictures[name] = overlay_png(data.images[i].numpy(), data.masks[i].numpy(), pred[i])
    return pictures
