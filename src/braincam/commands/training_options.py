"""Training options shared by ``braincam train`` and ``braincam run``: one definition of
each option (flag, help text) and one place that turns them into a ``TrainConfig``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

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

MASK_REWARD_HELP = (
    "Weight R of the phase-2 mask reward: loss + R x mean over tumour images with an expert "
    "mask of (1 - explanation energy inside the mask / energy in the head); 0 = off. Uses "
    "--attention-source; needs --finetune-epochs >= 1."
)
COUNTERFACTUAL_PAIRS_HELP = (
    "Add, for every training tumour image with an expert mask, a copy with the tumour "
    "inpainted (label no_tumor) and one with a same-shaped region of tumour-free brain "
    "inpainted (label unchanged). Validation and test images are never altered."
)

DataDirs = Annotated[
    list[Path],
    typer.Argument(help="Dataset folder(s): ROOT/<class>/ or ROOT/<split>/<class>/."),
]
Task = Annotated[
    str, typer.Option(help="binary (tumor vs no_tumor) or multiclass (the classes present).")
]
Arch = Annotated[str, typer.Option(help="resnet50, efficientnet_lite0 or another timm model name.")]
Weights = Annotated[str, typer.Option(help="imagenet, none (random init) or PATH to a checkpoint.")]
HeadEpochs = Annotated[
    int, typer.Option(help="Phase 1 epochs: the head on backbone features computed once.")
]
FinetuneEpochs = Annotated[
    int, typer.Option(help="Phase 2 epochs: last stage(s) + head, augmented, BatchNorm frozen.")
]
FinetuneStages = Annotated[
    int | None,
    typer.Option(
        help="Last stages trained in phase 2 (default: resnet50 1, layer4; "
        "efficientnet_lite0 4, blocks 3-6 + conv_head)."
    ),
]
HeadLr = Annotated[float, typer.Option(help="Phase 1 learning rate (AdamW).")]
FinetuneLr = Annotated[float, typer.Option(help="Phase 2 learning rate (cosine).")]
BatchSize = Annotated[
    int,
    typer.Option(
        help="Images per training batch (under torchrun: per step, all processes together)."
    ),
]
ImageSize = Annotated[int, typer.Option(help="Model input side in pixels.")]
Standardize = Annotated[
    str,
    typer.Option(
        help="Intensity standardisation: none, minmax, zscore-in-mask, percentile or histmatch."
    ),
]
MaskBackground = Annotated[
    bool, typer.Option("--mask-background", help="Set pixels outside the head mask to 0.")
]
MaskSkull = Annotated[
    bool,
    typer.Option("--mask-skull",
                 help="Set pixels outside the brain interior (the head mask minus its rim band, "
                 "5% of the side: skull and scalp) to 0, in training and at test time."),
]
Crop = Annotated[
    bool, typer.Option("--crop/--no-crop", help="Crop images to the head's bounding box.")
]
SplitSeed = Annotated[
    int | None,
    typer.Option(help="Seed of the test and validation carves instead of --seed: runs that "
                 "share it share their split and can be ensembled (`braincam ensemble`)."),
]
ValFraction = Annotated[
    float, typer.Option(help="Share of the training pool held out for validation.")
]
TestFraction = Annotated[
    float, typer.Option(help="Share held out for testing (random/dedup splits).")
]
Patience = Annotated[
    int, typer.Option(help="Early stopping: epochs without a better validation score.")
]
Augment = Annotated[bool, typer.Option("--augment/--no-augment", help="Augment phase-2 batches.")]
AverageWeights = Annotated[
    bool,
    typer.Option("--average-weights/--no-average-weights",
                 help="Keep the mean of the weights after each epoch of phase 2's second half "
                 "(as SWA) instead of the best epoch on validation."),
]
Subtypes = Annotated[
    bool,
    typer.Option("--subtypes/--no-subtypes",
                 help="Binary task: learn the tumour types the data names (glioma, meningioma, "
                 "pituitary) as outputs of their own, whose probabilities add up to 'tumor'."),
]
ContrastRemap = Annotated[
    float,
    typer.Option(help="Probability of passing a phase-2 image's in-head intensities through a "
                 "random monotone curve (inverted half the time): takes the MRI sequence away "
                 "as a shortcut."),
]
UpweightErrors = Annotated[
    int,
    typer.Option(help="Phase 2 sees each training image that phase 1 (the head on ImageNet "
                 "features) got wrong this many times per epoch (JTT): the images that "
                 "contradict the data's shortcuts; listed in upweighted.csv. 1: off."),
]
Dropout = Annotated[float, typer.Option(help="Dropout before the classifier's linear layer.")]
AttentionPenalty = Annotated[float, typer.Option(help=ATTENTION_PENALTY_HELP)]
AttentionSource = Annotated[str, typer.Option(help=ATTENTION_SOURCE_HELP)]
MaskReward = Annotated[float, typer.Option(help=MASK_REWARD_HELP)]
CounterfactualPairs = Annotated[
    bool, typer.Option("--counterfactual-pairs/--no-counterfactual-pairs",
                       help=COUNTERFACTUAL_PAIRS_HELP),
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
NumWorkers = Annotated[int, typer.Option(help="DataLoader worker processes.")]


def train_config(params: Mapping[str, Any]):  # -> TrainConfig
    """The ``TrainConfig`` of a command's parsed options (``ctx.params``): each option named
    like a ``TrainConfig`` field sets it; ``image_size``, ``crop``, ``standardize``,
    ``mask_background`` and ``mask_skull`` make its ``PreprocessConfig``; other options are
    not training's."""
    import dataclasses

    from braincam.data.preprocess import PreprocessConfig
    from braincam.train import TrainConfig

    preprocess = PreprocessConfig(
        size=params["image_size"], crop=params["crop"], standardize=params["standardize"],
        mask_background=params["mask_background"], mask_skull=params["mask_skull"],
    )
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"preprocess"}
    return TrainConfig(preprocess=preprocess,
                       **{name: value for name, value in params.items() if name in fields})
