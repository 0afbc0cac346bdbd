"""Radiomic features inside the tumour (pyradiomics) and a transparent baseline classifier
scored by grouped cross-validation."""

from braincam.radiomics.baseline import MODELS, CVResult, cross_validate, grouped_folds
from braincam.radiomics.features import (
    FAMILIES,
    Head,
    RadiomicsConfig,
    extract,
    location_features,
    ring_mask,
)
from braincam.radiomics.run import radiomics_run

__all__ = [
    "FAMILIES",
    "MODELS",
    "CVResult",
    "Head",
    "RadiomicsConfig",
    "cross_validate",
    "extract",
    "grouped_folds",
    "location_features",
    "radiomics_run",
    "ring_mask",
]
