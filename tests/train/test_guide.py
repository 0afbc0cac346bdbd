"""``--guide`` with dataset folders: one command trains the segmenter into ``RUN/guide`` and
then the classifier it guides (:mod:`braincam.train.guide`)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from braincam.data.preprocess import PreprocessConfig
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.evaluate import evaluate_run
from braincam.models import load_checkpoint
from braincam.models.checkpoint import read_tensors
from braincam.models.segment import build_segmenter, guide_data, guide_members, save_segmenter
from braincam.models.unet import _encoder_shapes
from braincam.runs import RunDir, as_written
from braincam.train import TrainConfig, train_run
from braincam.train import guide as guide_module
from braincam.train.guide import GuidePlan, finished, guide_plan
from braincam.train.loop import class_weights
from braincam.train.segment import SegmentConfig


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("data") / "phantoms",
                                PhantomSpec(n_per_class=14, size=48, seed=0))


def tiny_segment_config(config: TrainConfig) -> SegmentConfig:
    """``braincam segment``'s defaults take minutes; the plumbing is the same at 32 px."""
    return SegmentConfig(size=32, epochs=1, batch_size=4, weights="none", seed=config.seed,
                         device=config.device, decoder_channels=(16, 8, 8, 8, 8))


def write_segmenter(seg: Path, size: int = 32) -> Path:
    save_segmenter(build_segmenter("none", (16, 8, 8, 8, 8)).eval(), seg / "model.safetensors",
                   {"size": size, "preprocess": asdict(PreprocessConfig(size=size)),
                    "threshold": 0.5})
    return seg


def test_guide_parts_are_runs_or_dataset_folders(small, tmp_path, caplog):
    seg = write_segmenter(tmp_path / "seg")
    plan = guide_plan(f"{seg},{small}")
    assert plan == GuidePlan(runs=[seg], data=[small])
    assert guide_members(f"{seg},{small}", tmp_path / "run") == [seg, tmp_path / "run" / "guide"]
    assert guide_members(str(seg), tmp_path / "run") == [seg]
    moved = tmp_path / "moved-seg"  # a segment run since moved is no dataset folder
    with caplog.at_level(logging.WARNING, logger="braincam.models.segment"):
        assert guide_members(f"{seg},{moved}", tmp_path / "run") == [seg]
    assert any(f"guide source {moved} no longer exists" in m for m in caplog.messages)
    write_segmenter(tmp_path / "run" / "guide")  # its data moved, the run's guide is there
    assert guide_members(f"{seg},{moved}", tmp_path / "run") == [seg, tmp_path / "run" / "guide"]
    with pytest.raises(BraincamError, match="neither a braincam segment run nor a dataset"):
        guide_plan(f"{seg},{tmp_path / 'missing'}")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("segment: {}\n")
    with pytest.raises(BraincamError, match="config.yaml but no model.safetensors"):
        guide_plan(str(unfinished))


