"""The Training section's recipe sentence, from config.yaml's ``train`` settings."""

from __future__ import annotations

from braincam.report.training import collect_training, recipe_sentence
from braincam.runs import RunDir


def test_recipe_sentence_says_guided_or_plain_and_names_the_remedies():
    guided = recipe_sentence({"arch": "efficientnet_lite0", "guide": "runs/seg, runs/seg2",
                              "guide_floor": 0.0, "finetune_epochs": 0, "guide_views": False})
    assert guided == ("Recipe: guided. efficientnet_lite0 pools its features where the tumour "
                      "segmenter of --guide runs/seg, runs/seg2 predicts tumour, and nothing "
                      "else reaches it; trained: the head alone on the backbone's features.")
    floor = recipe_sentence({"arch": "resnet50", "guide": "runs/seg", "guide_floor": 0.1,
                             "finetune_epochs": 10})
    assert "the rest of the image reaches it at weight 0.1" in floor
    assert "the head, then the backbone's last stages fine-tuned for up to 10 epochs" in floor
    whole = recipe_sentence({"arch": "resnet50", "guide": None, "head_epochs": 0,
                             "finetune_epochs": 10})  # no head phase
    assert whole.endswith("Trained: the head and the backbone's last stages together for up "
                          "to 10 epochs.")  # the first stages stay frozen
    cut = recipe_sentence({"arch": "resnet50", "guide": "runs/seg", "guide_cut": 0.5})
    assert "of --guide runs/seg predicts tumour with probability >= 0.5, and nothing" in cut
    views = recipe_sentence({"arch": "resnet50", "guide": "runs/seg", "guide_views": True})
    assert views.endswith("Remedies: lesion views of the segmenter's training images, "
                          "weighing 1 times the own images.")
    capped = recipe_sentence({"arch": "resnet50", "guide": "runs/seg", "guide_views": True,
                              "guide_views_max": 400, "guide_views_weight": 0})
    assert capped.endswith("Remedies: lesion views of the segmenter's training images "
                           "(at most 400), pooled with the own images.")
    weighted = recipe_sentence({"arch": "resnet50", "guide": "runs/seg", "guide_views": True,
                                "guide_views_weight": 0.5})
    assert weighted.endswith("Remedies: lesion views of the segmenter's training images, "
                             "weighing 0.5 times the own images.")
    plain = recipe_sentence({"arch": "resnet50", "guide": None, "finetune_epochs": 10,
                             "attention_penalty": 5.0, "mask_reward": 0.0,
                             "counterfactual_pairs": True})
    assert plain.startswith("Recipe: plain (no segmenter guide). resnet50 may use any part")
    assert plain.endswith("Remedies: attention penalty 5, counterfactual pairs.")
    recipe = recipe_sentence({"arch": "efficientnet_lite0", "guide": None, "finetune_epochs": 10,
                              "upweight_errors": 10, "contrast_remap": 0.25,
                              "preprocess": {"mask_skull": True, "mask_background": False,
                                             "standardize": "zscore-in-mask"}})
    assert recipe.endswith("Remedies: phase 1's errors shown 10 times (--upweight-errors), "
                           "contrast remapping 0.25, the brain interior only (--mask-skull), "
                           "intensities standardised (zscore-in-mask).")
    head_only = recipe_sentence({"arch": "x", "finetune_epochs": 0, "upweight_errors": 10,
                                 "contrast_remap": 0.25})  # both act in phase 2 only
    assert "Remedies" not in head_only
    assert "Remedies" not in recipe_sentence({"arch": "x", "upweight_errors": 1,
                                              "preprocess": {"standardize": "none"}})


def test_recipe_sentence_names_a_threshold_chosen_on_validation():
    train = {"arch": "resnet50", "guide": None, "tune_threshold": True}
    assert recipe_sentence(train, 0.8333).endswith(
        "Decision: tumour where P(tumour) reaches the threshold 0.833 chosen on validation "
        "(--tune-threshold), not 0.5.")
    assert "reaches the threshold chosen on validation" in recipe_sentence(train)
    assert "Decision" not in recipe_sentence({**train, "tune_threshold": False}, 0.8)


def test_collect_training_reads_the_recipe_even_without_a_history(tmp_path):
    run = RunDir(tmp_path)
    run.config.write_text("train: {arch: resnet18, guide: null, finetune_epochs: 0}\n")
    section = collect_training(run)
    assert not section.part.ok and section.recipe.startswith("Recipe: plain")
    run.config.write_text("command: braincam train\n")  # no train block: no sentence
    assert collect_training(run).recipe is None


def _phases(tmp_path, rows: str):
    """The training table's phases of a run whose history.csv holds ``rows``."""
    run = RunDir(tmp_path)
    run.config.write_text("train: {arch: resnet18, guide: null}\n")
    run.history.write_text(
        "phase,epoch,train_loss,val_loss,val_balanced_accuracy,seconds\n" + rows)
    return collect_training(run).phases


def test_the_best_epoch_is_the_one_training_kept_ties_to_the_lower_loss(tmp_path):
    """Two epochs at balanced accuracy 1.0: training keeps the one of lower validation loss
    (``BestTracker``), and the table names that one, not the first."""
    (phase,) = _phases(tmp_path, "finetune,1,0.7,0.60,0.8,1.0\nfinetune,2,0.5,0.40,1.0,1.0\n"
                                 "finetune,3,0.4,0.20,1.0,1.0\nfinetune,4,0.3,0.30,1.0,1.0\n")
    assert (phase.best_epoch, phase.best_val_balanced_accuracy, phase.epochs) == (3, 1.0, 4)


def test_a_mean_of_heads_is_no_epoch_of_training(tmp_path):
    """``--head-average 3`` writes one ``heads`` row whose epoch is the number of heads."""
    heads = _phases(tmp_path, "head,1,0.7,0.60,0.8,1.0\nhead-2,1,0.6,0.50,0.85,1.0\n"
                              "head-3,1,0.6,0.55,0.82,1.0\nheads,3,,0.45,0.9,0.5\n")[-1]
    assert heads.phase == "heads (the mean of 3 heads' weights)"
    assert (heads.epochs, heads.best_epoch, heads.best_val_balanced_accuracy) == (0, None, 0.9)
