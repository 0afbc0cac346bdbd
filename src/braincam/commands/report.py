"""``braincam report RUN``: rebuild a run's self-contained HTML report and print its path (a
segment run's, or a ``segment --evaluate`` folder's, is the segmenter page).
``braincam report SPEC --out DIR``: the report of what the other commands wrote into DIR for
a model spec (DIR plays the run directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    run: Annotated[Path, typer.Argument(help="Run directory (from `braincam train`, `run` or "
                                        "`segment`, or a `segment --evaluate` folder), or a "
                                        "model spec (.yaml) with --out.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for report.html (default RUN). "
                                  "Required with a model spec: the folder its evaluate, "
                                  "explain and audit wrote into.")
    ] = None,
    open_path_only: Annotated[
        bool,
        typer.Option(
            "--open-path-only",
            help="Do not rebuild: print the path of the existing report (for `xdg-open "
            "$(braincam report RUN --open-path-only)`); an error if there is none yet.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a report.html already in --out (a "
                           "folder other than RUN; RUN's own report is always rebuilt).")
    ] = False,
) -> None:
    """Rebuild RUN/report.html from whatever the run holds and print its path.

    The path goes to stdout alone (scriptable); a one-line summary of findings and
    stages not run yet goes to stderr.
    """
    from braincam.commands.spec_options import spec_output
    from braincam.errors import BraincamError
    from braincam.runs import RunDir, make_folder

    source = spec_output(run, out) or Path(run)
    target = out or source
    path = RunDir(target).report
    if open_path_only:
        if not path.is_file():
            raise BraincamError(f"{path} does not exist yet; run `braincam report {run}` first")
        typer.echo(str(path))
        return
    from braincam.report.build import collect_report, write_report

    if path.is_file() and target.resolve() != source.resolve() and not force:
        raise BraincamError(f"{path} already exists, outside {source}; pass --force to "
                            "replace it")
    context = collect_report(source)
    make_folder(target)
    written = write_report(context, target)
    typer.echo(context.summary, err=True)
    typer.echo(str(written))
