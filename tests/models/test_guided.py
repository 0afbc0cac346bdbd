"""Segmentation-guided classifiers: the gate's arithmetic, what reaches the pooled features,
Grad-CAM at the gate, the frozen segmenter, checkpoints and the guide's loading errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from braincam.data.preprocess import PreprocessConfig
from braincam.errors import BraincamError
from braincam.models import (
    build_model,
    default_target_layer,
    finetune_modules,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from braincam.models.guided import Gate, GuidedBackbone, guide, is_guided
from braincam.models.segment import build_segmenter
from braincam.models.unet import DECODER_CHANNELS, MeanProbability, unet


class Region(nn.Module):
    """A stub segmenter: P(tumour) = 1 on ``region`` (bool, its input side), exactly 0
    elsewhere (logits +-1e4 saturate the sigmoid), whatever the image."""

    def __init__(self, region: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("region", torch.from_numpy(region)[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2:] == self.region.shape[-2:]  # resized to the segmenter's side
        logits = torch.where(self.region, 1e4, -1e4)
        return logits.expand(len(x), -1, -1, -1)


def top_left(side: int, fraction: float) -> np.ndarray:
    region = np.zeros((side, side), bool)
    region[: round(side * fraction), : round(side * fraction)] = True
    return region


def guided(arch: str, region: np.ndarray, floor: float = 0.0, classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(arch, classes)
    for module in model.modules():  # timm zero-initialises each residual branch's last BN
        if isinstance(module, nn.BatchNorm2d):  # gamma: wake the branches up, so receptive
            nn.init.uniform_(module.weight, 0.5, 1.5)  # fields are the architecture's own
    return guide(model, Region(region), len(region), floor).eval()


def gated(gate: Gate, features: torch.Tensor, probability: torch.Tensor) -> torch.Tensor:
    return gate(features, gate.prior(probability, gate.cells(features)))


def test_gate_weighs_features_by_the_share_of_each_cell_predicted_tumour():
    features = torch.ones(1, 2, 2, 2)
    probability = torch.zeros(1, 1, 4, 4)
    probability[0, 0, :2, :2] = 1  # cell (0, 0) all tumour
    probability[0, 0, 0, 2] = 1  # cell (0, 1): a quarter
    out = gated(Gate(0.0, upsample=1), features, probability)
    assert torch.equal(out[0, 0], torch.tensor([[1.0, 0.25], [0.0, 0.0]]))
    out = gated(Gate(0.2, upsample=1), features, probability)  # G = 0.2 + 0.8 * share
    torch.testing.assert_close(out[0, 1], torch.tensor([[1.0, 0.4], [0.2, 0.2]]))
    features = torch.arange(4.0).reshape(1, 1, 2, 2)  # the default: each cell on 4 x 4
    out = gated(Gate(0.0), features, torch.ones(1, 1, 8, 8))  # gate cells, each its own share
    assert out.shape == (1, 1, 8, 8)
    assert torch.equal(out[0, 0, :4, :4], torch.zeros(4, 4))
    assert torch.equal(out[0, 0, 4:, 4:], torch.full((4, 4), 3.0))
    out = gated(Gate(0.0), features, probability)  # P at 4 px: each P pixel covers 2 x 2 gate cells
    assert torch.equal(out[0, 0], probability[0, 0].repeat_interleave(2, 0).repeat_interleave(
        2, 1) * features[0, 0].repeat_interleave(4, 0).repeat_interleave(4, 1))


def test_the_finer_gate_changes_the_explanation_not_the_decision():
    """Pooled features on 4 x 4 gate cells per feature cell equal those of a gate on the feature
    cells themselves (module docstring), for any predicted region."""
    region = np.zeros((64, 64), bool)
    region[5:23, 30:41] = True  # straddles feature cells unevenly
    model = guided("resnet10t", region, floor=0.1)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        fine = model.backbone(x)
        model.backbone.gate.upsample = 1
        coarse = model.backbone(x)
    torch.testing.assert_close(fine, coarse)
    with pytest.raises(BraincamError, match=r"floor must be in \[0, 1\)"):
        Gate(1.0)


@pytest.mark.parametrize("arch", ["resnet10t", "efficientnet_lite0", "resnet50"])
def test_a_guide_that_sees_tumour_everywhere_leaves_the_features_unchanged(arch):
    """P = 1 on every pixel: ``mean(G F) = mean(F)``, the plain network's pooled features --
    the guide gates the map the network itself pools; the mass M is all 2 x 2 cells."""
    model = guided(arch, np.ones((32, 32), bool))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.backbone(x)
        torch.testing.assert_close(out[:, :-1], model.backbone.net(x))
    torch.testing.assert_close(out[:, -1], torch.full((2,), 4.0))
    assert default_target_layer(model) == "backbone.gate"
    assert all(name.startswith("backbone.net.") for name in finetune_modules(model))


def guided_with_head(region: np.ndarray, classes: list[str], bias: list[float]) -> nn.Module:
    """resnet10t guided by ``region`` with a head that outputs ``classes`` and whose weights
    are 0 and bias ``bias``: the head's own answer is the same for every image."""
    from braincam.models.guided import absent_output

    torch.manual_seed(0)
    model = build_model("resnet10t", len(classes))
    with torch.no_grad():
        model.head[1].weight.zero_()
        model.head[1].bias.copy_(torch.tensor(bias))
    return guide(model, Region(region), len(region), absent=absent_output(classes)).eval()


