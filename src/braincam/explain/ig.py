"""Integrated gradients (Sundararajan et al. 2017, arXiv:1703.01365) through captum.

``IG_c(x) = (x_c - x0_c) * integral_0^1 dS(x0 + a (x - x0)) / dx_c da``, approximated with
``steps`` Gauss-Legendre points (captum's default), baseline ``x0 = 0`` in model-input space
(for ImageNet-normalised input: the ImageNet mean colour). The map sums the channels; unlike
the CAMs it needs gradients through the whole network, down to the input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from braincam.explain.base import class_scores

STEPS = 32
BATCH = 32  # interpolated images per forward/backward: bounds memory


def raw_map(model: nn.Module, x: Tensor, targets: Tensor, steps: int = STEPS,
            batch_size: int | None = None) -> Tensor:
    """Raw ``(N, H, W)`` attribution at input resolution, on the input's device."""
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(lambda t: class_scores(model(t)))
    with torch.inference_mode(False), torch.enable_grad():  # whatever the caller's mode
        attr = ig.attribute(
            x.clone(), target=targets.tolist(), n_steps=steps,
            internal_batch_size=batch_size or BATCH,
        )
    return attr.sum(dim=1).detach()
