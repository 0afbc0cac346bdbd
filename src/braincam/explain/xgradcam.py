"""XGrad-CAM (Fu et al. 2020, arXiv:2008.02312).

``w_k = sum_ij (A_kij / (sum_ab A_kab + eps)) dS/dA_kij``,  ``cam_ij = sum_k w_k A_kij``;
``eps = 1e-7``.
"""

from __future__ import annotations

from torch import Tensor

EPS = 1e-7


def cam(activations: Tensor, grads: Tensor) -> Tensor:
    """``(N, K, h, w)`` activations and gradients -> raw map ``(N, h, w)``."""
    total = activations.sum(dim=(2, 3), keepdim=True)
    weights = (grads * activations / (total + EPS)).sum(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1)
