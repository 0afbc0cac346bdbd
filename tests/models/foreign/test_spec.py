"""Model spec parsing, loading and the one-line errors that name the field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from foreign_tiny import (
    SIZE,
    import_file,
    onnx_spec,
    torch_spec,
    write_onnx_model,
    write_spec,
    write_torch_model,
)

from braincam.errors import BraincamError
from braincam.models import to_model_input
from braincam.models.foreign import is_spec, load_foreign, load_spec


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    write_torch_model(root)
    write_onnx_model(root / "tiny.onnx")
    return root


def test_fields_defaults_and_label_rules(folder):
    spec = load_spec(write_spec(folder, torch_spec()))
    assert spec.format == "torch" and spec.path == folder / "tiny.pth"
    assert spec.classes == ("no_tumor", "tumor") and spec.task == "binary"
    assert spec.input.size == (SIZE, SIZE) and spec.input.resize == "bilinear"
    assert spec.input.layout == "NCHW" and spec.input.channels == 3
    assert spec.input.scale == 255 and spec.input.crop is False
    assert spec.input.mean == (0.5, 0.5, 0.5) and spec.input.std == (0.5, 0.5, 0.5)
    assert spec.target_layer is None and spec.module == "tiny.py:TinyNet"
    assert is_spec(folder / "spec.yaml") and not is_spec(folder)


@pytest.mark.parametrize(("change", "field"), [
    ({"colour": "red"}, "'colour'"),
    ({"input": {"size": [16, 16], "gamma": 2}}, "'input.gamma'"),
    ({"format": "keras"}, "'format'"),
    ({"path": "missing.pth"}, "'path'"),
    ({"module": None}, "'module'"),
    ({"module": "tiny.py"}, "'module'"),
    ({"input": {"size": [16]}}, "'input.size'"),
    ({"input": {"size": [16, 16], "channels": 2}}, "'input.channels'"),
    ({"input": {"size": [16, 16], "mean": [0.5, 0.5]}}, "'input.mean'"),
    ({"input": {"size": [16, 16], "layout": "CHW"}}, "'input.layout'"),
    ({"input": {"size": [16, 16], "resize": "magic"}}, "'input.resize'"),
    ({"output": "scores"}, "'output'"),
    ({"classes": ["no", "dragon"]}, "'classes'"),
    ({"classes": ["no", "no_tumor"]}, "'classes'"),
])
def test_spec_errors_name_the_field(folder, change, field):
    doc = {k: v for k, v in (torch_spec() | change).items() if v is not None}
    with pytest.raises(BraincamError, match=field) as err:
        load_spec(write_spec(folder, doc, "bad.yaml"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("change", "field"), [
    ({"module": "nowhere.py:TinyNet"}, "'module'.*cannot import"),
    ({"module": "tiny.py:Missing"}, "'module'.*no callable"),
    ({"module": "tiny.py:three"}, "'module'.*does not match the state dict"),
    ({"module": "braincam_no_such_package:TinyNet"}, "'module'.*cannot import"),
    ({"classes": ["glioma", "meningioma", "pituitary"]}, "'classes'.*3 classes"),
    ({"target_layer": "conv9"}, "'target_layer'.*conv9.*last convolutions: conv"),
    ({"target_layer": "fc"}, r"'target_layer': layer 'fc' outputs shape \[1, 2\], not a "
                             "feature map"),
    ({"input": {"size": [SIZE, SIZE], "channels": 1}}, "'input.size'.*rejects"),
])
def test_torch_model_mismatch_names_the_field(folder, change, field):
    with pytest.raises(BraincamError, match=field) as err:
        load_foreign(load_spec(write_spec(folder, torch_spec(**change), "bad.yaml")))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("inputs", "field"), [
    ({"size": [32, 32], "layout": "NHWC"}, "'input.size'"),
    ({"size": [SIZE, SIZE]}, "'input.layout'"),
    ({"size": [SIZE, SIZE], "layout": "NHWC", "channels": 1}, "'input.channels'"),
])
def test_onnx_input_mismatch_names_the_field(folder, inputs, field):
    with pytest.raises(BraincamError, match=field):
        load_foreign(load_spec(write_spec(folder, onnx_spec(input=inputs), "bad.yaml")))


def test_torch_adapter_applies_the_spec_input(folder):
    model = load_foreign(load_spec(write_spec(folder, torch_spec())))
    assert model.layer == "net.conv" and model.capabilities.cams
    images = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8)
    native = model.net.to_native(to_model_input(torch.from_numpy(images)))
    expected = (images / 255.0 - 0.5) / 0.5
    assert native.shape == (3, 3, SIZE, SIZE)
    np.testing.assert_allclose(native[:, 1].numpy(), expected, atol=1e-5)
    own = model.net.net(torch.as_tensor(expected, dtype=torch.float32)[:, None].repeat(1, 3, 1, 1))
    np.testing.assert_allclose(model.net(to_model_input(torch.from_numpy(images))).detach(),
                               own.detach(), atol=1e-5)


def test_torchscript_has_gradients_and_says_whether_cams_work(folder):
    spec = torch_spec(format="torchscript", path="tiny.pt")
    del spec["module"]
    model = load_foreign(load_spec(write_spec(folder, spec, "ts.yaml")))
    reference = load_foreign(load_spec(write_spec(folder, torch_spec())))
    x = to_model_input(torch.zeros(2, SIZE, SIZE, dtype=torch.uint8) + 90)
    np.testing.assert_allclose(model.net(x).detach(), reference.net(x).detach(), atol=1e-5)
    caps = model.capabilities
    assert caps.gradients and (caps.cams == (model.layer is not None))
    if not caps.cams:
        assert "hook" in caps.reason
        with pytest.raises(BraincamError, match="gradcam cannot run.*ig"):
            model.for_method("gradcam")
    assert model.for_method("ig") is model.net


def test_onnx_conversion_checked_against_onnxruntime(folder):
    model = load_foreign(load_spec(write_spec(folder, onnx_spec())))
    caps = model.capabilities
    assert caps.gradients and caps.cams and caps.conversion_max_diff <= 1e-4
    assert model.black_box is not model.net  # predictions through onnxruntime
    x = to_model_input(torch.from_numpy(
        np.random.default_rng(1).integers(0, 256, (4, SIZE, SIZE), dtype=np.uint8)))
    p_ort = torch.softmax(model.black_box(x), 1)
    p_torch = torch.softmax(model.net(x), 1).detach()
    np.testing.assert_allclose(p_ort, p_torch, atol=1e-5)
    assert torch.allclose(p_ort.sum(1), torch.ones(4))


def test_a_confident_softmax_model_is_explained_through_the_softmax_input(folder):
    """Probabilities rounded to 1 give ``log p`` no gradient; the softmax's input has one."""
    import onnx
    from onnx2torch import convert

    from braincam.models.foreign.load import logits_before_softmax
    from braincam.models.foreign.net import ForeignNet

    write_onnx_model(folder / "sure.onnx", gain=1e4)
    model = load_foreign(load_spec(write_spec(folder, onnx_spec(path="sure.onnx"))))
    assert model.net.output == "logits"
    assert not any(isinstance(m, torch.nn.Softmax) for m in model.net.modules())
    kept = ForeignNet(convert(onnx.load(str(folder / "sure.onnx"))).eval(), model.spec.input,
                      "probabilities")
    x = to_model_input(torch.from_numpy(
        np.random.default_rng(2).integers(0, 256, (4, SIZE, SIZE), dtype=np.uint8)))
    grads = {}
    for name, net in (("kept", kept), ("cut", model.net)):
        x_ = x.clone().requires_grad_(True)
        out = net(x_)
        out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
        grads[name] = x_.grad.flatten(1).abs().amax(1)
    assert (torch.softmax(kept(x), 1).amax(1) == 1).all()  # float32 rounds p to 1
    assert (grads["kept"] == 0).all() and (grads["cut"] > 0).all()
    assert logits_before_softmax(model.net.net) is None  # no softmax left to cut
    assert logits_before_softmax(torch.nn.Linear(2, 2)) is None  # not a converted graph


