"""Backbone features remembered across cross-validation folds (braincam.train.features)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

import braincam.train.features as features
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.train.cv import cross_validate
from braincam.train.features import backbone_features, module_digest, remembered_features
from tests.train.test_training import tiny

CPU = torch.device("cpu")


class CountingNet(nn.Module):
    """A small conv backbone that counts the images it has seen."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return self.net(x)


def grey(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 16, 16), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_each_image_is_computed_once_inside_the_block_and_rows_equal_fresh_ones():
    torch.manual_seed(0)
    net = CountingNet().eval()
    images = grey(6, 1)
    images[5] = images[0]  # the same pixels under another index: one computation
    fresh = backbone_features(net, images, CPU, 4)
    assert net.seen == 6

    net.seen = 0
    with remembered_features():
        first = backbone_features(net, images[:4], CPU, 4)
        assert net.seen == 4
        second = backbone_features(net, images[2:], CPU, 4)
        assert net.seen == 5  # only images[4] was new; images[5] is images[0]
        again = backbone_features(net, images, CPU, 4)
        assert net.seen == 5
    torch.testing.assert_close(first, fresh[:4])
    torch.testing.assert_close(second, fresh[2:])
    torch.testing.assert_close(again, fresh)

    backbone_features(net, images, CPU, 4)  # outside the block nothing is remembered
    assert net.seen == 11


def test_a_changed_weight_is_another_backbone():
    torch.manual_seed(0)
    net = CountingNet().eval()
    images = grey(3, 2)
    digest = module_digest(net)
    with remembered_features():
        before = backbone_features(net, images, CPU, 8)
        with torch.no_grad():
            net.net[0].bias[0] += 1.0
        assert module_digest(net) != digest
        after = backbone_features(net, images, CPU, 8)
    assert net.seen == 6
    assert not torch.allclose(before, after)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "phantoms"
    make_phantom_dataset(root, PhantomSpec(n_per_class=8, size=48, seed=3))
    return root


def test_cross_validation_computes_each_images_features_once(phantoms, tmp_path, monkeypatch):
    computed = []
    forward = features.forward_batches

    def counted(fn, images, *args, **kwargs):
        computed.append(len(images))
        return forward(fn, images, *args, **kwargs)

    monkeypatch.setattr(features, "forward_batches", counted)
    cross_validate([phantoms / "Training"], tiny(head_epochs=1, finetune_epochs=0),
                   tmp_path / "cv", folds=3, progress=False)
    splits = [pd.read_csv(tmp_path / "cv" / f"fold-{k}" / "split.csv") for k in range(3)]
    fitted = [s.query("split != 'test'")["path"] for s in splits]
    assert sum(computed) == len(set().union(*fitted))  # every image once
    assert sum(computed) < sum(len(f) for f in fitted)  # without the memo: once per fold
