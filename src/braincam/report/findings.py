"""Findings from the data and model audits, merged and ordered for the top of the report.

The audits write :class:`braincam.audit.findings.Finding` dicts; the report adds
which stage raised each one and orders them most severe first (critical,
warning, info), keeping each stage's own order within a severity. Related findings are
grouped into one (:data:`GROUPS`): the data audit's background properties (``bg_mean``,
``bg_std``, ``bg_p99``, ``bg_hist``...) all say "the area outside the head differs between
classes", so they read as one finding with the strongest one's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from braincam.audit.findings import SEVERITIES, Finding
from braincam.audit.findings import sort_findings as sort_audit_findings

GROUPS = {"property.bg_": ("property.background", "background properties")}
"""Check-name prefix -> (check of the grouped finding, what its members are)."""


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
    severity other than info/warning/critical. Related findings are grouped
    (:func:`group_findings`).
    """
    if raw is None:
        return [], 0
    if not isinstance(raw, list):
        return [], 1
    found: list[Finding] = []
    for entry in raw:
        if not isinstance(entry, dict) or not entry.get("message"):
            continue
        try:
            found.append(Finding.from_dict(entry))
        except (TypeError, ValueError):
            continue
    return ([ReportFinding(f, source) for f in group_findings(found)],
            len(raw) - len(found))


def sort_findings(findings: list[ReportFinding]) -> list[ReportFinding]:
    """Most severe first (critical, warning, info); stable within a severity."""
    return sorted(findings, key=lambda f: -SEVERITIES.index(f.finding.severity))


def severity_counts(findings: list[ReportFinding]) -> dict[str, int]:
    """Findings per severity, most severe first: ``{"critical": n, "warning": n, "info": n}``."""
    return {sev: sum(f.finding.severity == sev for f in findings) for sev in reversed(SEVERITIES)}


def group_findings(findings: list[Finding]) -> list[Finding]:
    """Findings with each :data:`GROUPS` prefix merged into one, at the place of its most
    severe member: that member's severity, value, threshold and message, with the members
    named (``background properties bg_mean, bg_std: ...``). A lone member stays as it is."""
    members: dict[str, list[Finding]] = {}
    for f in findings:
        prefix = _group_of(f.check)
        if prefix is not None:
            members.setdefault(prefix, []).append(f)
    out, placed = [], set()
    for f in findings:
        prefix = _group_of(f.check)
        if prefix is None or len(members[prefix]) == 1:
            out.append(f)
        elif prefix not in placed:
            placed.add(prefix)
            group = members[prefix]
            head = sort_audit_findings(group)[0]
            check, what = GROUPS[prefix]
            names = ", ".join(m.check.split(".", 1)[-1] for m in group)
            out.append(replace(head, check=check,
                               message=f"{len(group)} {what} ({names}); strongest: "
                                       f"{head.message}"))
    return out


def _group_of(check: str) -> str | None:
    return next((prefix for prefix in GROUPS if check.startswith(prefix)), None)
