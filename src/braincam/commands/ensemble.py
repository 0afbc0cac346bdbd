"""``braincam ensemble RUN RUN... --out DIR``: several trained runs scored as one model (the
mean of their probabilities), written as a run directory and evaluated like one."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from braincam.commands.training_options import Device, ExtraAlias, ExtraData, Progress, merged


def command(
    runs: Annotated[
        list[Path], typer.Argument(help="Run directories written by `braincam train` (two or "
                                        "more: same data, classes and test split).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Ensemble run directory to create.")],
    extra: ExtraData = None,
    extra_alias: ExtraAlias = None,
    evaluate: Annotated[
        bool, typer.Option("--evaluate/--no-evaluate", help="Evaluate the ensemble.")
    ] = True,
    device: Device = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing directory.")
    ] = False,
    progress: Progress = True,
) -> None:
    """Average the predictions of RUNS (a deep ensemble) into the run directory OUT.

    Its model.safetensors holds every member, and evaluate and report read it like any run.
    """
    from braincam.commands.evaluate import metrics_lines
    from braincam.evaluate import evaluate_run
    from braincam.evaluate.ensemble import make_ensemble

    extra = merged(extra, extra_alias) if evaluate else []
    made = make_ensemble(runs, out, force=force, command=shlex.join(["braincam", *sys.argv[1:]]),
                         extra=extra)
    typer.echo(f"ensemble of {len(runs)} runs in {made.root}")
    if evaluate:
        metrics = evaluate_run(out, extra, force=True, device=device, progress=progress)
        for line in metrics_lines(metrics):
            typer.echo(line)
    typer.echo(f"wrote {out}")