def test_no_predicted_tumour_means_no_tumour_whatever_the_head_says():
    """The evidence term: a head biased to "tumor" (P = 0.95 on its own) answers no tumour
    where nothing is predicted, P(tumor) = EPS * 19; with at least one gate cell predicted
    (one 8 px cell at 128 px: 4 px of the 64 px segmenter) it answers unchanged."""
    from braincam.models.guided import EPS

    x = torch.randn(2, 3, 128, 128)
    odds = 0.95 / 0.05
    with torch.no_grad():
        nothing = guided_with_head(np.zeros((64, 64), bool), ["no_tumor", "tumor"],
                                   [0.0, float(np.log(odds))])
        p = nothing(x).softmax(1)[:, 1]
        torch.testing.assert_close(p, torch.full((2,), EPS * odds / (1 + EPS * odds)))
        cell = top_left(64, 4 / 64)  # exactly one gate cell
        some = guided_with_head(cell, ["no_tumor", "tumor"], [0.0, float(np.log(odds))])
        torch.testing.assert_close(some(x).softmax(1)[:, 1], torch.full((2,), 0.95))
        half = guided_with_head(top_left(64, 2 / 64), ["no_tumor", "tumor"],
                                [0.0, float(np.log(odds))])  # a quarter of a gate cell
        torch.testing.assert_close(half(x).softmax(1)[:, 1],
                                   torch.full((2,), 0.25 * odds / (1 + 0.25 * odds)))


class Faint(nn.Module):
    """A stub segmenter: P(tumour) = ``p`` in every pixel, whatever the image."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.logit = float(np.log(p / (1 - p)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 1, *x.shape[-2:]), self.logit)


def test_a_cut_keeps_faint_probabilities_from_adding_up_to_a_tumour():
    """P = 0.3 everywhere sums to far more than one gate cell, so the evidence term is silent
    and the head (biased to "tumor", P = 0.95) answers; with ``cut = 0.5`` nothing reaches
    the gate and the model answers no tumour, P(tumor) = EPS * 19. A cut at 0.3 keeps it all."""
    from braincam.models.guided import EPS, absent_output, guide_meta

    x = torch.randn(2, 3, 128, 128)
    odds = 0.95 / 0.05
    p_tumour = {}
    for cut in (0.0, 0.3, 0.5):
        torch.manual_seed(0)
        model = build_model("resnet10t", 2)
        with torch.no_grad():
            model.head[1].weight.zero_()
            model.head[1].bias.copy_(torch.tensor([0.0, float(np.log(odds))]))
        guide(model, Faint(0.3), 64, absent=absent_output(["no_tumor", "tumor"]), cut=cut)
        with torch.no_grad():
            p_tumour[cut] = model.eval()(x).softmax(1)[:, 1]
        assert guide_meta(model, "seg").get("cut", 0.0) == cut
    torch.testing.assert_close(p_tumour[0.0], torch.full((2,), 0.95))
    torch.testing.assert_close(p_tumour[0.3], torch.full((2,), 0.95))
    torch.testing.assert_close(p_tumour[0.5], torch.full((2,), EPS * odds / (1 + EPS * odds)))
    with pytest.raises(BraincamError, match="cut"):
        guide(build_model("resnet10t", 2), Faint(0.3), 64, cut=1.0)


def test_the_evidence_term_acts_on_subtype_logits_and_skips_models_without_no_tumor():
    from braincam.models.build import MergeSubtypes

    x = torch.randn(2, 3, 128, 128)
    empty = np.zeros((64, 64), bool)
    subtypes = ["glioma", "meningioma", "no_tumor", "pituitary"]
    model = guided_with_head(empty, subtypes, [0.0] * 4)  # equal biases: P(tumour) 3/4 alone
    assert model.head.absent == 2
    with torch.no_grad():
        z = model(x)
        model.head.append(MergeSubtypes([1, 1, 0, 1]))
        merged = model(x).softmax(1)
    assert (z.softmax(1)[:, 2] > 1 - 1e-5).all()
    assert (merged[:, 0] > 1 - 1e-5).all()
    types = guided_with_head(empty, ["glioma", "meningioma", "pituitary"], [0.0] * 3)
    assert types.head.absent is None
    with torch.no_grad():
        torch.testing.assert_close(types(x).softmax(1), torch.full((2, 3), 1 / 3))


def test_pixels_outside_the_predicted_tumour_do_not_reach_the_pooled_features():
    """Floor 0: the gated cells are the top-left 2 x 2 of resnet10t's 8 x 8 map at 256 px
    (pixels 0-63); their receptive fields (199 px, centres at 16 and 48) end before pixel 149,
    so changing the bottom-right 64 x 64 pixels changes nothing the head sees. With a floor
    of 0.1 the rest of the image counts and the features move."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, 256, 256)
    changed = x.clone()
    changed[..., 192:, 192:] = torch.randn(2, 3, 64, 64) * 3
    region = top_left(64, 0.25)  # the segmenter's 64 px: its top-left 16 px = 64 image px
    with torch.no_grad():
        closed = guided("resnet10t", region)
        assert torch.equal(closed.backbone(x), closed.backbone(changed))
        assert torch.equal(closed(x), closed(changed))
        assert closed.backbone(x).abs().sum() > 0
        opened = guided("resnet10t", region, floor=0.1)
        moved = (opened.backbone(x) - opened.backbone(changed)).abs().amax()
    assert moved > 1e-3
    # the same network without the gate sees the change too
    assert not torch.equal(closed.backbone.net(x), closed.backbone.net(changed))


