"""explain_files on real MRI files: overlays on the original images, boxes drawn."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from braincam.data.preprocess import PreprocessConfig
from braincam.data.records import load_dataset
from braincam.errors import BraincamError
from braincam.explain.files import ImageItem, explain_files, target_indices
from braincam.explain.io import load_explanations
from braincam.explain.render import BOX_RGB
from braincam.models import build_model


@pytest.mark.realdata
def test_real_images_with_boxes(datasets_dir, tmp_path):
    records = [r for r in load_dataset([datasets_dir / "figshare-cheng-t1ce"]).records
               if r.box is not None][:3]
    items = [ImageItem(r.path, r.label, r.box) for r in records]
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", 3).eval()
    classes = ["glioma", "meningioma", "pituitary"]
    summary = explain_files(model, items, PreprocessConfig(size=64), classes, "multiclass",
                            tmp_path, target="label", progress=False)
    assert summary.n_explained == 3 and summary.n_overlays == 3 and not summary.skipped
    exp = load_explanations(summary.file)
    assert exp.targets.tolist() == [classes.index(r.label) for r in records]
    for i, r in enumerate(records):
        png = cv2.cvtColor(cv2.imread(str(tmp_path / "overlays" / f"{i:04d}_{r.path.stem}.png")),
                           cv2.COLOR_BGR2RGB)
        assert png.shape[:2] == (r.height, r.width)
        x0 = int(round((r.box.cx - r.box.w / 2) * r.width))
        y0 = int(round((r.box.cy - r.box.h / 2) * r.height))
        assert np.array_equal(png[y0 + 1, x0 + 1], BOX_RGB) or np.array_equal(
            png[y0, x0], BOX_RGB)


def test_fixed_class_targets_and_errors():
    items = [ImageItem(Path("a.png"), label="glioma")] * 2
    assert target_indices(items, "pred", ["glioma", "pituitary"], "multiclass") is None
    assert target_indices(items, "pituitary", ["glioma", "pituitary"], "multiclass").tolist() == [
        1, 1]
    assert target_indices(items, "label", ["no_tumor", "tumor"], "binary").tolist() == [1, 1]
    with pytest.raises(BraincamError, match="has no class"):
        target_indices(items, "label", ["meningioma", "pituitary"], "multiclass")
    with pytest.raises(BraincamError, match="--target must be"):
        target_indices(items, "edema", ["glioma", "pituitary"], "multiclass")
