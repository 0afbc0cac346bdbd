"""The two third-party models of ../shared/models through their specs in docs/specs, on a
few real Sartaj Testing images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from braincam.models.foreign import load_foreign, load_spec
from braincam.models.foreign.images import read_native_batch

SPECS = Path(__file__).parents[3] / "docs" / "specs"
pytestmark = pytest.mark.realdata


def real_model(name: str):
    spec = load_spec(SPECS / f"{name}.yaml")
    if not spec.path.is_file():
        pytest.skip(f"{spec.path} not found")
    return load_foreign(spec)


@pytest.fixture(scope="module")
def paths(datasets_dir):
    folder = datasets_dir / "sartaj-brain-tumor-mri" / "Testing"
    return [sorted((folder / c).glob("*.jpg"))[3] for c in
            ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")]


def test_convnet_fixture_predicts_deterministically(paths):
    model = real_model("convnet-torch-4class")
    assert model.classes == ("glioma", "meningioma", "no_tumor", "pituitary")
    assert model.layer == "net.conv3"
    x = torch.from_numpy(read_native_batch(model.spec.input, paths))
    assert x.shape == (4, 3, 150, 150) and -1 <= x.min() < x.max() <= 1
    with torch.no_grad():
        first = torch.softmax(model.net.from_native(x), 1)
        again = torch.softmax(model.net.from_native(x.clone()), 1)
    assert first.shape == (4, 4) and torch.equal(first, again)
    np.testing.assert_allclose(first.sum(1), 1, atol=1e-5)


def test_converted_onnx_equals_onnxruntime(paths):
    model = real_model("mobilenetv2-onnx-4class")
    assert model.capabilities.gradients and model.layer is not None
    x = torch.from_numpy(read_native_batch(model.spec.input, paths))
    assert x.shape == (4, 128, 128, 3) and 0 <= x.min() < x.max() <= 1
    with torch.no_grad():
        p_ort = torch.softmax(model.black_box.from_native(x), 1)
        p_torch = torch.softmax(model.net.from_native(x), 1)
    assert float((p_ort - p_torch).abs().max()) <= 1e-4
