"""``braincam run DATA... --out RUN``: the whole pipeline (data audit, training, evaluation,
explanations, model audit, report) in one resumable command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from braincam.commands.training_options import (
    Arch,
    AttentionPenalty,
    AttentionSource,
    Augment,
    AverageWeights,
    BatchSize,
    ContrastRemap,
    CounterfactualPairs,
    Crop,
    DataDirs,
    Device,
    Dropout,
    FinetuneEpochs,
    FinetuneLr,
    FinetuneStages,
    HeadEpochs,
    HeadLr,
    ImageSize,
    MaskBackground,
    MaskReward,
    MaskSkull,
    NumWorkers,
    Patience,
    SplitSeed,
    Standardize,
    Subtypes,
    Task,
    TestFraction,
    UpweightErrors,
    ValFraction,
    Weights,
    train_config,
)

METHODS_HELP = ("Explanation methods, comma-separated (gradcam, gradcam++, xgradcam, hirescam, "
                "layercam, scorecam, ablationcam, eigencam, ig, occlusion); the model audit "
                "uses them too.")


def command(
    ctx: typer.Context,
    data: DataDirs,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (created or resumed).")],
    task: Task = "binary",
    arch: Arch = "resnet50",
    weights: Weights = "imagenet",
    split: Annotated[
        str,
        typer.Option(help="dedup (near duplicates never straddle splits), official (the "
                     "dataset's Training/Testing) or random."),
    ] = "dedup",
    extra: Annotated[
        list[Path] | None,
        typer.Option("--extra", help="Extra dataset folder for cross-dataset evaluation, "
                     "explanation and audit; repeatable."),
    ] = None,
    methods: Annotated[str, typer.Option(help=METHODS_HELP)] = "gradcam",
    explain_cap: Annotated[
        int, typer.Option(help="Images audited and explained per dataset (test split, each "
                          "--extra), chosen at random (seeded).")
    ] = 100,
    region: Annotated[
        list[str] | None,
        typer.Option("--region", help="NAME=x0,y0,x1,y1: a box (fractions of the model input) "
                     "whose CAM energy the model audit reports, e.g. marker=0,0,0.12,0.12; "
                     "repeatable. Meaningful with --no-crop."),
    ] = None,
    image_size: ImageSize = 224,
    head_epochs: HeadEpochs = 15,
    finetune_epochs: FinetuneEpochs = 10,
    finetune_stages: FinetuneStages = None,
    head_lr: HeadLr = 1e-3,
    finetune_lr: FinetuneLr = 3e-4,
    batch_size: BatchSize = 32,
    patience: Patience = 10,
    val_fraction: ValFraction = 0.15,
    test_fraction: TestFraction = 0.2,
    augment: Augment = True,
    contrast_remap: ContrastRemap = 0.0,
    subtypes: Subtypes = True,
    average_weights: AverageWeights = True,
    upweight_errors: UpweightErrors = 1,
    crop: Crop = True,
    standardize: Standardize = "none",
    mask_background: MaskBackground = False,
    mask_skull: MaskSkull = False,
    dropout: Dropout = 0.3,
    attention_penalty: AttentionPenalty = 0.0,
    attention_source: AttentionSource = "gradcam",
    mask_reward: MaskReward = 0.0,
    counterfactual_pairs: CounterfactualPairs = False,
    n_boot: Annotated[
        int, typer.Option(help="Bootstrap resamples for the 95% intervals (0: none).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the split, training and sampling.")] = 0,
    split_seed: SplitSeed = None,
    device: Device = "auto",
    num_workers: NumWorkers = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Reuse OUT although it was made with other options "
                           "(the affected stages are redone).")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars inside stages.")
    ] = True,
) -> None:
    """Audit the data, train, evaluate, explain, audit the model and write the report into
    OUT; a re-run skips the stages that are done."""
    from rich.console import Console

    from braincam.commands.train import command_line
    from braincam.pipeline import PipelineOptions, print_summary, run_pipeline

    config = train_config(ctx.params)
    options = PipelineOptions(
        train=config, extra=extra or [], methods=parse_methods(methods),
        explain_cap=explain_cap, n_boot=n_boot, regions=parse_regions(region or []),
        progress=progress, command=command_line(ctx),
    )
    console = Console()
    result = run_pipeline(data, options, out, force=force, console=console)
    print_summary(result, console)


def parse_methods(text: str) -> tuple[str, ...]:
    """``"gradcam, ig"`` -> ``("gradcam", "ig")`` (order kept, repeats dropped)."""
    return tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))


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
