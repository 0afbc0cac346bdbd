"""braincam's CAMs against pytorch-grad-cam, and the hook's contract (frozen models, state,
single-logit heads, layer names)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.utils.model_targets import (
    BinaryClassifierOutputTarget,
    ClassifierOutputTarget,
)
from torch import nn

from braincam.errors import BraincamError
from braincam.explain import GRADIENT_CAMS, LayerHook, explain
from braincam.models import build_model, to_model_input

REFERENCE = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
    "eigencam": EigenCAM,
}
TARGETS = [0, 2, 1]  # mixed classes in one batch
TOL = 1e-4


class TinyNet(nn.Module):
    """No global pooling: gradients vary over space, so the five CAMs all differ."""

    def __init__(self, outputs: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 16 * 16, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_maps(method: str, model: nn.Module, layer: str, x: torch.Tensor,
                   targets: list[int], binary: bool = False) -> np.ndarray:
    target = BinaryClassifierOutputTarget if binary else ClassifierOutputTarget
    with REFERENCE[method](model, [model.get_submodule(layer)]) as cam:
        return cam(x, [target(t) for t in targets])


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {arch: build_model(arch, 3).eval() for arch in ("resnet50", "efficientnet_lite0")}


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=seeded(1))


@pytest.mark.parametrize("arch", ["resnet50", "efficientnet_lite0"])
def test_gradient_cams_equal_pytorch_grad_cam(nets, batch, arch):
    model = nets[arch]
    for method in GRADIENT_CAMS:
        ours = explain(model, batch, TARGETS, method)
        theirs = reference_maps(method, model, ours.layer, batch, TARGETS)
        assert ours.maps.shape == (3, 64, 64) and ours.raw.shape == (3, 2, 2)
        assert np.abs(ours.maps.numpy() - theirs).max() <= TOL, method
        assert ours.targets.tolist() == TARGETS


def test_default_layers_are_the_models(nets, batch):
    assert explain(nets["resnet50"], batch[:1], None, "gradcam").layer == "backbone.layer4.2"
    assert explain(nets["efficientnet_lite0"], batch[:1], None, "gradcam").layer == "backbone.bn2"


def test_methods_differ_and_match_on_spatial_gradients():
    """On a net without global pooling each formula gives its own map, equal to the
    reference; a swapped formula would fail here even though it passes on GAP nets."""
    model, x = TinyNet().eval(), torch.randn(3, 3, 16, 16, generator=seeded(2))
    maps = {}
    for method in GRADIENT_CAMS:
        maps[method] = explain(model, x, TARGETS, method, "features.3").maps.numpy()
        theirs = reference_maps(method, model, "features.3", x, TARGETS)
        assert np.abs(maps[method] - theirs).max() <= TOL, method
    names = list(maps)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(maps[a] - maps[b]).max() > 0.05, (a, b)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "eigencam"])
def test_wrapped_methods_equal_pytorch_grad_cam(method, capsys):
    """The same maps as the library; without its per-channel progress bars on stderr."""
    model, x = TinyNet().eval(), torch.randn(3, 3, 16, 16, generator=seeded(3))
    ours = explain(model, x, TARGETS[:3], method, "features.3")
    assert capsys.readouterr().err == ""
    theirs = reference_maps(method, model, "features.3", x, TARGETS[:3])
    assert np.abs(ours.maps.numpy() - theirs).max() <= TOL
    assert not any(isinstance(m, AblationLayer) for m in model.modules())  # swapped back


def test_frozen_model_and_no_weight_gradients(nets, batch):
    model = nets["efficientnet_lite0"]
    model.zero_grad(set_to_none=True)  # pytorch-grad-cam's backward filled them
    free = explain(model, batch, TARGETS, "gradcam++")
    assert all(p.grad is None for p in model.parameters())  # no backward into the weights
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        frozen = explain(model, batch, TARGETS, "gradcam++")
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    assert torch.allclose(frozen.maps, free.maps, atol=1e-6)
    assert frozen.maps.amax(dim=(1, 2)).min() > 0.99  # non-trivial maps


def test_gradients_reach_only_the_target_layer():
    model, x = TinyNet().eval(), torch.randn(2, 3, 16, 16, requires_grad=True)
    with LayerHook(model, "features.3") as hook:
        cap = hook.gradients(x, torch.tensor([0, 1]))
    assert x.grad is None and all(p.grad is None for p in model.parameters())
    manual = x.detach()
    acts = model.features(manual).detach().requires_grad_(True)
    score = model.head(acts)[[0, 1], [0, 1]].sum()
    (expected,) = torch.autograd.grad(score, acts)
    assert torch.allclose(cap.grads, expected, atol=1e-6)


def test_state_hooks_and_grad_mode_restored(nets, batch):
    model = nets["resnet50"]
    model.train()
    model.backbone.layer1.eval()  # a mixed state must come back as it was
    before = {name: m.training for name, m in model.named_modules()}
    with torch.no_grad():
        explain(model, batch[:2], None, "gradcam")
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        in_inference = explain(model, batch[:2], None, "gradcam").maps
        assert torch.is_inference_mode_enabled()
    assert torch.is_grad_enabled()
    assert torch.allclose(in_inference, explain(model, batch[:2], None, "gradcam").maps)
    assert {name: m.training for name, m in model.named_modules()} == before
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(BraincamError, match="does not output"):  # hook fails mid-forward
        explain(model, batch[:2], None, "gradcam", "backbone")
    assert {name: m.training for name, m in model.named_modules()} == before
    assert all(not m._forward_hooks for m in model.modules())
    model.eval()


def test_single_logit_head():
    model, x = TinyNet(outputs=1).eval(), torch.randn(2, 3, 16, 16, generator=seeded(4))
    targets = [1, 0]
    result = explain(model, x, targets, "gradcam", "features.3")
    theirs = reference_maps("gradcam", model, "features.3", x, targets, binary=True)
    assert np.abs(result.maps.numpy() - theirs).max() <= TOL
    p = torch.sigmoid(model(x).detach())[:, 0]
    assert torch.allclose(result.probs, torch.stack([1 - p, p], dim=1), atol=1e-6)
    flipped = explain(model, x, [0, 1], "gradcam", "features.3")
    assert torch.allclose(flipped.raw, -result.raw, atol=1e-6)  # class 0 explains -logit


def test_default_targets_are_predictions_and_maps_normalised(nets, batch):
    result = explain(nets["efficientnet_lite0"], batch, None, "layercam")
    assert torch.equal(result.targets, result.probs.argmax(dim=1))
    maps = result.maps
    assert maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.amin(dim=(1, 2)), torch.zeros(3), atol=1e-6)
    assert torch.allclose(maps.amax(dim=(1, 2)), torch.ones(3), atol=1e-5)
    assert torch.allclose(result.probs.sum(dim=1), torch.ones(3), atol=1e-6)


def test_uint8_images_go_through_model_input(nets):
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64), dtype=np.uint8)
    model = nets["efficientnet_lite0"]
    a = explain(model, images, [0, 1], "gradcam")
    b = explain(model, to_model_input(images), [0, 1], "gradcam")
    assert torch.equal(a.maps, b.maps)


def test_unknown_layer_lists_valid_names(nets, batch):
    with pytest.raises(BraincamError) as err:
        explain(nets["resnet50"], batch[:1], None, "gradcam", "backbone.layer5")
    message = str(err.value)
    assert "\n" not in message
    assert "did you mean" in message and "backbone.layer4" in message
    assert "backbone.layer4.2" in message and "head" in message


@pytest.mark.parametrize("method", ["gradcam", "eigencam", "scorecam", "ig", "occlusion"])
def test_targets_outside_the_classes_are_refused_by_every_method(method):
    model, x = TinyNet(outputs=3).eval(), torch.randn(2, 3, 16, 16, generator=seeded(5))
    for targets, bad in (([0, 3], 3), ([-1, 2], -1)):
        with pytest.raises(ValueError, match=rf"class indices in \[0, 3\), got {bad}$"):
            explain(model, x, targets, method, "features.3")
    single = TinyNet(outputs=1).eval()  # one logit: the classes 0 and 1
    with pytest.raises(ValueError, match=r"in \[0, 2\), got 2"):
        explain(single, x, [1, 2], method, "features.3")


def test_targets_that_are_not_integers_are_refused():
    """1.7 would otherwise be cast to class 1 and explained as if asked for."""
    model, x = TinyNet(outputs=3).eval(), torch.randn(2, 3, 16, 16, generator=seeded(5))
    for targets in ([0, 1.7], np.array([True, False]), torch.tensor([0.0, 1.0])):
        with pytest.raises(ValueError, match="integer class indices"):
            explain(model, x, targets, "gradcam", "features.3")
    assert explain(model, x, np.array([0, 2], dtype=np.int32), "gradcam",
                   "features.3").targets.tolist() == [0, 2]


def test_unknown_method_and_plain_model_without_layer():
    with pytest.raises(BraincamError, match="unknown method"):
        explain(TinyNet(), torch.randn(1, 3, 16, 16), None, "gradcam+++")
    with pytest.raises(BraincamError, match="features.3"):
        explain(TinyNet(), torch.randn(1, 3, 16, 16), None, "gradcam")


def test_integrated_gradients_completeness():
    """IG axiom: attributions sum to S(x) - S(0) (Gauss-Legendre with enough steps)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 2)).eval()
    x = torch.randn(2, 3, 8, 8, generator=seeded(5))
    from braincam.explain import ExplainOptions

    result = explain(model, x, [0, 1], "ig", options=ExplainOptions(ig_steps=64))
    with torch.no_grad():
        gap = model(x)[[0, 1], [0, 1]] - model(torch.zeros_like(x))[[0, 1], [0, 1]]
    assert torch.allclose(result.raw.sum(dim=(1, 2)), gap, atol=1e-3)
    assert result.layer is None and result.maps.shape == (2, 8, 8)
    with torch.inference_mode():  # as the CAMs: the caller's inference mode is no obstacle
        inside = explain(model, x, [0, 1], "ig", options=ExplainOptions(ig_steps=64))
    assert torch.allclose(inside.raw, result.raw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tensors_stay_on_the_gpu():
    model, x = TinyNet().eval(), torch.randn(2, 3, 16, 16)
    cpu = explain(model, x, [0, 1], "hirescam", "features.3")
    gpu = explain(model.cuda(), x, [0, 1], "hirescam", "features.3")
    assert gpu.maps.is_cuda and gpu.raw.is_cuda and gpu.probs.is_cuda and gpu.targets.is_cuda
    assert np.abs(gpu.numpy()["maps"] - cpu.numpy()["maps"]).max() <= TOL
