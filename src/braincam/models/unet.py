"""The segmenter's architecture alone: a segmentation-models-pytorch U-Net on timm's
EfficientNet-Lite0, one output channel (``P(tumour) = sigmoid(logit)``), random weights.

Weights and files are :mod:`braincam.models.segment`'s; this module imports no checkpoint
code, so :mod:`braincam.models.checkpoint` can rebuild a segmentation-guided classifier
(:mod:`braincam.models.guided`), whose state dict holds a U-Net, without an import cycle.
"""

from __future__ import annotations

from torch import nn

SEGMENTER_ARCH = "unet-efficientnet_lite0"
ENCODER = "tu-efficientnet_lite0"


def unet() -> nn.Module:
    """``smp.Unet(encoder_name="tu-efficientnet_lite0", classes=1)``, randomly initialised."""
    import segmentation_models_pytorch as smp

    return smp.Unet(encoder_name=ENCODER, encoder_weights=None, in_channels=3, classes=1)
