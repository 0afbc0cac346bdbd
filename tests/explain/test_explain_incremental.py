"""Incremental occlusion: footprints, plans, and maps equal to whole-copy evaluation and captum."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from skimage import data
from torch import nn

from braincam.explain.base import class_probs
from braincam.explain.incremental import (
    MAX_CROP_SHARE,
    Footprint,
    Unsupported,
    fold_batchnorm,
    footprint,
    plan,
    units,
)
from braincam.explain.occlusion import occlusion, window_boxes
from braincam.models import build_model

OCCLUSION = sys.modules["braincam.explain.occlusion"]  # the package exports the function


def chain_footprint(model: nn.Module) -> Footprint:
    chain, _ = units(model)
    total = (Footprint(), Footprint())
    for unit in chain:
        total = footprint(unit, total)
    assert total[0] == total[1]
    return total[0]


def test_conv_and_pool_footprints():
    three = footprint(nn.Conv2d(1, 1, 3, stride=2, padding=1))
    assert three == (Footprint(2, -1, 1), Footprint(2, -1, 1))
    # ResNet's stem: 7x7/2 conv then 3x3/2 max pooling -> stride 4, 11 px centred on 4o
    stem = footprint(nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.MaxPool2d(3, 2, 1)))
    assert stem[0] == Footprint(4, -5, 5)
    wide = footprint(nn.Conv2d(1, 1, (3, 5), padding=(1, 2), dilation=(1, 2)))
    assert wide == (Footprint(1, -1, 1), Footprint(1, -2, 6))


def test_resnet50_receptive_field_is_the_published_427_px():
    """Araujo et al., Distill 2019, "Computing receptive fields of CNNs": ResNet-50, 427 px,
    effective stride 32."""
    rf = chain_footprint(build_model("resnet50", 2, "none"))
    assert (rf.jump, rf.hi - rf.lo + 1) == (32, 427)


def test_footprint_outputs_and_reads_invert_each_other():
    f = Footprint(4, -5, 5)
    first, last = f.outputs(40, 71, n_out=56)  # a 32 px window at 40
    assert (first, last) == (9, 19)  # 9*4+5 = 41 >= 40 > 8*4+5; 19*4-5 = 71 <= 71 < 20*4-5
    assert f.reads(first, last, n_in=224) == (31, 81)
    assert f.outputs(0, 3, n_out=56) == (0, 2) and f.reads(0, 2, 224) == (0, 13)


def test_blocks_with_global_pooling_are_unsupported():
    with pytest.raises(Unsupported):
        footprint(nn.AdaptiveAvgPool2d(1))
    with pytest.raises(Unsupported, match="squeeze-excitation"):
        units_and_footprints(build_model("efficientnet_b0", 2, "none"))
    with pytest.raises(Unsupported):
        units(nn.Sequential(nn.Conv2d(3, 3, 3)))


def units_and_footprints(model: nn.Module) -> None:
    chain, _ = units(model)
    for unit in chain:
        footprint(unit)


def test_plan_crops_the_early_blocks_of_efficientnet_lite0():
    model = build_model("efficientnet_lite0", 2, "none").eval()
    chain, finish = units(model)
    sizes, x = [(224, 224)], torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        for unit in chain:
            x = unit(x)
            sizes.append(tuple(x.shape[-2:]))
    the_plan = plan(chain, finish, sizes, window_boxes(224, 224, 32, 16))
    crops = [level.crop for level in the_plan.levels]
    # stem, block 0, blocks 1.0-1.1, 2.0-2.1, 3.0 on crops; 3.1 onwards on whole maps
    assert len(the_plan.levels) == 7 and len(the_plan.rest) == len(chain) - 7
    assert crops[0] == (36, 36)  # a 32 px window + the stem's 3 px reach, aligned to stride 2
    for level, (h, w) in zip(the_plan.levels, sizes, strict=False):
        assert level.crop[0] * level.crop[1] <= MAX_CROP_SHARE * h * w


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet50"])
def test_folding_batchnorm_keeps_the_outputs_and_removes_every_batchnorm(arch):
    model = soft_resnet50() if arch == "resnet50" else build_model(arch, 2, "imagenet").eval()
    x = chelsea(64)
    with torch.no_grad():
        before = model(x)
        folded = fold_batchnorm(build_copy(model))
        after = folded(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert (after - before).abs().max() <= 1e-4 * before.abs().max()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is kept


def build_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def chelsea(size: int) -> torch.Tensor:
    """The cat photo as two normalised model inputs (the second mirrored)."""
    img = torch.tensor(data.chelsea()).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True)
    x = torch.cat([x, x.flip(-1)])
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return (x - mean[:, None, None]) / std[:, None, None]


def soft_resnet50() -> nn.Module:
    """resnet50 without ImageNet weights (offline): random weights, a head scaled so the
    probabilities do not saturate, BatchNorm statistics that keep activations alive."""
    torch.manual_seed(0)
    model = build_model("resnet50", 2, "none").eval()
    with torch.no_grad():
        model.head[1].weight.mul_(1e-2)
    return model


@pytest.mark.parametrize(("arch", "size", "window", "stride", "fill"), [
    ("efficientnet_lite0", 72, 16, 6, "blur"),  # 72 = 16 + 9*6 - 4: the last window is cut
    ("efficientnet_lite0", 64, 12, 10, "zero"),
    ("resnet50", 60, 16, 12, "mean"),
])
def test_incremental_equals_whole_copies(arch, size, window, stride, fill):
    model = (build_model(arch, 2, "imagenet") if arch != "resnet50" else soft_resnet50()).eval()
    x, targets = chelsea(size), torch.tensor([0, 1])
    calls = []
    real_plan = OCCLUSION.plan

    def spy(*args):
        calls.append(real_plan(*args))
        return calls[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(OCCLUSION, "plan", spy)
        fast = occlusion(model, x, targets, window, stride, fill, batch_size=13, incremental=True)
    whole = occlusion(model, x, targets, window, stride, fill, batch_size=13, incremental=False)
    assert calls and calls[0].levels, "the incremental path ran, with crops"
    assert (fast.drop - whole.drop).abs().max() <= 1e-5  # BatchNorm folding rounds ~1e-6
    assert whole.drop.abs().max() > 1e-3  # not two empty maps


def test_incremental_equals_captum_on_efficientnet_lite0():
    model = build_model("efficientnet_lite0", 2, "imagenet").eval()
    x, targets = chelsea(64), torch.tensor([1, 0])
    ours = occlusion(model, x, targets, 16, 12, "zero").drop  # incremental: the CPU default
    theirs = Occlusion(lambda t: class_probs(model(t))).attribute(
        x, sliding_window_shapes=(3, 16, 16), strides=(3, 12, 12), baselines=0.0, target=targets
    )[:, 0]
    assert (ours - theirs).abs().max() <= 1e-4
    assert theirs.abs().max() > 1e-3


def test_unsupported_networks_fall_back_to_whole_copies():
    model = build_model("efficientnet_b0", 2, "none").eval()  # squeeze-excitation blocks
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fallback = occlusion(model, x, None, 8, 8, incremental=True)
    whole = occlusion(model, x, None, 8, 8, incremental=False)
    assert torch.equal(fallback.drop, whole.drop)
    assert torch.allclose(fallback.probs, class_probs(model(x)))
