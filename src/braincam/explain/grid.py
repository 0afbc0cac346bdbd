"""Where a map can peak: the pixels a coarse map's maximum can reach after upsampling.

A CAM is computed at its layer's resolution ``h x w`` (7 x 7 for a stride-32 network at 224 px)
and resized bilinearly to the input (:func:`braincam.explain.api.normalise`). A bilinear
interpolant is linear along each axis between grid nodes, so its maximum over the pixels lies
next to a node: on the 2 x 2 pixels around an inner node (the node sits at
``(i + 1/2) S / h - 1/2``), or on the plateau that edge clamping gives the outer nodes (the
outer half cells). Only those pixels can win the pointing game, whatever the map. On a
7 x 7 grid at 224 px they are 42 x 42 = 1764 of 50176 pixels: a tumour that holds none of
them cannot be pointed at by any map of that layer.

:func:`peak_pixels` finds them per axis, from the coordinate ``s = (p + 1/2) n / S - 1/2`` that
bilinear resizing (``align_corners=False``) gives output pixel ``p`` of ``S`` on an axis of
``n`` nodes: the map is linear in ``s`` between two nodes, so within each cell ``[k, k + 1]``
only its first and last pixel can hold the maximum; a pixel whose ``s`` is clamped (``s <= 0``
or ``s >= n - 1``) equals its edge node, and the end of the edge cell next to it cannot beat
it. In two dimensions the map is bilinear within a cell, so its maximum lies on a corner: a
pixel whose row and column are both candidates. This holds for any ratio ``S / n``, whole or
not. (Maps with exactly equal maxima, plateaus between nodes, are left aside.)
"""

from __future__ import annotations

import numpy as np
import torch


def peak_pixels(grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Bool ``size``: the pixels where a raw map of shape ``grid``, normalised to ``size``,
    can have its maximum (all pixels when the map is already at ``size``)."""
    rows, cols = (_axis_peaks(n, s) for n, s in zip(grid, size, strict=True))
    return rows[:, None] & cols[None, :]


def _axis_peaks(nodes: int, size: int) -> np.ndarray:
    """Bool ``size``: the pixels of one axis that can hold the maximum (module docstring)."""
    s = (np.arange(size) + 0.5) * nodes / size - 0.5
    low, high = s <= 0, s >= nodes - 1
    reach = low | high
    cell = np.clip(np.floor(s), 0, max(nodes - 2, 0)).astype(int)
    for k in np.unique(cell[~reach]):
        inside = np.flatnonzero((cell == k) & ~reach)
        first, last = inside[0], inside[-1]
        reach[first] |= not (k == 0 and low.any())
        reach[last] |= not (k == nodes - 2 and high.any())
    return reach


def map_grid(model: torch.nn.Module, images: np.ndarray, method: str,
             layer: str | None = None) -> tuple[int, int] | None:
    """The raw resolution ``(h, w)`` of ``method``'s maps for ``model``: for a CAM its target
    layer's (``layer``, default the model's CAM layer; one image is passed forward), for
    integrated gradients the input's; None for occlusion, whose maps are flat over windows
    rather than interpolated between nodes."""
    from braincam.explain.api import GRADIENT_CAMS, as_model_input
    from braincam.explain.base import LayerHook, default_layer, model_device
    from braincam.explain.wrapped import WRAPPED

    if method == "occlusion":
        return None
    if method not in GRADIENT_CAMS and method not in WRAPPED:
        return tuple(images.shape[-2:])
    x = as_model_input(images[:1]).to(model_device(model))
    with torch.no_grad(), LayerHook(model, layer or default_layer(model)) as hook:
        return tuple(hook.forward(x).activations.shape[-2:])
