"""``build_report(run_dir)``: everything a run holds, in one self-contained HTML file.

The report opens with a verdict (:mod:`braincam.report.verdict`: does the model's skill come
from the tumour or from a shortcut, and which numbers say so), then the findings, grouped and
most severe first. It is collected into typed sections (one module each), rendered with the
Jinja2 template ``templates/report.html`` and written atomically to
``RunDir.report``. Every picture is a ``data:`` URI and the CSS is inline; a
Content-Security-Policy (``default-src 'none'; img-src data:``) makes the browser
refuse anything else, so the file opens the same offline, mailed or archived.
Missing or broken parts are reported in the page ("not run"), never raised. A segment run
(``braincam segment``) gets a page of its own, ``templates/segment.html``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from braincam.errors import BraincamError
from braincam.models.segment import is_segment_run
from braincam.report import fmt
from braincam.report.data_audit import DataAuditSection, collect_data_audit
from braincam.report.findings import ReportFinding, severity_counts, sort_findings
from braincam.report.gallery import GallerySection, collect_gallery
from braincam.report.metrics import MetricsSection, collect_metrics
from braincam.report.model_audit import ModelAuditSection, collect_model_audit
from braincam.report.overview import OverviewSection, collect_overview
from braincam.report.segmenter import (
    SegmenterReport,
    collect_segmenter_report,
    is_score_folder,
)
from braincam.report.settings import SettingsSection, collect_settings
from braincam.report.sources import (
    NOT_APPLICABLE,
    NOT_RUN,
    UNREADABLE,
    Part,
    read_json_part,
    read_yaml_part,
)
from braincam.report.training import TrainingSection, collect_training
from braincam.report.tumour import TumourSection, collect_tumour
from braincam.report.verdict import Verdict, collect_verdict
from braincam.runs import RunDir, atomic_write_text

TEMPLATE = "report.html"


@dataclass
class ReportContext:
    """Everything the template shows, section by section."""

    run_name: str
    summary: str
    verdict: Verdict
    findings: list[ReportFinding]
    severity_counts: dict[str, int]
    dropped_findings: int
    missing: list[Part]
    overview: OverviewSection
    data_audit: DataAuditSection
    training: TrainingSection
    metrics: MetricsSection
    gallery: GallerySection
    model_audit: ModelAuditSection
    tumour: TumourSection
    settings: SettingsSection

    @property
    def template(self) -> str:
        return TEMPLATE


def collect_report(run_dir: Path) -> ReportContext | SegmenterReport:
    """Read every part of the run; BraincamError only when ``run_dir`` is not a run. A segment
    run gets its own report (:mod:`braincam.report.segmenter`)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise BraincamError(f"{root} is not a directory")
    if is_segment_run(root) or is_score_folder(root):
        return collect_segmenter_report(root)
    run = RunDir(root)
    markers = [path for path in run.files if path != run.report]  # the report's inputs
    if not any(path.exists() for path in markers):
        raise BraincamError(f"{root} does not look like a braincam run "
                            f"(none of {', '.join(path.name for path in markers)})")
    overview, data_audit = collect_overview(run), collect_data_audit(run)
    model_audit = collect_model_audit(run)
    training, metrics = collect_training(run), collect_metrics(run)
    gallery, settings = collect_gallery(run), collect_settings(run)
    findings = sort_findings(data_audit.findings + model_audit.findings)
    kind, never = _kind(run)
    tumour = collect_tumour(run)
    for section, attribute in ((overview, "split_part"), (overview, "skipped_part"),
                               (data_audit, "part"), (training, "part"), (metrics, "part"),
                               (gallery, "part"), (model_audit, "part"), (settings, "part"),
                               (tumour, "part")):
        part = getattr(section, attribute)  # marked where it is shown, and in the summary
        if part.name in never:
            setattr(section, attribute, part.not_applicable(never[part.name]))
    if model_audit.part.status == NOT_APPLICABLE:  # no check to list as "not run" either
        model_audit.checks = []
    parts = [
        overview.split_part, overview.skipped_part, data_audit.part, training.part,
        metrics.part, gallery.part, model_audit.part, settings.part,
    ]
    missing = [p for p in parts if not p.ok]
    if tumour.part.status == UNREADABLE:  # without masks it is never made: named if broken
        missing.append(tumour.part)
    counts = severity_counts(findings)
    verdict = collect_verdict(read_json_part(run, run.metrics, "metrics")[1],
                              read_json_part(run, run.audit_json, "model audit")[1],
                              [f.finding for f in model_audit.findings + data_audit.findings],
                              ensemble=kind == "ensemble")
    return ReportContext(
        run_name=root.resolve().name,
        summary=_summary(counts, missing),
        verdict=verdict,
        findings=findings,
        severity_counts=counts,
        dropped_findings=data_audit.dropped_findings + model_audit.dropped_findings,
        missing=missing,
        overview=overview,
        data_audit=data_audit,
        training=training,
        metrics=metrics,
        gallery=gallery,
        model_audit=model_audit,
        tumour=tumour,
        settings=settings,
    )


def render_report(context: ReportContext | SegmenterReport) -> str:
    """The HTML text of the report."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("braincam.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=fmt.num, with_ci=fmt.with_ci, pct=fmt.pct, label=fmt.label,
                       text=fmt.text)
    return env.get_template(context.template).render(r=context)


def build_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` (atomically) and return its path."""
    return write_report(collect_report(Path(run_dir)), Path(run_dir))


def write_report(context: ReportContext | SegmenterReport, run_dir: Path) -> Path:
    """Render ``context`` into ``run_dir/report.html``, atomically; return the path."""
    path = RunDir(Path(run_dir)).report
    atomic_write_text(path, render_report(context))
    return path


ENSEMBLE_NEVER = {  # part name -> why an ensemble never has it
    "skipped files": "an ensemble reads its members' images: see their runs",
    "training history": "an ensemble is not trained: see its members' runs",
    "CAM gallery": "explanations need one model: explain a member",
    "model audit": "audits need one model: audit a member",
    "tumour examples": "audits need one model: audit a member",
}
SPEC_NEVER = {  # part name -> why a model spec's output folder never has it
    "data split": "a model spec's model was trained elsewhere",
    "skipped files": "a model spec's unreadable images are listed by each stage",
    "training history": "a model spec's model was trained elsewhere",
    "run settings": "a model spec is the settings: see the spec file",
}


def _kind(run: RunDir) -> tuple[str, dict[str, str]]:
    """``("ensemble" | "spec" | "run", the parts such a folder never has)``: an ensemble's
    ``config.yaml`` lists its ``members``; a spec's stages record the ``model`` they scored."""
    config = read_yaml_part(run, run.config, "run settings")[1] or {}
    if "members" in config:
        return "ensemble", ENSEMBLE_NEVER
    for path, name in ((run.metrics, "metrics"), (run.audit_json, "model audit")):
        doc = read_json_part(run, path, name)[1] or {}
        if isinstance(doc.get("model"), dict) and "spec" in doc["model"]:
            return "spec", SPEC_NEVER
    return "run", {}


def _summary(counts: dict[str, int], missing: list[Part]) -> str:
    n = sum(counts.values())
    text = f"{n} finding{'' if n == 1 else 's'}: " + ", ".join(
        f"{k} {v}" for k, v in counts.items()
    ) + "."
    not_run = [p.name for p in missing if p.status == NOT_RUN]
    if not_run:
        text += f" Not run yet: {', '.join(not_run)}."
    unreadable = [p.name for p in missing if p.status == UNREADABLE]
    if unreadable:
        text += f" Unreadable: {', '.join(unreadable)}."
    return text
