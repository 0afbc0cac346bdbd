"""``braincam report RUN``: rebuild a run's self-contained HTML report and print its path."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    run: Annotated[Path, typer.Argument(help="Run directory (from `braincam train` or `run`).")],
    open_path_only: Annotated[
        bool,
        typer.Option(
            "--open-path-only",
            help="Do not rebuild: print the path of the existing report (for `xdg-open "
            "$(braincam report RUN --open-path-only)`); an error if there is none yet.",
        ),
    ] = False,
) -> None:
    """Rebuild RUN/report.html from whatever the run holds and print its path.

    The path goes to stdout alone (scriptable); a one-line summary of findings and
    stages not run yet goes to stderr.
    """
    from braincam.errors import BraincamError
    from braincam.runs import RunDir

    path = RunDir(Path(run)).report
    if open_path_only:
        if not path.is_file():
            raise BraincamError(f"{path} does not exist yet; run `braincam report {run}` first")
        typer.echo(str(path))
        return
    from braincam.report.build import collect_report, write_report

    context = collect_report(Path(run))
    written = write_report(context, Path(run))
    typer.echo(context.summary, err=True)
    typer.echo(str(written))
