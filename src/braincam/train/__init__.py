"""Training: two phases (head on cached features, then fine-tuning), augmentation, run dirs.

The names below load their submodule on first use (PEP 562), so that importing
``braincam.train.options`` (the command line's training options) does not load torch. The
function ``augment`` shares its module's name: import it from ``braincam.train.augment``."""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULE = {
    "AugmentConfig": "augment",
    "TrainConfig": "config",
    "Batch": "loop",
    "EpochRecord": "loop",
    "LossFn": "loop",
    "class_weights": "loop",
    "compute_loss": "loop",
    "TrainResult": "run",
    "train_run": "run",
}

__all__ = sorted(_SUBMODULE)


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULE:
        raise AttributeError(f"module 'braincam.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"braincam.train.{_SUBMODULE[name]}"), name)
