"""The tumour threshold of a binary model, chosen on validation (``--tune-threshold``).

A binary model calls an image "tumour" when P(tumour) >= 0.5, the argmax. With
``--tune-threshold`` the threshold ``t`` is the one with the best balanced accuracy on the
validation images, among their own probabilities and 0.5 (ties: the one nearest 0.5), and it
is folded into the head: ``logit(t)`` is added to the bias of the ``no_tumor`` output (of
each ``no_tumor`` subtype output, which shifts their log-sum-exp alike), so that

    z'_no_tumor = z_no_tumor + logit(t),   P'(tumour) = sigmoid(logit P(tumour) - logit t),

and P'(tumour) >= 0.5 exactly where P(tumour) >= t. Every use of the model (evaluation, the
audit, ``braincam predict``, the Python API) then applies the threshold through the argmax;
the checkpoint's meta records it (``threshold``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from braincam.models.build import BraincamNet


def validation_threshold(tumour: np.ndarray, p_tumour: np.ndarray) -> float:
    """The threshold with the best balanced accuracy of ``p_tumour >= t`` against ``tumour``
    among the probabilities and 0.5, the one nearest 0.5 among equals; 0.5 when the images
    hold one class only. Each class's recall at every candidate comes from one sorted search,
    so time and memory grow as ``n log n``, not as candidates x images."""
    tumour = np.asarray(tumour, bool)
    p_tumour = np.asarray(p_tumour, np.float64)
    if tumour.all() or not tumour.any():
        return 0.5
    candidates = np.unique(np.append(p_tumour, 0.5))
    tumours, clear = np.sort(p_tumour[tumour]), np.sort(p_tumour[~tumour])
    found = (len(tumours) - np.searchsorted(tumours, candidates, "left")) / len(tumours)
    cleared = np.searchsorted(clear, candidates, "left") / len(clear)
    score = (cleared + found) / 2
    best = np.lexsort((np.abs(candidates - 0.5), -score))[0]  # best score, then nearest 0.5
    return float(candidates[best])


def fold_threshold(model: BraincamNet, no_tumor: int, threshold: float) -> None:
    """Add ``logit(threshold)`` to the head's bias of class ``no_tumor`` (module docstring)."""
    if not 0 < threshold < 1:
        raise ValueError(f"a threshold must lie in (0, 1), got {threshold}")
    linear = model.head[1]
    rows = model.head[-1].member[no_tumor] if model.merges_subtypes else [no_tumor]
    with torch.no_grad():
        linear.bias[rows] += math.log(threshold / (1 - threshold))
