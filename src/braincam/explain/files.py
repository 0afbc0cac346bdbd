"""Explain image files into a folder: ``explanations.npz``, ``skipped.csv`` and one overlay PNG
per image (``overlays/NNNN_<name>.png``, on the original image, see
:func:`braincam.explain.render.overlay_original`).

Images are preprocessed through the shared cache in a thread pool; unreadable files are
skipped with a warning and listed in ``skipped.csv``. Overlays are drawn and written in a
thread pool (OpenCV and the PNG encoder release the GIL) while the next batch is explained.

Under torchrun (:mod:`braincam.distributed`) each rank preprocesses and explains a
contiguous share of the images and writes their overlays (row numbers stay global); rank 0
gathers the maps and alone writes ``explanations.npz`` and ``skipped.csv``, the same files one
process writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from braincam.data.imageio import ImageReadError, read_grey
from braincam.data.nifti import file_stem
from braincam.data.preprocess import PreprocessCache, PreprocessConfig, Preprocessed
from braincam.data.records import Box, ImageRecord, SkippedFile, record_key, write_skipped_csv
from braincam.errors import BraincamError
from braincam.explain.api import ExplainOptions, explain
from braincam.explain.io import ExplanationSet, save_explanations
from braincam.explain.render import overlay_original, write_png
from braincam.labels import task_label
from braincam.runs import EXPLANATIONS_NPZ, SKIPPED_CSV

log = logging.getLogger(__name__)

OVERLAY_DIR = "overlays"
WORKERS = 4


@dataclass(frozen=True)
class ImageItem:
    """One image to explain; ``label`` (canonical) and ``box`` when the dataset has them;
    ``slice``: the frame or slice of a DICOM or NIfTI file."""

    path: Path
    label: str | None = None
    box: Box | None = None
    slice: int | None = None

    @classmethod
    def of(cls, record: ImageRecord) -> ImageItem:
        return cls(record.path, record.label, record.box, record.slice)

    @property
    def key(self) -> str:
        return record_key(self.path, self.slice)


@dataclass
class ExplainSummary:
    file: Path  # the explanations.npz
    n_explained: int
    skipped: list[SkippedFile]
    n_overlays: int
    seconds: float


def target_indices(items: Sequence[ImageItem], target: str, classes: Sequence[str],
                   task: str) -> np.ndarray | None:
    """Class indices to explain: None for ``pred`` (the prediction), the true class for
    ``label``, or a fixed class given by name."""
    if target == "pred":
        return None
    if target == "label":
        unknown = [i.path for i in items if i.label is None]
        if unknown:
            raise BraincamError(f"--target label needs labelled images; {unknown[0]} has none")
        names = [task_label(i.label, task) for i in items]
        missing = sorted(set(names) - set(classes))
        if missing:
            raise BraincamError(f"the model has no class {missing[0]!r} ({', '.join(classes)})")
        return np.array([list(classes).index(n) for n in names], dtype=np.int64)
    if target in classes:
        return np.full(len(items), list(classes).index(target), dtype=np.int64)
    raise BraincamError(f"--target must be pred, label or a class ({', '.join(classes)})")


def explain_files(
    model: nn.Module,
    items: Sequence[ImageItem],
    prep_config: PreprocessConfig,
    classes: Sequence[str],
    task: str,
    out_dir: Path,
    method: str = "gradcam",
    layer: str | None = None,
    target: str = "pred",
    batch_size: int = 16,
    overlays: bool = True,
    options: ExplainOptions | None = None,
    progress: bool = True,
    unread: Sequence[SkippedFile] = (),
) -> ExplainSummary:
    """Explain ``items`` with ``model`` (already on its device) into ``out_dir``; ``unread``:
    inputs found unreadable before, listed first in ``skipped.csv``."""
    from braincam.distributed import (
        all_gather_objects,
        current,
        gather_objects,
        main_first,
        shard_range,
    )

    start = time.perf_counter()
    ctx = current()
    cache = PreprocessCache()
    share = shard_range(len(items), ctx)
    with ThreadPoolExecutor(WORKERS) as pool:
        preps = list(pool.map(lambda i: _preprocess(cache, items[i], prep_config), share))
        # which images every rank could read: row numbers and targets are global
        local_skips = [p if isinstance(p, SkippedFile) else None for p in preps]
        flags = [f for part in all_gather_objects(local_skips, ctx) for f in part]
        skipped = [*unread, *(f for f in flags if f is not None)]
        kept_items = [item for item, f in zip(items, flags, strict=True) if f is None]
        if not kept_items:
            raise BraincamError(f"none of the {len(items)} images could be read")
        targets = target_indices(kept_items, target, classes, task)
        first = sum(f is None for f in flags[: share.start])  # this rank's first row
        kept = [(items[i], p) for i, p in zip(share, preps, strict=True)
                if isinstance(p, Preprocessed)]
        bar = _progress(len(kept), method, progress and ctx.is_main)
        parts: list[dict[str, np.ndarray]] = []
        written: list[Future[None]] = []
        for lo in range(0, len(kept), batch_size):
            chunk = kept[lo : lo + batch_size]
            images = np.stack([p.image for _, p in chunk])
            rows = slice(first + lo, first + lo + len(chunk))
            cam = explain(model, images, None if targets is None else targets[rows], method,
                          layer, options)
            result = {**cam.numpy(), "layer": cam.layer}
            parts.append(result)
            if overlays:
                written += [
                    pool.submit(_write_overlay, out_dir, rows.start + k, item, prep, cam)
                    for k, ((item, prep), cam) in enumerate(zip(chunk, result["maps"], strict=True))
                ]
            bar.update(len(chunk))
        bar.close()
        for future in written:
            future.result()  # re-raise a failed write
    geometry = [(p.crop, p.original_size) for _, p in kept]
    shares = gather_objects((parts, geometry), ctx)
    file = Path(out_dir) / EXPLANATIONS_NPZ
    with main_first(ctx):  # the other ranks return once rank 0 has written
        if ctx.is_main:
            parts = [part for rank_parts, _ in shares for part in rank_parts]
            geometry = [g for _, rank_geometry in shares for g in rank_geometry]
            exp = ExplanationSet(
                maps=np.concatenate([p["maps"] for p in parts]),
                raw=np.concatenate([p["raw"] for p in parts]),
                targets=np.concatenate([p["targets"] for p in parts]),
                probs=np.concatenate([p["probs"] for p in parts]),
                paths=[item.key for item in kept_items],
                crops=np.array([crop for crop, _ in geometry], dtype=np.int64),
                original_sizes=np.array([size for _, size in geometry], dtype=np.int64),
                method=method, layer=parts[0]["layer"], classes=list(classes),
            )
            save_explanations(file, exp)
            write_skipped_csv(skipped, Path(out_dir) / SKIPPED_CSV)
    n_overlays = len(kept_items) if overlays else 0
    return ExplainSummary(file, len(kept_items), skipped, n_overlays,
                          time.perf_counter() - start)


def overlay_name(index: int, path: Path, index_in_file: int | None = None) -> str:
    """``0007_Te-gl_0012.png``: the index keeps equal file names of different folders apart;
    ``0008_scan_s3.png`` for slice or frame 3 of a volume or multi-frame file."""
    part = "" if index_in_file is None else f"_s{index_in_file}"
    return f"{index:04d}_{file_stem(path)}{part}.png"


def _preprocess(cache: PreprocessCache, item: ImageItem,
                config: PreprocessConfig) -> Preprocessed | SkippedFile:
    try:
        return cache.get(item.path, config, item.slice)
    except ImageReadError as exc:
        log.warning("skipping %s", exc)
        return SkippedFile(Path(item.key), str(exc).removeprefix(f"{item.path}: "))


def _write_overlay(out_dir: Path, index: int, item: ImageItem, prep: Preprocessed,
                   cam: np.ndarray) -> None:
    original = read_grey(item.path, index=item.slice)
    rgb = overlay_original(original, cam, prep, box=item.box)
    write_png(Path(out_dir) / OVERLAY_DIR / overlay_name(index, item.path, item.slice), rgb)


def _progress(total: int, method: str, enabled: bool):  # -> tqdm
    from tqdm import tqdm

    return tqdm(total=total, desc=method, unit="img", disable=not enabled)
