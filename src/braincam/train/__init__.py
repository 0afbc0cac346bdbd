"""Training: two phases (head on cached features, then fine-tuning), augmentation, run dirs."""

from braincam.train.augment import AugmentConfig, augment
from braincam.train.config import TrainConfig
from braincam.train.loop import Batch, EpochRecord, LossFn, class_weights, compute_loss
from braincam.train.run import TrainResult, train_run

__all__ = [
    "AugmentConfig",
    "Batch",
    "EpochRecord",
    "LossFn",
    "TrainConfig",
    "TrainResult",
    "augment",
    "class_weights",
    "compute_loss",
    "train_run",
]
