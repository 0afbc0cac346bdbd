"""Explanations: the CAM family, occlusion, integrated gradients, overlays and their files.

``explain(model, images, targets, method, layer) -> CamResult`` is the entry point; see
:mod:`braincam.explain.api` for the normalisation and :mod:`braincam.explain.base` for how
gradients reach only the target layer.
"""

from braincam.explain.api import (
    GRADIENT_CAMS,
    METHODS,
    CamResult,
    ExplainOptions,
    as_model_input,
    explain,
    normalise,
)
from braincam.explain.base import LayerHook, find_layer
from braincam.explain.gradcam import cam as gradcam_map
from braincam.explain.occlusion import OcclusionResult, occlusion

__all__ = [
    "GRADIENT_CAMS",
    "METHODS",
    "CamResult",
    "ExplainOptions",
    "LayerHook",
    "OcclusionResult",
    "as_model_input",
    "explain",
    "find_layer",
    "gradcam_map",
    "normalise",
    "occlusion",
]
