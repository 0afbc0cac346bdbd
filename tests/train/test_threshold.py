"""The tumour threshold chosen on validation (--tune-threshold)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

import braincam
from braincam.data.preprocess import PreprocessConfig
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.evaluate import evaluate_run
from braincam.models import build_model, load_checkpoint
from braincam.report.training import collect_training
from braincam.runs import RunDir
from braincam.train import TrainConfig, train_run
from braincam.train.threshold import (
    TIE_MARGIN,
    fold_threshold,
    tie_margin,
    tumour_logit,
    validation_threshold,
)


def logit(p: torch.Tensor | float) -> torch.Tensor:
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p))


def test_the_threshold_with_the_best_validation_balanced_accuracy_wins():
    tumour = np.array([1, 1, 1, 0, 0, 0], bool)
    assert validation_threshold(tumour, np.array([2.2, 1.4, 0.8, 0.4, -0.8, -1.4])) == 0.8
    # 0 (P = 0.5) and 2.2 both separate the two images: the one nearest 0 wins
    assert validation_threshold(np.array([1, 0], bool), np.array([2.2, -2.2])) == 0.0
    assert validation_threshold(np.array([1, 0], bool), np.array([-1.4, -2.2])) == -1.4
    assert validation_threshold(np.array([1, 1], bool), np.array([-1.4, -2.2])) == 0.0  # one class


def test_tumour_logits_are_the_log_odds_of_the_tumour_classes():
    z = torch.tensor([[0.3, 2.0, -1.0], [5.0, -3.0, 1.0]])
    p = torch.softmax(z.double(), 1)
    torch.testing.assert_close(tumour_logit(z, 0), logit(1 - p[:, 0]))
    torch.testing.assert_close(tumour_logit(z, 2), logit(1 - p[:, 2]))


@pytest.mark.parametrize("groups", [None, [0, 1, 1, 1], [1, 0, 1, 0]])
def test_a_folded_threshold_moves_the_argmax_to_it(groups):
    torch.manual_seed(0)
    model = build_model("test_resnet", 2, "none", groups=groups).eval()
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        before = torch.softmax(model(x).double(), 1)[:, 1]
        assert fold_threshold(model, 0, float(logit(0.8))) == pytest.approx(0.8)
        after = torch.softmax(model(x).double(), 1)[:, 1]
    torch.testing.assert_close(logit(after), logit(before) - logit(0.8), atol=2e-4, rtol=0)
    assert torch.equal(after >= 0.5, before >= 0.8)
    with pytest.raises(ValueError, match="must be finite"):
        fold_threshold(model, 0, float("inf"))


@pytest.mark.parametrize("scale", [1, 100])
def test_the_folded_model_calls_every_validation_image_as_the_chosen_threshold_does(scale):
    """The threshold is a validation image's own: folded, that image must stay on the tumour
    side rather than tie at 0.5 and fall to whichever output rounding favours, also where
    float32 probabilities saturate (scale 100: P up to 1 - 1e-7), and no image below the cut
    may cross it (scale 1: an untrained head puts images within 1e-4 logits)."""
    wrong = 0
    for seed in range(40):
        torch.manual_seed(seed)
        model = build_model("test_resnet", 2, "none").eval()
        x = torch.randn(6, 3, 32, 32)
        with torch.no_grad():
            model.head[1].weight *= scale
            s = tumour_logit(model(x), 0).numpy()
            tumour = np.zeros(6, bool)
            tumour[np.argsort(s)[-3:]] = True
            tumour[np.argsort(s)[-4]] ^= seed % 2 == 0  # not always separable
            cut = validation_threshold(tumour, s)
            fold_threshold(model, 0, cut, tie_margin(s, cut))
            called = model(x).argmax(1).numpy() == 1
        wrong += int((called != (s >= cut)).sum())
    assert wrong == 0


def test_the_margin_never_carries_a_validation_image_below_the_cut_across_it():
    """Scores 1e-5 below the cut keep their side: the margin is half that gap."""
    score = np.array([2.0, 2.0 - 1e-5, -1.0, -3.0])
    cut = validation_threshold(np.array([1, 0, 0, 1], bool), score)
    assert cut == 2.0
    assert tie_margin(score, cut) == pytest.approx(5e-6)
    assert tie_margin(np.array([2.0, 1.0]), 2.0) == TIE_MARGIN
    assert tie_margin(np.array([2.0]), 2.0) == TIE_MARGIN


def test_tune_threshold_folds_the_validation_choice_into_the_saved_model(tmp_path):
    data = make_phantom_dataset(tmp_path / "p", PhantomSpec(n_per_class=12, size=48, seed=3))
    config = TrainConfig(arch="test_resnet", weights="none", head_epochs=2, finetune_epochs=0,
                         batch_size=8, preprocess=PreprocessConfig(size=32), device="cpu")
    plain = train_run([data], config, tmp_path / "plain", progress=False).run_dir
    tuned = train_run([data], dataclasses.replace(config, tune_threshold=True),
                      tmp_path / "tuned", progress=False).run_dir
    _, meta = load_checkpoint(tuned / "model.safetensors")
    assert "threshold" not in load_checkpoint(plain / "model.safetensors")[1]
    # the threshold is the one the plain model's validation probabilities choose ...
    split = pd.read_csv(plain / "split.csv").query("split == 'val'")
    val = braincam.load(plain, ood=False, device="cpu").predict(list(split["path"]))
    p_val = np.array([1 - p.probabilities["no_tumor"] for p in val])
    cut = validation_threshold((split["label"] != "no_tumor").to_numpy(), logit(p_val).numpy())
    assert meta["threshold"] == pytest.approx(float(torch.sigmoid(torch.tensor(cut))), abs=1e-6)
    assert meta["threshold"] != 0.5
    # ... and every prediction of the saved model applies it
    for run in (plain, tuned):
        evaluate_run(run, n_boot=0, progress=False)
    before = pd.read_csv(plain / "predictions.csv")["prob_tumor"].to_numpy()
    after = pd.read_csv(tuned / "predictions.csv")["prob_tumor"].to_numpy()
    np.testing.assert_allclose(logit(torch.tensor(after)), logit(torch.tensor(before))
                               - logit(meta["threshold"]), atol=1e-3)
    # the report's recipe sentence names it
    recipe = collect_training(RunDir(tuned)).recipe
    assert f"reaches the threshold {meta['threshold']:.3f} chosen on validation" in recipe


def test_tune_threshold_needs_the_binary_task():
    with pytest.raises(BraincamError, match="--tune-threshold .* needs --task binary"):
        TrainConfig(task="multiclass", tune_threshold=True).validate()
