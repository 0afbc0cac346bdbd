"""The whole data audit: records -> properties -> split -> separation, probes, duplicates,
clusters -> findings, written to a folder.

Files in ``out_dir``:

- ``data_audit.json``: ``{version, roots, task, split_strategy, seed, n_images, n_skipped,
  skipped, classes, counts: {split: {class: n}}, thresholds, properties: {name: separation},
  probes: [ProbeResult], duplicates: {...}, clusters: {...}, findings: [Finding]}`` (see
  :mod:`~braincam.audit.data.separation`, :mod:`~braincam.audit.data.probes`,
  :mod:`~braincam.audit.data.duplicates`, :mod:`~braincam.audit.data.clusters`; thresholds in
  :mod:`~braincam.audit.data.rules`);
- ``properties.csv``: one row per readable image (path, source, split, label, group, and every
  scalar/categorical property); ``skipped.csv``: unreadable files and why;
- ``property_histograms.png``, ``probe_auc.png``, ``duplicate_grid.png`` (when duplicates exist).

The split is made with :func:`braincam.data.splits.make_split` without a validation set (the
probes need only train and test).

``others``: folders a model trained on ``roots`` will be scored on (``braincam run``'s and
``braincam audit-data``'s ``--data``). They join only the duplicate check: each gets a
``duplicates.cross_source`` entry counting its images with a copy among each audited folder's
training images (the split's ``train`` part: what such a model learns from, as
``evaluate``'s ``extra_seen`` counts them), and so a ``duplicates.cross_source`` finding when
some are copies.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from braincam.audit.data import rules
from braincam.audit.data.clusters import find_clusters
from braincam.audit.data.duplicates import (
    cross_source,
    find_duplicates,
    leaked_tests,
    save_duplicate_grid,
)
from braincam.audit.data.plots import save_probe_chart, save_property_histograms
from braincam.audit.data.probes import ProbeResult, run_probes
from braincam.audit.data.properties import ImageProperties, measure_properties
from braincam.audit.data.separation import separation
from braincam.audit.findings import Finding, sort_findings
from braincam.data.groups import merged_groups, patient_groups
from braincam.data.hashing import content_hash, duplicate_groups, perceptual_hashes, slice_hash
from braincam.data.records import (
    ImageRecord,
    SkippedFile,
    distinct_name,
    load_dataset,
    write_skipped_csv,
)
from braincam.data.splits import make_split
from braincam.errors import BraincamError
from braincam.labels import task_classes, task_label
from braincam.runs import DATA_AUDIT_JSON, SKIPPED_CSV, atomic_write_csv, atomic_write_json

log = logging.getLogger(__name__)

VERSION = 1
MAX_SKIPPED_LISTED = 100


@dataclass
class DataAudit:
    roots: list[str]
    task: str
    split_strategy: str
    seed: int
    n_images: int
    skipped: list[SkippedFile]
    classes: list[str]
    counts: dict[str, dict[str, int]]
    properties: dict[str, dict[str, Any]]
    probes: list[ProbeResult]
    duplicates: dict[str, Any]
    clusters: dict[str, Any]
    findings: list[Finding]
    files: list[Path] = field(default_factory=list)

    def probe(self, name: str) -> ProbeResult:
        return next(p for p in self.probes if p.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION, "roots": self.roots, "task": self.task,
            "split_strategy": self.split_strategy, "seed": self.seed,
            "n_images": self.n_images, "n_skipped": len(self.skipped),
            "skipped": [{"path": str(s.path), "reason": s.reason}
                        for s in self.skipped[:MAX_SKIPPED_LISTED]],
            "classes": self.classes, "counts": self.counts,
            "thresholds": asdict(rules.THRESHOLDS), "properties": self.properties,
            "probes": [p.to_dict() for p in self.probes], "duplicates": self.duplicates,
            "clusters": self.clusters, "findings": [f.to_dict() for f in self.findings],
        }

    def summary(self) -> str:
        """A few lines for the terminal: counts, probes, leaks, clusters, top findings."""
        split_sizes = ", ".join(f"{s} {sum(c.values())}" for s, c in self.counts.items())
        masks = sum(s.is_mask for s in self.skipped)
        aside = f", {masks} masks set aside" if masks else ""
        lines = [f"audited {self.n_images} images ({len(self.skipped) - masks} skipped{aside}); "
                 f"classes {', '.join(self.classes)}; {split_sizes}"]
        for p in self.probes:
            lines.append(f"  {p.message}")
        dup = self.duplicates
        per_class = ", ".join(
            f"{c} {n}" for c, n in dup["per_class_test_with_train_duplicate"].items()
        )
        lines.append(
            f"duplicates: {dup['exact_groups']} exact and {dup['near_groups']} near groups; "
            f"{dup['test_images_with_train_duplicate']} of {dup['test_images']} test images "
            f"have a train duplicate ({per_class}); "
            f"{dup['label_conflicts']} label conflicts"
        )
        if self.clusters.get("cramers_v") is not None:
            lines.append(f"clusters: k={self.clusters['k']}, Cramer's V vs labels "
                         f"{self.clusters['cramers_v']:.2f}")
        serious = [f for f in self.findings if f.severity != "info"]
        lines.append(f"{len(serious)} findings at warning or above:")
        lines += [f"  [{f.severity}] {f.message}" for f in serious]
        return "\n".join(lines)


def audit_data(
    roots: Sequence[Path | str],
    task: str = "binary",
    split_strategy: str = "official",
    out_dir: Path | None = None,
    cache_dir: Path | str | None = None,
    workers: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    others: Sequence[Path | str] = (),
) -> DataAudit:
    """Audit the images under ``roots`` for shortcuts and leaks (and ``others`` for copies of
    them, module docstring); write the files listed in the module docstring to ``out_dir``
    when given."""
    dataset = load_dataset(list(roots))
    _classes(dataset.records, task)  # missing classes and bad --data folders fail before
    other_records = [load_dataset([root]).records for root in others]  # the slow steps
    props = measure_properties(dataset.records, cache_dir=cache_dir, workers=workers)
    skipped = sorted(dataset.skipped + props.skipped, key=lambda s: str(s.path))
    if len(props.records) < 2:
        raise BraincamError(f"fewer than two readable images ({len(skipped)} files skipped)")
    labels, classes = _classes(props.records, task)  # what the unreadable files leave
    y = np.array([classes.index(lab) for lab in labels])

    # the slices and frames of one file are one group, as in every split (record_groups)
    copies = duplicate_groups(props.content_hashes, props.phashes)
    groups = merged_groups(copies, [str(r.path) for r in props.records])
    carve_groups = merged_groups(groups, patient_groups(props.records))  # patients on one side
    split = make_split(props.records, task, split_strategy, val_fraction=0.0, seed=seed,
                       groups=carve_groups).split
    probes = _probes(props, y, split, len(classes), n_boot, leaked_tests(split, groups))
    roots_of = _roots_of(props, roots)
    dup = find_duplicates(props.records, labels, split, groups, props.content_hashes,
                          props.phashes, roots_of, copies)
    dup.summary["cross_source"] |= _copies_in(others, other_records, props, split != "test")
    sources = [r.source for r in props.records]
    audit = DataAudit(
        roots=[str(Path(r)) for r in roots], task=task, split_strategy=split_strategy,
        seed=seed, n_images=len(props.records), skipped=skipped, classes=classes,
        counts=_counts(split, labels, classes),
        properties=separation(props.table, labels, classes), probes=probes,
        duplicates=dup.summary, clusters=find_clusters(props, labels, sources), findings=[],
    )
    audit.findings = sort_findings(
        f for check in rules.DATA_CHECKS.values() for f in check.findings(audit))
    if out_dir is not None:
        audit.files = _write(Path(out_dir), audit, props, labels, split, groups, dup.grid_groups)
    return audit


def _classes(records: Sequence[ImageRecord], task: str) -> tuple[np.ndarray, list[str]]:
    """The task label of each record and the task's classes; BraincamError unless every
    class has an image."""
    try:
        labels = np.array([task_label(r.label, task) for r in records])
        classes = task_classes(labels.tolist(), task)
    except ValueError as exc:
        raise BraincamError(str(exc)) from None
    missing = [c for c in classes if c not in set(labels.tolist())]
    if missing or len(classes) < 2:
        raise BraincamError(
            f"the audit compares classes but found only {', '.join(sorted(set(labels)))} images"
        )
    return labels, classes


FILES = (DATA_AUDIT_JSON, "properties.csv", SKIPPED_CSV, "property_histograms.png",
         "probe_auc.png", "duplicate_grid.png")  # what an audit writes into its folder


def _copies_in(
    others: Sequence[Path | str], other_records: Sequence[Sequence[ImageRecord]],
    props: ImageProperties, learnt: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """``duplicates.cross_source`` entries of the ``others`` folders: per folder, its images
    with a copy among each audited source's ``learnt`` images (bool per record: the split's
    training part). One grouping (:func:`duplicate_groups`) of the audited images and every
    other folder's, so each image is hashed once and a chain through another folder counts,
    as in :func:`braincam.evaluate.run.evaluate_run`."""
    audited = sorted({r.source for r in props.records})
    taken = set(audited)  # a folder named like an audited one, or another, gets "_" appended
    folders = [(distinct_name(Path(root).resolve().name, taken), [r.image for r in records])
               for root, records in zip(others, other_records, strict=True)]
    if not folders:
        return {}
    images = [image for _, ims in folders for image in ims]  # (file, slice or frame)
    files = {str(f): content_hash(f) for f in dict.fromkeys(str(f) for f, _ in images)}
    unreadable: list[int] = []  # compared by their bytes alone, and not counted
    phashes = perceptual_hashes(images, file_hashes=files, unreadable=unreadable)
    if unreadable:
        log.warning("%d images of the --data folders cannot be decoded and are not counted "
                    "(first: %s)", len(unreadable), images[unreadable[0]][0])
    groups = duplicate_groups(
        [*props.content_hashes, *(slice_hash(files[str(f)], k) for f, k in images)],
        np.concatenate([props.phashes, phashes]),
        without_phash=[len(props.records) + i for i in unreadable])
    unlearnt = "\0test"  # the audited test images: not what a model learns from
    decoded = np.ones(len(images), dtype=bool)
    decoded[unreadable] = False
    names = [name for name, ims in folders for _ in ims]
    counts = cross_source([r.source if keep else unlearnt
                           for r, keep in zip(props.records, learnt, strict=True)]
                          + [n for n, ok in zip(names, decoded, strict=True) if ok],
                          groups[np.r_[np.ones(len(props.records), dtype=bool), decoded]])
    return {name: {"images": counts[name]["images"], "duplicated_in": {
        source: counts[name]["duplicated_in"].get(source, 0) for source in audited}}
        for name, _ in folders}


def _probes(
    props: ImageProperties, y: np.ndarray, split: np.ndarray, n_classes: int, n_boot: int,
    leaked: np.ndarray,
) -> list[ProbeResult]:
    if not (split == "test").any():
        raise BraincamError("the split has no test images; use --split dedup or --split random")
    try:
        return run_probes(props, y, split, n_classes, n_boot=n_boot, leaked=leaked)
    except ValueError as exc:
        raise BraincamError(str(exc)) from None


def _counts(split: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    return {s: {c: int(((split == s) & (labels == c)).sum()) for c in classes}
            for s in ("train", "val", "test") if (split == s).any()}


def _roots_of(props: ImageProperties, roots: Sequence[Path | str]) -> dict[Path, Path]:
    """Each record path -> the dataset root above it (paths in the JSON are shown relative
    to their root's parent, e.g. ``sartaj-brain-tumor-mri/Testing/no_tumor/1.jpg``)."""
    resolved = [Path(os.path.abspath(r)) for r in roots]
    out = {}
    for r in props.records:
        root = next((root for root in resolved if r.path.is_relative_to(root)), None)
        if root is not None:
            out[r.path] = root.parent
    return out


def _write(
    out: Path, audit: DataAudit, props: ImageProperties, labels: np.ndarray, split: np.ndarray,
    groups: np.ndarray, grid_groups: list[list[int]],
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    table = props.table.copy()
    table.insert(0, "path", [r.key for r in props.records])
    table.insert(1, "source", [r.source for r in props.records])
    table.insert(2, "split", split)
    table.insert(3, "label", labels)
    table.insert(4, "original_label", [r.label for r in props.records])
    table.insert(5, "group", groups)
    atomic_write_csv(out / "properties.csv", table)
    write_skipped_csv(audit.skipped, out / SKIPPED_CSV)
    save_property_histograms(out / "property_histograms.png", props.table, labels,
                             audit.classes, audit.properties)
    save_probe_chart(out / "probe_auc.png", audit.probes, rules.THRESHOLDS.probe_warning_auc)
    written = [out / n for n in ("properties.csv", SKIPPED_CSV, "property_histograms.png",
                                 "probe_auc.png")]
    if save_duplicate_grid(out / "duplicate_grid.png", props.records, labels, split,
                           grid_groups, props.phashes):
        written.append(out / "duplicate_grid.png")
    atomic_write_json(out / DATA_AUDIT_JSON, audit.to_dict())
    return [out / DATA_AUDIT_JSON, *written]
