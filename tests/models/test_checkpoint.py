"""Checkpoints: safetensors round trip, metadata, weights from files, wrong architectures."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from braincam.errors import BraincamError
from braincam.models import (
    build_model,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    subtype_outputs,
)

META = {
    "arch": "resnet10t",
    "classes": ["glioma", "meningioma", "no_tumor"],
    "task": "multiclass",
    "preprocess": {"size": 32, "crop": True, "standardize": "none", "mask_background": False},
}


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet10t", 3).eval()
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path, META)
    return model, path


def test_round_trip_gives_identical_outputs_and_meta(trained):
    model, path = trained
    loaded, meta = load_checkpoint(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta == META
    assert read_meta(path) == META
    assert not loaded.training
    assert path.read_bytes()[:8] != b"PK\x03\x04"  # not a zip/pickle torch file


def test_subtype_head_round_trips_and_adds_subtype_probabilities(tmp_path):
    torch.manual_seed(0)
    subtypes = ["glioma", "meningioma", "no_tumor", "pituitary"]
    model = build_model("resnet10t", 2, groups=[1, 1, 0, 1]).eval()
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path, {**META, "classes": ["no_tumor", "tumor"], "task": "binary",
                                  "subtypes": subtypes})
    loaded, meta = load_checkpoint(path)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        merged = loaded(x)
        with subtype_outputs(loaded):
            fine = loaded(x).softmax(1)
    assert merged.shape == (3, 2) and fine.shape == (3, 4)
    assert loaded.num_classes == 2 and meta["subtypes"] == subtypes
    expected = torch.stack([fine[:, 2], fine[:, [0, 1, 3]].sum(1)], dim=1)
    torch.testing.assert_close(merged.softmax(1), expected)
    torch.testing.assert_close(model(x), merged)


def test_subtype_outputs_restores_the_head_after_an_error():
    model = build_model("resnet10t", 2, groups=[0, 1, 1]).eval()
    with pytest.raises(RuntimeError), subtype_outputs(model):
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
        raise RuntimeError
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2)
    with pytest.raises(ValueError, match="groups"):
        build_model("resnet10t", 3, groups=[0, 1, 1])


def test_checkpoint_of_another_architecture_fails_clearly(trained):
    _, path = trained
    with pytest.raises(BraincamError, match="holds a resnet10t model, not efficientnet_lite0"):
        build_model("efficientnet_lite0", 3, weights=str(path))
    with pytest.raises(BraincamError, match="--arch resnet10t"):
        load_checkpoint(path, expected_arch="efficientnet_lite0")


def test_a_segmenter_file_is_refused_as_a_classifier(tmp_path):
    from braincam.models.segment import build_segmenter, save_segmenter

    path = tmp_path / "model.safetensors"
    save_segmenter(build_segmenter("none").eval(), path, {"size": 32})
    with pytest.raises(BraincamError, match="holds a tumour segmenter .*not a classifier"):
        load_checkpoint(path)


def test_weights_path_loads_backbone_and_fitting_head(trained):
    model, path = trained
    same = build_model("resnet10t", 3, weights=str(path))
    other = build_model("resnet10t", 2, weights=str(path))
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(other.backbone.state_dict()[key], value)
    assert torch.equal(same.head[1].weight, model.head[1].weight)
    assert other.head[1].weight.shape == (2, 512)


def test_plain_state_dicts_load_into_the_backbone(tmp_path):
    import timm

    torch.manual_seed(1)
    reference = timm.create_model("resnet10t", num_classes=1000)
    tensors = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(tensors, tmp_path / "plain.safetensors")
    torch.save(reference.state_dict(), tmp_path / "plain.pth")
    for name in ("plain.safetensors", "plain.pth"):
        model = build_model("resnet10t", 1000, weights=str(tmp_path / name)).eval()
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(model(x), reference.eval()(x))
    with pytest.raises(BraincamError, match="does not fit efficientnet_lite0"):
        build_model("efficientnet_lite0", 2, weights=str(tmp_path / "plain.safetensors"))


def test_damaged_or_foreign_files_fail_clearly(tmp_path, trained):
    _, path = trained
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(BraincamError, match="not a readable .safetensors"):
        load_checkpoint(broken)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(BraincamError, match="not a braincam checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(BraincamError, match=r"holds no missing.safetensors: not a trained run"):
        load_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(BraincamError, match=r"typo is not a directory \(a run directory"):
        load_checkpoint(tmp_path / "typo" / "model.safetensors")
    text = tmp_path / "weights.pth"
    text.write_text("hello")
    with pytest.raises(BraincamError, match=r"not a readable state dict \(not a file that "
                       r"torch.save wrote, nor .safetensors\)$"):
        build_model("resnet10t", 2, weights=str(text))
    objects = tmp_path / "objects.pth"  # a torch file whose load would run code
    torch.save({"w": torch.zeros(2), "loss": torch.nn.MSELoss()}, objects)
    with pytest.raises(BraincamError, match="holds objects other than tensors") as info:
        build_model("resnet10t", 2, weights=str(objects))
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("edit", "message"), [
    ({"arch": "efficientnet"}, "'arch' is not JSON"),
    ({"arch": None}, "'arch' must be a model name"),
    ({"arch": "5"}, "'arch' must be a model name"),
    ({"classes": None}, "'classes' must be a list of class names"),
    ({"classes": "[]"}, "'classes' must be a list of class names"),
    ({"dropout": '"0.3"'}, "'dropout' must be a number"),
    ({"members": "[]"}, "'members' must be a list of member entries"),
    ({"guide": '{"size": 64}'}, "'guide' must hold a whole 'size' and a number 'floor'"),
    ({"arch": '"unet-efficientnet_lite0"'}, r"'size' must be a whole number of pixels \(a segm"),
])
def test_damaged_metadata_is_one_line_naming_the_entry(trained, edit, message):
    """A hand-edited or foreign file: one line naming the entry, never a KeyError inside."""
    from safetensors import safe_open

    _, path = trained
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open)
        metadata = f.metadata()
    for key, value in edit.items():
        metadata.pop(key) if value is None else metadata.__setitem__(key, value)
    save_file(tensors, str(path), metadata=metadata)
    for read in (read_meta, load_checkpoint):
        with pytest.raises(BraincamError, match=f"damaged braincam metadata: {message}"):
            read(path)


def test_a_checkpoint_without_a_task_is_one_line_where_the_task_is_needed(trained, tmp_path):
    from braincam.models.checkpoint import meta_task

    _, path = trained
    assert meta_task(read_meta(path), path) == "multiclass"
    with pytest.raises(BraincamError, match="no 'task'"):
        meta_task({k: v for k, v in META.items() if k != "task"}, path)


def test_weights_that_do_not_fit_name_the_tensor_and_a_segmenter_says_so(tmp_path):
    """The error quotes torch's first mismatch, not its header; a segmenter's file is named as
    one, not answered with an --arch it cannot take."""
    import timm

    from braincam.models.segment import build_segmenter, save_segmenter

    wider = timm.create_model("resnet18", num_classes=1000)  # resnet10t's names, other shapes
    torch.save(wider.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(BraincamError, match=r"does not fit resnet10t: size mismatch for "
                                            r"layer2\.0\.downsample\.1\.weight: copying"):
        build_model("resnet10t", 2, weights=str(tmp_path / "r18.pth"))
    save_segmenter(build_segmenter("none").eval(), tmp_path / "seg.safetensors", {"size": 64})
    with pytest.raises(BraincamError, match="holds a tumour segmenter"):
        build_model("efficientnet_lite0", 2, weights=str(tmp_path / "seg.safetensors"))


def test_state_dicts_of_models_with_two_classifiers_load(tmp_path):
    """timm names two classifiers for a distilled LeViT (``head.linear``, ``head_dist.linear``)
    and its ``head`` module holds a BatchNorm too: all are dropped, the backbone loads."""
    import timm

    torch.manual_seed(2)
    reference = timm.create_model("levit_128s")
    assert not isinstance(reference.pretrained_cfg["classifier"], str)
    torch.save(reference.state_dict(), tmp_path / "levit.pth")
    model = build_model("levit_128s", 2, weights=str(tmp_path / "levit.pth"))
    for name, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[name])
