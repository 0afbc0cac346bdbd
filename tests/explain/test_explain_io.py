"""explanations.npz round trip."""

from __future__ import annotations

import numpy as np
import pytest

from braincam.errors import BraincamError
from braincam.explain.io import ExplanationSet, load_explanations, save_explanations


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    exp = ExplanationSet(
        maps=rng.random((2, 8, 8), dtype=np.float32), raw=rng.standard_normal((2, 2, 2)),
        targets=np.array([1, 0]), probs=np.array([[0.2, 0.8], [0.9, 0.1]]),
        paths=["/data/a b.png", "/data/é.jpg"], crops=np.array([[0, 0, 8, 8], [1, 2, 7, 8]]),
        original_sizes=np.array([[8, 8], [10, 9]]), method="gradcam++",
        layer="backbone.layer4.2", classes=["no_tumor", "tumor"],
    )
    save_explanations(tmp_path / "e.npz", exp)
    back = load_explanations(tmp_path / "e.npz")
    assert back.paths == exp.paths and back.classes == exp.classes
    assert back.method == "gradcam++" and back.layer == "backbone.layer4.2" and len(back) == 2
    assert np.array_equal(back.maps, exp.maps) and back.maps.dtype == np.float32
    assert np.allclose(back.raw, exp.raw) and back.targets.dtype == np.int64
    assert np.array_equal(back.crops, exp.crops)
    exp.layer = None
    save_explanations(tmp_path / "e.npz", exp)
    assert load_explanations(tmp_path / "e.npz").layer is None


def test_unreadable_file_is_one_line_error(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(BraincamError, match="not a readable explanations file"):
        load_explanations(tmp_path / "bad.npz")
