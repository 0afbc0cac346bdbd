"""Train/val/test splits, duplicate groups across them, and ``split.csv``.

Strategies:

- ``official``: each record keeps the split of its folder (``Training``/``Testing``...). Roots
  without split folders, combined with roots that have them, are extra data and join the train
  pool. Without an official ``val``, validation is carved from the train pool, stratified by
  class and group-aware (no duplicate group straddles train/val; groups may straddle train/test
  because the official test set is kept as published: see ``leak_free_test``).
- ``random``: stratified by class (sklearn ``train_test_split``), ignoring duplicates.
- ``dedup``: stratified and group-aware (sklearn ``StratifiedGroupKFold``): no duplicate group
  straddles any two splits. Fractions become ``1 / round(1 / fraction)`` of the pool (0.2 -> 1/5,
  0.15 -> 1/7), the fold closest to the asked size being held out.
- ``fold`` (cross-validation, :mod:`braincam.train.cv`): fold ``fold`` of a
  ``StratifiedGroupKFold(folds)`` is the test part and validation is carved from the rest as
  under ``dedup``; over ``fold = 0 .. folds - 1`` every image is tested exactly once. Data with
  an official test split is refused: folds come from training data only.

Groups join exact/near duplicate groups (:mod:`braincam.data.hashing`) and patient-proxy groups
of numbered slice collections such as Figshare (:mod:`braincam.data.groups`), so every carve
(dedup test, validation) keeps a patient on one side. A test image is
*leak-free* when no image of its group is in train or val (val also shapes the model, through
early stopping and checkpoint choice).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from braincam.data.groups import merged_groups, patient_groups
from braincam.data.hashing import content_hash, duplicate_groups, perceptual_hashes
from braincam.data.records import ImageRecord
from braincam.errors import BraincamError
from braincam.labels import task_label
from braincam.runs import atomic_write_text

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
STRATEGIES = ("official", "random", "dedup")
FOLD = "fold"  # cross-validation folds; set by braincam cv, not a --split choice
CSV_COLUMNS = ("path", "source", "label", "split", "group", "leak_free")


@dataclass
class Split:
    """Per-record assignment, aligned with the records it was made from."""

    split: np.ndarray  # str per record: "train" | "val" | "test"
    group: np.ndarray  # int64 duplicate-group id per record
    leak_free_test: np.ndarray  # bool per record: a test image with no duplicate in train/val
    strategy: str
    seed: int
    counts: dict[str, int]

    def indices(self, name: str) -> np.ndarray:
        """Record indices in split ``name``."""
        return np.flatnonzero(self.split == name)


def record_groups(records: Sequence[ImageRecord]) -> np.ndarray:
    """Group id per record: duplicate groups from file bytes (the slices of one file share
    them) and cached pHashes of each image, slice or frame
    (:func:`braincam.data.hashing.duplicate_groups`, default threshold) merged with patient-proxy
    groups (:func:`braincam.data.groups.patient_groups`)."""
    files = {str(r.path): content_hash(r.path) for r in records}
    duplicates = duplicate_groups([files[str(r.path)] for r in records],
                                  perceptual_hashes([r.image for r in records], file_hashes=files))
    return merged_groups(duplicates, patient_groups(records))


def check_fractions(val_fraction: float, test_fraction: float, strategy: str) -> None:
    """A one-line error for fractions no split can honour; commands call it before their slow
    steps (preprocessing), :func:`make_split` again."""
    if not 0.0 <= val_fraction < 1.0 or not 0.0 < test_fraction < 1.0:
        raise BraincamError("val fraction must be in [0, 1) and test fraction in (0, 1)")
    if strategy != "official" and val_fraction + test_fraction >= 1.0:
        raise BraincamError("val and test fractions must add up to less than 1")


def make_split(
    records: Sequence[ImageRecord],
    task: str,
    strategy: str = "official",
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
    groups: np.ndarray | None = None,
    fold: int = 0,
    folds: int = 5,
) -> Split:
    """Assign every record to train/val/test (strategies in the module docstring).

    ``groups`` (group id per record) is computed with :func:`record_groups` when None.
    ``test_fraction`` is unused under ``official`` and ``fold``; ``val_fraction`` 0 means no
    validation set; ``fold`` / ``folds``: the test fold under ``fold``.
    """
    if strategy not in (*STRATEGIES, FOLD):
        raise BraincamError(f"unknown split strategy {strategy!r}; choose one of {STRATEGIES}")
    if strategy == FOLD:
        test_fraction = 1 / folds
        if folds < 2 or not 0 <= fold < folds:
            raise BraincamError(f"fold {fold} of {folds}: need 2 or more folds, 0 <= fold < folds")
        if any(r.split == "test" for r in records):
            raise BraincamError("cross-validation takes training data only, and this data has "
                                "an official test split: pass its training folder (e.g. "
                                "DATA/Training)")
    check_fractions(val_fraction, test_fraction, strategy)
    if not records:
        raise BraincamError("no records to split")
    try:
        y = np.array([task_label(r.label, task) for r in records])
    except ValueError as exc:
        raise BraincamError(str(exc)) from None
    groups = record_groups(records) if groups is None else np.asarray(groups, dtype=np.int64)
    if groups.shape != (len(records),):
        raise BraincamError(f"{groups.shape[0]} group ids for {len(records)} records")
    every = np.arange(len(records))
    if strategy == "official":
        split = _official(records)
        pool = np.flatnonzero(split == "train")
        if val_fraction > 0 and pool.size and not (split == "val").any():
            split[pool[_holdout(pool, y, groups, val_fraction, seed)]] = "val"
    elif strategy == "random":
        split = np.full(len(records), "train", dtype="<U5")
        rest, test = _stratified(every, y, test_fraction, seed)
        split[test] = "test"
        if val_fraction > 0:
            split[_stratified(rest, y, val_fraction / (1 - test_fraction), seed)[1]] = "val"
    else:
        split = np.full(len(records), "train", dtype="<U5")
        test = (_fold(every, y, groups, fold, folds, seed) if strategy == FOLD
                else _holdout(every, y, groups, test_fraction, seed))
        split[test] = "test"
        rest = np.flatnonzero(split == "train")
        if val_fraction > 0:
            held = _holdout(rest, y, groups, val_fraction / (1 - test_fraction), seed)
            split[rest[held]] = "val"
    return _finish(split, groups, strategy, seed)


def _official(records: Sequence[ImageRecord]) -> np.ndarray:
    if all(r.split is None for r in records):
        raise BraincamError(
            "the data has no official split (no Training/Testing folders); "
            "use --split random or --split dedup"
        )
    extra = sorted({r.source for r in records if r.split is None})
    if extra:
        log.info("no official split in %s: used as extra training data", ", ".join(extra))
    return np.array([r.split or "train" for r in records], dtype="<U5")


def _stratified(
    idx: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices; stratified unless a class has fewer than 2 members."""
    _, class_counts = np.unique(y[idx], return_counts=True)
    stratify = y[idx] if class_counts.min() >= 2 else None
    try:
        kept, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise BraincamError(f"cannot split {len(idx)} images: {exc}") from None
    return np.sort(kept), np.sort(held)


