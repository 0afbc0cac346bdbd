"""The pipeline's closing summary in the terminal: key metrics, top findings, report path."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from braincam.audit.findings import Finding
from braincam.pipeline.run import PipelineResult

TOP_FINDINGS = 5
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "dim"}


def metrics_table(metrics: dict[str, Any] | None) -> Table | None:
    """One row per evaluated set (test, leak-free test, each extra dataset): n, accuracy,
    balanced accuracy and AUC in percent, with 95% intervals where the evaluation computed
    them (``90.6 [81, 100]``)."""
    if not metrics:
        return None
    from braincam.evaluate.run import extra_rows

    own = [("test", metrics.get("test")), ("test, leak-free", metrics.get("test_leak_free"))]
    extra = [(name, m) for name, _, m in extra_rows(metrics)]
    table = Table(title="metrics in % [95% bootstrap interval]; extra datasets below the line",
                  title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("set", no_wrap=True)
    for column in ("n", "accuracy", "balanced accuracy", "AUC"):
        table.add_column(column, justify="right")
    for rows in (own, extra):
        for name, m in rows:
            if m:
                table.add_row(name, str(m.get("n", "-")), *(
                    _with_ci(m, key) for key in ("accuracy", "balanced_accuracy", "auc")))
        if rows is own and extra:
            table.add_section()
    return table


def findings_lines(findings: list[Finding], top: int = TOP_FINDINGS) -> list[str]:
    """Rich markup lines for the ``top`` most severe findings (info ones only when nothing
    worse was found)."""
    serious = [f for f in findings if f.severity != "info"] or findings
    lines = [f"[{SEVERITY_STYLE[f.severity]}]{f.severity:8}[/] "
             f"{escape(f.check)}: {escape(f.message)}" for f in serious[:top]]
    if len(serious) > top:
        lines.append(f"... and {len(serious) - top} more in the report")
    return lines or ["no findings"]


def print_summary(result: PipelineResult, console: Console, findings: bool = True) -> None:
    """Stages run/skipped, the metrics table, the top findings (unless ``findings`` is
    False) and the report's path."""
    ran = [s.name for s in result.stages if s.status == "ran"]
    skipped = len(result.stages) - len(ran)
    console.rule("summary", align="left")
    console.print(f"stages: {len(ran)} ran, {skipped} skipped; {result.seconds:.1f} s")
    table = metrics_table(result.metrics)
    if table is not None:
        console.print(table)
    if findings:
        console.print("top findings:")
        for line in findings_lines(result.findings):
            console.print(f"  {line}", highlight=False)
    console.print(f"report: {result.report}", highlight=False, soft_wrap=True)


def _with_ci(m: dict[str, Any], key: str) -> str:
    value = m.get(key)
    if value is None:
        return "-"
    ci = (m.get("ci") or {}).get(key)
    text = f"{100 * value:.1f}"
    return f"{text} [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else text
