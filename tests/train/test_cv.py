"""Grouped cross-validation of a recipe (braincam.train.cv) on small phantom datasets."""

from __future__ import annotations

import json
import statistics

import pandas as pd
import pytest
import yaml

from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.train.cv import _scores, cross_validate, summarise
from tests.train.test_training import tiny


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "phantoms"
    make_phantom_dataset(root, PhantomSpec(n_per_class=12, size=48, seed=2))
    return root


def test_folds_test_every_image_once_and_cv_json_averages_them(phantoms, tmp_path):
    config = tiny(head_epochs=1, finetune_epochs=0)
    result = cross_validate([phantoms / "Training"], config, tmp_path / "cv", folds=2,
                            progress=False)
    doc = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert doc["folds"] == 2 and [r["run"] for r in doc["runs"]] == ["fold-0", "fold-1"]
    tests = [pd.read_csv(tmp_path / "cv" / f"fold-{k}" / "split.csv").query("split == 'test'")
             for k in range(2)]
    everything = pd.read_csv(tmp_path / "cv" / "fold-0" / "split.csv")
    assert not set(tests[0]["path"]) & set(tests[1]["path"])
    assert set(tests[0]["path"]) | set(tests[1]["path"]) == set(everything["path"])
    for k in range(2):
        metrics = json.loads((tmp_path / "cv" / f"fold-{k}" / "metrics.json").read_text())
        assert metrics["test"]["n"] == len(tests[k])
        assert doc["runs"][k]["scores"]["test"]["balanced_accuracy"] == pytest.approx(
            metrics["test"]["balanced_accuracy"])
    values = [r["scores"]["test"]["balanced_accuracy"] for r in doc["runs"]]
    bal = doc["summary"]["test"]["balanced_accuracy"]
    assert bal["mean"] == pytest.approx(statistics.fmean(values))
    assert bal["sd"] == pytest.approx(statistics.stdev(values)) and bal["n"] == 2
    assert result.summary == doc["summary"]
    assert doc["recipe"]["head_epochs"] == 1 and "fold" not in doc["recipe"]

    with pytest.raises(BraincamError, match="already holds a cross-validation"):
        cross_validate([phantoms / "Training"], config, tmp_path / "cv", folds=2,
                       progress=False)
    (tmp_path / "cv" / "cv.json").unlink()  # an interrupted cross-validation resumes
    again = cross_validate([phantoms / "Training"], config, tmp_path / "cv", folds=2,
                           progress=False)
    assert [r["kept"] for r in again.folds] == [True, True] and again.summary == result.summary
    (tmp_path / "cv" / "cv.json").unlink()
    (tmp_path / "cv" / "fold-1" / "metrics.json").unlink()  # stopped while fold 1 trained
    (tmp_path / "cv" / "fold-1" / "model.safetensors").unlink()
    again = cross_validate([phantoms / "Training"], config, tmp_path / "cv", folds=2,
                           progress=False)
    assert [r["kept"] for r in again.folds] == [True, False]
    assert (tmp_path / "cv" / "fold-1" / "metrics.json").is_file()
    (tmp_path / "cv" / "cv.json").unlink()
    with pytest.raises(BraincamError, match="already holds a run"):  # other settings: --force
        cross_validate([phantoms / "Training"], tiny(head_epochs=2, finetune_epochs=0),
                       tmp_path / "cv", folds=2, progress=False)
    with pytest.raises(BraincamError, match="typo is not a directory"):  # before fold 0
        cross_validate([phantoms / "Training"], config, tmp_path / "cv2", folds=2,
                       extra=[tmp_path / "typo"], progress=False)
    assert not (tmp_path / "cv2").exists()


def test_data_with_an_official_test_folder_is_refused(phantoms, tmp_path):
    with pytest.raises(BraincamError, match="official test split"):
        cross_validate([phantoms], tiny(head_epochs=1, finetune_epochs=0), tmp_path / "cv",
                       folds=2, progress=False)


def test_summary_skips_missing_figures_and_gives_no_sd_for_one_value():
    rows = [{"scores": {"test": {"balanced_accuracy": 0.8, "auc": None, "accuracy": 0.9}}},
            {"scores": {"test": {"balanced_accuracy": 0.6, "auc": 0.7, "accuracy": 0.7},
                        "extra": {"balanced_accuracy": 0.5, "auc": None, "accuracy": 0.5}}}]
    out = summarise(rows)
    assert out["test"]["balanced_accuracy"] == {"mean": pytest.approx(0.7),
                                                "sd": pytest.approx(0.1414, abs=1e-4), "n": 2}
    assert out["test"]["auc"] == {"mean": 0.7, "sd": None, "n": 1}
    assert out["extra"]["auc"] == {"mean": None, "sd": None, "n": 0}


