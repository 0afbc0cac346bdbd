"""Where a map can peak: the pixels a coarse map's maximum can reach after upsampling.

A CAM is computed at its layer's resolution ``h x w`` (7 x 7 for a stride-32 network at 224 px)
and resized bilinearly to the input (:func:`braincam.explain.api.normalise`). A bilinear
interpolant is linear along each axis between grid nodes, so its maximum over the pixels lies
next to a node: on the 2 x 2 pixels around an inner node (the node sits at
``(i + 1/2) S / h - 1/2``), or on the plateau that edge clamping gives the outer nodes (the
outer half cells). Only those pixels can win the pointing game, whatever the map. On a
7 x 7 grid at 224 px they are 42 x 42 = 1764 of 50176 pixels: a tumour that holds none of
them cannot be pointed at by any map of that layer.

:func:`peak_pixels` finds them exactly as the pipeline makes maps: the union, over the
``h w`` one-hot raw maps, of the pixels where :func:`~braincam.explain.api.normalise` puts
their maximum (a one-hot map reaches every such pixel; any map's maximum is among them).
"""

from __future__ import annotations

import numpy as np
import torch

from braincam.explain.api import normalise

CHUNK = 256  # one-hot maps resized at once: bounds memory at CHUNK * S * S floats
TIE = 1e-6  # a pixel within this of the map's maximum counts as one of its maxima


def peak_pixels(grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Bool ``size``: the pixels where a raw map of shape ``grid``, normalised to ``size``,
    can have its maximum (all pixels when the map is already at ``size``)."""
    h, w = grid
    if (h, w) == tuple(size):
        return np.ones(size, dtype=bool)
    reach = torch.zeros(size, dtype=torch.bool)
    for start in range(0, h * w, CHUNK):
        cells = torch.arange(start, min(start + CHUNK, h * w))
        one_hot = torch.zeros(len(cells), h * w)
        one_hot[torch.arange(len(cells)), cells] = 1.0
        maps = normalise(one_hot.view(-1, h, w), size)
        reach |= (maps >= maps.amax(dim=(-2, -1), keepdim=True) - TIE).any(dim=0)
    return reach.numpy()


def map_grid(model: torch.nn.Module, images: np.ndarray, method: str,
             layer: str | None = None) -> tuple[int, int]:
    """The raw resolution ``(h, w)`` of ``method``'s maps for ``model``: for a CAM its target
    layer's (``layer``, default the model's CAM layer; one image is passed forward), for
    integrated gradients and occlusion the input's."""
    from braincam.explain.api import GRADIENT_CAMS, as_model_input
    from braincam.explain.base import LayerHook, default_layer, model_device
    from braincam.explain.wrapped import WRAPPED

    if method not in GRADIENT_CAMS and method not in WRAPPED:
        return tuple(images.shape[-2:])
    x = as_model_input(images[:1]).to(model_device(model))
    with torch.no_grad(), LayerHook(model, layer or default_layer(model)) as hook:
        return tuple(hook.forward(x).activations.shape[-2:])
