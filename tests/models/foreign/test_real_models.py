"""The two third-party models of ../shared/models through their specs in tests/fixtures
(the same as docs/specs), on a few real Sartaj Testing images."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from braincam.models.foreign import load_foreign, load_spec
from braincam.models.foreign.images import read_native_batch

REPO = Path(__file__).parents[3]
SPECS = REPO / "tests" / "fixtures"
NAMES = ("convnet-torch-4class", "mobilenetv2-onnx-4class")
pytestmark = pytest.mark.realdata


@pytest.fixture(autouse=True)
def _models():
    if not (REPO.parent / "shared" / "models" / NAMES[0]).is_dir():
        pytest.skip("../shared/models not found")


@pytest.mark.parametrize("name", NAMES)
def test_docs_specs_match_the_fixtures(name):
    fixture = load_spec(SPECS / f"{name}.yaml")
    documented = load_spec(REPO / "docs" / "specs" / f"{name}.yaml")
    assert fixture.path == documented.path  # both reach ../shared/models
    assert dataclasses.replace(fixture, file=documented.file, module=documented.module) \
        == documented


def real_model(name: str):
    return load_foreign(load_spec(SPECS / f"{name}.yaml"))


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
