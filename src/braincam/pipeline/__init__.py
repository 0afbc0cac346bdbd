"""The one-command pipeline (``braincam run``), the phantom demo and run comparison.

``run_pipeline(roots, options, out_dir)`` runs data audit -> train -> evaluate -> explain ->
model audit -> report into one run directory, resumable stage by stage (see
:mod:`braincam.pipeline.run` and :mod:`braincam.pipeline.stages`).
"""

from braincam.pipeline.compare import Comparison, compare_runs, write_comparison
from braincam.pipeline.demo import DemoResult, DemoSettings, run_demo
from braincam.pipeline.options import EXPLAIN_CAP, PipelineOptions
from braincam.pipeline.run import STAGES, PipelineResult, StageOutcome, run_pipeline
from braincam.pipeline.summary import print_summary

__all__ = [
    "EXPLAIN_CAP",
    "STAGES",
    "Comparison",
    "DemoResult",
    "DemoSettings",
    "PipelineOptions",
    "PipelineResult",
    "StageOutcome",
    "compare_runs",
    "print_summary",
    "run_demo",
    "run_pipeline",
    "write_comparison",
]