def test_fold_scores_add_leak_free_sets_only_where_copies_were_seen():
    def m(bacc):
        return {"n": 5, "balanced_accuracy": bacc, "auc": None, "accuracy": bacc}

    scores = _scores({
        "test": m(0.9), "test_leak_free": m(0.8),
        "extra": {"figshare": m(0.99), "br35h": m(0.95)},
        "extra_seen": {"figshare": 4, "br35h": 0},
        "extra_leak_free": {"figshare": m(0.97), "br35h": m(0.95)},
        "extra_combined": m(0.98), "extra_combined_leak_free": m(0.96),
    })["scores"]
    assert {k: v["balanced_accuracy"] for k, v in scores.items()} == {
        "test": 0.9, "test_leak_free": 0.8, "figshare": 0.99, "figshare_leak_free": 0.97,
        "br35h": 0.95, "extra_combined": 0.98, "extra_combined_leak_free": 0.96}
    unseen = _scores({"test": m(0.9), "test_leak_free": None, "extra": {"br35h": m(0.95)},
                      "extra_seen": {"br35h": 0}, "extra_combined": None})["scores"]
    assert set(unseen) == {"test", "br35h"}


@pytest.fixture(scope="module")
def other_phantoms(tmp_path_factory):
    """A second masked dataset, none of whose images the cross-validation uses."""
    root = tmp_path_factory.mktemp("other") / "phantoms"
    make_phantom_dataset(root, PhantomSpec(n_per_class=6, size=48, seed=5))
    return root


def test_a_fold_trained_on_other_data_is_not_kept(phantoms, tmp_path):
    import shutil

    data = shutil.copytree(phantoms / "Training", tmp_path / "data")
    config = tiny(head_epochs=1, finetune_epochs=0)
    cross_validate([data], config, tmp_path / "cv", folds=2, progress=False)
    (tmp_path / "cv" / "cv.json").unlink()
    extra = next((data / "tumor").iterdir())
    shutil.copy(extra, data / "tumor" / f"added{extra.suffix}")  # the data changed since
    with pytest.raises(BraincamError, match="already holds a run"):  # not kept: --force redoes
        cross_validate([data], config, tmp_path / "cv", folds=2, progress=False)
    again = cross_validate([data], config, tmp_path / "cv", folds=2, progress=False,
                           force=True)
    assert [r["kept"] for r in again.folds] == [False, False]
    folds = [pd.read_csv(tmp_path / "cv" / f"fold-{k}" / "split.csv") for k in range(2)]
    assert all(f["path"].str.endswith(f"added{extra.suffix}").any() for f in folds)


def test_edited_images_new_extra_folders_and_fewer_folds_are_not_taken_from_old_folds(
        phantoms, tmp_path):
    """A fold is not kept once a data file changed after its model was written; a kept fold
    is scored again on the --data folders asked for now; --folds below 2 is an error; fewer
    folds with --force remove the folders of the others."""
    import os
    import shutil

    data = shutil.copytree(phantoms / "Training", tmp_path / "data")
    extra = shutil.copytree(phantoms / "Testing", tmp_path / "more")
    config = tiny(head_epochs=1, finetune_epochs=0)
    for bad in (0, -3):
        with pytest.raises(BraincamError, match="--folds must be >= 2"):
            cross_validate([data], config, tmp_path / "cv", folds=bad, progress=False)
    cross_validate([data], config, tmp_path / "cv3", folds=3, progress=False)
    (tmp_path / "cv3" / "fold-7").mkdir()  # a folder of the user's
    (tmp_path / "cv3" / "fold-7" / "notes.txt").write_text("mine")
    fewer = cross_validate([data], config, tmp_path / "cv3", folds=2, progress=False,
                           force=True)
    assert (tmp_path / "cv3" / "fold-7" / "notes.txt").read_text() == "mine"
    shutil.rmtree(tmp_path / "cv3" / "fold-7")
    assert sorted(p.name for p in (tmp_path / "cv3").glob("fold-*")) == ["fold-0", "fold-1"]
    assert len(fewer.folds) == 2
    again = cross_validate([data], config, tmp_path / "cv3", folds=2, progress=False,
                           force=True, extra=[extra])
    assert [r["kept"] for r in again.folds] == [True, True]
    assert all("more" in r["scores"] for r in again.folds) and "more" in again.summary
    edited = next((data / "tumor").iterdir())
    later = (tmp_path / "cv3" / "fold-0" / "model.safetensors").stat().st_mtime + 10
    os.utime(edited, (later, later))  # edited after the folds were trained
    redone = cross_validate([data], config, tmp_path / "cv3", folds=2, progress=False,
                            force=True)
    assert [r["kept"] for r in redone.folds] == [False, False]
    assert not any("more" in r["scores"] for r in redone.folds)


