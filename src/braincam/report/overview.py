"""Dataset overview: images per class and split (split.csv), sources, the leak-free test
subset, and the files that could not be used (skipped.csv)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from braincam.data.records import SkippedFile
from braincam.errors import BraincamError
from braincam.report.sources import Part, read_csv_part
from braincam.report.tables import Table, splits_in_order, text_column, with_totals
from braincam.runs import RunDir, true_flags

MAX_SKIPPED_SHOWN = 10


@dataclass
class OverviewSection:
    split_part: Part
    skipped_part: Part
    counts: Table | None = None
    sentences: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    n_skipped: int = 0


def collect_overview(run: RunDir) -> OverviewSection:
    split_part, split = read_csv_part(run, run.split, "data split")
    skipped_part, skipped = read_csv_part(run, run.skipped, "skipped files")
    section = OverviewSection(split_part, skipped_part)
    if split is not None:
        section.counts, section.sentences = _split_counts(split, _guided(run))
    if skipped is not None:
        section.n_skipped = len(skipped)
        entries = [SkippedFile(Path(str(row.get("path", ""))), str(row.get("reason", "")))
                   for row in skipped.head(MAX_SKIPPED_SHOWN).to_dict("records")]
        section.skipped = [(("mask " if s.is_mask else "") + s.path.name, s.reason)
                           for s in entries]
    return section


def _guided(run: RunDir) -> bool:
    """Whether the run's model is guided by a segmenter (its checkpoint's ``guide`` meta)."""
    from braincam.models.checkpoint import read_meta

    try:
        return bool(read_meta(run.model).get("guide"))
    except (OSError, ValueError, BraincamError):
        return False


def _split_counts(split: pd.DataFrame, guided: bool = False) -> tuple[Table | None, list[str]]:
    copies = (true_flags(split["copy_left_out"]) if "copy_left_out" in split.columns
              else pd.Series(False, index=split.index))
    split = split[~copies.to_numpy()]
    if not {"label", "split"} <= set(split.columns) or split.empty:
        return None, ["split.csv has no label/split columns; counts are not shown."]
    text = {c: text_column(split[c]) for c in ("label", "split", "source") if c in split}
    table = splits_in_order(pd.crosstab(text["label"], text["split"]))
    sentences = [f"{len(split)} images in {table.shape[0]} classes."]
    if copies.any():
        sentences.append(
            f"Not counted: {int(copies.sum())} images without a mask that copy an outlined "
            "image, left out of training and scoring (their originals train with the outline).")
    if "source" in text:
        sources = sorted(text["source"].unique())
        sentences.append(f"Sources: {', '.join(sources)}.")
    if "leak_free" in split.columns and "test" in table.columns:
        test = split[text["split"] == "test"]
        free = int(true_flags(test["leak_free"]).sum())
        sentences.append(
            f"{free} of {len(test)} test images have no exact or near duplicate in train"
            + (" (the leak-free subset of the metrics also leaves out those the guiding "
               "segmenter learnt from)." if guided else " (the leak-free subset).")
        )
    return with_totals(table, "class"), sentences