def test_gradcam_at_the_default_layer_is_zero_outside_the_gated_cells():
    from braincam.explain import explain

    model = guided("resnet10t", top_left(64, 0.5))  # 4 x 4 cells at 128 px, 16 x 16 gate cells
    images = np.random.default_rng(0).integers(0, 256, (4, 128, 128), dtype=np.uint8)
    cam = explain(model, images, method="gradcam")
    assert cam.raw.shape == (4, 16, 16)
    raw = cam.raw.numpy()  # the region: gate cells 0..7 along each side (8 px each)
    assert not raw[:, 8:, :].any() and not raw[:, :, 8:].any()
    assert raw[:, :8, :8].max() > 0
    maps = cam.maps.numpy()  # bilinear from gate cell centres 4, 12, ..., 60, 68: 0 from px 68
    assert not maps[:, 68:, :].any() and not maps[:, :, 68:].any()
    for target in (0, 1):  # either class's map
        raw = explain(model, images, method="gradcam", targets=[target] * 4).raw.numpy()
        assert not raw[:, 8:, :].any() and not raw[:, :, 8:].any()


def test_the_finer_gate_points_into_a_small_tumour_off_its_cells_centre():
    """A tumour in the corner of one feature cell (image px 52-63 of the cell at 32-63):
    Grad-CAM's maximum lies in it on the 8 px gate grid; on the feature cells it lies at the
    cell's centre (48, 48), outside the tumour."""
    from braincam.explain import explain

    region = np.zeros((64, 64), bool)
    region[26:32, 26:32] = True  # segmenter px 26-31 = image px 52-63
    model = guided("resnet10t", region)
    images = np.random.default_rng(0).integers(0, 256, (2, 128, 128), dtype=np.uint8)
    for upsample, inside in ((4, True), (1, False)):
        model.backbone.gate.upsample = upsample
        for target in (0, 1):  # the class whose map is not all zero (ReLU)
            maps = explain(model, images, method="gradcam", targets=[target] * 2).maps.numpy()
            if maps.max() > 0:
                break
        for m in maps:
            row, col = np.unravel_index(m.argmax(), m.shape)
            assert bool(52 <= row < 64 and 52 <= col < 64) == inside, (upsample, row, col)


def test_the_segmenter_is_frozen_and_stays_in_eval_mode():
    model = guided("resnet10t", top_left(32, 0.5))
    segmenter = model.backbone.segmenter
    model.train()
    assert model.backbone.net.training and model.head.training
    assert not segmenter.training
    assert not any(p.requires_grad for p in model.backbone.segmenter.parameters())
    real = build_segmenter("none")
    model.backbone.segmenter = real
    model.requires_grad_(True)  # even then no gradient flows into it (torch.no_grad)
    model.train()
    assert not real.training
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for p in real.parameters())
    assert model.head[1].weight.grad is not None


SMP_WIDTHS = (256, 128, 64, 32, 16)


