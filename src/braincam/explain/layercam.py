"""LayerCAM (Jiang et al. 2021, IEEE TIP 30:5875): positive gradients weight each location.

``cam_ij = sum_k relu(dS/dA_kij) * A_kij``.
"""

from __future__ import annotations

from torch import Tensor


def cam(activations: Tensor, grads: Tensor) -> Tensor:
    """``(N, K, h, w)`` activations and gradients -> raw map ``(N, h, w)``."""
    return (grads.clamp_min(0) * activations).sum(dim=1)
