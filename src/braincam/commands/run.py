"""``braincam run DATA... --guide SEG --out RUN``: the whole pipeline (data audit, training,
evaluation, explanations, model audit, report) in one resumable command. It trains the grounded
recipe unless ``--plain`` (:func:`braincam.pipeline.options.run_recipe`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from braincam.commands.training_options import (
    DataDirs,
    ExtraAlias,
    ExtraData,
    Progress,
    given,
    merged,
    parse_methods,
    train_config,
    with_training_options,
)
from braincam.train.options import REMEDIES, RUNTIME

AUDIT = "Explanation and audit"
METHODS_HELP = ("Explanation methods, comma-separated (gradcam, gradcam++, xgradcam, hirescam, "
                "layercam, scorecam, ablationcam, eigencam, ig, occlusion); the model audit "
                "uses them too.")


@with_training_options(split="dedup")
def command(
    ctx: typer.Context,
    data: DataDirs,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (created or resumed).",
                                      show_default=False)],
    extra: ExtraData = None,
    extra_alias: ExtraAlias = None,
    methods: Annotated[str, typer.Option(help=METHODS_HELP, rich_help_panel=AUDIT)] = "gradcam",
    explain_cap: Annotated[
        int, typer.Option(help="Images audited and explained per dataset (test split, each "
                          "--data folder), chosen at random (seeded).", rich_help_panel=AUDIT)
    ] = 100,
    region: Annotated[
        list[str] | None,
        typer.Option("--region", help="NAME=x0,y0,x1,y1: a box (fractions of the model input) "
                     "whose CAM energy the model audit reports, e.g. marker=0,0,0.12,0.12; "
                     "repeatable. Meaningful with --no-crop.", rich_help_panel=AUDIT,
                     show_default=False),
    ] = None,
    n_boot: Annotated[
        int, typer.Option(help="Bootstrap resamples for the 95% intervals (0: none).",
                          rich_help_panel=AUDIT)
    ] = 1000,
    plain: Annotated[
        bool, typer.Option("--plain", help="The plain recipe: no segmenter guide, the training "
                           "options as given. Without it the run is grounded and needs --guide, "
                           "and unless given --finetune-epochs is 0 (the head alone on the "
                           "gated features), --guide-views on, --guide-cut 0.05 and "
                           "--head-average 5; a segmenter trained on --guide dataset folders "
                           "gets --guide-weak-labels, --guide-epochs 8 and "
                           "--guide-freeze-blocks 2.",
                           rich_help_panel=REMEDIES)
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Reuse OUT although it was made with other options "
                           "(the affected stages are redone).", rich_help_panel=RUNTIME)
    ] = False,
    progress: Progress = True,
    **options: Any,
) -> None:
    """Audit the data, train, evaluate, explain, audit the model and write the report.

    The classifier is grounded by default: a tumour segmenter (--guide) decides where it looks;
    --plain trains without one. Everything goes into the run directory OUT; a re-run skips the
    stages that are done.
    """
    from rich.console import Console

    from braincam.commands.train import command_line
    from braincam.pipeline import PipelineOptions, print_summary, run_pipeline
    from braincam.pipeline.options import RECIPE_OPTIONS, run_recipe

    config = run_recipe(train_config(ctx.params), plain,
                        given={name for name in RECIPE_OPTIONS
                                if given(ctx, name, ("COMMANDLINE", "ENVIRONMENT"))})
    # config.yaml's command reproduces the recipe
    ctx.params |= {name: getattr(config, name) for name in RECIPE_OPTIONS}
    options = PipelineOptions(
        train=config, extra=merged(extra, extra_alias), methods=parse_methods(methods),
        explain_cap=explain_cap, n_boot=n_boot, regions=parse_regions(region or []),
        progress=progress, command=command_line(ctx),
    )
    console = Console()
    result = run_pipeline(data, options, out, force=force, console=console)
    print_summary(result, console)


def parse_regions(texts: list[str]) -> dict[str, tuple[float, ...]]:
    """``["marker=0,0,0.12,0.12"]`` -> ``{"marker": (0.0, 0.0, 0.12, 0.12)}``."""
    from braincam.errors import BraincamError

    regions = {}
    for text in texts:
        name, _, box = text.partition("=")
        try:
            values = tuple(float(v) for v in box.split(","))
        except ValueError:
            values = ()
        if not name.strip() or len(values) != 4:
            raise BraincamError(f"--region {text!r}: expected NAME=x0,y0,x1,y1")
        regions[name.strip()] = values
    return regions
