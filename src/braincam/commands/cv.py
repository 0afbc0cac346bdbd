"""``braincam cv DATA... --folds K --out CV``: grouped K-fold cross-validation of a training
recipe on training data (:mod:`braincam.train.cv`), for choosing options without a test set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from braincam.commands.train import command_line
from braincam.commands.training_options import (
    DataDirs,
    ExtraData,
    Progress,
    given,
    train_config,
    with_training_options,
)
from braincam.train.options import RUNTIME


@with_training_options()
def command(
    ctx: typer.Context,
    data: DataDirs,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the folds and cv.json.",
                                      show_default=False)],
    folds: Annotated[int, typer.Option(help="Number of grouped folds.")] = 5,
    extra: ExtraData = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redo an existing cv.json and replace folds trained "
                           "with other settings.", rich_help_panel=RUNTIME),
    ] = False,
    progress: Progress = True,
    **options: Any,
) -> None:
    """Cross-validate a training recipe on K grouped folds of training data.

    Trains and evaluates the recipe on each fold of DATA (duplicate and patient groups kept
    whole), then writes CV/cv.json with the mean and standard deviation over folds. DATA must
    be training data (e.g. DATA/Training): a dataset's official test folder is refused. The
    folds are the split (--split and --test-fraction are refused); --seed or --split-seed
    fixes them, so recipes cross-validated with the same seed share their folds."""
    from braincam.commands.evaluate import score_text
    from braincam.errors import BraincamError
    from braincam.train.cv import cross_validate

    for name in ("split", "test_fraction"):
        if given(ctx, name):
            raise BraincamError(f"--{name.replace('_', '-')} does not apply to braincam cv: "
                                "its folds are the split (--folds, --split-seed)")
    config = train_config(ctx.params)
    result = cross_validate(data, config, out, folds=folds, extra=extra or [], force=force,
                            progress=progress, command=command_line(ctx))
    for row in result.folds:
        test = row["scores"].get("test", {})
        typer.echo(f"fold {row['fold']}{' (kept)' if row['kept'] else ''}: "
                   f"bal.acc {score_text(test.get('balanced_accuracy'))}, "
                   f"AUC {score_text(test.get('auc'))}")
    for name, figures in result.summary.items():
        bal, auc = figures["balanced_accuracy"], figures["auc"]
        typer.echo(f"{name}: bal.acc {score_text(bal['mean'])} +- {score_text(bal['sd'])}, "
                   f"AUC {score_text(auc['mean'])} +- {score_text(auc['sd'])} ({bal['n']} folds)")
    typer.echo(f"wrote {out / 'cv.json'}")
