"""Grad-CAM++ (Chattopadhay et al. 2018, arXiv:1710.11063, eq. 19 with the exponential-score
simplification, as in pytorch-grad-cam).

With ``g = dS/dA``:  ``alpha_kij = g^2 / (2 g^2 + (sum_ab A_kab) g^3 + eps)`` (0 where g = 0),
``w_k = sum_ij alpha_kij relu(g_kij)``,  ``cam_ij = sum_k w_k A_kij``;  ``eps = 1e-6``.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-6


def cam(activations: Tensor, grads: Tensor) -> Tensor:
    """``(N, K, h, w)`` activations and gradients -> raw map ``(N, h, w)``."""
    g2 = grads.pow(2)
    g3 = g2 * grads
    total = activations.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + total * g3 + EPS)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    weights = (alpha * grads.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1)
