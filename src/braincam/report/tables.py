"""Small row x column tables shared by the sections (counts with totals, grouped numbers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

SPLIT_ORDER = ("train", "val", "test")


@dataclass
class Table:
    """Named rows of values under named columns; ``corner`` names what the rows are.

    Count tables (e.g. class x split) end with a total row and column.
    """

    columns: list[str]
    rows: list[tuple[str, list[Any]]]
    corner: str


def counts_table(nested: Any, corner: str, transpose: bool = False) -> Table | None:
    """``{row: {column: n}}`` as a table with totals (``transpose`` swaps rows and columns)."""
    if not isinstance(nested, dict) or not nested or not all(
        isinstance(v, dict) for v in nested.values()
    ):
        return None
    table = pd.DataFrame(nested).fillna(0)  # columns = outer keys
    try:
        return with_totals(splits_in_order(table) if transpose else table.T, corner)
    except (TypeError, ValueError):  # not counts: the table is left out
        return None


def splits_in_order(table: pd.DataFrame) -> pd.DataFrame:
    """Columns train, val, test first, any others after them, sorted."""
    order = [s for s in SPLIT_ORDER if s in table.columns]
    return table[order + sorted(c for c in table.columns if c not in order)]


def with_totals(table: pd.DataFrame, corner: str) -> Table:
    rows = [(str(name), [int(v) for v in table.loc[name]] + [int(table.loc[name].sum())])
            for name in table.index]
    rows.append(("all", [int(v) for v in table.sum(axis=0)] + [int(table.values.sum())]))
    return Table([str(c) for c in table.columns] + ["total"], rows, corner)


def text_column(column: pd.Series) -> pd.Series:
    """A CSV column as text, an empty cell as "" (``astype(str)`` keeps NaN under pandas 3)."""
    return column.astype("string").fillna("").astype(str)
