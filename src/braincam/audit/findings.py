"""Findings: the common currency of the data and model audits.

A finding says which check looked at what value, against which threshold, how
bad it is, and what it means in plain words. Reports sort and colour by severity.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class Finding:
    """One audit result. ``value`` and ``threshold`` may be None for purely
    descriptive findings (e.g. "3 files could not be read")."""

    severity: str
    check: str
    value: float | None
    threshold: float | None
    message: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(**{key: data.get(key) for key in
                      ("severity", "check", "value", "threshold", "message")})


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first; ties keep their order."""
    return sorted(findings, key=lambda f: -SEVERITIES.index(f.severity))

