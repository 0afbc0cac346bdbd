"""The ``braincam`` command line: a thin layer over the library.

Each command lives in ``braincam.commands.<name>`` and is registered here. A
:class:`~braincam.errors.BraincamError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import logging
import sys

import typer

from braincam.commands import (
    audit,
    audit_data,
    bench,
    compare,
    demo,
    evaluate,
    explain,
    info,
    report,
    run,
    train,
)
from braincam.errors import BraincamError

app = typer.Typer(
    name="braincam",
    help="Train brain-MRI tumour classifiers, explain them, and audit them for shortcuts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("info")(info.command)
app.command("train")(train.command)
app.command("evaluate")(evaluate.command)
app.command("explain")(explain.command)
app.command("audit-data")(audit_data.command)
app.command("audit")(audit.command)
app.command("run")(run.command)
app.command("demo")(demo.command)
app.command("report")(report.command)
app.command("compare")(compare.command)
app.add_typer(bench.app, name="bench")


def main() -> None:
    """Entry point. Typer's standalone mode prints usage errors in one line and exits;
    a :class:`BraincamError` from a command becomes ``error: <message>``, exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        app()
    except BraincamError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
