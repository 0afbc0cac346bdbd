"""``braincam train DATA... --out RUN``: train a classifier into a run directory, then
evaluate it (test split, leak-free subset, optional extra datasets)."""

from __future__ import annotations

import shlex
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


def command(
    ctx: typer.Context,
    data: DataDirs,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")],
    task: Task = "binary",
    arch: Arch = "resnet50",
    weights: Weights = "imagenet",
    split: Annotated[
        str,
        typer.Option(
            help="official (the dataset's Training/Testing), random (stratified) or dedup "
            "(no duplicate group straddles splits)."
        ),
    ] = "official",
    head_epochs: HeadEpochs = 15,
    finetune_epochs: FinetuneEpochs = 10,
    finetune_stages: FinetuneStages = None,
    head_lr: HeadLr = 1e-3,
    finetune_lr: FinetuneLr = 3e-4,
    batch_size: BatchSize = 32,
    image_size: ImageSize = 224,
    standardize: Standardize = "none",
    mask_background: MaskBackground = False,
    mask_skull: MaskSkull = False,
    crop: Crop = True,
    attention_penalty: AttentionPenalty = 0.0,
    attention_source: AttentionSource = "gradcam",
    mask_reward: MaskReward = 0.0,
    counterfactual_pairs: CounterfactualPairs = False,
    val_fraction: ValFraction = 0.15,
    test_fraction: TestFraction = 0.2,
    patience: Patience = 10,
    augment: Augment = True,
    contrast_remap: ContrastRemap = 0.0,
    subtypes: Subtypes = True,
    average_weights: AverageWeights = True,
    upweight_errors: UpweightErrors = 1,
    seed: Annotated[int, typer.Option(help="Seed of the split, initialisation and batches.")] = 0,
    split_seed: SplitSeed = None,
    device: Device = "auto",
    num_workers: NumWorkers = 0,
    dropout: Dropout = 0.3,
    compile: Annotated[
        bool, typer.Option("--compile/--no-compile",
                           help="torch.compile the phase-2 training step (faster on GPUs "
                           "after a compilation of a minute or so).")
    ] = False,
    extra: Annotated[
        list[Path] | None,
        typer.Option("--extra", help="Extra dataset folder evaluated after training; repeatable."),
    ] = None,
    evaluate: Annotated[
        bool,
        typer.Option("--evaluate/--no-evaluate", help="Evaluate the model after training."),
    ] = True,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing run directory.")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = True,
) -> None:
    """Train a tumour classifier on DATA into the run directory OUT. Runs under
    ``torchrun --nproc_per_node=N`` too (one process per GPU); process 0 writes and evaluates."""
    from braincam import distributed
    from braincam.commands.evaluate import metrics_lines
    from braincam.evaluate import evaluate_run
    from braincam.train import train_run

    config = train_config(ctx.params)
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
        metrics = evaluate_run(out, extra or [], force=True, device=device, progress=progress)
        for line in metrics_lines(metrics):
            typer.echo(line)
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
