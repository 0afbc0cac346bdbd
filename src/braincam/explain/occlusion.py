"""Occlusion (Zeiler & Fergus 2014): how much the target probability drops when a window of
the image is replaced by a fill.

Windows are ``window x window`` squares over all channels, placed like captum's ``Occlusion``:
top-left corners at ``k * stride`` for ``k = 0 .. ceil((D - window) / stride)`` in each
dimension, so the last window may be cut off by the border. For window ``w`` with occluded
copy ``x_w``::

    drop_w = p_t(x) - p_t(x_w)          p_t = probability of the target class
    map(pixel) = mean of drop_w over the windows w that cover the pixel

which is exactly captum's ``Occlusion(prob_forward).attribute(x, (C, window, window),
strides=(C, stride, stride), baselines=fill, target=t)``. Positive values: the window
supported the target class.

Fills (in model-input space): ``zero`` (0; the ImageNet mean colour for normalised input),
``mean`` (the image's per-channel mean) or ``blur`` (a Gaussian blur of the image,
``sigma = window / 4``: removes the window's detail, keeps its brightness).

Speed: on the CPU the occluded copies go through exact incremental inference
(:mod:`braincam.explain.incremental`: each block recomputes only the window's footprint, on a
crop) where the network allows it; elsewhere, and on GPUs, whole occluded copies are evaluated.
Either way copies are evaluated in batches of ``batch_size`` under ``torch.no_grad`` (default
16 on CPU, where larger batches spill the caches and run slower, 128 on GPUs, which need large
batches to be busy); on CPU a channels-last copy of the model is used (oneDNN runs NHWC
convolutions, depthwise ones above all, markedly faster). The numbers do not change beyond
float rounding.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from braincam.errors import BraincamError
from braincam.explain.base import class_probs, eval_mode, model_device
from braincam.explain.incremental import (
    Box,
    Unsupported,
    fold_batchnorm,
    plan,
    run_plan,
    units,
)

log = logging.getLogger(__name__)

FILLS = ("zero", "mean", "blur")
WINDOW = 32
STRIDE = 16
CPU_BATCH, GPU_BATCH = 16, 128


@dataclass
class OcclusionResult:
    drop: Tensor  # (N, H, W) mean drop of the target probability over the covering windows
    probs: Tensor  # (N, C) probabilities of the unoccluded images
    targets: Tensor  # (N,) int64 class explained


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Top-left coordinates of the windows along one dimension (captum's placement)."""
    return [k * stride for k in range(math.ceil((size - window) / stride) + 1)]


def window_boxes(height: int, width: int, window: int, stride: int) -> list[Box]:
    """``(y0, y1, x0, x1)`` of each window (ends exclusive, cut at the border), row-major."""
    ys, xs = window_starts(height, window, stride), window_starts(width, window, stride)
    return [(y, min(y + window, height), x, min(x + window, width)) for y in ys for x in xs]


def window_masks(height: int, width: int, window: int, stride: int,
                 device: torch.device | None = None) -> Tensor:
    """Boolean ``(P, H, W)`` stack, one mask per window, row-major like captum."""
    boxes = window_boxes(height, width, window, stride)
    masks = torch.zeros(len(boxes), height, width, dtype=torch.bool, device=device)
    for p, (y0, y1, x0, x1) in enumerate(boxes):
        masks[p, y0:y1, x0:x1] = True
    return masks


def fill_values(x: Tensor, fill: str, window: int) -> Tensor:
    """What occluded pixels become, ``(N, C, H, W)`` (see the module docstring)."""
    from torchvision.transforms.functional import gaussian_blur

    check_fill(fill)
    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    sigma = window / 4  # blur
    largest = 2 * min(x.shape[-2:]) - 1  # reflect padding needs kernel // 2 < side
    kernel = min(2 * math.ceil(3 * sigma) + 1, largest)
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def check_fill(fill: str) -> None:
    if fill not in FILLS:
        raise BraincamError(f"unknown occlusion fill {fill!r}; choose one of {', '.join(FILLS)}")


def check_window(height: int, width: int, window: int, stride: int) -> None:
    if not 1 <= window <= min(height, width):
        raise BraincamError(f"occlusion window must be 1..{min(height, width)} px, got {window}")
    if not 1 <= stride <= window:
        raise BraincamError(f"occlusion stride must be 1..window ({window}) px, got {stride}")