def test_failed_conversion_turns_gradients_off(folder, monkeypatch, caplog):
    import onnx2torch

    def fail(_model):
        raise NotImplementedError("Converter is not implemented (OperationDescription(Fancy))")

    monkeypatch.setattr(onnx2torch, "convert", fail)
    model = load_foreign(load_spec(write_spec(folder, onnx_spec())))
    caps = model.capabilities
    assert not caps.gradients and not caps.cams and model.layer is None
    assert "onnx2torch cannot convert" in caps.reason and "Fancy" in caps.reason
    assert model.net is model.black_box
    assert model.for_method("occlusion") is model.net
    with pytest.raises(BraincamError, match="ig cannot run.*occlusion can$"):
        model.for_method("ig")
    with caplog.at_level("WARNING"):
        load_foreign(load_spec(write_spec(folder, onnx_spec(target_layer="conv9"), "l.yaml")))
    assert "target_layer 'conv9' is not used: the model gives no gradients" in caplog.text


def test_binary_view_sums_the_tumour_types(folder):
    spec = torch_spec(module="tiny.py:three", classes=["glioma", "no_tumor", "pituitary"])
    torch.manual_seed(1)
    torch.save(import_file(folder / "tiny.py").three().state_dict(), folder / "three.pth")
    spec["path"] = "three.pth"
    multi = load_foreign(load_spec(write_spec(folder, spec, "three.yaml")))
    binary = load_foreign(load_spec(folder / "three.yaml"), task="binary")
    assert multi.classes == ("glioma", "no_tumor", "pituitary")
    assert binary.classes == ("no_tumor", "tumor")
    x = to_model_input(torch.full((2, SIZE, SIZE), 120, dtype=torch.uint8))
    p = torch.softmax(multi.net(x), 1).detach()
    q = torch.softmax(binary.net(x), 1).detach()
    np.testing.assert_allclose(q[:, 0], p[:, 1], atol=1e-6)
    np.testing.assert_allclose(q[:, 1], p[:, 0] + p[:, 2], atol=1e-6)