def _holdout(
    idx: np.ndarray, y: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """Boolean over ``idx``: a held-out part of about ``fraction``, whole groups only, stratified
    (the StratifiedGroupKFold fold closest in size to ``fraction * len(idx)``)."""
    n_groups = len(np.unique(groups[idx]))
    n_splits = min(max(2, round(1 / fraction)), n_groups)
    if n_splits < 2:
        raise BraincamError(
            f"cannot hold out {fraction:.0%} of {len(idx)} images: they form a single "
            "duplicate group"
        )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    target = fraction * len(idx)
    try:
        held = min((test for _, test in _group_folds(folds, idx, y, groups)),
                   key=lambda test: abs(len(test) - target))
    except ValueError as exc:  # e.g. more folds than images of a class
        raise BraincamError(f"cannot hold out {fraction:.0%} of {len(idx)} images by group "
                            f"and class ({exc}); use larger fractions or more data") from None
    out = np.zeros(len(idx), dtype=bool)
    out[held] = True
    return out


def _fold(
    idx: np.ndarray, y: np.ndarray, groups: np.ndarray, fold: int, folds: int, seed: int
) -> np.ndarray:
    """Boolean over ``idx``: fold ``fold`` of a shuffled ``StratifiedGroupKFold(folds)``."""
    if len(np.unique(groups[idx])) < folds:
        raise BraincamError(f"{folds} folds need at least {folds} duplicate groups")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    try:
        test = _group_folds(splitter, idx, y, groups)[fold][1]
    except ValueError as exc:
        raise BraincamError(f"cannot make {folds} folds of {len(idx)} images ({exc})") from None
    out = np.zeros(len(idx), dtype=bool)
    out[test] = True
    return out


def _group_folds(splitter: StratifiedGroupKFold, idx: np.ndarray, y: np.ndarray,
                 groups: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The splitter's folds of ``idx``; scikit-learn's warning that a class has fewer members
    than folds becomes one log line naming the class, its groups and the folds."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        folds = list(splitter.split(idx, y[idx], groups[idx]))
    few = [w for w in caught if "least populated class" in str(w.message)]
    for other in (w for w in caught if w not in few):  # any other warning as it was
        warnings.warn(other.message, other.category, stacklevel=2)
    if few:
        labels, counts = np.unique(y[idx], return_counts=True)
        fewest = labels[np.argmin(counts)]
        n = len(np.unique(groups[idx][y[idx] == fewest]))
        log.warning("class %s has %d image group(s), fewer than the %d folds of the split: "
                    "some parts hold none of it", fewest, n, splitter.n_splits)
    return folds


def _finish(split: np.ndarray, groups: np.ndarray, strategy: str, seed: int) -> Split:
    """Leak-free flags and counts for an assignment."""
    def members(name: str) -> set[int]:
        return set(groups[split == name].tolist())

    train, val, test = members("train"), members("val"), members("test")
    in_train, in_val = np.isin(groups, list(train)), np.isin(groups, list(val))
    is_test, is_val = split == "test", split == "val"
    leak_free = is_test & ~in_train & ~in_val
    sizes = np.bincount(groups)
    counts = {
        "train": int((split == "train").sum()),
        "val": int(is_val.sum()),
        "test": int(is_test.sum()),
        "groups": int((sizes > 0).sum()),
        "duplicate_groups": int((sizes > 1).sum()),
        "straddling_groups": len((train & val) | (train & test) | (val & test)),
        "train_val_duplicates": int((is_val & in_train).sum()),
        "train_test_duplicates": int((is_test & in_train).sum()),
        "val_test_duplicates": int((is_test & in_val).sum()),
        "leak_free_test": int(leak_free.sum()),
    }
    return Split(split, groups, leak_free, strategy, seed, counts)


def write_split_csv(split: Split, records: Sequence[ImageRecord], path: Path,
                    copy_left_out: np.ndarray | None = None) -> None:
    """``split.csv``: one row per record with columns path (the record key,
    :func:`braincam.data.records.record_key`), source, label (canonical), split, group,
    leak_free (True only for leak-free test images); with ``copy_left_out`` (bool per record)
    also that column: the segmenter's weak images left out as copies of an outlined image
    (:func:`braincam.data.segmentation.copies_of_outlined`), which keep their split and group."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS + (() if copy_left_out is None else ("copy_left_out",)))
    for i, r in enumerate(records):
        leak_free = bool(split.leak_free_test[i])
        row = [r.key, r.source, r.label, split.split[i], split.group[i], leak_free]
        writer.writerow(row if copy_left_out is None else [*row, bool(copy_left_out[i])])
    atomic_write_text(path, buf.getvalue())


def read_split_csv(path: Path, records: Sequence[ImageRecord]) -> Split:
    """The split stored in ``split.csv``, aligned with ``records`` (matched by path).

    A record missing from the file is an error (the data changed since the split was made);
    rows whose file is no longer among the records are ignored with a warning.
    """
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = {row["path"]: row for row in csv.DictReader(fh)}
    except (OSError, KeyError, csv.Error) as exc:
        raise BraincamError(f"{path}: cannot read split file ({exc})") from None
    missing = [r.key for r in records if r.key not in rows]
    if missing:
        raise BraincamError(
            f"{path}: {len(missing)} images are not in the split file (first: {missing[0]}); "
            "the data changed since the split was made"
        )
    if len(rows) > len(records):
        log.warning("%s: %d rows name files not in the data", path, len(rows) - len(records))
    chosen = [rows[r.key] for r in records]
    try:
        split = np.array([row["split"] for row in chosen], dtype="<U5")
        groups = np.array([int(row["group"]) for row in chosen], dtype=np.int64)
    except (KeyError, ValueError) as exc:
        raise BraincamError(f"{path}: malformed split file ({exc})") from None
    if not set(split.tolist()) <= set(SPLITS):
        raise BraincamError(f"{path}: split column must hold only {', '.join(SPLITS)}")
    _, groups = np.unique(groups, return_inverse=True)
    return _finish(split, groups.astype(np.int64), "file", 0)
