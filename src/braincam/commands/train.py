"""``braincam train DATA... --out RUN``: train a classifier into a run directory, then
evaluate it (test split, leak-free subset, optional extra datasets)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

ATTENTION_PENALTY_HELP = (
    "Weight W of the phase-2 attention penalty (right for the right reasons): loss + W x mean "
    "share of explanation energy outside the head mask; 0 = off. Needs --finetune-epochs >= 1."
)
ATTENTION_SOURCE_HELP = (
    "What the attention penalty measures: gradcam (Grad-CAM of the true class at the default "
    "CAM layer, differentiable) or input-gradient (|d log p / d x|^2 by double backprop: "
    "pixel-exact, 4-5x slower)."
)


def command(
    ctx: typer.Context,
    data: Annotated[
        list[Path],
        typer.Argument(help="Dataset folder(s): ROOT/<class>/ or ROOT/<split>/<class>/."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")],
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
        typer.Option(
            help="official (the dataset's Training/Testing), random (stratified) or dedup "
            "(no duplicate group straddles splits)."
        ),
    ] = "official",
    head_epochs: Annotated[
        int, typer.Option(help="Phase 1 epochs: the head on backbone features computed once.")
    ] = 15,
    finetune_epochs: Annotated[
        int, typer.Option(help="Phase 2 epochs: last stage(s) + head, augmented, BatchNorm frozen.")
    ] = 5,
    finetune_stages: Annotated[
        int | None,
        typer.Option(help="Last stages trained in phase 2 (default: resnet50 1, layer4; "
                     "efficientnet_lite0 4, blocks 3-6 + conv_head)."),
    ] = None,
    head_lr: Annotated[float, typer.Option(help="Phase 1 learning rate (AdamW).")] = 1e-3,
    finetune_lr: Annotated[float, typer.Option(help="Phase 2 learning rate (cosine).")] = 3e-4,
    batch_size: Annotated[
        int, typer.Option(help="Images per training batch (under torchrun: per step, all "
                          "processes together).")
    ] = 32,
    image_size: Annotated[int, typer.Option(help="Model input side in pixels.")] = 224,
    standardize: Annotated[
        str,
        typer.Option(help="Intensity standardisation: none, minmax, zscore-in-mask, percentile "
                     "or histmatch."),
    ] = "none",
    mask_background: Annotated[
        bool, typer.Option("--mask-background", help="Set pixels outside the head mask to 0.")
    ] = False,
    crop: Annotated[
        bool, typer.Option("--crop/--no-crop", help="Crop images to the head's bounding box.")
    ] = True,
    attention_penalty: Annotated[float, typer.Option(help=ATTENTION_PENALTY_HELP)] = 0.0,
    attention_source: Annotated[str, typer.Option(help=ATTENTION_SOURCE_HELP)] = "gradcam",
    val_fraction: Annotated[
        float, typer.Option(help="Share of the training pool held out for validation.")
    ] = 0.15,
    test_fraction: Annotated[
        float, typer.Option(help="Share held out for testing (random/dedup splits).")
    ] = 0.2,
    patience: Annotated[
        int, typer.Option(help="Early stopping: epochs without a better validation score.")
    ] = 3,
    augment: Annotated[
        bool, typer.Option("--augment/--no-augment", help="Augment phase-2 batches.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the split, initialisation and batches.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    num_workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    dropout: Annotated[
        float, typer.Option(help="Dropout before the classifier's linear layer.")
    ] = 0.3,
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
    from braincam.commands.evaluate import metrics_lines
    from braincam.data.preprocess import PreprocessConfig
    from braincam.evaluate import evaluate_run
    from braincam.train import TrainConfig, distributed, train_run

    config = TrainConfig(
        task=task, arch=arch, weights=weights, split=split, val_fraction=val_fraction,
        test_fraction=test_fraction, seed=seed, head_epochs=head_epochs,
        finetune_epochs=finetune_epochs, finetune_stages=finetune_stages, head_lr=head_lr,
        finetune_lr=finetune_lr,
        batch_size=batch_size,
        preprocess=PreprocessConfig(
            size=image_size, crop=crop, standardize=standardize,
            mask_background=mask_background,
        ),
        augment=augment, patience=patience, device=device, num_workers=num_workers,
        dropout=dropout, attention_penalty=attention_penalty, attention_source=attention_source,
    )
    result = train_run(data, config, out, force=force, progress=progress,
                       command=command_line(ctx), compile=compile)
    is_main = distributed.current().is_main
    distributed.shutdown()  # evaluation below runs in process 0 alone
    if not is_main:
        return
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
