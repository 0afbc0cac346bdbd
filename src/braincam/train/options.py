"""The training options, each defined once: its default, help text, help panel and choices.

``TrainConfig`` takes its defaults and field metadata from :data:`TRAIN_OPTIONS`; the
``train`` and ``run`` commands build their options from the same table
(``braincam.commands.training_options``). This module imports no torch, OpenCV or
scikit-learn, so ``braincam --help`` stays fast.

Adding a training option: a ``TrainConfig`` field ``name: type = option_field("name")`` and
a :class:`TrainOption` entry under the same name here; both commands then offer
``--name`` in its panel, and ``config.yaml`` records it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from braincam.labels import TASKS

DATA = "Data and split"
MODEL = "Model"
SCHEDULE = "Schedule"
REMEDIES = "Shortcut remedies"
RUNTIME = "Runtime"
PANELS = (DATA, MODEL, SCHEDULE, REMEDIES, RUNTIME)
"""Help panels of ``train`` and ``run``, in the order ``--help`` shows them."""

Task = StrEnum("Task", [(t, t) for t in TASKS])
SplitStrategy = StrEnum("SplitStrategy", [(s, s) for s in ("official", "random", "dedup")])
"""Equal to ``braincam.data.splits.STRATEGIES`` (a test keeps them so)."""
Standardize = StrEnum("Standardize", [(s, s) for s in (
    "none", "minmax", "zscore-in-mask", "percentile", "histmatch")])
"""Equal to ``braincam.data.preprocess.STANDARDIZE`` (a test keeps them so)."""
AttentionSource = StrEnum("AttentionSource", [(s, s) for s in ("gradcam", "input-gradient")])


@dataclass(frozen=True)
class TrainOption:
    """One training option. ``kind``: the command-line type when the default does not say it
    (an enum of choices, or ``int`` for a default of None); ``switch``: the flag of a boolean
    that has no ``--no-`` form; ``preprocess``: the ``PreprocessConfig`` field it sets, for
    options of the preprocessing rather than of ``TrainConfig`` itself."""

    default: Any
    help: str
    panel: str
    kind: type | None = None
    switch: str | None = None
    preprocess: str | None = None

    @property
    def type(self) -> Any:
        """The option's Python type on the command line."""
        kind = self.kind or type(self.default)
        return kind | None if self.default is None else kind