def occlusion(
    model: nn.Module,
    x: Tensor,
    targets: Tensor | None = None,
    window: int = WINDOW,
    stride: int = STRIDE,
    fill: str = "zero",
    batch_size: int | None = None,
    incremental: bool | None = None,
) -> OcclusionResult:
    """Occlusion maps for a batch ``x`` (N, C, H, W) of model inputs; targets default to the
    predicted classes. ``incremental`` (default: on the CPU) uses exact incremental inference
    where the network supports it. Tensors stay on the model's device."""
    n, _, height, width = x.shape
    check_window(height, width, window, stride)
    device = model_device(model)
    x = x.to(device)
    batch_size = batch_size or (CPU_BATCH if device.type == "cpu" else GPU_BATCH)
    with eval_mode(model), torch.no_grad():
        probs = class_probs(model(x))
        targets = probs.argmax(dim=1) if targets is None else targets.to(device).long()
        p_base = probs.gather(1, targets[:, None])[:, 0]
        fills = fill_values(x, fill, window)
        boxes = window_boxes(height, width, window, stride)
        masks = window_masks(height, width, window, stride, device)
        copies = None
        if incremental if incremental is not None else device.type == "cpu":
            copies = _incremental_copies(model, x, fills, boxes, probs)
        copies = copies or _whole_copies(_cpu_copy(model), x, fills, masks)
        n_windows = len(boxes)
        drops = torch.empty(n * n_windows, device=device)
        for start in range(0, n * n_windows, batch_size):
            flat = torch.arange(start, min(start + batch_size, n * n_windows), device=device)
            img, win = flat // n_windows, flat % n_windows
            p = class_probs(copies(img, win)).gather(1, targets[img][:, None])[:, 0]
            drops[flat] = p_base[img] - p
        flat_masks = masks.flatten(1).float()
        drop = drops.view(n, n_windows) @ flat_masks / flat_masks.sum(dim=0)
    return OcclusionResult(drop.view(n, height, width), probs, targets)


Copies = Callable[[Tensor, Tensor], Tensor]
"""``copies(img, win)``: logits of image ``img[k]`` occluded by window ``win[k]``, per k."""


def _cpu_copy(model: nn.Module) -> nn.Module:
    """On the CPU a channels-last copy of ``model`` (oneDNN runs NHWC convolutions, depthwise
    ones above all, markedly faster); elsewhere the model itself."""
    if model_device(model).type != "cpu":
        return model
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def _prepare(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """A batch in the memory format of ``model``'s weights (channels-last on the CPU)."""
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    channels_last = weight is not None and weight.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return lambda t: t.contiguous(memory_format=fmt)


def _whole_copies(model: nn.Module, x: Tensor, fills: Tensor, masks: Tensor) -> Copies:
    prepare = _prepare(model)
    return lambda img, win: model(prepare(torch.where(masks[win][:, None], fills[img], x[img])))


def _incremental_copies(model: nn.Module, x: Tensor, fills: Tensor, boxes: list[Box],
                        probs: Tensor) -> Copies | None:
    """Incremental evaluation (:mod:`braincam.explain.incremental`) by a BatchNorm-folded copy
    of ``model``, or None where the network has no plan or the copy's unit chain does not
    reproduce the model's probabilities."""
    try:
        units(model)  # supported at all? (before copying the model)
        fast = fold_batchnorm(_cpu_copy(model) if model_device(model).type == "cpu"
                              else copy.deepcopy(model))
        chain, finish = units(fast)
        prepare = _prepare(fast)
        bases = [prepare(x)]
        for unit in chain:
            bases.append(unit(bases[-1]))
        if not torch.allclose(class_probs(finish(bases[-1])), probs, atol=1e-5):
            raise Unsupported("the unit chain does not reproduce the model")
        the_plan = plan(chain, finish, [tuple(b.shape[-2:]) for b in bases], boxes)
    except Unsupported as exc:
        log.debug("occlusion evaluates whole copies: %s", exc)
        return None

    def copies(img: Tensor, win: Tensor) -> Tensor:
        images, windows = img.tolist(), win.tolist()
        patches = [fills[i, :, y0:y1, x0:x1]
                   for i, (y0, y1, x0, x1) in zip(images, (boxes[w] for w in windows), strict=True)]
        return run_plan(the_plan, bases, patches, images, windows, prepare)

    return copies
