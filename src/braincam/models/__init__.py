"""Architectures, weights, checkpoints, CAM target layers and input normalisation."""

from braincam.models.build import (
    DEFAULT_ARCH,
    KNOWN_ARCHS,
    BraincamNet,
    MergeSubtypes,
    backbone_and_head,
    build_model,
    default_target_layer,
    finetune_modules,
    subtype_outputs,
)
from braincam.models.checkpoint import load_checkpoint, read_meta, save_checkpoint
from braincam.models.ensemble import MeanProbability, is_ensemble, require_single_model
from braincam.models.normalize import IMAGENET_MEAN, IMAGENET_STD, normalize, to_model_input
from braincam.models.weights import offline_weights

__all__ = [
    "DEFAULT_ARCH",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KNOWN_ARCHS",
    "BraincamNet",
    "MeanProbability",
    "MergeSubtypes",
    "backbone_and_head",
    "build_model",
    "default_target_layer",
    "finetune_modules",
    "load_checkpoint",
    "is_ensemble",
    "normalize",
    "offline_weights",
    "read_meta",
    "require_single_model",
    "save_checkpoint",
    "subtype_outputs",
    "to_model_input",
]