def test_output_conversions_keep_the_model_probabilities():
    from braincam.models.foreign.net import ForeignNet
    from braincam.models.foreign.spec import InputSpec

    p = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
    net = ForeignNet(torch.nn.Identity(), InputSpec(size=(8, 8)), "probabilities")
    np.testing.assert_allclose(torch.softmax(net.logits(p), 1), p, atol=1e-6)
    sigmoid = ForeignNet(torch.nn.Identity(), InputSpec(size=(8, 8)), "sigmoid")
    q = torch.softmax(sigmoid.logits(torch.tensor([[0.9], [0.2]])), 1)
    np.testing.assert_allclose(q, [[0.1, 0.9], [0.8, 0.2]], atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_with_a_fixed_batch(folder, batch):
    """5 images in fixed batches of 3: a full chunk, then 2 padded to 3 (the spec check's 4
    images likewise)."""
    write_onnx_model(folder / "fixed.onnx", batch=batch)
    model = load_foreign(load_spec(write_spec(folder, onnx_spec(path="fixed.onnx"),
                                              "fixed.yaml")))
    reference = load_foreign(load_spec(write_spec(folder, onnx_spec())))
    x = to_model_input(torch.from_numpy(
        np.random.default_rng(2).integers(0, 256, (5, SIZE, SIZE), dtype=np.uint8)))
    out = model.black_box(x)
    assert out.shape[0] == 5
    np.testing.assert_allclose(out, reference.black_box(x), atol=1e-6)


@pytest.mark.parametrize(("fmt", "name"), [("onnx", "junk.onnx"), ("torchscript", "junk.pt"),
                                           ("torch", "junk.pth")])
def test_unreadable_model_file_names_path(folder, fmt, name):
    (folder / name).write_bytes(b"not a model")
    doc = torch_spec(format=fmt, path=name)
    if fmt != "torch":
        del doc["module"]
    with pytest.raises(BraincamError, match="field 'path'") as err:
        load_foreign(load_spec(write_spec(folder, doc, "junk.yaml")))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("change", "field"), [
    ({"input": {"size": [SIZE, SIZE], "scale": float("nan")}}, "'input.scale'"),
    ({"input": {"size": [SIZE, SIZE], "mean": float("inf")}}, "'input.mean'.*finite"),
    ({"input": {"size": [SIZE, SIZE], "std": [0.5, float("nan"), 0.5]}}, "'input.std'.*finite"),
    ({"target_layer": ""}, "'target_layer'"),
    ({"input": {"size": [SIZE, SIZE], "mean": True}}, "'input.mean'"),  # YAML true is no 1
    ({"input": {"size": [SIZE, SIZE], "scale": True}}, "'input.scale'"),
    ({"input": {"size": [SIZE, SIZE], "channels": True}}, "'input.channels'"),
])
def test_non_finite_numbers_and_an_empty_layer_name_the_field(folder, change, field):
    with pytest.raises(BraincamError, match=field):
        load_spec(write_spec(folder, torch_spec(**change), "bad.yaml"))


