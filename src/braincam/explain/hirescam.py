"""HiResCAM (Draelos & Carin 2020, arXiv:2011.08891): gradients are not averaged, so the map
is exactly each location's first-order contribution to the score.

``cam_ij = sum_k dS/dA_kij * A_kij``.
"""

from __future__ import annotations

from torch import Tensor


def cam(activations: Tensor, grads: Tensor) -> Tensor:
    """``(N, K, h, w)`` activations and gradients -> raw map ``(N, h, w)``."""
    return (grads * activations).sum(dim=1)