@pytest.fixture(params=[[DECODER_CHANNELS], [SMP_WIDTHS], [DECODER_CHANNELS, SMP_WIDTHS]],
                ids=["default", "smp-widths", "mean-of-two"])
def guided_checkpoint(tmp_path, request):
    """A guided checkpoint whose U-Net has braincam's or smp's default decoder widths, or whose
    guide is the mean of two such U-Nets: each loads from the file alone."""
    torch.manual_seed(0)
    model = build_model("resnet10t", 2)
    nets = [unet(widths) for widths in request.param]
    guide(model, nets[0] if len(nets) == 1 else MeanProbability(nets), 64, 0.25, cut=0.4)
    meta = {"arch": "resnet10t", "classes": ["no_tumor", "tumor"],
            "guide": {"size": 64, "floor": 0.25, "source": "runs/seg", "cut": 0.4}}
    path = tmp_path / "model.safetensors"
    save_checkpoint(model.eval(), path, meta)
    return model, path, meta


def test_loading_a_checkpoint_leaves_torchs_random_state_alone(guided_checkpoint):
    """The random initialisation the file's weights replace (classifier and guide, cold caches
    as in a fresh process) draws nothing a later training would see."""
    from braincam.models.unet import _encoder_shapes

    _, path, _ = guided_checkpoint
    _encoder_shapes.cache_clear()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    load_checkpoint(path)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_guided_checkpoint_round_trips_from_its_meta_alone(guided_checkpoint):
    model, path, meta = guided_checkpoint
    loaded, read = load_checkpoint(path)
    assert read == meta and read_meta(path)["guide"] == meta["guide"]
    assert is_guided(loaded) and loaded.backbone.floor == 0.25 and loaded.backbone.size == 64
    assert loaded.backbone.cut == 0.4
    x = torch.randn(3, 3, 96, 96)  # resized to the segmenter's 64 px inside
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
    prefix = "backbone.segmenter." + ("members.1." if isinstance(
        model.backbone.segmenter, MeanProbability) else "")
    assert any(k.startswith(prefix + "encoder.") for k in keys)  # self-contained


def test_a_guided_checkpoint_initialises_a_plain_model(guided_checkpoint):
    model, path, _ = guided_checkpoint
    plain = build_model("resnet10t", 2, weights=str(path))
    assert not is_guided(plain)
    theirs = model.backbone.net.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in plain.backbone.state_dict().items())
    assert torch.equal(plain.head[1].weight, model.head[1].weight)


def test_a_network_without_a_reachable_feature_map_is_refused():
    with pytest.raises(BraincamError, match="cannot reach in ConvNeXt"):
        guide(build_model("convnext_atto", 2), Region(top_left(32, 0.5)), 32)
    assert isinstance(guided("resnet10t", top_left(32, 0.5)).backbone, GuidedBackbone)


def test_a_guide_must_crop_like_the_classifier():
    from braincam.models.segment import check_preprocess

    meta = {"size": 32, "preprocess": {"size": 32, "crop": True}}
    check_preprocess(meta, PreprocessConfig(size=64), "seg")  # sizes may differ
    with pytest.raises(BraincamError, match="would not line up; match --crop/--no-crop"):
        check_preprocess(meta, PreprocessConfig(size=64, crop=False), "seg")


def test_occlusion_evaluates_whole_copies_of_a_guided_model():
    """The incremental planner knows plain ResNets and EfficientNets only; a guided one (whose
    gate it would leave out) is a network it cannot describe."""
    from braincam.explain.incremental import Unsupported, units

    with pytest.raises(Unsupported):
        units(guided("resnet10t", top_left(32, 0.5)))


@pytest.mark.parametrize("region", [np.zeros((32, 32), bool), top_left(32, 0.5)])
def test_the_ood_reference_sees_the_whole_image_not_the_gated_features(region):
    """``braincam predict``'s feature reference of a guided model: the ungated network's
    pooled features of the whole image, with the model's own probabilities. Where nothing is
    predicted the head's input is the same for every image; these features are not."""
    from braincam.api.reference import features_and_probs
    from braincam.models.normalize import to_model_input

    model = guided("resnet10t", region)
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    images[2] = 0  # a blank image
    features, probs = features_and_probs(model, images, torch.device("cpu"))
    x = to_model_input(torch.from_numpy(images))
    with torch.no_grad():
        plain, head_input = model.backbone.net(x), model.backbone(x)
        expected = torch.softmax(model(x), dim=1)
    assert features.shape == (3, model.num_features)
    np.testing.assert_allclose(features, plain.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probs, expected.numpy(), rtol=1e-4, atol=1e-6)
    assert np.abs(features[0] - features[2]).max() > 1e-3
    if not region.any():
        assert torch.equal(head_input[0], head_input[2])
