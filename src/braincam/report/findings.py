"""Findings from the data and model audits, merged and ordered for the top of the report.

The audits write :class:`braincam.audit.findings.Finding` dicts; the report adds
which stage raised each one and orders them most severe first (critical,
warning, info), keeping each stage's own order within a severity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from braincam.audit.findings import SEVERITIES, Finding


@dataclass(frozen=True)
class ReportFinding:
    """A finding and the stage (``source``) that raised it."""

    finding: Finding
    source: str

    @property
    def css_class(self) -> str:
        return f"sev-{self.finding.severity}"


def parse_findings(raw: Any, source: str) -> tuple[list[ReportFinding], int]:
    """Findings from a JSON list, and how many entries were malformed and left out.

    An entry is malformed when it is not an object, has no message, or has a
    severity other than info/warning/critical.
    """
    if raw is None:
        return [], 0
    if not isinstance(raw, list):
        return [], 1
    found: list[ReportFinding] = []
    for entry in raw:
        if not isinstance(entry, dict) or not entry.get("message"):
            continue
        try:
            found.append(ReportFinding(Finding.from_dict(entry), source))
        except (TypeError, ValueError):
            continue
    return found, len(raw) - len(found)


def sort_findings(findings: list[ReportFinding]) -> list[ReportFinding]:
    """Most severe first (critical, warning, info); stable within a severity."""
    return sorted(findings, key=lambda f: -SEVERITIES.index(f.finding.severity))


def severity_counts(findings: list[ReportFinding]) -> dict[str, int]:
    """Findings per severity, most severe first: ``{"critical": n, "warning": n, "info": n}``."""
    return {sev: sum(f.finding.severity == sev for f in findings) for sev in reversed(SEVERITIES)}
