"""``braincam run DATA... --out RUN``: the whole pipeline (data audit, training, evaluation,
explanations, model audit, report) in one resumable command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from braincam.commands.train import ATTENTION_PENALTY_HELP, ATTENTION_SOURCE_HELP

METHODS_HELP = ("Explanation methods, comma-separated (gradcam, gradcam++, xgradcam, hirescam, "
                "layercam, scorecam, ablationcam, eigencam, ig, occlusion); the model audit "
                "uses them too.")


def command(
    ctx: typer.Context,
    data: Annotated[
        list[Path],
        typer.Argument(help="Dataset folder(s): ROOT/<class>/ or ROOT/<split>/<class>/."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (created or resumed).")],
    task: Annotated[
        str, typer.Option(help="binary (tumor vs no_tumor) or multiclass (the classes present).")
    ] = "binary",
    arch: Annotated[
        str, typer.Option(help="resnet50, efficientnet_lite0 or another timm model name.")
    ] = "resnet50",
    weights: Annotated[
        str, typer.Option(help="imagenet, none (random init) or PATH to a checkpoint.")
    ] = "imagenet",
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
    image_size: Annotated[int, typer.Option(help="Model input side in pixels.")] = 224,
    head_epochs: Annotated[
        int, typer.Option(help="Phase 1 epochs: the head on backbone features computed once.")
    ] = 15,
    finetune_epochs: Annotated[
        int, typer.Option(help="Phase 2 epochs: last stage(s) + head, augmented.")
    ] = 5,
    head_lr: Annotated[float, typer.Option(help="Phase 1 learning rate.")] = 1e-3,
    finetune_lr: Annotated[float, typer.Option(help="Phase 2 learning rate.")] = 3e-4,
    batch_size: Annotated[int, typer.Option(help="Images per training batch.")] = 32,
    patience: Annotated[
        int, typer.Option(help="Early stopping: epochs without a better validation score.")
    ] = 3,
    val_fraction: Annotated[
        float, typer.Option(help="Share of the training pool held out for validation.")
    ] = 0.15,
    test_fraction: Annotated[
        float, typer.Option(help="Share held out for testing (random/dedup splits).")
    ] = 0.2,
    augment: Annotated[
        bool, typer.Option("--augment/--no-augment", help="Augment phase-2 batches.")
    ] = True,
    crop: Annotated[
        bool, typer.Option("--crop/--no-crop", help="Crop images to the head's bounding box.")
    ] = True,
    standardize: Annotated[
        str,
        typer.Option(help="Intensity standardisation: none, minmax, zscore-in-mask, percentile "
                     "or histmatch."),
    ] = "none",
    mask_background: Annotated[
        bool, typer.Option("--mask-background", help="Set pixels outside the head mask to 0 "
                           "(a mitigation).")
    ] = False,
    attention_penalty: Annotated[float, typer.Option(help=ATTENTION_PENALTY_HELP)] = 0.0,
    attention_source: Annotated[str, typer.Option(help=ATTENTION_SOURCE_HELP)] = "gradcam",
    n_boot: Annotated[
        int, typer.Option(help="Bootstrap resamples for the 95% intervals (0: none).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the split, training and sampling.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    num_workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
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
    from braincam.data.preprocess import PreprocessConfig
    from braincam.pipeline import PipelineOptions, print_summary, run_pipeline
    from braincam.train import TrainConfig

    config = TrainConfig(
        task=task, arch=arch, weights=weights, split=split, val_fraction=val_fraction,
        test_fraction=test_fraction, seed=seed, head_epochs=head_epochs,
        finetune_epochs=finetune_epochs, head_lr=head_lr, finetune_lr=finetune_lr,
        batch_size=batch_size, patience=patience, augment=augment, device=device,
        num_workers=num_workers, attention_penalty=attention_penalty,
        attention_source=attention_source,
        preprocess=PreprocessConfig(size=image_size, crop=crop, standardize=standardize,
                                    mask_background=mask_background),
    )
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