def test_guide_from_data_trains_the_segmenter_into_the_run(small, tmp_path, monkeypatch,
                                                            caplog):
    """A segment run and a dataset folder: the folder's segmenter is trained into RUN/guide
    with the classifier's seed, without the classifier's test images, and both guide as their
    mean (saved and reloaded). Scoring the model on that folder warns that the guide has seen
    it."""
    monkeypatch.setattr(guide_module, "segment_config", tiny_segment_config)
    seg = write_segmenter(tmp_path / "seg")
    config = TrainConfig(arch="resnet10t", weights="none", head_epochs=1, finetune_epochs=0,
                         preprocess=PreprocessConfig(size=32), batch_size=8, device="cpu",
                         seed=3, guide=f"{seg},{small}")
    run = train_run([small], config, tmp_path / "run", progress=False,
                    command="braincam train SMALL --guide SEG,SMALL").run_dir
    trained = run / "guide"
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["n_tumour_images"] > 0
    seg_config = yaml.safe_load((trained / "config.yaml").read_text())
    assert seg_config["segment"]["seed"] == 3
    assert seg_config["command"] == ("braincam train SMALL --guide SEG,SMALL (this segmenter: "
                                     "its --guide)")
    assert seg_config["data"] == [str(small.resolve())]
    tensors, meta = read_tensors(run / "model.safetensors")
    assert meta["guide"]["source"] == f"{seg},{small}"
    for i, member in enumerate([seg, trained]):
        original, _ = read_tensors(member / "model.safetensors")
        prefix = f"backbone.segmenter.members.{i}."
        assert all(torch.equal(tensors[prefix + k], v) for k, v in original.items())
    model, _ = load_checkpoint(run / "model.safetensors")
    assert len(model.backbone.segmenter.members) == 2
    # the hand-written run has no config.yaml: only the folder is known to have trained it
    assert guide_data(meta["guide"]["source"]) == [small.resolve()]
    assert guide_data(str(trained)) == [small.resolve()]  # RUN/guide's own config.yaml
    with caplog.at_level(logging.WARNING, logger="braincam.evaluate.run"):
        evaluate_run(run, [small], force=True, device="cpu", n_boot=10, progress=False)
    warned = [r.getMessage() for r in caplog.records if "trained the guide's" in r.getMessage()]
    assert warned == [f"{small} trained the guide's segmenter (all but its held-out patient "
                      "groups): its figures are not those of unseen data"]
    # the classifier's test images (the official Testing folder) play no part in its guide
    guide_split = pd.read_csv(trained / "split.csv")
    guide_saw = set(guide_split.loc[guide_split["split"] != "test", "path"])
    own = pd.read_csv(run / "split.csv")
    tested = set(own.loc[own["split"] == "test", "path"])
    assert tested and not tested & set(guide_split["path"])
    assert set(own["path"]) - tested <= set(guide_split["path"])
    assert seg_config["left_out"] == len(tested) and len(seg_config["left_out_sha256"]) == 64
    # images the guide trained or validated on are not leak-free
    predictions = pd.read_csv(run / "predictions.csv")
    extra = predictions[predictions["split"] == "extra"]
    learnt = guide_saw | set(own.loc[own["split"] != "test", "path"])
    assert not extra[extra["path"].isin(learnt)]["leak_free"].astype(bool).any()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["extra_seen"]["phantoms_"] >= len(learnt & set(extra["path"]))  # a training
    # folder given as --data again is keyed apart from the test rows, which carry its name


def test_one_command_and_a_reused_guide_train_the_same_head(small, tmp_path, monkeypatch):
    """Training the guide first, and reading a guide, leave torch's random state alone: the
    head then trains as it does with that guide reused (``--guide RUN/guide``) in another
    process, dropout draws included."""
    monkeypatch.setattr(guide_module, "segment_config", tiny_segment_config)
    config = TrainConfig(arch="resnet10t", weights="none", head_epochs=2, finetune_epochs=0,
                         preprocess=PreprocessConfig(size=32), batch_size=8, device="cpu",
                         seed=3, dropout=0.5, guide=str(small))
    one = train_run([small], config, tmp_path / "one", progress=False).run_dir
    _encoder_shapes.cache_clear()  # the reused guide is read as by a fresh process
    reused = train_run([small], replace(config, guide=str(one / "guide")), tmp_path / "reused",
                       progress=False).run_dir
    (a, _), (b, _) = (read_tensors(r / "model.safetensors") for r in (one, reused))
    heads = [k for k in a if k.startswith("head.")]
    assert heads and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_force_keeps_a_finished_guide_until_its_data_changes(small, tmp_path, monkeypatch):
    """``train --force`` (and braincam run's retraining) reuses the guide segmenter RUN/guide
    holds when its data, settings and left-out images are unchanged, and trains it again once
    a file of its data changed."""
    import shutil

    monkeypatch.setattr(guide_module, "segment_config", tiny_segment_config)
    data = shutil.copytree(small, tmp_path / "data")
    config = TrainConfig(arch="resnet10t", weights="none", head_epochs=1, finetune_epochs=0,
                         preprocess=PreprocessConfig(size=32), batch_size=8, device="cpu",
                         seed=3, guide=str(data))
    run = tmp_path / "run"
    train_run([data], config, run, progress=False)
    guide_model = run / "guide" / "model.safetensors"
    first = guide_model.stat().st_mtime_ns
    train_run([data], replace(config, head_epochs=2), run, force=True, progress=False)
    assert guide_model.stat().st_mtime_ns == first  # reused
    assert not (tmp_path / ".run.guide").exists()
    some = next((data / "Training" / "tumor").iterdir())
    os.utime(some, ns=(some.stat().st_atime_ns, some.stat().st_mtime_ns + 10**9))
    train_run([data], config, run, force=True, progress=False)
    assert guide_model.stat().st_mtime_ns != first  # its data changed: trained again


