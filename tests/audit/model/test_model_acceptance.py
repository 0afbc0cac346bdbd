"""Acceptance: a model trained on phantoms whose no_tumor class carries a corner marker is
caught by the attention check (energy on the marker) and the background-only test; a model
trained on clean phantoms passes both."""

from __future__ import annotations

from model_audit_helpers import audit_batch

from braincam.audit.model.attention import AttentionCheck
from braincam.audit.model.counterfactual import CounterfactualCheck


def test_marker_model_is_flagged(marker_model, marker_test):
    batch = audit_batch(marker_model, marker_test)
    assert batch.correct.mean() >= 0.9  # the shortcut is easy

    attention = AttentionCheck()(batch)
    no_tumor = attention.summary["gradcam"].by_class["no_tumor"]
    # the marker covers 1.6% of the image but draws over 5x that share of the energy
    assert no_tumor["region_marker"] > 5 * no_tumor["uniform_region_marker"]
    marker = [f for f in attention.findings
              if f.check == "attention.region.marker" and "class no_tumor" in f.message]
    assert marker and marker[0].severity == "critical"
    assert any(f.check == "attention.outside_brain" for f in attention.findings)

    # without the head the marker alone still decides
    counterfactual = CounterfactualCheck()(batch)
    s = counterfactual.summary
    assert s.background_only_survival >= 0.9 and s.background_only_baseline == 0.5
    assert s.background_only_auc >= 0.95 and s.background_only_gap >= 0.25
    flagged = {f.check: f.severity for f in counterfactual.findings}
    assert flagged["counterfactual.background_only"] == "critical"
    assert flagged["counterfactual.background_only_gap"] == "critical"


def test_clean_model_passes(clean_model, clean_test):
    batch = audit_batch(clean_model, clean_test)
    assert batch.correct.mean() >= 0.65  # it found the (small) tumour, there is no shortcut

    attention = AttentionCheck()(batch)
    summary = attention.summary["gradcam"]
    assert summary.brain > summary.uniform_brain
    assert summary.background < summary.uniform_background
    assert attention.findings == []

    counterfactual = CounterfactualCheck()(batch)
    s = counterfactual.summary
    assert s.background_only_survival <= s.background_only_baseline
    assert s.background_only_auc < 0.7 and abs(s.background_only_gap) < 0.05
    assert not any(f.check.startswith("counterfactual.background_only")
                   for f in counterfactual.findings)
