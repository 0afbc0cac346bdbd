"""``--guide`` with dataset folders: one command trains the segmenter into ``RUN/guide`` and
then the classifier it guides (:mod:`braincam.train.guide`)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
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
from braincam.train import TrainConfig, train_run
from braincam.train import guide as guide_module
from braincam.train.guide import GuidePlan, guide_plan
from braincam.train.segment import SegmentConfig


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("data") / "phantoms",
                                PhantomSpec(n_per_class=8, size=48, seed=0))


def tiny_segment_config(config: TrainConfig) -> SegmentConfig:
    """``braincam segment``'s defaults take minutes; the plumbing is the same at 32 px."""
    return SegmentConfig(size=32, epochs=1, batch_size=4, weights="none", seed=config.seed,
                         device=config.device, decoder_channels=(16, 8, 8, 8, 8))


def write_segmenter(seg: Path, size: int = 32) -> Path:
    save_segmenter(build_segmenter("none", (16, 8, 8, 8, 8)).eval(), seg / "model.safetensors",
                   {"size": size, "preprocess": asdict(PreprocessConfig(size=size)),
                    "threshold": 0.5})
    return seg


def test_guide_parts_are_runs_or_dataset_folders(small, tmp_path):
    seg = write_segmenter(tmp_path / "seg")
    plan = guide_plan(f"{seg},{small}")
    assert plan == GuidePlan(runs=[seg], data=[small])
    assert guide_members(f"{seg},{small}", tmp_path / "run") == [seg, tmp_path / "run" / "guide"]
    assert guide_members(str(seg), tmp_path / "run") == [seg]
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
    with the classifier's seed, and both guide as their mean (saved and reloaded). Scoring
    the model on that folder warns that the guide has seen it."""
    monkeypatch.setattr(guide_module, "segment_config", tiny_segment_config)
    seg = write_segmenter(tmp_path / "seg")
    config = TrainConfig(arch="resnet10t", weights="none", head_epochs=1, finetune_epochs=0,
                         preprocess=PreprocessConfig(size=32), batch_size=8, device="cpu",
                         seed=3, guide=f"{seg},{small}")
    run = train_run([small], config, tmp_path / "run", progress=False).run_dir
    trained = run / "guide"
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["n_tumour_images"] > 0
    seg_config = yaml.safe_load((trained / "config.yaml").read_text())
    assert seg_config["segment"]["seed"] == 3
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
    # images the guide trained or validated on are not leak-free, in the test split either
    guide_split = pd.read_csv(trained / "split.csv")
    guide_saw = set(guide_split.loc[guide_split["split"] != "test", "path"])
    own = pd.read_csv(run / "split.csv")
    predictions = pd.read_csv(run / "predictions.csv")
    test = predictions[predictions["split"] == "test"]
    assert guide_saw & set(test["path"])  # the official Testing folder trained the guide
    flags = dict(zip(test["path"], test["leak_free"].astype(bool), strict=True))
    assert not any(flags[p] for p in guide_saw & set(flags))
    own_flags = dict(zip(own["path"], own["leak_free"].astype(bool), strict=True))
    assert sum(flags.values()) < sum(own_flags[p] for p in flags)
    extra = predictions[predictions["split"] == "extra"]
    learnt = guide_saw | set(own.loc[own["split"] != "test", "path"])
    assert not extra[extra["path"].isin(learnt)]["leak_free"].astype(bool).any()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["extra_seen"]["phantoms"] >= len(learnt & set(extra["path"]))


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
