"""Training settings: one dataclass, stored in the run's ``config.yaml``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

from braincam.data.preprocess import PreprocessConfig
from braincam.data.splits import FOLD, STRATEGIES, check_fractions
from braincam.errors import BraincamError, check_seed
from braincam.labels import TASKS
from braincam.train.options import AttentionSource, option_field

ATTENTION_SOURCES = tuple(source.value for source in AttentionSource)
"""What the attention penalty measures (:mod:`braincam.train.mitigation`)."""
VIEWS_WEIGHT = 1.0
"""``--guide-views-weight`` when unset, chosen by cross-validation (docs/results.md)."""
EXECUTION_ONLY = ("device", "num_workers")
"""TrainConfig fields that decide where and how fast, not what: a run resumed (``braincam
run``) or a fold kept (``braincam cv``) on another device or with other workers still counts
as the same training."""


@dataclass
class TrainConfig:
    """Everything that decides a training run (with the data roots and versions, enough to
    reproduce it).

    Phase 1 (``head_*``) fits the head on backbone features computed once; phase 2
    (``finetune_*``) trains the last stage(s) and the head with augmentation, BatchNorm
    statistics frozen (pretrained weights). Early stopping, per phase: ``patience`` epochs
    without a better validation balanced accuracy (ties broken by lower validation loss); the
    best state of both phases is kept, or, with ``average_weights`` and pretrained weights, the
    mean weights of phase 2's second half (phase 2 then runs all its epochs).

    Defaults: 10 fine-tuning epochs with patience 10, because validation scores jump by +-0.05
    from epoch to epoch and a short patience stops phase 2 before it beats phase 1;
    ``average_weights`` removes most of the spread that choosing one epoch brings;
    ``contrast_remap`` and ``upweight_errors`` stay off (alone they gained nothing on average;
    with ``--mask-skull`` they are the official-split recipe of docs/results.md).
    """

    task: str = option_field("task")
    subtypes: bool = option_field("subtypes")  # binary: tumour types present, added into "tumor"
    arch: str = option_field("arch")
    weights: str = option_field("weights")  # imagenet | none | PATH
    split: str = option_field("split")  # official | random | dedup
    val_fraction: float = option_field("val_fraction")
    test_fraction: float = option_field("test_fraction")  # random/dedup only
    seed: int = option_field("seed")
    split_seed: int | None = option_field("split_seed")  # the carves' seed; None: seed
    head_epochs: int = option_field("head_epochs")
    finetune_epochs: int = option_field("finetune_epochs")
    finetune_stages: int | None = option_field("finetune_stages")  # None: per arch
    head_average: int = option_field("head_average")  # phase 1's heads, weights averaged
    head_lr: float = option_field("head_lr")
    finetune_lr: float = option_field("finetune_lr")
    weight_decay: float = 1e-4
    batch_size: int = option_field("batch_size")
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: bool = option_field("augment")
    contrast_remap: float = option_field("contrast_remap")  # random contrast curves (augment)
    average_weights: bool = option_field("average_weights")  # mean of phase 2's second half
    tune_threshold: bool = option_field("tune_threshold")  # binary: validation threshold
    upweight_errors: int = option_field("upweight_errors")  # phase 1's errors, x per epoch
    patience: int = option_field("patience")
    dropout: float = option_field("dropout")
    device: str = option_field("device")
    num_workers: int = option_field("num_workers")
    amp: bool = True
    attention_penalty: float = option_field("attention_penalty")  # train.mitigation
    attention_source: str = option_field("attention_source")  # gradcam | input-gradient
    mask_reward: float = option_field("mask_reward")  # train.mitigation
    attention_layer: str | None = option_field("attention_layer")  # their Grad-CAM layer
    counterfactual_pairs: bool = option_field("counterfactual_pairs")  # train.grounding
    view_pairs: bool = option_field("view_pairs")  # train.grounding
    guide: str | None = option_field("guide")  # a braincam segment run; models.guided
    guide_floor: float = option_field("guide_floor")  # weight outside the predicted tumour
    guide_weak_labels: bool = option_field("guide_weak_labels")  # segment --weak-labels
    guide_epochs: int | None = option_field("guide_epochs")  # segment --epochs; None: its default
    guide_freeze_blocks: int = option_field("guide_freeze_blocks")  # segment --freeze-blocks
    guide_cut: float = option_field("guide_cut")  # the gate's P below it counts as 0
    guide_views: bool = option_field("guide_views")  # train.grounding.guide_originals
    guide_views_max: int = option_field("guide_views_max")  # at most N guide images
    guide_views_weight: float | None = option_field("guide_views_weight")  # None: 1
    fold: int = 0  # split "fold" (braincam cv): the test fold
    folds: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.preprocess, dict):
            self.preprocess = PreprocessConfig(**self.preprocess)

    @property
    def carve_seed(self) -> int:
        """The seed that carves test and validation images: ``split_seed``, else ``seed``. Runs
        that share it share their split (so ``braincam ensemble`` can average them) while
        ``seed`` still varies initialisation, augmentation and batch order."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def explains_in_loss(self) -> bool:
        """Whether the phase-2 loss has an explanation term (attention penalty or mask
        reward): such a loss needs a double backward and its phase-2 state is kept."""
        return self.attention_penalty > 0 or self.mask_reward > 0

    def validate(self) -> None:
        """Raise BraincamError naming the first bad option."""
        for option in dataclasses.fields(self):  # counts are whole numbers, from Python too
            value = getattr(self, option.name)
            if option.type in ("int", "int | None") and not (
                    value is None and option.type != "int" or isinstance(value, Integral)
                    and not isinstance(value, bool)):
                raise BraincamError(f"--{option.name.replace('_', '-')} must be a whole number, "
                                    f"got {value!r}")
            if option.type in ("float", "float | None") and isinstance(value, Real) and (
                    not math.isfinite(value)):  # inf passes >= 0 and trains NaN weights
                raise BraincamError(f"--{option.name.replace('_', '-')} must be a finite "
                                    f"number, got {value!r}")
        check_seed(self.seed)
        check_seed(self.split_seed, "--split-seed")
        checks = [
            (self.task in TASKS, f"--task must be one of {', '.join(TASKS)}"),
            (self.split in (*STRATEGIES, FOLD),
             f"--split must be one of {', '.join(STRATEGIES)}"),
            (self.folds >= 2 and 0 <= self.fold < self.folds,
             "cross-validation needs 2 or more folds and 0 <= fold < folds"),
            (self.head_epochs >= 0 and self.finetune_epochs >= 0, "epochs must be >= 0"),
            (self.head_epochs + self.finetune_epochs > 0, "at least one epoch is needed"),
            (self.head_lr > 0 and self.finetune_lr > 0, "learning rates must be > 0"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.patience >= 1, "--patience must be >= 1"),
            (self.head_average >= 1, "--head-average must be >= 1"),
            (self.head_average == 1 or self.head_epochs > 0,
             "--head-average N averages phase 1's heads: it needs --head-epochs >= 1"),
            (self.finetune_stages is None or self.finetune_stages >= 1,
             "--finetune-stages must be >= 1"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.contrast_remap <= 1, "--contrast-remap must be in [0, 1]"),
            (self.contrast_remap == 0 or (self.augment and self.finetune_epochs > 0),
             "--contrast-remap augments phase 2: it needs --augment and --finetune-epochs >= 1"),
            (self.upweight_errors >= 1, "--upweight-errors must be >= 1"),
            (self.upweight_errors == 1 or (self.head_epochs > 0 and self.finetune_epochs > 0),
             "--upweight-errors takes phase 1's errors into phase 2: it needs both phases"),
            (self.num_workers >= 0, "--num-workers must be >= 0"),
            (self.attention_penalty >= 0, "--attention-penalty must be >= 0"),
            (self.attention_source in ATTENTION_SOURCES,
             f"--attention-source must be one of {', '.join(ATTENTION_SOURCES)}"),
            (self.attention_penalty == 0 or self.finetune_epochs > 0,
             "--attention-penalty acts in phase 2: it needs --finetune-epochs >= 1"),
            (self.mask_reward >= 0, "--mask-reward must be >= 0"),
            (self.mask_reward == 0 or self.finetune_epochs > 0,
             "--mask-reward acts in phase 2: it needs --finetune-epochs >= 1"),
            (self.attention_layer is None or self.attention_source == "gradcam",
             "--attention-layer names a Grad-CAM layer: it needs --attention-source gradcam"),
            (self.attention_layer is None or self.guide is None,
             "--attention-layer cannot be combined with --guide: a guided model's CAM layer "
             "is its gate"),
            (0 <= self.guide_floor < 1, "--guide-floor must be in [0, 1)"),
            (self.guide_floor == 0 or self.guide is not None,
             "--guide-floor weighs what --guide leaves out: it needs --guide"),
            (not self.guide_weak_labels or self.guide is not None,
             "--guide-weak-labels trains --guide's segmenter: it needs --guide"),
            (self.guide_epochs is None or self.guide_epochs >= 1, "--guide-epochs must be >= 1"),
            (self.guide_epochs is None or self.guide is not None,
             "--guide-epochs sets the epochs of --guide's segmenter: it needs --guide"),
            (self.guide_freeze_blocks >= 0, "--guide-freeze-blocks must be >= 0"),
            (self.guide_freeze_blocks == 0 or self.guide is not None,
             "--guide-freeze-blocks sets --guide's segmenter training: it needs --guide"),
            (0 <= self.guide_cut < 1, "--guide-cut must be in [0, 1)"),
            (self.guide_cut == 0 or self.guide is not None,
             "--guide-cut acts on the probability of --guide's segmenter: it needs --guide"),
            (not self.guide_views or self.guide is not None,
             "--guide-views cuts views from the guide's training images: it needs --guide"),
            (self.guide_views_max >= 0, "--guide-views-max must be >= 0"),
            (not self.guide_views_max or self.guide_views,
             "--guide-views-max limits --guide-views: it needs --guide-views"),
            (self.guide_views_weight is None or self.guide_views_weight >= 0,
             "--guide-views-weight must be >= 0"),
            (self.guide_views_weight is None or self.guide_views,
             "--guide-views-weight weighs --guide-views: it needs --guide-views"),
            (not self.tune_threshold or self.task == "binary",
             "--tune-threshold sets the tumour threshold: it needs --task binary"),
        ]
        for ok, message in checks:
            if not ok:
                raise BraincamError(message)
        if self.split != FOLD:  # a fold's test fraction is 1 / folds
            check_fractions(self.val_fraction, self.test_fraction, self.split)

    @property
    def views_weight(self) -> float:
        """The guide views' weight (``guide_views_weight``; unset: :data:`VIEWS_WEIGHT`)."""
        return VIEWS_WEIGHT if self.guide_views_weight is None else self.guide_views_weight

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_settings(self) -> dict[str, Any]:
        """The settings that decide the model: :meth:`to_dict` without
        :data:`EXECUTION_ONLY`, and without the fold fields unless the split is ``fold`` (they
        mean nothing then, so settings written before they existed still compare equal)."""
        values = self.to_dict()
        for name in EXECUTION_ONLY:
            values.pop(name)
        if values["split"] != FOLD:
            values.pop("fold"), values.pop("folds")
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not pass)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise BraincamError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**values)
