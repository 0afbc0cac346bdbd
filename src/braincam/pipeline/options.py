"""Options of the whole pipeline: the training settings plus what the later stages need."""

from __future__ import annotations

import dataclasses
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from braincam.audit.model.base import AuditSettings
from braincam.errors import BraincamError
from braincam.train.config import TrainConfig

EXPLAIN_CAP = 100
"""Images audited and explained per dataset (the test split, each extra dataset) by default:
a mean CAM-energy share over 100 images has a standard error of about 0.15 / sqrt(100) =
0.015, and the audit plus the overlays of 100 images per dataset stay within minutes on a
CPU (the audit's costliest checks subsample further, see AuditSettings)."""

DEFAULT_METHODS = ("gradcam",)


def default_train_config() -> TrainConfig:
    """``braincam run``'s training defaults: TrainConfig's, but the ``dedup`` split (near
    duplicates never straddle train/val/test, so the test score is not inflated by leaks)."""
    return TrainConfig(split="dedup")


GUIDE_NEEDED = (
    "braincam run trains the grounded recipe by default, guided by a tumour segmenter: pass "
    "--guide SEG (a braincam segment run) or --guide DIR[,DIR...] (dataset folders with "
    "masks/, e.g. figshare-cheng-t1ce,br35h-no-tumor-sample), or --plain for the plain "
    "recipe (docs/grounded.md)")


RECIPE_DEFAULTS: dict[str, Any] = {"finetune_epochs": 0, "guide_views": True, "guide_cut": 0.05,
                                   "head_average": 5}
"""The training options ``braincam run`` sets for its grounded recipe unless they are given:
the head alone on the gated ImageNet features, the lesion views of the guide's training
images, a cut of 0.05 on the guide's probability (faint probabilities that a segmenter
spreads over a flat slice otherwise add up to a predicted tumour), and the mean of five
heads (one head's initialisation moves where its Grad-CAM points). Chosen on the guides'
validation groups and Sartaj's grouped folds (docs/grounded.md, docs/results.md)."""

GUIDE_TRAINING_DEFAULTS: dict[str, Any] = {"guide_weak_labels": True, "guide_epochs": 8,
                                           "guide_freeze_blocks": 2}
"""The options ``braincam run`` also sets, unless they are given, when ``--guide`` names
dataset folders (a segmenter is trained on them first): the README recipe's guide, which also
learns the folders' tumour images without a mask by their label, for 8 epochs with the
encoder's stem and first two blocks frozen. A guide that is a ``braincam segment`` run keeps
its own settings."""

RECIPE_OPTIONS = (*RECIPE_DEFAULTS, *GUIDE_TRAINING_DEFAULTS)
"""The names of every option ``braincam run``'s grounded recipe may set."""


def run_recipe(config: TrainConfig, plain: bool, given: Container[str] = ()) -> TrainConfig:
    """``braincam run``'s recipe. Grounded by default: a tumour segmenter guides the
    classifier (``--guide``, required) and each option of :data:`RECIPE_DEFAULTS` (and of
    :data:`GUIDE_TRAINING_DEFAULTS` when ``--guide`` names dataset folders) that is not named
    in ``given`` takes the recipe's value: the recipe that docs/grounded.md
    recommends and docs/results.md measures. ``plain``: the options exactly as given,
    without a guide (the plain recipe). The Python API (:class:`PipelineOptions`) takes its
    ``TrainConfig`` as given."""
    if plain:
        if config.guide:
            raise BraincamError("--plain trains without a segmenter guide: drop --guide or "
                                "--plain")
        return config
    if not config.guide:
        raise BraincamError(GUIDE_NEEDED)
    from braincam.models.segment import guide_parts

    defaults = RECIPE_DEFAULTS | (GUIDE_TRAINING_DEFAULTS if guide_parts(config.guide)[1] else {})
    return dataclasses.replace(
        config, **{name: value for name, value in defaults.items() if name not in given})


@dataclass
class PipelineOptions:
    """Everything ``run_pipeline`` needs besides the data roots and the run directory."""

    train: TrainConfig = field(default_factory=default_train_config)
    extra: list[Path] = field(default_factory=list)  # cross-dataset folders
    methods: tuple[str, ...] = DEFAULT_METHODS  # explanation methods, audited and explained
    explain_cap: int = EXPLAIN_CAP  # images audited and explained per dataset
    n_boot: int = 1000  # bootstrap resamples of the data audit's probes and the evaluation
    audit: AuditSettings = field(default_factory=AuditSettings)  # model-audit subsample sizes
    regions: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    """Named boxes ``(x0, y0, x1, y1)``, fractions of the model input, whose CAM energy the
    model audit reports (e.g. a corner suspected to hold a marker; meaningful without the
    crop to the head, which moves image corners)."""
    progress: bool = True  # progress bars inside stages
    command: str | None = None  # the command line, recorded in config.yaml

    def __post_init__(self) -> None:
        self.extra = [Path(p).resolve() for p in self.extra]
        self.methods = tuple(self.methods)
        self.regions = {name: tuple(float(v) for v in box) for name, box in self.regions.items()}

    def validate(self) -> None:
        """Raise BraincamError naming the first bad option (training options included)."""
        from braincam.explain import METHODS
        from braincam.models.build import check_arch

        self.train.validate()
        check_arch(self.train.arch)  # before the data audit, and before any stage is redone
        unknown = [m for m in self.methods if m not in METHODS]
        if not self.methods or unknown:
            raise BraincamError(
                f"--methods must name one or more of {', '.join(METHODS)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            )
        if self.explain_cap < 1:
            raise BraincamError("--explain-cap must be >= 1")
        if self.n_boot < 0:
            raise BraincamError("--n-boot must be >= 0")
        for name, (x0, y0, x1, y1) in self.regions.items():
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise BraincamError(f"region {name!r} must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 "
                                    "and 0 <= y0 < y1 <= 1")
        missing = [p for p in self.extra if not p.is_dir()]
        if missing:
            raise BraincamError(f"--data {missing[0]} is not a directory")

    def train_inputs(self) -> dict[str, Any]:
        """Training options that decide the model (``TrainConfig.model_settings``)."""
        return self.train.model_settings()

    def to_dict(self) -> dict[str, Any]:
        """The options that decide the run's results, as stored in ``RUN/.stages/pipeline.json``
        (execution-only settings left out)."""
        return {
            "train": self.train_inputs(),
            "extra": [str(p) for p in self.extra],
            "methods": list(self.methods),
            "explain_cap": self.explain_cap,
            "n_boot": self.n_boot,
            "audit": dataclasses.asdict(self.audit),
            "regions": {name: list(box) for name, box in sorted(self.regions.items())},
        }

    def replace(self, **changes: Any) -> PipelineOptions:
        return dataclasses.replace(self, **changes)

    def region_masks(self) -> dict[str, np.ndarray]:
        """:attr:`regions` as bool masks of the model input (``size`` x ``size``); a box
        covers the pixels whose centres lie inside it."""
        size = self.train.preprocess.size
        centres = (np.arange(size) + 0.5) / size
        masks = {}
        for name, (x0, y0, x1, y1) in self.regions.items():
            rows = (centres >= y0) & (centres < y1)
            cols = (centres >= x0) & (centres < x1)
            masks[name] = rows[:, None] & cols[None, :]
        return masks
