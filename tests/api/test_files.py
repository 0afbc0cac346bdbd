"""``braincam.api.files``: the volume row that follows a volume's slices."""

from __future__ import annotations

import numpy as np

from braincam.api import Prediction
from braincam.api.files import volume_rows


def slice_of(k: int, probabilities: dict[str, float]) -> Prediction:
    label = max(probabilities, key=probabilities.get)
    return Prediction("vol.nii.gz", k, probabilities, label, [], np.zeros((4, 4), np.uint8),
                      kind="slice")


def test_the_volume_row_is_the_most_tumour_like_slice():
    binary = [slice_of(k, {"no_tumor": 1 - p, "tumor": p}) for k, p in enumerate((0.2, 0.9, 0.4))]
    assert volume_rows(binary)[-1].slice == 1
    types = [slice_of(k, {"glioma": 0.1, "no_tumor": p, "pituitary": 0.9 - p})
             for k, p in enumerate((0.8, 0.1, 0.5))]
    assert volume_rows(types)[-1].slice == 1  # 1 - P(no_tumor)


def test_without_a_no_tumour_class_the_volume_row_is_the_most_confident_slice():
    """Every slice is a tumour to a model of tumour types only: its most confident answer
    is shown, not the first slice."""
    types = [slice_of(k, {"glioma": g, "meningioma": 1 - g}) for k, g in
             enumerate((0.55, 0.6, 0.95, 0.3))]
    (*slices, volume) = volume_rows(types)
    assert len(slices) == 4 and volume.kind == "volume"
    assert volume.slice == 2 and volume.label == "glioma"
