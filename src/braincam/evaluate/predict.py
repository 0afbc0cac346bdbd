"""Batched inference over in-memory uint8 images."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from braincam.device import autocast, device_of, pin_memory
from braincam.models.normalize import to_model_input


def forward_batches(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray | torch.Tensor,
    device: torch.device,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "predict",
) -> torch.Tensor:
    """``fn(to_model_input(batch))`` for batches of grey uint8 ``images`` (N, S, S), without
    autograd and under AMP on GPUs; returns float32 results concatenated on the CPU.

    The compact uint8 batch is copied to the device (pinned on CUDA) and normalised there;
    inputs are channels-last, the layout oneDNN and cuDNN convolutions run fastest on.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images if images.flags.writeable else images.copy())
    starts = range(0, len(images), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    outputs = []
    with torch.inference_mode():
        for start in starts:
            batch = images[start : start + batch_size]
            if pin_memory(device):
                batch = batch.pin_memory()
            x = to_model_input(batch.to(device, non_blocking=True))
            with autocast(device):
                out = fn(x.contiguous(memory_format=torch.channels_last))
            outputs.append(out.float().cpu())
    return torch.cat(outputs)


def predict(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Class probabilities (N, K) float32: softmax of the logits in eval mode, no gradients.
    The model moves to ``device`` in channels-last layout; its train/eval mode is restored."""
    if len(images) == 0:
        raise ValueError("no images to predict")
    device = device_of(device)
    was_training = model.training
    model.to(device, memory_format=torch.channels_last).eval()
    try:
        logits = forward_batches(model, images, device, batch_size, progress)
    finally:
        model.train(was_training)
    return torch.softmax(logits, dim=1).numpy()
