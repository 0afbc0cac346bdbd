"""``audit_model`` on model specs (models braincam did not train), end to end on 16-px
phantoms: a tiny torch model with every check, and an ONNX model whose conversion fails, so
only the black-box checks run; audit.json has the nested shape with one dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from braincam.audit.model.base import AuditSettings
from braincam.audit.model.run import audit_model
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError

sys.path.insert(0, str(Path(__file__).parents[2] / "models" / "foreign"))
from foreign_tiny import (  # noqa: E402
    SIZE,
    onnx_spec,
    torch_spec,
    write_onnx_model,
    write_spec,
    write_torch_model,
)

FAST = AuditSettings(faithfulness_images=3, road_images=0, sanity_images=2,
                     occlusion_images=2, occlusion_window=8, occlusion_stride=8, steps=4)
TOP_KEYS = {"run", "rows", "model", "settings", "skipped", "datasets", "findings"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign-audit")
    write_torch_model(root)
    write_onnx_model(root / "tiny.onnx")
    make_phantom_dataset(root / "phantoms", PhantomSpec(n_per_class=3, size=SIZE * 2),
                         splits=("test",))
    return root


def test_torch_spec_gets_every_check(folder, tmp_path):
    spec = write_spec(folder, torch_spec(target_layer="conv"))
    doc = audit_model(spec, [folder / "phantoms"], ["gradcam"], tmp_path / "out",
                      settings=FAST, device="cpu")
    on_disk = json.loads((tmp_path / "out" / "audit" / "audit.json").read_text())
    assert on_disk == doc and set(doc) == TOP_KEYS
    assert doc["run"] is None and doc["skipped"] == [] and doc["rows"] == "unseen"
    assert doc["model"]["format"] == "torch" and doc["model"]["target_layer"] == "net.conv"
    with pytest.raises(BraincamError, match="a model spec has none"):
        audit_model(spec, [folder / "phantoms"], out_dir=tmp_path / "v", validation=True)
    assert list(doc["datasets"]) == ["phantoms"]
    block = doc["datasets"]["phantoms"]
    assert block["n_images"] == 6 and block["classes"] == ["no_tumor", "tumor"]
    assert block["methods"] == ["gradcam"]
    assert block["sanity"]["layers"] == ["net.fc", "net.conv"]
    assert isinstance(block["sanity"]["passed"], bool) and block["sanity"]["n_images"] == 2
    assert block["faithfulness"]["n_images"] == 3
    assert 0 <= block["counterfactual"]["background_only_survival"] <= 1
    assert all(f["message"].startswith("[phantoms] ") for f in doc["findings"])
    assert len(doc["findings"]) == len(block["findings"])
    frame = pd.read_csv(tmp_path / "out" / "audit" / "audit_images.csv")
    assert len(frame) == 6 and set(frame["method"]) == {"gradcam"}


def test_onnx_without_conversion_runs_the_black_box_checks(folder, tmp_path, monkeypatch):
    import onnx2torch

    def fail(_model):
        raise NotImplementedError("Converter is not implemented (Fancy)")

    monkeypatch.setattr(onnx2torch, "convert", fail)
    data = folder / "phantoms16"
    make_phantom_dataset(data, PhantomSpec(n_per_class=3, size=SIZE * 2, seed=3),
                         splits=("test",))
    spec = write_spec(folder, onnx_spec(), "onnx.yaml")
    doc = audit_model(spec, [data], ["gradcam", "occlusion"], tmp_path / "out",
                      settings=FAST, device="cpu")
    assert set(doc) == TOP_KEYS and doc["model"]["gradients"] is False
    assert doc["skipped"] == [{"methods": ["gradcam"], "checks": ["sanity"],
                               "reason": doc["model"]["skipped_reason"]}]
    assert "onnx2torch cannot convert" in doc["skipped"][0]["reason"]
    block = doc["datasets"]["phantoms16"]
    assert block["methods"] == ["occlusion"] and block["attention"]["method"] == "occlusion"
    assert block["sanity"]["passed"] is None and block["sanity"]["layers"] == []
    assert block["faithfulness"]["deletion_auc"] is not None
    assert block["counterfactual"]["intensity_swap_flip_rate"] is not None


def test_spec_needs_out(folder):
    with pytest.raises(BraincamError, match="model spec: pass --out"):
        audit_model(write_spec(folder, torch_spec()), [folder / "phantoms"], settings=FAST)


def test_torchscript_spec_runs_ig_and_the_sanity_check(folder, tmp_path):
    spec = torch_spec(format="torchscript", path="tiny.pt")
    del spec["module"]
    doc = audit_model(write_spec(folder, spec, "ts.yaml"), [folder / "phantoms"], ["gradcam"],
                      tmp_path / "out", settings=FAST, device="cpu")
    assert doc["skipped"][0]["methods"] == ["gradcam"] and doc["skipped"][0]["checks"] == []
    assert "forward hook" in doc["skipped"][0]["reason"]
    block = doc["datasets"]["phantoms"]
    assert block["methods"] == ["ig"]
    assert block["sanity"]["layers"] == ["net.fc", "net.conv"]
    assert isinstance(block["sanity"]["passed"], bool)
