"""``braincam train DATA... --out RUN``: train a classifier into a run directory, then
evaluate it (test split, leak-free subset, extra datasets given with ``--data``)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from braincam.commands.training_options import (
    DataDirs,
    ExtraAlias,
    ExtraData,
    Progress,
    merged,
    train_config,
    with_training_options,
)
from braincam.train.options import RUNTIME


@with_training_options()
def command(
    ctx: typer.Context,
    data: DataDirs,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.",
                                      show_default=False)],
    extra: ExtraData = None,
    extra_alias: ExtraAlias = None,
    evaluate: Annotated[
        bool, typer.Option("--evaluate/--no-evaluate", help="Evaluate the model after training.",
                           rich_help_panel=RUNTIME),
    ] = True,
    compile: Annotated[
        bool, typer.Option("--compile/--no-compile",
                           help="torch.compile the phase-2 training step (faster on GPUs after "
                           "a compilation of a minute or so).", rich_help_panel=RUNTIME)
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing run directory.",
                           rich_help_panel=RUNTIME)
    ] = False,
    progress: Progress = True,
    **options: Any,
) -> None:
    """Train a tumour classifier on DATA into the run directory OUT, then evaluate it.

    Runs under torchrun --nproc_per_node=N too (one process per GPU); process 0 writes and
    evaluates.
    """
    from braincam import distributed
    from braincam.commands.evaluate import metrics_lines
    from braincam.evaluate import evaluate_run
    from braincam.runs import check_dataset_folders
    from braincam.train import train_run

    config = train_config(ctx.params)
    extra = merged(extra, extra_alias)
    config.validate()  # the options first, then the folders: both before any training
    check_dataset_folders(out, [*data, *extra])
    result = train_run(data, config, out, force=force, progress=progress,
                       command=command_line(ctx), compile=compile)
    distributed.shutdown()  # the other processes exit here; process 0 evaluates alone
    counts = result.counts
    typer.echo(
        f"classes: {', '.join(result.classes)}; images train {counts['train']}, "
        f"val {counts['val']}, test {counts['test']}"
    )
    best = result.best_val_balanced_accuracy
    typer.echo(
        f"best: {result.best_phase} epoch {result.best_epoch}"
        + (f", validation balanced accuracy {best:.3f}" if best is not None else "")
        + f"; trained in {result.seconds / 60:.1f} min"
    )
    if evaluate and (counts["test"] or extra):
        metrics = evaluate_run(out, extra, force=True, device=config.device, progress=progress)
        for line in metrics_lines(metrics):
            typer.echo(line)
    elif evaluate:
        typer.echo("warning: no test images and no --data: nothing evaluated (metrics.json "
                   "not written)", err=True)
    typer.echo(f"wrote {out}")


def command_line(ctx: typer.Context) -> str:
    """The command with every option spelt out (defaults included), for config.yaml: it
    reproduces the run even if defaults change."""
    parts = ["braincam", ctx.info_name or "train"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.param_type_name == "argument":
            parts += [str(v) for v in value]
        elif getattr(param, "is_flag", False):
            names = param.opts if value else param.secondary_opts
            parts += names[:1]
        elif param.multiple:
            for item in value or ():
                parts += [param.opts[0], str(item)]
        elif value is not None:
            parts += [param.opts[0], str(value)]
    return shlex.join(parts)
