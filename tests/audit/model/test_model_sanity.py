"""Cascading randomisation: Grad-CAM of a trained model passes, a model-blind 'explainer'
(the image itself, like an edge detector in Adebayo et al.) fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_audit_helpers import TinyCNN, audit_batch, gradcam, handle_for

from braincam.audit.model.base import AuditSettings, ModelHandle
from braincam.audit.model.sanity import (
    SanityCheck,
    cascade_groups,
    map_similarity,
    randomise_,
)


def test_groups_run_from_the_head_down_and_open_stage_containers():
    names = [name for name, _ in cascade_groups(TinyCNN())]
    assert names == ["head", "features.9", "features.8", "features.5", "features.4",
                     "features.1", "features.0"]


def test_braincam_resnet50_groups_are_its_stages():
    from braincam.models import build_model

    names = [name for name, _ in cascade_groups(build_model("resnet50", 2))]
    assert names == ["head", "backbone.layer4", "backbone.layer3", "backbone.layer2",
                     "backbone.layer1", "backbone.bn1", "backbone.conv1"]


def test_randomise_changes_only_the_given_modules_and_is_seeded():
    a, b = TinyCNN(), TinyCNN()
    b.load_state_dict(a.state_dict())
    randomise_([a.head], seed=1)
    randomise_([b.head], seed=1)
    assert torch.equal(a.head.weight, b.head.weight)
    c = TinyCNN()
    c.load_state_dict(b.state_dict())
    randomise_([c.head], seed=2)
    assert not torch.equal(c.head.weight, b.head.weight)
    assert torch.equal(c.features[0].weight, b.features[0].weight)


def test_map_similarity_of_identical_unrelated_and_constant_maps():
    rng = np.random.default_rng(0)
    a = rng.random((2, 16, 16))
    rho, ssim = map_similarity(a, a)
    np.testing.assert_allclose(rho, 1.0)
    np.testing.assert_allclose(ssim, 1.0)
    rho, _ = map_similarity(a, rng.random((2, 16, 16)))
    assert (np.abs(rho) < 0.2).all()
    rho, _ = map_similarity(a, np.zeros((2, 16, 16)))
    np.testing.assert_allclose(rho, 0.0)  # a constant map carries no ranking


def test_gradcam_passes_and_an_image_copy_fails(clean_model, clean_test):
    batch = audit_batch(clean_model, clean_test)
    before = {k: v.clone() for k, v in clean_model.state_dict().items()}
    result = SanityCheck(AuditSettings(sanity_images=6))(batch)
    summary = result.summary["gradcam"]
    assert all(torch.equal(before[k], v) for k, v in clean_model.state_dict().items())
    assert summary.n_images == 6 and len(summary.spearman) == 7 == len(summary.layers)
    assert summary.passed is True
    assert summary.similarity_after_randomization["spearman"] < 0.5
    assert result.findings == []
    assert result.per_image["gradcam"]["spearman"].shape == (len(batch), 7)

    def image_copy(model, images, targets, method):
        return images.astype(float) / 255

    blind = audit_batch(clean_model, clean_test, maps=False)
    blind.maps = {"image": image_copy(None, blind.images, None, "image")}
    blind.handle = ModelHandle(clean_model, handle_for(clean_model).to_input, image_copy)
    result = SanityCheck(AuditSettings(sanity_images=4))(blind)
    assert result.summary["image"].passed is False
    assert result.summary["image"].spearman == pytest.approx([1.0] * 7)
    assert result.findings[0].severity == "critical"
    assert result.findings[0].check == "sanity.randomization"


def test_gradcam_helper_matches_the_handle(clean_model, clean_test):
    maps = gradcam(clean_model, clean_test.images[:2], np.array([0, 1]), "gradcam")
    assert maps.shape == (2, 64, 64) and maps.max() <= 1.0


def test_a_sparse_map_that_moves_with_the_weights_passes(clean_model, clean_test):
    """A map that is 0 but for one 6 x 6 patch, placed by the head's weights: the trained and
    the randomised maps agree on their blank 98% (SSIM about 0.9, above the fixed 0.5), but no
    more than the trained map agrees with a blank map, so the method passes."""

    def patch(model, images, targets, method):
        spot = int(abs(float(model.head.weight.detach().sum())) * 1e4) % 50
        maps = np.zeros((len(images), 64, 64))
        maps[:, spot: spot + 6, spot: spot + 6] = 1.0
        return maps

    batch = audit_batch(clean_model, clean_test, maps=False)
    batch.maps = {"patch": patch(clean_model, batch.images, None, "patch")}
    batch.handle = ModelHandle(clean_model, handle_for(clean_model).to_input, patch)
    summary = SanityCheck(AuditSettings(sanity_images=4))(batch).summary["patch"]
    assert summary.ssim[-1] > 0.5  # the fixed limit alone would fail it
    assert summary.ssim_blank > summary.ssim[-1]
    assert summary.passed is True