def test_guide_from_data_is_checked_before_any_file_is_written(small, tmp_path, monkeypatch):
    """A classifier that does not crop, or a named run of another input side: one-line errors
    before the segmenter trains."""
    monkeypatch.setattr(guide_module, "segment_config", tiny_segment_config)
    config = TrainConfig(arch="resnet10t", weights="none", head_epochs=1, finetune_epochs=0,
                         preprocess=PreprocessConfig(size=32, crop=False), device="cpu",
                         guide=str(small))
    with pytest.raises(BraincamError, match="would not line up"):
        train_run([small], config, tmp_path / "run", progress=False)
    other = write_segmenter(tmp_path / "seg64", size=64)
    config = TrainConfig(arch="resnet10t", weights="none", head_epochs=1, finetune_epochs=0,
                         preprocess=PreprocessConfig(size=32), device="cpu",
                         guide=f"{other},{small}")
    with pytest.raises(BraincamError, match="differs in size from the segmenter trained"):
        train_run([small], config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option", [{"guide_epochs": 3}, {"guide_weak_labels": True},
                                    {"guide_freeze_blocks": 2}])
def test_segmenter_training_options_need_guide_folders_not_only_runs(small, tmp_path, option):
    """With a finished segment run alone in ``--guide`` there is no segmenter to train: its
    options are a one-line error, not a setting recorded in config.yaml that changed nothing;
    ``braincam cv`` says the same."""
    from braincam.train.cv import cross_validate

    seg = write_segmenter(tmp_path / "seg")
    config = TrainConfig(arch="resnet10t", weights="none", head_epochs=1, finetune_epochs=0,
                         preprocess=PreprocessConfig(size=32), device="cpu", guide=str(seg),
                         **option)
    with pytest.raises(BraincamError, match="--guide names none"):
        train_run([small], config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(BraincamError, match="--guide names none"):
        cross_validate([small], config, tmp_path / "cv", folds=2)


def guide_run_with_split(seg: Path, data: Path, config: PreprocessConfig) -> pd.DataFrame:
    """A hand-made segment run at ``seg`` that trained on every other image of ``data`` and
    validated on the rest (``config.yaml`` and ``split.csv`` as ``braincam segment`` writes
    them); returns its split."""
    from braincam.data.records import load_dataset

    save_segmenter(build_segmenter("none", (16, 8, 8, 8, 8)).eval(), seg / "model.safetensors",
                   {"size": config.size, "preprocess": asdict(config), "threshold": 0.5})
    (seg / "config.yaml").write_text(yaml.safe_dump({"data": [str(data.resolve())]}))
    records = load_dataset([data.resolve()]).records
    split = pd.DataFrame({
        "path": [str(r.path) for r in records], "source": [r.source for r in records],
        "label": [r.label for r in records],
        "split": ["train" if i % 2 == 0 else "val" for i in range(len(records))],
        "group": range(len(records)), "leak_free": False,
        "masked": [r.mask is not None for r in records]})
    split.drop(columns="masked").to_csv(seg / "split.csv", index=False)
    return split


def test_guide_views_are_cut_from_the_guides_masked_training_images_only(tmp_path, caplog):
    """--guide-views: the originals are the guide's training rows that have a mask (never
    its validation rows, nor the classifier's validation and test images), labelled by the
    classifier's classes; train_run adds exactly their lesion views, one tumour and one
    tumour-free view per pair, and records the option."""
    from braincam.data.preprocess import PreprocessCache
    from braincam.data.regions import make_views
    from braincam.labels import TUMOR, task_label
    from braincam.train.grounding import guide_originals

    data = make_phantom_dataset(tmp_path / "p", PhantomSpec(n_per_class=8, size=128, seed=0))
    preprocess = PreprocessConfig(size=96, crop=False)
    split = guide_run_with_split(tmp_path / "seg", data, preprocess)
    wanted = split[(split["split"] == "train") & split["masked"]]
    assert 0 < len(wanted) < split["masked"].sum()  # masked rows on both sides of the split
    assert set(wanted["label"]) == {TUMOR}

    classes = ["no_tumor", "tumor"]
    originals = guide_originals([tmp_path / "seg"], preprocess,
                                PreprocessCache(tmp_path / "cache"),
                                lambda label: classes.index(task_label(label, "binary")))
    assert len(originals) == len(wanted)
    assert originals.labels.tolist() == [1] * len(wanted)
    assert originals.tumour is not None and bool(originals.tumour.flatten(1).any(1).all())
    views = make_views(originals.images.numpy(), originals.masks.numpy(),
                       originals.tumour.numpy(), seed=0)
    assert len(views.source) > 0

    config = TrainConfig(arch="resnet10t", weights="none", head_epochs=1, finetune_epochs=0,
                         preprocess=preprocess, batch_size=8, device="cpu", seed=0,
                         guide=str(tmp_path / "seg"), guide_views=True)
    with caplog.at_level(logging.INFO, logger="braincam.train.run"):
        run = train_run([data], config, tmp_path / "run", progress=False).run_dir
    own = pd.read_csv(run / "split.csv")
    held = set(own.loc[own["split"] != "train", "path"])
    assert held & set(wanted["path"])  # the guide learnt some of the classifier's held images
    originals = guide_originals([tmp_path / "seg"], preprocess,
                                PreprocessCache(tmp_path / "cache"),
                                lambda label: classes.index(task_label(label, "binary")), False,
                                held)
    assert len(originals) == len(set(wanted["path"]) - held) > 0
    views = make_views(originals.images.numpy(), originals.masks.numpy(),
                       originals.tumour.numpy(), seed=0)
    n = len(views.source)
    assert [r.getMessage() for r in caplog.records if "guide views" in r.getMessage()] == [
        f"guide views: {n} tumour and {n} tumour-free views of {len(originals)} guide "
        "training images added"]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["guide_views"] is True

    caplog.clear()  # at most 2 guide images: a seeded sample of the originals, then their views
    chosen = torch.randperm(len(originals), generator=torch.Generator().manual_seed(0))[:2]
    two = make_views(originals.images[chosen].numpy(), originals.masks[chosen].numpy(),
                     originals.tumour[chosen].numpy(), seed=0)
    with caplog.at_level(logging.INFO, logger="braincam.train.run"):
        train_run([data], replace(config, guide_views_max=2), tmp_path / "run2",
                  progress=False)
    n = len(two.source)
    assert 0 < n <= 2
    assert [r.getMessage() for r in caplog.records if "guide views" in r.getMessage()] == [
        f"guide views: {n} tumour and {n} tumour-free views of 2 guide training images added"]


def test_weighted_guide_views_reach_the_loss_as_their_own_group(tmp_path, monkeypatch):
    """--guide-views-weight W: phase 1 gets the classifier's own images class-balanced among
    themselves and the views, all alike, weighing W times as much in all."""
    import braincam.train.run as run

    data = make_phantom_dataset(tmp_path / "p", PhantomSpec(n_per_class=8, size=128, seed=0))
    for extra in sorted((data / "Training" / "no_tumor").iterdir())[:3]:  # unequal classes
        extra.unlink()
    preprocess = PreprocessConfig(size=96, crop=False)
    guide_run_with_split(tmp_path / "seg", data, preprocess)
    seen = []
    fit_head = run.fit_head
    monkeypatch.setattr(run, "fit_head", lambda model, train, val, weights, criterion, *a, **k:
                        seen.append((train.labels, weights, criterion.weight))
                        or fit_head(model, train, val, weights, criterion, *a, **k))
    config = TrainConfig(arch="resnet10t", weights="none", head_epochs=1, finetune_epochs=0,
                         preprocess=preprocess, batch_size=8, device="cpu", seed=0,
                         guide=str(tmp_path / "seg"), guide_views=True, guide_views_weight=0.5)
    assert replace(config, guide_views_weight=None).views_weight == 1.0  # unset: 1
    run_dir = train_run([data], config, tmp_path / "run", progress=False).run_dir
    own = len(pd.read_csv(run_dir / "split.csv").query("split == 'train'"))
    (labels, weights, validation_weights), = seen
    # the validation loss weighs classes as the own images hold them, not the views
    assert torch.allclose(validation_weights, class_weights(labels[:own], 2))
    assert not torch.allclose(validation_weights, class_weights(labels, 2))
    views = weights[own:]
    assert len(views) > 0 and torch.all(views == views[0])
    assert float(views.sum()) == pytest.approx(0.5 * own)
    own_weights = weights[:own]
    for label in (0, 1):  # each class of the own images weighs half of them
        assert float(own_weights[labels[:own] == label].sum()) == pytest.approx(own / 2)
    train_run([data], replace(config, guide_views_weight=0.0), tmp_path / "pooled",
              progress=False)  # pooled: class-balanced over own images and views together
    labels, weights, _ = seen[-1]
    for label in (0, 1):
        assert float(weights[labels == label].sum()) == pytest.approx(len(labels) / 2)
    assert weights[own:].sum() != pytest.approx(0.5 * own)


def test_guide_views_need_a_guide_and_a_no_tumor_class(tmp_path):
    with pytest.raises(BraincamError, match="--guide-views .* needs --guide"):
        TrainConfig(guide_views=True).validate()
    with pytest.raises(BraincamError, match="--guide-views-max limits --guide-views"):
        TrainConfig(guide="runs/seg", guide_views_max=400).validate()
    with pytest.raises(BraincamError, match="--guide-views-max must be >= 0"):
        TrainConfig(guide="runs/seg", guide_views=True, guide_views_max=-1).validate()
    with pytest.raises(BraincamError, match="--guide-views-weight weighs --guide-views"):
        TrainConfig(guide="runs/seg", guide_views_weight=1.0).validate()
    with pytest.raises(BraincamError, match="--guide-views-weight must be >= 0"):
        TrainConfig(guide="runs/seg", guide_views=True, guide_views_weight=-1.0).validate()
    data = make_phantom_dataset(tmp_path / "p", PhantomSpec(n_per_class=8, size=64, seed=0))
    names = {"tumor": "glioma", "no_tumor": "meningioma"}  # two tumour types, no no_tumor
    for folder in [*data.glob("*/*"), *data.glob("masks/*/*")]:
        if folder.name in names:
            folder.rename(folder.with_name(names[folder.name]))
    seg = write_segmenter(tmp_path / "seg")
    config = TrainConfig(task="multiclass", arch="resnet10t", weights="none", head_epochs=1,
                         finetune_epochs=0, preprocess=PreprocessConfig(size=32), device="cpu",
                         guide=str(seg), guide_views=True)
    with pytest.raises(BraincamError, match="--guide-views needs a no_tumor class"):
        train_run([data], config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_guide_run_from_before_a_new_setting_counts_as_finished(tmp_path):
    """A RUN/guide whose config.yaml predates a setting trained with its default: reused,
    not trained again; a stored setting that differs still means another segmenter."""
    run, data = RunDir(tmp_path / "guide"), [tmp_path]
    run.root.mkdir()
    run.metrics.write_text("{}")
    run.model.write_bytes(b"weights")  # finished: metrics and a model
    stored = as_written(asdict(SegmentConfig()))
    del stored["weak_labels"]
    run.config.write_text(yaml.safe_dump({"segment": stored, "data": [str(tmp_path.resolve())]}))
    assert finished(run, data, SegmentConfig())
    assert not finished(run, data, SegmentConfig(weak_labels=True))
    run.config.write_text(yaml.safe_dump({"segment": {**stored, "epochs": 3},
                                          "data": [str(tmp_path.resolve())]}))
    assert not finished(run, data, SegmentConfig())
    run.config.write_text(yaml.safe_dump({"segment": stored, "data": [str(tmp_path.resolve())]}))
    run.model.unlink()  # a deleted model is no finished run: the guide trains again
    assert not finished(run, data, SegmentConfig())


def test_guide_weak_labels_reach_the_segmenter_trained_from_guide_folders(tmp_path):
    """``--guide-weak-labels``: the segmenter of --guide's folders trains with --weak-labels;
    without --guide, or with segment runs alone, a one-line error."""
    config = TrainConfig(guide=str(tmp_path), guide_weak_labels=True, seed=2)
    assert guide_module.segment_config(config) == SegmentConfig(seed=2, weak_labels=True)
    assert not guide_module.segment_config(replace(config, guide_weak_labels=False)).weak_labels
    with pytest.raises(BraincamError, match="--guide-weak-labels .*needs --guide"):
        TrainConfig(guide_weak_labels=True).validate()
    with pytest.raises(BraincamError, match="--guide names none"):
        guide_module.check_training_options(GuidePlan([tmp_path / "seg"], []), config)


def test_guide_epochs_set_the_epochs_of_the_segmenter_trained_from_guide_folders(tmp_path):
    """``--guide-epochs N``: the segmenter of --guide's folders trains N epochs, and one of
    another schedule in RUN/guide is not taken for it; without --guide folders, an error."""
    config = TrainConfig(guide=str(tmp_path), guide_epochs=7, seed=2)
    assert guide_module.segment_config(config) == SegmentConfig(seed=2, epochs=7)
    assert guide_module.segment_config(replace(config, guide_epochs=None)).epochs == 10
    run = RunDir(tmp_path / "guide")
    run.root.mkdir()
    run.metrics.write_text("{}")
    run.model.write_bytes(b"weights")  # finished: metrics and a model
    data = [tmp_path]
    stored = as_written(asdict(SegmentConfig(seed=2)))
    run.config.write_text(yaml.safe_dump({"segment": stored, "data": [str(tmp_path.resolve())]}))
    assert finished(run, data, guide_module.segment_config(replace(config, guide_epochs=None)))
    assert not finished(run, data, guide_module.segment_config(config))
    for bad, message in ((TrainConfig(guide_epochs=7), "--guide-epochs .*needs --guide"),
                         (replace(config, guide_epochs=0), "--guide-epochs must be >= 1")):
        with pytest.raises(BraincamError, match=message):
            bad.validate()
    with pytest.raises(BraincamError, match="--guide-epochs trains .*names none"):
        guide_module.check_training_options(GuidePlan([tmp_path / "seg"], []), config)


def test_guide_freeze_blocks_set_the_frozen_blocks_of_the_segmenter_of_guide_folders(tmp_path):
    """``--guide-freeze-blocks N`` is the guide's ``braincam segment --freeze-blocks N``: a
    finished guide trained without it is not taken for one with it; it needs --guide folders."""
    config = TrainConfig(guide=str(tmp_path), guide_freeze_blocks=2, seed=2)
    assert guide_module.segment_config(config) == SegmentConfig(seed=2, freeze_blocks=2)
    run = RunDir(tmp_path / "guide")
    run.root.mkdir()
    run.metrics.write_text("{}")
    run.model.write_bytes(b"weights")  # finished: metrics and a model
    stored = as_written(asdict(SegmentConfig(seed=2)))
    run.config.write_text(yaml.safe_dump({"segment": stored, "data": [str(tmp_path.resolve())]}))
    assert finished(run, [tmp_path], guide_module.segment_config(
        replace(config, guide_freeze_blocks=0)))
    assert not finished(run, [tmp_path], guide_module.segment_config(config))
    for bad, message in ((TrainConfig(guide_freeze_blocks=2), "--guide-freeze-blocks .*needs"),
                         (replace(config, guide_freeze_blocks=-1), "must be >= 0")):
        with pytest.raises(BraincamError, match=message):
            bad.validate()
    with pytest.raises(BraincamError, match="--guide-freeze-blocks trains .*names none"):
        guide_module.check_training_options(GuidePlan([tmp_path / "seg"], []), config)
    with pytest.raises(BraincamError, match="--guide's segmenter: --freeze-blocks must be in "
                                            "\\[0, 7\\]"):
        guide_module.check_plan(GuidePlan([], [tmp_path]), replace(config, guide_freeze_blocks=8))


def test_holds_any_sees_nested_folders_and_links_into_a_guide_folder(tmp_path):
    """``braincam cv`` trains a guide per fold when the guide's folders hold cv images: a
    folder inside the other, or a folder of links whose targets lie in a guide folder."""
    guide, other, links = tmp_path / "guide", tmp_path / "other", tmp_path / "links"
    for folder in (guide / "Training" / "glioma", other / "glioma", links / "glioma"):
        folder.mkdir(parents=True)
    (guide / "Training" / "glioma" / "a.png").write_bytes(b"x")
    (other / "glioma" / "b.png").write_bytes(b"x")
    assert guide_module.holds_any([guide], [guide / "Training"])
    assert guide_module.holds_any([guide / "Training"], [guide])
    assert not guide_module.holds_any([guide], [other])
    (links / "glioma" / "b.png").symlink_to(other / "glioma" / "b.png")
    assert not guide_module.holds_any([guide], [links])
    (links / "glioma" / "a.png").symlink_to(guide / "Training" / "glioma" / "a.png")
    assert guide_module.holds_any([guide], [links])


def test_a_guided_run_keeps_what_its_guide_learnt_from(small, tmp_path, monkeypatch, caplog):
    """The checkpoint names a relative ``--guide`` resolved, and the run copies the guide's
    learnt images into ``guide_learnt.csv``: evaluated from elsewhere, after the guide run is
    gone, its test images that the guide learnt from are still not leak-free; an ensemble of
    guided runs keeps its members' guides' images."""
    from braincam.evaluate.ensemble import make_ensemble
    from braincam.models.checkpoint import read_meta

    preprocess = PreprocessConfig(size=32)
    split = guide_run_with_split(tmp_path / "seg", small, preprocess)  # learnt every image
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(arch="test_resnet", weights="none", head_epochs=1, finetune_epochs=0,
                         preprocess=preprocess, batch_size=8, device="cpu", guide="seg")
    runs = [train_run([small], replace(config, seed=seed), tmp_path / f"run{seed}",
                      progress=False).run_dir for seed in (0, 1)]
    assert read_meta(runs[0] / "model.safetensors")["guide"]["source"] == str(tmp_path / "seg")
    assert yaml.safe_load((runs[0] / "config.yaml").read_text())["train"]["guide"] == str(
        tmp_path / "seg")
    assert pd.read_csv(runs[0] / "guide_learnt.csv")["path"].tolist() == split["path"].tolist()
    ensemble = make_ensemble(runs, tmp_path / "ens").root
    for entry in (tmp_path / "seg").iterdir():
        entry.unlink()
    (tmp_path / "seg").rmdir()
    monkeypatch.chdir(tmp_path.parent)
    for run in (runs[0], ensemble):
        metrics = evaluate_run(run, force=True, progress=False, n_boot=0)
        assert metrics["test"]["n"] > 0 and metrics["test_leak_free"] is None
    (runs[1] / "guide_learnt.csv").unlink()  # a run from before the file: its guide is gone
    with caplog.at_level(logging.WARNING, logger="braincam.models.segment"):
        metrics = evaluate_run(runs[1], force=True, progress=False, n_boot=0)
    assert f"the guide source {tmp_path / 'seg'} no longer exists" in caplog.text
