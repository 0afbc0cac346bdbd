"""Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391).

``w_k = mean_ij dS/dA_kij``;  ``cam_ij = sum_k w_k A_kij``  (ReLU comes with normalisation).
"""

from __future__ import annotations

from torch import Tensor


def cam(activations: Tensor, grads: Tensor) -> Tensor:
    """``(N, K, h, w)`` activations and gradients -> raw map ``(N, h, w)``."""
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1)
