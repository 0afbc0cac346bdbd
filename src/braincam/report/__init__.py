"""The HTML report of a run: :func:`build_report` collects every stage's output into one
self-contained file (see :mod:`braincam.report.build`)."""

from braincam.report.build import build_report, collect_report, render_report

__all__ = ["build_report", "collect_report", "render_report"]
