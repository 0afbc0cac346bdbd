"""Exact and near duplicates: within a split, across splits (leaks) and across labels (conflicts).

Groups come from :func:`braincam.data.hashing.duplicate_groups` (byte-identical files, or pHash
Hamming distance <= ``NEAR_DISTANCE``, chained). A group is *exact* when all its files are
byte-identical, else *near*. A test image *has a train duplicate* when its group holds a train
image (``exact`` when one of those is byte-identical to it). A *label conflict* is a group whose
images carry different (task) labels. With two or more sources (dataset folders), an image is
*duplicated in* another source when its group holds an image of that source: public datasets
copy each other (nearly all of Sartaj's Training tumours are Figshare slices), and a model
trained on one and scored on the other is scored on copies of its training images.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from braincam.data.hashing import hamming
from braincam.data.records import ImageRecord, record_key

MAX_GROUPS_LISTED = 200  # groups written to data_audit.json, most relevant first
GRID_TILE = 160  # px per image in duplicate_grid.png


@dataclass
class DuplicateReport:
    summary: dict[str, Any]  # the ``duplicates`` object of data_audit.json
    grid_groups: list[list[int]]  # record indices per group, most relevant group first; within
    # a group the closest pair that crosses labels (or else splits) comes first


def find_duplicates(
    records: Sequence[ImageRecord],
    labels: Sequence[str],
    split: np.ndarray,
    groups: np.ndarray,
    content_hashes: Sequence[str],
    phashes: np.ndarray,
    root_of: dict[Path, Path] | None = None,
    copies: np.ndarray | None = None,
) -> DuplicateReport:
    """Summarise duplicate ``groups`` (one id per record) against splits and labels.

    ``copies`` (default ``groups``) are the groups of copies alone, listed and checked for
    label conflicts, where ``groups`` may also join what must stay on one side of a split
    (the slices of one volume): leaks and cross-source counts follow ``groups``, since a test
    slice of a volume trained on is no unseen image, but slices of one volume that a label
    volume labels apart are no copies filed under two classes.
    ``phashes`` order each group for display; ``root_of`` maps a record path to the folder
    it is shown relative to (default: just its name).
    """
    labels = np.asarray(labels)
    hashes = np.asarray(content_hashes)
    members: dict[int, list[int]] = {}
    for i, g in enumerate((groups if copies is None else copies).tolist()):
        members.setdefault(g, []).append(i)
    multi = {g: idx for g, idx in members.items() if len(idx) > 1}

    listed = []
    within = Counter()
    for g, idx in multi.items():
        kind = "exact" if len(set(hashes[idx].tolist())) == 1 else "near"
        splits = Counter(split[idx].tolist())
        for name, count in splits.items():
            if count > 1:
                within[name] += count
        listed.append({
            "group": int(g), "size": len(idx), "kind": kind,
            "splits": dict(sorted(splits.items())),
            "labels": sorted(set(labels[idx].tolist())),
            "files": [record_key(_show(records[i].path, root_of), records[i].slice)
                      for i in idx],
            "_idx": idx,
        })

    leak = _test_leaks(labels, split, groups, hashes)
    conflicts = [d for d in listed if len(d["labels"]) > 1]
    listed.sort(key=_relevance)
    summary = {
        "exact_groups": sum(d["kind"] == "exact" for d in listed),
        "near_groups": sum(d["kind"] == "near" for d in listed),
        "images_in_groups": sum(d["size"] for d in listed),
        "within_split": dict(sorted(within.items())),
        **leak,
        "cross_source": cross_source([r.source for r in records], groups),
        "label_conflicts": len(conflicts),
        "label_conflict_images": sum(d["size"] for d in conflicts),
        "groups_total": len(listed),
        "groups": [{k: v for k, v in d.items() if k != "_idx"}
                   for d in listed[:MAX_GROUPS_LISTED]],
    }
    grid = [_display_order(d["_idx"], labels, split, phashes) for d in listed]
    return DuplicateReport(summary, grid)


def leaked_tests(split: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per record: a test image whose group holds an image a model learns from (the split's
    ``train`` or ``val`` part)."""
    learnt = (split == "train") | (split == "val")
    return (split == "test") & np.isin(groups, np.unique(groups[learnt]))


