"""The tumour threshold of a binary model, chosen on validation (``--tune-threshold``).

A binary model calls an image "tumour" when P(tumour) >= 0.5, the argmax. With
``--tune-threshold`` the threshold ``t`` is the one with the best balanced accuracy on the
validation images, among their own probabilities and 0.5 (ties: the one nearest 0.5), and it
is folded into the head: ``logit(t) - m`` is added to the bias of the ``no_tumor`` output (of
each ``no_tumor`` subtype output, which shifts their log-sum-exp alike), so that

    z'_no_tumor = z_no_tumor + logit(t) - m,   P'(tumour) = sigmoid(logit P(tumour) - logit t + m),

and P'(tumour) >= 0.5 where P(tumour) >= t. The choice is made on the tumour logits
``s = logit P(tumour)`` (``tumour_logit``, from the model's logits in float64), not on float32
probabilities, which near 0 and 1 cannot resolve ``logit t``. ``t`` is itself one validation
image's probability: with ``m = 0`` that image's two outputs would tie and float rounding would
pick its class against the balanced accuracy ``t`` was chosen for, so ``m`` =
:data:`TIE_MARGIN` (1e-4 logits, far above float32 rounding of logits; half the gap to the
next lower validation score where that is smaller, :func:`tie_margin`) keeps it on the tumour
side. Every use of the model (evaluation, the audit, ``braincam predict``, the Python API)
then applies the threshold through the argmax; the checkpoint's meta records it
(``threshold``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from braincam.models.build import BraincamNet

TIE_MARGIN = 1e-4  # logits: the image at the threshold lands on the tumour side


def tumour_logit(logits: torch.Tensor, no_tumor: int) -> torch.Tensor:
    """``s = logit P(tumour) = logsumexp(z_other) - z_no_tumor`` per row, in float64."""
    z = logits.double()
    others = torch.cat([z[:, :no_tumor], z[:, no_tumor + 1:]], dim=1)
    return torch.logsumexp(others, dim=1) - z[:, no_tumor]


def validation_threshold(tumour: np.ndarray, score: np.ndarray) -> float:
    """The cut ``c`` with the best balanced accuracy of ``score >= c`` against ``tumour``
    among the scores and 0, the one nearest 0 among equals; 0 when the images hold one class
    only. With tumour logits as ``score``, ``c = logit t`` (0: P = 0.5; nearest 0 is nearest
    0.5). Each class's recall at every candidate comes from one sorted search, so time and
    memory grow as ``n log n``, not as candidates x images."""
    tumour = np.asarray(tumour, bool)
    score = np.asarray(score, np.float64)
    if tumour.all() or not tumour.any():
        return 0.0
    candidates = np.unique(np.append(score, 0.0))
    tumours, clear = np.sort(score[tumour]), np.sort(score[~tumour])
    found = (len(tumours) - np.searchsorted(tumours, candidates, "left")) / len(tumours)
    cleared = np.searchsorted(clear, candidates, "left") / len(clear)
    accuracy = (cleared + found) / 2
    best = np.lexsort((np.abs(candidates), -accuracy))[0]  # best accuracy, then nearest 0
    return float(candidates[best])


def tie_margin(score: np.ndarray, cut: float) -> float:
    """The margin below ``cut`` that folding may use: :data:`TIE_MARGIN`, or half the gap to
    the next lower score where that is smaller, so that no validation image below the cut
    crosses it."""
    below = np.asarray(score, np.float64)
    below = below[below < cut]
    return min(TIE_MARGIN, (cut - below.max()) / 2) if below.size else TIE_MARGIN


def fold_threshold(model: BraincamNet, no_tumor: int, cut: float,
                   margin: float = TIE_MARGIN) -> float:
    """Add ``cut - margin`` to the head's bias of class ``no_tumor``, ``cut`` a tumour logit
    (module docstring; ``margin``: :func:`tie_margin`); returns the threshold
    ``t = sigmoid(cut)``."""
    if not math.isfinite(cut):
        raise ValueError(f"a tumour-logit cut must be finite, got {cut}")
    linear = model.head[1]
    rows = model.head[-1].member[no_tumor] if model.merges_subtypes else [no_tumor]
    with torch.no_grad():
        linear.bias[rows] += cut - margin
    return 0.5 * (1 + math.tanh(cut / 2))  # sigmoid, without overflow
