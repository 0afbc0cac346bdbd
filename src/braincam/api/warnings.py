"""The warnings a careful user needs beside a prediction (each a one-line string).

- ``unlike the training data``: the out-of-distribution score (``braincam.api.reference``:
  Mahalanobis distance of the backbone features over its training-calibrated threshold) is
  above 1, or a property of the model input (head fraction, in-head mean or SD) lies outside
  the training sample's whole range;
- ``duplicate of a training image``: its model input's pHash is within
  ``braincam.data.hashing.NEAR_DISTANCE`` bits of a training image's (0 bits: exact);
- ``CAM mostly outside the head`` (explanations only): more than ``OUTSIDE_HEAD`` of the map's
  mass ``sum(m * (1 - head)) / sum(m)`` lies outside the head mask.
"""

from __future__ import annotations

import numpy as np

from braincam.api.reference import Reference, image_properties
from braincam.data.hashing import NEAR_DISTANCE, hamming, phash
from braincam.data.preprocess import Preprocessed

OUTSIDE_HEAD = 0.5
_LABELS = {"head_fraction": "head fraction", "head_mean": "in-head mean intensity",
           "head_std": "in-head intensity SD"}


def image_warnings(prep: Preprocessed, ood_score: float | None,
                   ref: Reference | None) -> list[str]:
    """Out-of-distribution and duplicate warnings of one preprocessed image."""
    if ref is None:
        return []
    out = []
    if ood_score is not None and ood_score > 1.0:
        out.append(f"unlike the training data: feature distance {ood_score:.2f}x the "
                   "threshold (99th percentile of held-out training images)")
    props = image_properties(prep.image[None], prep.mask[None])
    for name, values in props.items():
        value, low, high = float(values[0]), ref.low[name], ref.high[name]
        if not low <= value <= high:
            out.append(f"unlike the training data: {_LABELS[name]} {value:.2f} outside the "
                       f"training range {low:.2f}-{high:.2f}")
    if len(ref.phashes):
        distance = hamming(np.array([phash(prep.image)], dtype=np.uint64), ref.phashes)
        nearest = int(np.argmin(distance))
        bits = int(distance[nearest])
        if bits <= NEAR_DISTANCE:
            kind = "exact" if bits == 0 else "near"
            out.append(f"{kind} duplicate of a training image ({bits} bits pHash): "
                       f"{ref.paths[nearest]}")
    return out


def cam_warning(cam: np.ndarray, head: np.ndarray) -> list[str]:
    """The CAM warning (module docstring) for one map and its head mask, both (S, S)."""
    total = float(np.sum(cam))
    if total <= 0:
        return []
    outside = float(np.sum(cam * ~head)) / total
    if outside <= OUTSIDE_HEAD:
        return []
    return [f"CAM mostly outside the head ({outside:.0%} of its mass)"]
