"""Number formatting for the report: plain, short and the same everywhere.

Numbers get 3 significant digits (``0.9734 -> 0.973``, ``12.34 -> 12.3``), large
ones are rounded to integers (``1234.5 -> 1234``: more digits than 3 carry no
information here but a shorter form would hide magnitude), intervals read
``[lo, hi]``, shares read as percentages, and anything missing reads ``n/a``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

MISSING = "n/a"


def num(value: Any) -> str:
    """A number with 3 significant digits; integers as they are; bools as yes/no.

    Mappings and sequences (e.g. one value per CAM method) become ``key: v, ...``.
    """
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return MISSING
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{key}: {num(val)}" for key, val in value.items()) or MISSING
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(num(val) for val in value) or MISSING
    return str(value)


def text(value: Any) -> str:
    """A setting exactly as recorded (no rounding): lists joined by commas, None as ``none``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(text(v) for v in value) or "none"
    return str(value)


def interval(value: Any) -> str:
    """``[lo, hi]`` for a two-number sequence, empty when there is no interval."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        return ""
    lo, hi = value
    if not (_finite(lo) and _finite(hi)):
        return ""
    return f"[{_score(float(lo))}, {_score(float(hi))}]"


def with_ci(value: Any, ci: Any) -> str:
    """``0.970 [0.953, 0.984]``, or just the number when there is no interval."""
    bounds = interval(ci)
    return f"{_score(value)} {bounds}" if bounds else num(value)


def _score(value: Any) -> str:
    """A score and its bounds with three decimals alike (``0.970``, not ``0.97``, beside
    ``0.953``, 1.000 beside 0.950) where they are 0 or lie in [0.01, 1]; anything else as
    :func:`num` writes it."""
    if isinstance(value, float) and (value == 0 or 0.01 <= abs(value) <= 1):
        return f"{value:.3f}"
    return num(value)


def pct(value: Any) -> str:
    """A share in [0, 1] as a percentage: 2 significant digits, whole percent from 10%."""
    if not _finite(value):
        return MISSING
    percent = 100.0 * float(value)
    if abs(percent) >= 10:
        return f"{percent:.0f}%"
    return f"{percent:.2g}%"


def _finite(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def label(key: str) -> str:
    """A JSON key as words: ``energy_in_box_ratio -> energy in box ratio``."""
    return str(key).replace("_", " ")


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as ``(path, leaf)`` rows, paths joined with `` / ``.

    Lists stay leaves (``num`` joins them), so a table shows one row per number
    or per list of numbers, in the order the file gives them.
    """
    if not isinstance(value, Mapping):
        return [(prefix, value)]
    rows: list[tuple[str, Any]] = []
    for key, val in value.items():
        path = f"{prefix} / {label(key)}" if prefix else label(key)
        rows.extend(flatten(val, path))
    return rows


def scalar(value: Any) -> float | None:
    """The value as a float when it is one finite number, else None."""
    return float(value) if _finite(value) else None