TRAIN_OPTIONS: dict[str, TrainOption] = {
    # data and split
    "task": TrainOption("binary", "binary (tumor vs no_tumor) or multiclass (the classes "
                        "present).", DATA, kind=Task),
    "split": TrainOption("official", "official (the dataset's Training/Testing folders), random "
                         "(stratified) or dedup (no duplicate group straddles splits).", DATA,
                         kind=SplitStrategy),
    "val_fraction": TrainOption(0.15, "Share of the training pool held out for validation.",
                                DATA),
    "test_fraction": TrainOption(0.2, "Share held out for testing (random and dedup splits).",
                                 DATA),
    "seed": TrainOption(0, "Seed of the split, initialisation, batches and sampling.", DATA),
    "split_seed": TrainOption(None, "Seed of the test and validation carves instead of --seed: "
                              "runs that share it share their split and can be ensembled "
                              "(braincam ensemble).", DATA, kind=int),
    # model
    "arch": TrainOption("resnet50", "resnet50, efficientnet_lite0 or another timm model name.",
                        MODEL),
    "weights": TrainOption("imagenet", "imagenet, none (random init) or PATH to a checkpoint.",
                           MODEL),
    "subtypes": TrainOption(True, "Binary task: learn the tumour types the data names (glioma, "
                            "meningioma, pituitary) as outputs of their own, whose "
                            "probabilities add up to 'tumor'.", MODEL),
    "dropout": TrainOption(0.3, "Dropout before the classifier's linear layer.", MODEL),
    "image_size": TrainOption(224, "Model input side in pixels.", MODEL, preprocess="size"),
    "crop": TrainOption(True, "Crop images to the head's bounding box.", MODEL,
                        preprocess="crop"),
    "standardize": TrainOption("none", "Intensity standardisation of each image.", MODEL,
                               kind=Standardize, preprocess="standardize"),
    # schedule
    "head_epochs": TrainOption(15, "Phase 1 epochs: the head on backbone features computed "
                               "once.", SCHEDULE),
    "finetune_epochs": TrainOption(10, "Phase 2 epochs: last stage(s) and head, augmented, "
                                   "BatchNorm frozen. braincam run uses 0 unless given (with "
                                   "--plain: 10).", SCHEDULE),
    "finetune_stages": TrainOption(None, "Last stages trained in phase 2 (default: resnet50 1, "
                                   "layer4; efficientnet_lite0 4, blocks 3-6 and conv_head).",
                                   SCHEDULE, kind=int),
    "head_average": TrainOption(1, "Phase 1 trains this many heads, each from its own "
                                "initialisation, batch order and dropout and each kept at its "
                                "best validation epoch, and keeps the mean of their weights "
                                "(for a linear head: the mean of their logits). braincam "
                                "run uses 5 unless given.", SCHEDULE),
    "head_lr": TrainOption(1e-3, "Phase 1 learning rate (AdamW).", SCHEDULE),
    "finetune_lr": TrainOption(3e-4, "Phase 2 learning rate (cosine).", SCHEDULE),
    "batch_size": TrainOption(32, "Images per training batch (under torchrun: per step, all "
                              "processes together).", SCHEDULE),
    "patience": TrainOption(10, "Early stopping: epochs without a better validation score "
                            "(phase 2 runs all its epochs when it averages weights).",
                            SCHEDULE),
    "augment": TrainOption(True, "Augment phase-2 batches.", SCHEDULE),
    "average_weights": TrainOption(True, "Keep the mean of the weights after each epoch of "
                                   "phase 2's second half (as SWA) instead of the best epoch "
                                   "on validation; with pretrained weights (--weights none "
                                   "learns BatchNorm statistics, which an average lacks).",
                                   SCHEDULE),
    "tune_threshold": TrainOption(False, "Binary task: once trained, call an image tumour from "
                                  "the threshold on P(tumour) with the best validation balanced "
                                  "accuracy instead of 0.5, folded into the head's no_tumor "
                                  "bias so every prediction uses it; off: the argmax.",
                                  SCHEDULE),
    # shortcut remedies
    "mask_background": TrainOption(False, "Set pixels outside the head mask to 0.", REMEDIES,
                                   switch="--mask-background", preprocess="mask_background"),
    "mask_skull": TrainOption(False, "Set pixels outside the brain interior (the head mask "
                              "minus its rim band, 5% of the side: skull and scalp) to 0, in "
                              "training and at test time.", REMEDIES, switch="--mask-skull",
                              preprocess="mask_skull"),
    "contrast_remap": TrainOption(0.0, "Probability of passing a phase-2 image's in-head "
                                  "intensities through a random monotone curve (inverted half "
                                  "the time): takes the MRI sequence away as a shortcut.",
                                  REMEDIES),
    "upweight_errors": TrainOption(1, "Phase 2 sees each training image that phase 1 (the head "
                                   "on ImageNet features) got wrong this many times per epoch "
                                   "(JTT): the images that contradict the data's shortcuts; "
                                   "listed in upweighted.csv. 1: off.", REMEDIES),
    "attention_penalty": TrainOption(0.0, "Weight W of the phase-2 attention penalty (right for "
                                     "the right reasons): loss + W x mean share of explanation "
                                     "energy outside the head mask; 0: off. Needs "
                                     "--finetune-epochs >= 1.", REMEDIES),
    "attention_source": TrainOption("gradcam", "What the attention penalty measures: gradcam "
                                    "(Grad-CAM of the true class at the default CAM layer) or "
                                    "input-gradient (squared input gradient of the log "
                                    "probability by double backprop: pixel-exact, 4-5x "
                                    "slower).", REMEDIES, kind=AttentionSource),
    "mask_reward": TrainOption(0.0, "Weight R of the phase-2 mask reward: loss + R x mean over "
                               "tumour images with an expert mask of (1 - explanation energy "
                               "inside the mask / energy in the head); 0: off. Uses "
                               "--attention-source; needs --finetune-epochs >= 1.", REMEDIES),
    "attention_layer": TrainOption(None, "The layer (a module name, e.g. backbone.blocks.4) "
                                   "whose Grad-CAM the attention penalty and the mask reward "
                                   "measure; it becomes the run's CAM layer for explanations "
                                   "and the audit. Default: the architecture's last "
                                   "convolutional layer (7 x 7 cells at 224 px for a "
                                   "stride-32 network).", REMEDIES, kind=str),
    "counterfactual_pairs": TrainOption(False, "Add, for every training tumour image with an "
                                        "expert mask, a copy with the tumour inpainted (label "
                                        "no_tumor) and one with a same-shaped region of "
                                        "tumour-free brain inpainted (label unchanged). "
                                        "Validation and test images are never altered.",
                                        REMEDIES, switch="--counterfactual-pairs"),
    "view_pairs": TrainOption(False, "Add, for every training tumour image with an expert "
                              "mask, two views cut from it and enlarged to the input (0.4 of "
                              "its side): one holding the whole tumour (label unchanged), one "
                              "of tumour-free brain with as much brain in it (label "
                              "no_tumor). Nothing is inpainted. Validation and test images "
                              "are never altered.", REMEDIES, switch="--view-pairs"),
    "guide": TrainOption(None, "A braincam segment run (SEG): the classifier pools its last "
                         "feature map weighted by SEG's predicted tumour probability, so "
                         "its decision rests on the predicted tumour (evidence elsewhere is "
                         "scaled by --guide-floor). SEG is frozen and saved with the model. "
                         "Several runs, comma-separated (SEG1,SEG2): their mean probability "
                         "guides. Dataset folders with masks/ in the list train one segmenter "
                         "first (braincam segment's defaults) into RUN/guide.",
                         REMEDIES, kind=str),
    "guide_views": TrainOption(False, "With --guide: add the lesion views (as --view-pairs "
                               "makes them) of every masked image the guide's segmenter "
                               "trained on, never of its validation or held-out images: "
                               "tumour-free tissue of the segmenter's own sources, labelled "
                               "no_tumor, beside tumour tissue cut the same way. braincam run "
                               "adds them unless --no-guide-views.", REMEDIES),
    "guide_views_max": TrainOption(0, "With --guide-views: views of at most N of the guide's "
                                   "training images (a sample drawn with --seed), so that the "
                                   "views do not outnumber the classifier's own images; 0: "
                                   "all.", REMEDIES),
    "guide_views_weight": TrainOption(None, "With --guide-views: the views weigh as a group "
                                      "of their own, W times the classifier's own images in "
                                      "all, and the own images keep their class balance; 0: "
                                      "the views join the own images in one class-balanced "
                                      "pool.  [default: 1]", REMEDIES, kind=float),
    "guide_weak_labels": TrainOption(False, "With --guide dataset folders: their tumour images "
                                     "without a mask train the segmenter too, by their label "
                                     "alone (braincam segment --weak-labels). braincam run "
                                     "sets it unless given.", REMEDIES),
    "guide_epochs": TrainOption(None, "With --guide dataset folders: the epochs of the "
                                "segmenter trained on them (braincam segment --epochs); "
                                "braincam run uses 8 unless given.  [default: braincam "
                                "segment's 10]", REMEDIES, kind=int),
    "guide_freeze_blocks": TrainOption(0, "With --guide dataset folders: the segmenter "
                                       "trained on them keeps the ImageNet weights of its "
                                       "encoder's stem and first N blocks (braincam segment "
                                       "--freeze-blocks); braincam run uses 2 unless given.",
                                       REMEDIES),
    "guide_floor": TrainOption(0.0, "With --guide: weight of the image outside the predicted "
                               "tumour, in [0, 1); 0: none of it reaches the classifier.",
                               REMEDIES),
    "guide_cut": TrainOption(0.0, "With --guide: the guide's tumour probability counts only "
                             "where it reaches C, in [0, 1), so faint probabilities spread over "
                             "a slice cannot add up to a predicted tumour; 0: all of it counts. "
                             "braincam run uses 0.05 unless given.", REMEDIES),
    # runtime
    "device": TrainOption("auto", "auto, cpu, cuda or cuda:N.", RUNTIME),
    "num_workers": TrainOption(0, "DataLoader worker processes.", RUNTIME),
}


def option_field(name: str) -> Any:
    """A ``TrainConfig`` field whose default and metadata (``metadata["option"]``) are
    :data:`TRAIN_OPTIONS` ``[name]``."""
    option = TRAIN_OPTIONS[name]
    return dataclasses.field(default=option.default, metadata={"option": option})