def test_guide_folders_without_the_cv_images_train_one_segmenter_for_every_fold(
        phantoms, other_phantoms, tmp_path, monkeypatch):
    """``--guide`` dataset folders that hold none of the folds' images: CV/guide is trained
    once, names the folds' guide, and a resumed cross-validation neither retrains it nor its
    folds."""
    from braincam.train import guide as guide_module
    from tests.train.test_guide import tiny_segment_config

    monkeypatch.setattr(guide_module, "segment_config", tiny_segment_config)
    config = tiny(arch="resnet10t", head_epochs=1, finetune_epochs=0, guide=str(other_phantoms),
                  guide_epochs=1)  # a segmenter option: the recipe's, not the folds'
    out = tmp_path / "cv"
    cross_validate([phantoms / "Training"], config, out, folds=2, progress=False)
    guide = out / "guide"
    assert json.loads((guide / "metrics.json").read_text())["epochs"] == 1
    assert json.loads((out / "cv.json").read_text())["recipe"]["guide_epochs"] == 1
    for k in range(2):
        fold = yaml.safe_load((out / f"fold-{k}" / "config.yaml").read_text())
        assert fold["train"]["guide"] == str(guide) and fold["train"]["guide_epochs"] is None
        assert not (out / f"fold-{k}" / "guide").exists()
    stamp = (guide / "model.safetensors").stat().st_mtime_ns
    (out / "cv.json").unlink()
    again = cross_validate([phantoms / "Training"], config, out, folds=2, progress=False)
    assert [r["kept"] for r in again.folds] == [True, True]
    assert (guide / "model.safetensors").stat().st_mtime_ns == stamp


def test_guide_folders_holding_the_cv_images_train_a_segmenter_per_fold_without_its_test(
        phantoms, tmp_path, monkeypatch, caplog):
    """``--guide`` names the folder the folds come from: each fold trains its own guide,
    which never sees that fold's test images but sees every other image, and a resumed
    cross-validation retrains none of them."""
    from braincam.train import guide as guide_module
    from tests.train.test_guide import tiny_segment_config

    monkeypatch.setattr(guide_module, "segment_config", tiny_segment_config)
    config = tiny(arch="resnet10t", head_epochs=1, finetune_epochs=0, guide=str(phantoms))
    out = tmp_path / "cv"
    with caplog.at_level("WARNING", logger="braincam.train.cv"):
        cross_validate([phantoms / "Training"], config, out, folds=2, progress=False)
    assert "each fold trains its own segmenter without its test images (2 segmenter" in \
        caplog.text
    assert not (out / "guide").exists()
    stamps = []
    for k in range(2):
        fold = out / f"fold-{k}"
        own = pd.read_csv(fold / "split.csv")
        tested = set(own.loc[own["split"] == "test", "path"])
        guide_split = pd.read_csv(fold / "guide" / "split.csv")
        assert tested and not tested & set(guide_split["path"])
        assert set(own["path"]) - tested <= set(guide_split["path"])
        assert yaml.safe_load((fold / "guide" / "config.yaml").read_text())["left_out"] == len(
            tested)
        assert yaml.safe_load((fold / "config.yaml").read_text())["train"]["guide"] == str(
            phantoms)
        stamps.append((fold / "guide" / "model.safetensors").stat().st_mtime_ns)
    (out / "cv.json").unlink()
    again = cross_validate([phantoms / "Training"], config, out, folds=2, progress=False)
    assert [r["kept"] for r in again.folds] == [True, True]
    assert [(out / f"fold-{k}" / "guide" / "model.safetensors").stat().st_mtime_ns
            for k in range(2)] == stamps


def test_the_command_refuses_split_options_its_folds_replace(phantoms, tmp_path):
    from typer.testing import CliRunner

    from braincam.cli import app

    for option, value in (("--split", "random"), ("--test-fraction", "0.5")):
        result = CliRunner().invoke(app, ["cv", str(phantoms / "Training"), "--out",
                                          str(tmp_path / "cv"), option, value])
        assert str(result.exception) == (f"{option} does not apply to braincam cv: its folds "
                                         "are the split (--folds, --split-seed)")
        assert not (tmp_path / "cv").exists()


def test_a_fold_without_training_images_of_a_class_is_named(phantoms, tmp_path, caplog,
                                                             recwarn):
    """The fold and the reason in one line; scikit-learn's warning about the class's few
    members becomes braincam's own log line."""
    import shutil

    data = shutil.copytree(phantoms / "Training", tmp_path / "data")
    for image in sorted((data / "no_tumor").iterdir())[1:]:  # one tumour-free image is left
        image.unlink()
    with pytest.raises(BraincamError, match=r"^fold \d of 2: no training images of class "
                                            r"no_tumor once the test and validation images "
                                            r"are held out"):
        cross_validate([data], tiny(head_epochs=1, finetune_epochs=0), tmp_path / "cv",
                       folds=2, progress=False)
    assert "class no_tumor has 1 image group(s), fewer than the 2 folds" in caplog.text
    assert not [w for w in recwarn if "least populated class" in str(w.message)]
