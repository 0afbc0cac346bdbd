"""When a data-audit result becomes a finding: every threshold in one place.

================================ ============================================ =============
check                            warning                                      critical
================================ ============================================ =============
``probe.<name>`` (test AUC)      >= 0.70                                      >= 0.85
``property.<name>`` (AUC alone)  >= 0.80 (the 5 strongest; KS p <= 0.01)       >= 0.95
``duplicates.train_test``        any test image with a train duplicate        >= 5 % of test
``duplicates.cross_source``      any image of one source duplicated in another >= 5 % of it
``duplicates.label_conflicts``   any group whose images carry different labels
``clusters.labels`` (Cramer's V) >= 0.50                                      >= 0.80
``files.skipped``                any unreadable file
================================ ============================================ =============

A probe's AUC is its leak-free one where that holds every class
(:attr:`~braincam.audit.data.probes.ProbeResult.judged`). Below the warning level a probe,
the train/test duplicate check and the clusters still give an ``info`` finding, so the
report shows what was checked and passed. AUCs are oriented (0.5 =
chance, 1 = perfect). Probe AUCs of 0.70 are reached by chance with well under 1 % probability
on a test set of 100 images per class, so a warning is rarely noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from braincam.audit.data.probes import ProbeResult
from braincam.audit.findings import Finding
from braincam.data.records import MASK_SET_ASIDE, SkippedFile


@dataclass(frozen=True)
class Thresholds:
    probe_warning_auc: float = 0.70
    probe_critical_auc: float = 0.85
    property_warning_auc: float = 0.80
    property_critical_auc: float = 0.95
    property_max_p: float = 0.01  # KS p-value: a property seen in a few images proves nothing
    max_property_findings: int = 5
    leak_critical_fraction: float = 0.05
    cluster_warning_v: float = 0.50
    cluster_critical_v: float = 0.80


THRESHOLDS = Thresholds()


def probe_findings(probes: list[ProbeResult], th: Thresholds = THRESHOLDS) -> list[Finding]:
    """One finding per scored probe; also fills each probe's plain-words ``message``."""
    found = []
    for probe in probes:
        auc = probe.judged[0]
        strong = auc is not None and auc >= th.probe_warning_auc
        probe.message = probe.describe(strong, (th.probe_warning_auc, th.probe_critical_auc))
        if auc is None:
            found.append(Finding("info", f"probe.{probe.name}", None, None, probe.message))
            continue
        critical = auc >= th.probe_critical_auc
        severity = "critical" if critical else "warning" if strong else "info"
        threshold = th.probe_critical_auc if critical else th.probe_warning_auc
        found.append(Finding(severity, f"probe.{probe.name}", auc, threshold, probe.message))
    return found


def property_findings(
    properties: dict[str, dict[str, Any]], th: Thresholds = THRESHOLDS
) -> list[Finding]:
    """The strongest single properties with AUC >= the warning level, strongest first."""
    scored = [(name, p) for name, p in properties.items() if p.get("auc") is not None
              and p["auc"] >= th.property_warning_auc and p["p_value"] <= th.property_max_p]
    scored.sort(key=lambda item: -item[1]["auc"])
    found = []
    for name, p in scored[: th.max_property_findings]:
        critical = p["auc"] >= th.property_critical_auc
        message = (
            f"{name} alone separates {p['class']} from {p['versus']} (AUC {p['auc']:.2f}, "
            f"KS {p['ks']:.2f}); higher in {p['higher_in']}"
        )
        found.append(Finding(
            "critical" if critical else "warning", f"property.{name}", p["auc"],
            th.property_critical_auc if critical else th.property_warning_auc, message,
        ))
    return found


