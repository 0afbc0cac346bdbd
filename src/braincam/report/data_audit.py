"""The data audit's results: shortcut probes, duplicates, separating image properties,
acquisition clusters, its findings and its own figures (data_audit/data_audit.json + PNGs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from braincam.report.figures import Figure, embed_figures
from braincam.report.findings import (
    ReportFinding,
    parse_findings,
    severity_counts,
    sort_findings,
)
from braincam.report.fmt import num, scalar
from braincam.report.sources import Part, read_json_part
from braincam.report.tables import Table, counts_table
from braincam.runs import RunDir

MAX_PROPERTIES = 8


@dataclass
class Probe:
    """A shortcut probe: a classifier that sees only some image property, scored on test."""

    name: str
    features: str
    auc: Any
    auc_ci: Any
    balanced_accuracy: Any
    balanced_accuracy_ci: Any
    leak_free_auc: Any = None  # over the test images without a copy among the training images
    leak_free_auc_ci: Any = None


@dataclass
class PropertyRow:
    """One image property's power to separate the classes alone (from the data audit)."""

    name: str
    auc: Any
    ks: Any
    p_value: Any
    higher_in: str
    medians: dict[str, Any]


@dataclass
class Duplicates:
    exact_groups: int | None
    near_groups: int | None
    test_with_train_duplicate: int | None
    per_class: dict[str, Any]
    label_conflicts: int | None


@dataclass
class DataAuditSection:
    part: Part
    n_images: Any = None
    counts: Table | None = None  # per class and split, as the audit split the data
    probes: list[Probe] = field(default_factory=list)
    duplicates: Duplicates | None = None
    properties: list[PropertyRow] = field(default_factory=list)
    n_properties: int = 0
    clusters: list[str] = field(default_factory=list)  # sentences
    cluster_table: Table | None = None
    findings: list[ReportFinding] = field(default_factory=list)
    dropped_findings: int = 0
    figures: list[Figure] = field(default_factory=list)

    @property
    def severity_counts(self) -> dict[str, int]:
        return severity_counts(self.findings)


def collect_data_audit(run: RunDir) -> DataAuditSection:
    part, audit = read_json_part(run, run.data_audit_json, "data audit")
    section = DataAuditSection(part, figures=embed_figures(sorted(run.data_audit.glob("*.png"))))
    if audit is not None:
        _fill(section, audit)
    return section


def _fill(section: DataAuditSection, audit: dict[str, Any]) -> None:
    section.n_images = audit.get("n_images")
    for probe in audit.get("probes") or []:
        if isinstance(probe, dict):
            section.probes.append(_probe(probe))
    dup = audit.get("duplicates")
    if isinstance(dup, dict):
        per_class = dup.get("per_class_test_with_train_duplicate")
        section.duplicates = Duplicates(
            exact_groups=_count(dup.get("exact_groups")),
            near_groups=_count(dup.get("near_groups")),
            test_with_train_duplicate=_count(dup.get("test_images_with_train_duplicate")),
            per_class=per_class if isinstance(per_class, dict) else {},
            label_conflicts=_count(dup.get("label_conflicts")),
        )
    properties = audit.get("properties")
    if isinstance(properties, dict):
        section.properties, section.n_properties = _properties(properties)
    clusters = audit.get("clusters")
    if isinstance(clusters, dict):
        section.clusters = _cluster_sentences(clusters)
        section.cluster_table = counts_table(clusters.get("crosstab"), "cluster")
    section.counts = counts_table(audit.get("counts"), "class", transpose=True)
    found, section.dropped_findings = parse_findings(audit.get("findings"), "data audit")
    section.findings = sort_findings(found)


def _properties(properties: dict[str, Any]) -> tuple[list[PropertyRow], int]:
    """The ``MAX_PROPERTIES`` numeric properties with the highest AUC, and how many there are.

    The audit's AUC is ``max(A, 1 - A)`` of the property as a class score: 0.5 chance, 1 a
    perfect split.
    """
    rows = []
    for name, stats in properties.items():
        if not isinstance(stats, dict) or scalar(stats.get("auc")) is None:
            continue
        per_class = stats.get("per_class") if isinstance(stats.get("per_class"), dict) else {}
        medians = {str(c): v.get("p50") for c, v in per_class.items() if isinstance(v, dict)}
        rows.append(PropertyRow(str(name), stats["auc"], stats.get("ks"), stats.get("p_value"),
                                str(stats.get("higher_in") or ""), medians))
    rows.sort(key=lambda r: -float(r.auc))
    return rows[:MAX_PROPERTIES], len(rows)


def _cluster_sentences(clusters: dict[str, Any]) -> list[str]:
    """Cramer's V = sqrt(chi2 / (n (min(r, c) - 1))) of the cluster x label table: 0 when
    clusters say nothing about the label, 1 when a cluster fixes it."""
    k = clusters.get("k")
    if k is None:
        return []
    text = (f"Images fall into {num(k)} clusters of similar intensity and texture (a proxy "
            "for acquisition source)")
    if clusters.get("silhouette") is not None:
        text += f", silhouette {num(clusters['silhouette'])}"
    out = [text + "."]
    if clusters.get("cramers_v") is not None:
        out.append(f"Cramer's V between cluster and label: {num(clusters['cramers_v'])} "
                   "(0: clusters say nothing about the label, 1: a cluster fixes the label).")
    if clusters.get("cramers_v_source") is not None:
        out.append(f"Cramer's V between cluster and source dataset: "
                   f"{num(clusters['cramers_v_source'])}.")
    return out


def _probe(raw: dict[str, Any]) -> Probe:
    """A probe row; ``ci`` is either the AUC interval or ``{metric: interval}``."""
    ci = raw.get("ci")
    auc_ci = ci
    bacc_ci = None
    if isinstance(ci, dict):
        auc_ci = ci.get("test_auc", ci.get("auc"))
        bacc_ci = ci.get("test_balanced_accuracy", ci.get("balanced_accuracy"))
    features = raw.get("features")
    if isinstance(features, list):
        features = ", ".join(map(str, features[:8])) + (" ..." if len(features) > 8 else "")
    return Probe(
        name=str(raw.get("name", "?")),
        features=str(features or ""),
        auc=raw.get("test_auc"),
        auc_ci=auc_ci,
        balanced_accuracy=raw.get("test_balanced_accuracy"),
        balanced_accuracy_ci=bacc_ci,
        leak_free_auc=(raw.get("leak_free") or {}).get("test_auc"),
        leak_free_auc_ci=((raw.get("leak_free") or {}).get("ci") or {}).get("test_auc"),
    )


def _count(value: Any) -> int | None:
    """A count given either as a number or as the list of things counted."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, list):
        return len(value)
    return None