def _test_leaks(
    labels: np.ndarray, split: np.ndarray, groups: np.ndarray, hashes: np.ndarray
) -> dict[str, Any]:
    """Test images whose group holds a train image, overall, exact-only and per class;
    "train" is every image a model learns from, the validation images included (an official
    ``Validation`` folder), as the leak-free subset of ``split.csv`` counts them."""
    is_test = split == "test"
    learnt = (split == "train") | (split == "val")
    train_hashes = set(hashes[learnt].tolist())
    leaked = leaked_tests(split, groups)
    exact = leaked & np.isin(hashes, list(train_hashes))
    classes = sorted(set(labels.tolist()))
    per_class = {
        c: {"test": int((is_test & (labels == c)).sum()),
            "with_train_duplicate": int((leaked & (labels == c)).sum()),
            "exact": int((exact & (labels == c)).sum())}
        for c in classes
    }
    return {
        "test_images": int(is_test.sum()),
        "test_images_with_train_duplicate": int(leaked.sum()),
        "test_images_with_exact_train_duplicate": int(exact.sum()),
        "per_class_test_with_train_duplicate": {c: v["with_train_duplicate"]
                                                for c, v in per_class.items()},
        "per_class": per_class,
    }


def cross_source(sources: Sequence[str], groups: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per source, with two or more: ``{"images": n, "duplicated_in": {other source: images of
    this source whose group holds an image of the other}}``; ``{}`` with one source."""
    sources_arr = np.asarray(sources)
    names = sorted(set(sources_arr.tolist()))
    if len(names) < 2:
        return {}
    out = {}
    for name in names:
        mine = sources_arr == name
        out[name] = {"images": int(mine.sum()), "duplicated_in": {
            other: int((mine & np.isin(groups, groups[sources_arr == other])).sum())
            for other in names if other != name}}
    return out


def _relevance(group: dict[str, Any]) -> tuple[int, int, int]:
    """Sort key: label conflicts first, then groups spanning test and another split, then size."""
    conflict = len(group["labels"]) > 1
    leak = "test" in group["splits"] and len(group["splits"]) > 1
    return (-conflict, -leak, -group["size"])


def _display_order(
    idx: list[int], labels: np.ndarray, split: np.ndarray, phashes: np.ndarray
) -> list[int]:
    """The group's closest pair (pHash distance) whose labels differ, else whose splits differ,
    else any pair; then the other members, nearest to the first image first."""
    at = np.asarray(idx)
    dist = hamming(phashes[at][:, None], phashes[at][None, :]).astype(np.int64)
    np.fill_diagonal(dist, 1 << 20)
    for crosses in (labels[at][:, None] != labels[at][None, :],
                    split[at][:, None] != split[at][None, :]):
        if crosses.any():
            dist = np.where(crosses, dist, dist + (1 << 10))
            break
    a, b = np.unravel_index(np.argmin(dist), dist.shape)
    rest = sorted(set(range(len(at))) - {a, b}, key=lambda j: dist[a, j])
    return [int(at[j]) for j in (a, b, *rest)]


def _show(path: Path, root_of: dict[Path, Path] | None) -> str:
    root = (root_of or {}).get(path)
    return path.relative_to(root).as_posix() if root else path.name


def save_duplicate_grid(
    path: Path,
    records: Sequence[ImageRecord],
    labels: Sequence[str],
    split: np.ndarray,
    groups: list[list[int]],
    phashes: np.ndarray,
    max_rows: int = 6,
    max_cols: int = 4,
) -> bool:
    """A PNG with one row per duplicate group (``max_rows`` first groups, ``max_cols`` images
    each), each image captioned split/label/pHash distance ``d`` to the row's first image and
    file name. The tiles are pasted into one canvas (one axes: fast). False when there is no
    group to show."""
    rows = groups[:max_rows]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from braincam.data.imageio import read_grey
    from braincam.runs import atomic_save_figure

    tile, band = GRID_TILE, GRID_TILE // 4
    canvas = np.ones((len(rows) * (tile + band), max_cols * tile))
    captions = []
    for r, idx in enumerate(rows):
        for c, i in enumerate(idx[:max_cols]):
            y0, x0 = r * (tile + band) + band, c * tile
            small = _fit(read_grey(records[i].path, index=records[i].slice), tile - 4)
            h, w = small.shape
            canvas[y0 + (tile - h) // 2: y0 + (tile - h) // 2 + h,
                   x0 + (tile - w) // 2: x0 + (tile - w) // 2 + w] = small
            d = int(hamming(phashes[idx[0]], phashes[i]))
            captions.append((x0 + tile / 2, y0 - 2, f"{split[i]} / {labels[i]} / d={d}\n"
                             f"{records[i].path.name[:24]}"))
    height, width = canvas.shape
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for x, y, text in captions:
        ax.text(x, y, text, ha="center", va="bottom", fontsize=6.5)
    ax.axis("off")
    atomic_save_figure(path, fig, dpi=100)
    plt.close(fig)
    return True


def _fit(grey: np.ndarray, side: int) -> np.ndarray:
    """Resize so that the longer side is ``side`` px (aspect kept)."""
    import cv2

    scale = side / max(grey.shape)
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