def duplicate_findings(dup: dict[str, Any], th: Thresholds = THRESHOLDS) -> list[Finding]:
    """Train/test leaks (with per-class counts) and label conflicts."""
    found = []
    n_test, leaked = dup["test_images"], dup["test_images_with_train_duplicate"]
    if n_test:
        fraction = leaked / n_test
        per_class = ", ".join(f"{c} {n}" for c, n in dup["per_class_test_with_train_duplicate"]
                              .items())
        if leaked:
            severity = "critical" if fraction >= th.leak_critical_fraction else "warning"
            message = (
                f"{leaked} of {n_test} test images ({fraction:.0%}) have an exact or near "
                f"duplicate in train ({dup['test_images_with_exact_train_duplicate']} "
                f"byte-identical; per class: {per_class}): test scores are optimistic; use "
                "--split dedup or report the leak-free subset"
            )
        else:
            severity, message = "info", "no test image has an exact or near duplicate in train"
        threshold = th.leak_critical_fraction if severity == "critical" else 0.0
        found.append(Finding(severity, "duplicates.train_test", fraction, threshold, message))
    for source, entry in dup.get("cross_source", {}).items():
        for other, copies in entry["duplicated_in"].items():
            if not copies:
                continue
            fraction = copies / entry["images"]
            critical = fraction >= th.leak_critical_fraction
            found.append(Finding(
                "critical" if critical else "warning", "duplicates.cross_source", fraction,
                th.leak_critical_fraction if critical else 0.0,
                f"{copies} of {entry['images']} {source} images ({fraction:.0%}) have an exact "
                f"or near duplicate in {other}: a model trained on {other} and scored on "
                f"{source} is partly scored on its own training images (evaluate --data "
                "reports the rest as extra_leak_free)",
            ))
    if dup["label_conflicts"]:
        found.append(Finding(
            "warning", "duplicates.label_conflicts", float(dup["label_conflicts"]), 0.0,
            f"{dup['label_conflicts']} duplicate groups ({dup['label_conflict_images']} images) "
            "mix labels: a copy filed under two classes, or look-alikes linked by the pHash "
            "threshold (check duplicate_grid.png)",
        ))
    return found


def cluster_findings(clusters: dict[str, Any], th: Thresholds = THRESHOLDS) -> list[Finding]:
    v = clusters.get("cramers_v")
    if v is None:
        return []
    critical, strong = v >= th.cluster_critical_v, v >= th.cluster_warning_v
    severity = "critical" if critical else "warning" if strong else "info"
    meaning = (
        "classes probably come from different scanners, sequences or sources"
        if strong else "clusters do not follow the labels"
    )
    return [Finding(
        severity, "clusters.labels", v,
        th.cluster_critical_v if critical else th.cluster_warning_v,
        f"{clusters['k']} intensity/texture clusters vs labels: Cramer's V {v:.2f}: {meaning}",
    )]


def skipped_findings(skipped: list[SkippedFile]) -> list[Finding]:
    """A finding for the images that could not be read and one for the tumour masks set
    aside (their images are kept, without them)."""
    images = [s for s in skipped if not s.is_mask]
    masks = [s for s in skipped if s.is_mask]
    out = []
    if images:
        out.append(Finding(
            "warning", "files.skipped", float(len(images)), 0.0,
            f"{len(images)} files could not be read and were skipped (first: "
            f"{images[0].path.name}: {images[0].reason})"))
    if masks:
        out.append(Finding(
            "warning", "files.masks_set_aside", float(len(masks)), 0.0,
            f"{len(masks)} tumour masks were set aside, their images kept without them (first: "
            f"{masks[0].path.name}: {masks[0].reason.removesuffix(MASK_SET_ASIDE)})"))
    return out


@dataclass(frozen=True)
class DataCheck:
    """One data-audit check, described as the model audit's checks are: ``name`` prefixes its
    findings' check keys (``probe.<name>``...), ``title`` and ``description`` are for readers,
    ``higher_is_better`` is the direction of its findings' values, and ``findings`` turns the
    data audit (``braincam.audit.data.run.DataAudit``) into findings."""

    name: str
    title: str
    description: str
    higher_is_better: bool
    findings: Callable[[Any], list[Finding]]


DATA_CHECKS: dict[str, DataCheck] = {check.name: check for check in (
    DataCheck("probe", "Shortcut probes",
              "Test AUC of a classifier that sees only one kind of image property (file "
              "format, intensities, background, head size, sharpness, thumbnail).",
              False, lambda audit: probe_findings(audit.probes)),
    DataCheck("duplicates", "Duplicates",
              "Test images with an exact or near duplicate in train, and duplicate groups "
              "whose images carry different labels.",
              False, lambda audit: duplicate_findings(audit.duplicates)),
    DataCheck("property", "Separating properties",
              "Single image properties whose values alone separate the classes (AUC).",
              False, lambda audit: property_findings(audit.properties)),
    DataCheck("clusters", "Acquisition clusters",
              "Agreement (Cramer's V) between intensity/texture clusters and the labels.",
              False, lambda audit: cluster_findings(audit.clusters)),
    DataCheck("files", "Unreadable files", "Files that could not be read and were skipped.",
              False, lambda audit: skipped_findings(audit.skipped)),
)}
"""The data audit's checks in the order their findings are gathered."""
