"""Occlusion against captum's Occlusion, window placement and planted evidence."""

from __future__ import annotations

import math

import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from braincam.errors import BraincamError
from braincam.explain import ExplainOptions, explain, normalise
from braincam.explain.base import class_probs
from braincam.explain.occlusion import fill_values, occlusion, window_masks, window_starts


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    ).eval()


def captum_drop(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, window: int,
                stride: int, baselines: torch.Tensor) -> torch.Tensor:
    attr = Occlusion(lambda t: class_probs(model(t))).attribute(
        x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
        baselines=baselines, target=targets,
    )
    assert torch.allclose(attr[:, 0], attr[:, 2])  # windows span all channels
    return attr[:, 0]


@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
def test_equals_captum_occlusion(fill):
    """Window 5, stride 3 on 16 px: the last window is cut off by the border; batch 7 mixes
    windows of different images in one forward."""
    model = tiny_cnn()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 2, 1])
    ours = occlusion(model, x, targets, window=5, stride=3, fill=fill, batch_size=7)
    theirs = captum_drop(model, x, targets, 5, 3, fill_values(x, fill, 5))
    assert (ours.drop - theirs).abs().max() <= 1e-4
    assert ours.drop.abs().max() > 1e-3  # the comparison is not between two zero maps
    assert torch.equal(ours.targets, targets)


def test_window_placement_is_captums():
    assert window_starts(16, 5, 3) == [0, 3, 6, 9, 12]  # 12..17 is cut to 12..16
    assert window_starts(224, 32, 16) == list(range(0, 193, 16))
    for size, window, stride in [(16, 5, 3), (224, 32, 16), (10, 10, 4), (9, 2, 2)]:
        assert len(window_starts(size, window, stride)) == math.ceil((size - window) / stride) + 1
    masks = window_masks(16, 16, 5, 3)
    assert masks.shape == (25, 16, 16)
    assert masks.sum(dim=0).min() >= 1  # every pixel covered
    assert masks[-1, 12:, 12:].all() and masks[-1].sum() == 16


def test_planted_evidence_is_found():
    """A 'model' whose class-1 logit is the mean of the top-left 4x4 block: occluding (zero
    fill) drops p1 only for windows touching that block; elsewhere the drop is exactly 0."""

    class Corner(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = x[:, :, :4, :4].mean(dim=(1, 2, 3))
            return torch.stack([torch.zeros_like(z), z], dim=1)

    x = torch.full((1, 3, 12, 12), 2.0)
    result = occlusion(Corner(), x, torch.tensor([1]), window=4, stride=2, fill="zero")
    drop = result.drop[0]
    p_full, p_half = torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(1.0))
    assert torch.isclose(drop[0, 0], p_full - 0.5)  # only the window at (0, 0) covers it
    assert drop[:4, :4].min() > 0
    assert torch.all(drop[6:, :] == 0) and torch.all(drop[:, 6:] == 0)
    # pixel (1, 3): windows at x in {0, 2}, y = 0 -> drops (p - 0.5) and (p - p_half)
    assert torch.isclose(drop[1, 3], ((p_full - 0.5) + (p_full - p_half)) / 2)


def test_model_untouched_and_state_restored():
    model = tiny_cnn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = occlusion(model, torch.randn(1, 3, 16, 16), None, window=8, stride=4)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no BN statistics update
    assert all(p.is_contiguous() for p in model.parameters())  # the channels-last copy is private
    assert torch.equal(result.targets, result.probs.argmax(dim=1))


def test_explain_occlusion_normalises_the_drop():
    model = tiny_cnn()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    result = explain(model, x, [0, 1], "occlusion", options=ExplainOptions(8, 4, "mean"))
    direct = occlusion(model, x, torch.tensor([0, 1]), window=8, stride=4, fill="mean").drop
    assert result.layer is None
    assert torch.allclose(result.raw, direct)
    assert torch.allclose(result.maps, normalise(direct, (16, 16)))


@pytest.mark.parametrize(
    ("window", "stride", "fill", "message"),
    [(17, 4, "zero", "window"), (4, 5, "zero", "stride"), (0, 1, "zero", "window"),
     (4, 2, "noise", "fill")],
)
def test_bad_settings_are_one_line_errors(window, stride, fill, message):
    with pytest.raises(BraincamError, match=message):
        occlusion(tiny_cnn(), torch.randn(1, 3, 16, 16), None, window, stride, fill)