def test_a_spec_that_is_not_utf8_is_one_line(tmp_path):
    spec = tmp_path / "latin.yaml"
    spec.write_bytes(b"format: torchscript\npath: \xff\xfe\n")
    with pytest.raises(BraincamError, match="latin.yaml: cannot read the model spec"):
        load_spec(spec)


def test_a_spec_reached_through_a_link_reads_its_files_beside_the_real_spec(folder, tmp_path):
    """``path`` and ``module`` both resolve against the folder of the file the link points
    to, so a linked spec loads the same model as the spec itself."""
    real = write_spec(folder, torch_spec(), "linked.yaml")
    link = tmp_path / "elsewhere.yaml"
    link.symlink_to(real)
    spec = load_spec(link)
    assert spec.path == folder / "tiny.pth"
    assert load_foreign(spec).layer == "net.conv"


SIGMOID_SOURCE = '''
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class Settings:
    width: int = 4


class OneOutput(nn.Module):
    """A binary model that returns one probability per image, shape [N]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, Settings().width, 3, padding=1)
        self.fc = nn.Linear(Settings().width, 1)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3))).sigmoid().squeeze(1)
'''


def test_a_module_with_dataclasses_and_a_one_dimensional_sigmoid(tmp_path):
    """A module file using dataclasses imports (it is registered while it runs), and a model
    that returns ``[N]`` sigmoid probabilities is read as one column: P(tumour)."""
    (tmp_path / "one.py").write_text(SIGMOID_SOURCE)
    torch.manual_seed(0)
    net = import_file(tmp_path / "one.py").OneOutput().eval()
    torch.save(net.state_dict(), tmp_path / "one.pth")
    doc = torch_spec(path="one.pth", module="one.py:OneOutput", output="sigmoid",
                     classes=["no_tumor", "tumor"])
    model = load_foreign(load_spec(write_spec(tmp_path, doc)))
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE),
                                                                dtype=np.uint8))
    x = to_model_input(images)
    prob = model.net(x).detach().softmax(1)[:, 1]
    with torch.no_grad():
        own = net(model.net.to_native(x))
    np.testing.assert_allclose(prob.numpy(), own.numpy(), atol=1e-5)


def test_a_binary_model_has_no_multiclass_view(folder):
    spec = load_spec(write_spec(folder, torch_spec()))
    with pytest.raises(BraincamError, match="binary model.*no multiclass view"):
        load_foreign(spec, task="multiclass")


def test_modules_of_one_name_in_two_folders_stay_apart(folder, tmp_path):
    """Each spec's ``tiny.py`` is its own module, also when a second one fails to import."""
    other = tmp_path / "other"
    write_torch_model(other, seed=1)
    first = load_foreign(load_spec(write_spec(folder, torch_spec(), "a.yaml")))
    second = load_foreign(load_spec(write_spec(other, torch_spec(), "b.yaml")))
    x = to_model_input(torch.zeros(1, SIZE, SIZE, dtype=torch.uint8))
    assert not torch.allclose(first.net(x), second.net(x))  # seed 0 and seed 1 weights
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tiny.py").write_text("raise RuntimeError('broken on import')\n")
    (tmp_path / "broken" / "tiny.pth").write_bytes((folder / "tiny.pth").read_bytes())
    with pytest.raises(BraincamError, match="broken on import"):
        load_foreign(load_spec(write_spec(tmp_path / "broken", torch_spec())))
    import sys

    names = {type(m.net.net).__module__ for m in (first, second)}
    assert len(names) == 2 and all(n in sys.modules for n in names)  # pickling finds them


def test_an_empty_output_names_the_classes_field(tmp_path):
    (tmp_path / "empty.py").write_text(
        "import torch\nfrom torch import nn\n\nclass Empty(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 1, 1)\n\n"
        "    def forward(self, x):\n        return self.conv(x)[:0].flatten()\n")
    torch.save(import_file(tmp_path / "empty.py").Empty().state_dict(), tmp_path / "e.pth")
    doc = torch_spec(path="e.pth", module="empty.py:Empty")
    with pytest.raises(BraincamError, match="field 'classes': the model gives output") as err:
        load_foreign(load_spec(write_spec(tmp_path, doc)))
    assert "\n" not in str(err.value)
