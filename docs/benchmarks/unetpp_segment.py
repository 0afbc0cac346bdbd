"""`braincam segment`'s defaults with a nested U-Net decoder (smp's ``UnetPlusPlus``) in place
of the U-Net's: same encoder (EfficientNet-Lite0, ImageNet weights), decoder widths, data,
split, loss, augmentation, schedule and mask rule; only :func:`braincam.models.unet.unet`
is replaced for this process. The run directory is a normal segment run, except that
``braincam`` cannot load its ``model.safetensors`` (it rebuilds a plain U-Net).

Usage (from the repository root; D the datasets folder, seed 0 unless given):
    python docs/benchmarks/unetpp_segment.py D OUT [braincam segment options...]
"""

import sys
from collections.abc import Sequence

import segmentation_models_pytorch as smp
from torch import nn

import braincam.models.segment
import braincam.models.unet
from braincam.cli import app


def unet_plus_plus(decoder_channels: Sequence[int] = braincam.models.unet.DECODER_CHANNELS,
                   encoder: str = braincam.models.unet.ENCODER) -> nn.Module:
    """``smp.UnetPlusPlus`` with :func:`braincam.models.unet.unet`'s arguments."""
    return smp.UnetPlusPlus(encoder_name=f"tu-{encoder}", encoder_weights=None, in_channels=3,
                            classes=1, decoder_channels=tuple(decoder_channels))


if __name__ == "__main__":
    data, out, *options = sys.argv[1:]
    braincam.models.unet.unet = braincam.models.segment.unet = unet_plus_plus
    sys.argv = ["braincam", "segment", f"{data}/figshare-cheng-t1ce",
                f"{data}/br35h-no-tumor-sample", "--out", out, *options]
    app()
