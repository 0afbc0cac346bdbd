"""Which images the explain stage looks at: those the model audit chose (its per-image
table), so that every explained image has the audit's numbers in the report's gallery."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from braincam.data.records import load_dataset
from braincam.errors import BraincamError
from braincam.explain.files import ImageItem


def audited_items(table: Path, roots: Sequence[Path]) -> list[ImageItem]:
    """The images listed in the model audit's per-image CSV ``table`` (column ``path``; one
    row per image and method), each once, in the table's order, with the label and tumour
    box of its record under ``roots``."""
    try:
        with open(table, newline="", encoding="utf-8") as fh:
            paths = list(dict.fromkeys(row["path"] for row in csv.DictReader(fh)))
    except (OSError, KeyError, csv.Error) as exc:
        raise BraincamError(f"cannot read the model audit's image list {table} ({exc})") from None
    by_key = {r.key: r for r in load_dataset(list(roots)).records}
    missing = [p for p in paths if p not in by_key]
    if missing:
        raise BraincamError(f"{len(missing)} audited images are gone (first: {missing[0]}); "
                            "the data changed since the model audit")
    if not paths:
        raise BraincamError(f"{table} lists no image")
    return [ImageItem.of(by_key[p]) for p in paths]
