"""Model input: grey uint8 images -> ImageNet-normalised 3-channel float tensors.

The backbones were pretrained on RGB ImageNet photos, so a grey MRI slice is replicated
to three channels and normalised with the ImageNet statistics:
``x = (v / 255 - mean_c) / std_c`` for each channel ``c``.
"""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """``(N, 1|3, H, W)`` floats in [0, 1] -> ImageNet-normalised ``(N, 3, H, W)``.

    One channel is replicated to three (grey input); three are taken as RGB.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1|3, H, W) floats, got shape {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def to_model_input(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Grey uint8 ``(N, S, S)`` (numpy or torch, any device) -> float32 ``(N, 3, S, S)``.

    The result stays on the input's device, so callers can move the compact uint8 batch to
    the GPU first and normalise there.
    """
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # torch warns on read-only arrays (e.g. memory-mapped caches)
    tensor = torch.as_tensor(images)
    if tensor.ndim != 3:
        raise ValueError(f"expected grey images (N, S, S), got shape {tuple(tensor.shape)}")
    if tensor.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {tensor.dtype}")
    return normalize(tensor.unsqueeze(1).float() / 255.0)
