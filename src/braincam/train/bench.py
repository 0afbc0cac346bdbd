"""``braincam bench train|segment``: training (and inference) images/s.

``bench train``: one classifier architecture, training against inference.
``bench segment``: the segmenter's U-Net training step at two decoder widths side by side
(braincam's default against smp's own ``(256, 128, 64, 32, 16)``), with the Dice + BCE loss of
:func:`braincam.train.segment.dice_bce_loss` on random masks.

Both are measured side by side in one process on the same model, batch and device, with
random weights and random grey images (speed does not depend on them; nothing is
downloaded). The batch travels as the training loop's does: compact uint8 on the host
(pinned when the device is a GPU), copied asynchronously, normalised on the device. A
training step trains every parameter (the worst case; the fine-tune phase trains fewer)
with AdamW under the device's autocast (bf16 on recent GPUs), channels-last memory format
on GPUs, and optionally ``torch.compile``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F

from braincam.device import amp_dtype, autocast, interleaved, median_ratio, pin_memory
from braincam.models import build_model, to_model_input
from braincam.models.unet import DECODER_CHANNELS, ENCODER, freeze_encoder, unet


def bench_train(arch: str = "resnet50", batch: int = 64, image_size: int = 224, iters: int = 5,
                repeats: int = 3, device: torch.device | None = None,
                channels_last: bool | None = None, compile: bool = False) -> dict[str, object]:
    """Median images/s over ``repeats`` of ``iters`` training steps and of ``iters``
    inference batches (warm-up excluded). ``channels_last`` defaults to on for CUDA."""
    device = device or torch.device("cpu")
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = build_model(arch, num_classes=2, weights="none").to(device, memory_format=memory_format)
    step_model = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    host = torch.randint(0, 256, (batch, image_size, image_size), dtype=torch.uint8)
    host = host.pin_memory() if pin_memory(device) else host
    labels = (torch.arange(batch) % 2).to(device)

    def model_input() -> torch.Tensor:
        x = to_model_input(host.to(device, non_blocking=True))
        return x.contiguous(memory_format=memory_format)

    def train_steps() -> None:
        model.train()
        for _ in range(iters):
            with autocast(device):
                loss = F.cross_entropy(step_model(model_input()), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def inference() -> None:
        model.eval()
        with torch.inference_mode(), autocast(device):
            for _ in range(iters):
                step_model(model_input())

    rates = _median_rates(interleaved({"train": train_steps, "inference": inference}, repeats,
                                      device), batch * iters)
    return {
        "arch": arch, "batch": batch, "image_size": image_size, **_device_fields(device),
        "channels_last": channels_last, "compile": compile, "iters": iters, "repeats": repeats,
        "train_img_s": round(rates["train"], 2),
        "inference_img_s": round(rates["inference"], 2),
    }


def _median_rates(seconds: dict[str, list[float]], images: int) -> dict[str, float]:
    """Median images/s of each contender (``images`` per call) over its interleaved rounds'
    ``seconds`` (:func:`braincam.device.interleaved`)."""
    return {name: statistics.median(images / s for s in secs) for name, secs in seconds.items()}


def _device_fields(device: torch.device) -> dict[str, str | None]:
    """``amp``: the autocast dtype (``torch.bfloat16``), null without mixed precision."""
    amp = amp_dtype(device)
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "amp": None if amp is None else str(amp),
    }


SMP_DECODER_CHANNELS = (256, 128, 64, 32, 16)
"""smp's own default U-Net decoder widths, the reference of ``bench segment``."""


def bench_segment(image_size: int = 192, batch: int = 16, iters: int = 3, repeats: int = 3,
                  device: torch.device | None = None,
                  decoder_channels: tuple[int, ...] = DECODER_CHANNELS,
                  reference: tuple[int, ...] = SMP_DECODER_CHANNELS,
                  encoder: str = ENCODER, reference_encoder: str = ENCODER,
                  amp: bool = True, reference_amp: bool = True, freeze_blocks: int = 0,
                  reference_freeze_blocks: int = 0) -> dict[str, object]:
    """Median training images/s of the segmenter on ``encoder`` with ``decoder_channels`` and
    on ``reference_encoder`` with ``reference`` widths, repeats interleaved; ``ratio`` = the
    median over repeats of the first's rate over the second's. Channels-last, mixed precision
    (``amp``, ``reference_amp``) and frozen encoder blocks (``freeze_blocks``,
    ``reference_freeze_blocks``) as in ``braincam segment``."""
    from braincam.train.segment import dice_bce_loss

    device = device or torch.device("cpu")
    nets = {"decoder": (tuple(decoder_channels), encoder, amp, freeze_blocks),
            "reference": (tuple(reference), reference_encoder, reference_amp,
                          reference_freeze_blocks)}
    host = torch.randint(0, 256, (batch, image_size, image_size), dtype=torch.uint8)
    host = host.pin_memory() if pin_memory(device) else host
    truth = torch.zeros(batch, image_size, image_size, dtype=torch.bool, device=device)
    truth[:, image_size // 3: image_size // 2, image_size // 3: image_size // 2] = True

    def contender(channels: tuple[int, ...], name: str, mixed: bool,
                  frozen: int) -> Callable[[], None]:
        torch.manual_seed(0)
        model = unet(channels, name).to(device, memory_format=torch.channels_last).train()
        freeze_encoder(model, frozen)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=1e-4)

        def steps() -> None:
            for _ in range(iters):
                x = to_model_input(host.to(device, non_blocking=True))
                with autocast(device, enabled=mixed, cpu=True):
                    logits = model(x.contiguous(memory_format=torch.channels_last))
                loss = dice_bce_loss(logits[:, 0].float(), truth)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return steps

    seconds = interleaved({key: contender(*net) for key, net in nets.items()}, repeats, device)
    median = _median_rates(seconds, batch * iters)

    def precision(mixed: bool) -> str | None:
        """The autocast type a contender trains in, as ``braincam segment --amp``; it takes
        the place of :func:`_device_fields`' ``amp`` (inference's, fp32 on a CPU)."""
        dtype = amp_dtype(device, cpu=True) if mixed else None
        return None if dtype is None else str(dtype)

    return {
        "image_size": image_size, "batch": batch, **_device_fields(device),
        "iters": iters, "repeats": repeats,
        "encoder": encoder, "decoder_channels": list(decoder_channels),
        "reference_encoder": reference_encoder, "reference_channels": list(reference),
        "amp": precision(amp), "reference_amp": precision(reference_amp),
        "freeze_blocks": freeze_blocks, "reference_freeze_blocks": reference_freeze_blocks,
        "train_img_s": round(median["decoder"], 2),
        "reference_train_img_s": round(median["reference"], 2),
        "ratio": median_ratio(seconds["reference"], seconds["decoder"]),  # rate over rate
    }
