"""Segmentation metrics, overlays, and masks for new images from a trained segmenter.

Per image, with ``P`` the predicted and ``T`` the true tumour pixels:
``Dice = 2 |P & T| / (|P| + |T|)`` and ``IoU = |P & T| / |P | T|`` (both 1 when ``P`` and ``T``
are empty). :func:`segmentation_metrics` averages them over the images that have a tumour
(``T`` non-empty); on tumour-free images only false positives can happen, so they get their own
figure. ``detection_rate`` = share of tumour images with Dice > 0.5; ``false_positive_rate`` =
share of tumour-free images with any predicted tumour pixel. ``all_image_dice`` = mean Dice
over every image, so a tumour-free image scores 1 when nothing is predicted and 0 otherwise:
one figure that rewards outlines and punishes false alarms in proportion to their images.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, count
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from braincam.data.imageio import ImageReadError
from braincam.data.inputs import InputSlice, read_slice
from braincam.data.nifti import file_stem, is_nifti_file, write_mask_volume
from braincam.data.preprocess import Preprocessed, preprocess, preprocess_config, uncrop
from braincam.data.records import ImageRecord, SkippedFile
from braincam.errors import BraincamError
from braincam.models.segment import THRESHOLD, Segmenter
from braincam.runs import atomic_write_bytes, atomic_write_csv

DETECTED_DICE = 0.5
OVERLAYS_PER_GROUP = 4  # overlay PNGs per label (segment runs' held-out images, --evaluate)
TRUTH_BGR = (0, 200, 0)  # expert outline: green
PRED_BGR = (0, 0, 255)  # predicted outline: red
MASKS_CSV = "masks.csv"  # braincam segment SEG --predict: one row per image, slice and volume
MASK_COLUMNS = ("path", "slice", "kind", "mask", "tumour_pixels", "tumour_ml")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    union = int((pred | truth).sum())
    return 1.0 if union == 0 else int((pred & truth).sum()) / union


def segmentation_metrics(
    pred: np.ndarray, truth: np.ndarray, labels: Sequence[str], sources: Sequence[str],
    threshold: float = THRESHOLD,
) -> dict[str, Any]:
    """``metrics.json`` figures of predictions ``pred`` against ``truth`` (bool ``(N, S, S)``;
    formulas in the module docstring). ``labels``/``sources``: per image, for ``per_class_dice``
    (tumour images by label) and ``false_positive_rate_by_source`` (tumour-free images);
    ``threshold``: the one ``pred`` was made with, recorded."""
    has_tumour = truth.any(axis=(1, 2))
    dices = np.array([dice(p, t) for p, t in zip(pred, truth, strict=True)])
    ious = np.array([iou(p, t) for p, t in zip(pred, truth, strict=True)])
    any_pred = pred.any(axis=(1, 2))
    labels, sources = np.asarray(labels), np.asarray(sources)

    def mean(values: np.ndarray) -> float | None:
        return float(values.mean()) if values.size else None

    return {
        "n_tumour_images": int(has_tumour.sum()),
        "n_tumour_free_images": int((~has_tumour).sum()),
        "mean_dice": mean(dices[has_tumour]),
        "mean_iou": mean(ious[has_tumour]),
        "all_image_dice": mean(dices),
        "per_class_dice": {
            str(c): mean(dices[has_tumour & (labels == c)])
            for c in sorted(set(labels[has_tumour].tolist()))
        },
        "detection_rate": mean((dices > DETECTED_DICE)[has_tumour].astype(float)),
        "false_positive_rate": mean(any_pred[~has_tumour].astype(float)),
        "false_positive_rate_by_source": {
            str(s): mean(any_pred[~has_tumour & (sources == s)].astype(float))
            for s in sorted(set(sources[~has_tumour].tolist()))
        },
        "threshold": threshold,
    }


def weak_metrics(found: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """``metrics.json`` ``weak`` of tumour images without a mask (nothing to outline against):
    ``found`` bool per image, any predicted tumour pixel; its share overall and by label."""
    found, labels = np.asarray(found, bool), np.asarray(labels)
    return {"n_images": len(found),
            "detection_rate": float(found.mean()) if len(found) else None,
            "detection_rate_by_class": {str(c): float(found[labels == c].mean())
                                        for c in sorted(set(labels.tolist()))}}


def per_image_table(records: Sequence[ImageRecord], pred: np.ndarray, truth: np.ndarray,
                    masked: np.ndarray) -> pd.DataFrame:
    """``per_image.csv``: per image its ``path``, ``source``, ``label``, ``mask`` (``masked``:
    scored against a mask; False for a tumour image without one), ``dice`` and ``iou`` (to 4
    decimals; a tumour-free image: 1 when nothing is predicted, else 0; empty without a mask),
    and the shares of the image that the mask and the prediction cover (``tumour_share``,
    empty without a mask, and ``predicted_share``). ``pred``/``truth``: bool ``(N, S, S)``."""
    masked = np.asarray(masked, bool)
    pixels = float(np.prod(truth.shape[1:])) if len(truth) else 1.0

    def share(masks: np.ndarray) -> np.ndarray:
        return (masks.sum(axis=(1, 2)) / pixels).round(4)

    def score(metric: Any) -> list[float | None]:
        return [round(metric(p, t), 4) if m else None
                for p, t, m in zip(pred, truth, masked, strict=True)]

    return pd.DataFrame({
        "path": [r.key for r in records],
        "source": [r.source for r in records],
        "label": [r.label for r in records],
        "mask": masked,
        "dice": score(dice),
        "iou": score(iou),
        "tumour_share": np.where(masked, share(truth), np.nan),
        "predicted_share": share(pred),
    })


def counterfactual_metrics(
    removed: np.ndarray, control: np.ndarray, original: np.ndarray, truth: np.ndarray
) -> dict[str, Any]:
    """How predictions follow the tumour's removal (``metrics.json`` ``counterfactual``):
    bool ``(M, S, S)`` predictions on the removed copies (tumour inpainted), on the control
    copies (the tumour's shape inpainted in tumour-free brain,
    :func:`braincam.data.regions.make_pairs`) and on the original images, and the true masks.
    ``removed_any_rate``: share of removed copies with any predicted tumour pixel, against
    ``original_any_rate`` on the same images; ``control_dice`` against ``original_dice``: mean
    Dice with the true mask (inpainting elsewhere should not move the tumour's outline)."""
    def any_rate(pred: np.ndarray) -> float | None:
        return float(pred.reshape(len(pred), -1).any(axis=1).mean()) if len(pred) else None

    def mean_dice(pred: np.ndarray) -> float | None:
        return float(np.mean([dice(p, t) for p, t in zip(pred, truth, strict=True)])) \
            if len(pred) else None

    return {
        "n_pairs": len(truth),
        "removed_any_rate": any_rate(removed),
        "original_any_rate": any_rate(original),
        "control_dice": mean_dice(control),
        "original_dice": mean_dice(original),
    }


def outline(image: np.ndarray, masks: Sequence[tuple[np.ndarray, tuple[int, int, int]]],
            scale: int = 1) -> np.ndarray:
    """Grey uint8 image as BGR with each mask's contour drawn in its colour (1 px at
    ``scale``; the image is first enlarged ``scale`` times, nearest neighbour)."""
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    out = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
    for mask, colour in masks:
        m = cv2.resize(mask.astype(np.uint8), None, fx=scale, fy=scale,
                       interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, 1)
    return out


def overlay_rows(groups: Sequence[str], keys: Sequence[float], per_group: int,
                 preferred: np.ndarray | None = None) -> list[int]:
    """Rows to draw: for each group, ``per_group`` of its rows spread evenly over them in
    ``keys`` order (ascending, so Dice puts the worst first: the first and the last row, and
    equal steps between), among the ``preferred`` rows where the group has some."""
    groups, keys = np.asarray(groups), np.asarray(keys, float)
    chosen: list[int] = []
    for group in sorted(set(groups.tolist())):
        rows = np.flatnonzero(groups == group)
        if preferred is not None and preferred[rows].any():
            rows = rows[preferred[rows]]
        rows = rows[np.argsort(keys[rows], kind="stable")]
        picks = np.unique(np.linspace(0, len(rows) - 1, min(per_group, len(rows))).round())
        chosen += rows[picks.astype(int)].tolist()
    return chosen


def overlay_png(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> bytes:
    """PNG of a grey model-input image, 2x enlarged, with the expert outline in green and the
    predicted one in red."""
    return png_bytes(outline(image, [(truth, TRUTH_BGR), (pred, PRED_BGR)], scale=2))


def original_mask(prob: np.ndarray, prep: Preprocessed) -> np.ndarray:
    """The tumour in ORIGINAL image pixels (bool ``H x W``): ``P(tumour)`` over the model input
    (``S x S``) mapped back through the crop by :func:`braincam.data.preprocess.uncrop`, then
    ``>= THRESHOLD``."""
    return uncrop(prob, prep) >= THRESHOLD


def tumour_fraction(prob: np.ndarray) -> float:
    """Share of the model input's pixels with ``P(tumour) >= THRESHOLD``, to 4 decimals."""
    return round(float((np.asarray(prob) >= THRESHOLD).mean()), 4)


def write_mask(path: Path, mask: np.ndarray) -> None:
    """A bool mask as a 0/255 grey PNG, atomically."""
    atomic_write_bytes(Path(path), png_bytes(np.asarray(mask, bool).astype(np.uint8) * 255))


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a grey or BGR uint8 image."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise BraincamError("could not encode a PNG")
    return buf.tobytes()


def predict_files(
    segmenter: Segmenter, items: Sequence[InputSlice], out_dir: Path
) -> tuple[list[dict[str, Any]], list[SkippedFile]]:
    """Masks of ``items`` (:func:`braincam.data.inputs.expand_inputs`: images, DICOM files and
    series, NIfTI volumes) in ``out_dir``: per image or slice ``<name>_mask.png`` (0/255, the
    original size: probabilities mapped back through the crop, then thresholded, by
    :func:`original_mask`) and ``<name>_outline.png`` (the original with the predicted outline
    in red); per NIfTI volume ``<stem>_mask.nii.gz`` on the input's voxel grid
    (:func:`braincam.data.nifti.write_mask_volume`; slices not predicted are 0). ``<name>`` is
    the input's stem (a series folder's name; :func:`_unique_stem` when that is taken),
    ``<stem>_s<k>`` for slice ``k``. Unreadable slices are skipped with a reason. Returns the
    rows written to :data:`MASKS_CSV` and the skipped files."""
    config = preprocess_config(segmenter.meta)
    rows: list[dict[str, Any]] = []
    skipped: list[SkippedFile] = []
    stems: dict[str, str] = {}
    written: set[str] = set()
    nifti: dict[str, bool] = {}
    volumes: dict[str, tuple[Path, dict[int, np.ndarray]]] = {}
    for item in items:
        if item.name not in stems:
            stems[item.name] = _unique_stem(item.name, written)
            written.add(stems[item.name])
            nifti[item.name] = (item.file is not None and item.slice is not None
                                and is_nifti_file(item.file))
        name = stems[item.name] + ("" if item.slice is None else f"_s{item.slice}")
        written.add(name)
        try:
            grey = read_slice(item)
        except ImageReadError as exc:
            where = item.name if item.slice is None else f"{item.name}#{item.slice}"
            skipped.append(SkippedFile(Path(where), str(exc).split(": ", 1)[-1]))
            continue
        prep = preprocess(grey, config)
        mask = original_mask(segmenter.predict(prep.image[None])[0], prep)
        original = np.clip(np.rint(grey * 255), 0, 255).astype(np.uint8)
        write_mask(Path(out_dir) / f"{name}_mask.png", mask)
        atomic_write_bytes(Path(out_dir) / f"{name}_outline.png",
                           png_bytes(outline(original, [(mask, PRED_BGR)])))
        rows.append({"path": item.name, "slice": item.slice,
                     "kind": "image" if item.slice is None else "slice",
                     "mask": f"{name}_mask.png", "tumour_pixels": int(mask.sum()),
                     "tumour_ml": None})
        if nifti[item.name]:
            volumes.setdefault(item.name, (item.file, {}))[1][item.slice] = mask
    for source, (file, masks) in volumes.items():  # each volume's row after its slices'
        target = f"{stems[source]}_mask.nii.gz"
        voxels, ml = write_mask_volume(file, masks, Path(out_dir) / target)
        last = max(i for i, row in enumerate(rows) if row["path"] == source)
        rows.insert(last + 1, {"path": source, "slice": None, "kind": "volume", "mask": target,
                               "tumour_pixels": voxels, "tumour_ml": round(ml, 3)})
    table = pd.DataFrame(rows, columns=list(MASK_COLUMNS)).astype({"slice": "Int64"})
    atomic_write_csv(Path(out_dir) / MASKS_CSV, table)
    return rows, skipped


def _unique_stem(name: str, written: set[str]) -> str:
    """The file name of input ``name`` without its image or NIfTI suffix; when a file of it
    could meet one of the names given out so far (``written``: stems and ``<stem>_s<k>`` slice
    names), ``<parent>_<stem>``, then ``<parent>_<stem>_2``, ``_3``, ... A stem ``c`` meets
    ``written`` if it is there or a slice name ``c_s<k>`` is. One of several series in a
    folder (``<folder>#series<N>``, :mod:`braincam.data.inputs`) is ``<folder>_series<N>``, as
    predict's overlays name it."""
    stem = file_stem(name).replace("#", "_")
    parent = Path(name).parent.name or Path(name).resolve().parent.name  # "scan.png": cwd's
    longer = f"{parent}_{stem}"
    candidates = chain([stem, longer], (f"{longer}_{n}" for n in count(2)))
    return next(c for c in candidates
                if c not in written and not any(_is_slice_of(w, c) for w in written))


def _is_slice_of(name: str, stem: str) -> bool:
    """Whether ``name`` is ``<stem>_s<k>``."""
    return name.startswith(f"{stem}_s") and name[len(stem) + 2:].isdigit()
