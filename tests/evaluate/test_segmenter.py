"""``braincam segment SEG --evaluate DATA``: a segmenter scored on dataset folders with masks."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import braincam.evaluate.segmenter
from braincam.commands import segment
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.evaluate.segmentation import dice
from braincam.evaluate.segmenter import evaluate_segmenter, predicted

FIGURES = ("n_tumour_images", "n_tumour_free_images", "mean_dice", "mean_iou", "per_class_dice",
           "detection_rate", "false_positive_rate", "false_positive_rate_by_source")


def invoke(*args: str):
    app = typer.Typer()
    app.command()(segment.command)
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch phantom segmenter with the plain rule (P >= 0.5), and its phantoms."""
    tmp = tmp_path_factory.mktemp("seg")
    data = make_phantom_dataset(tmp / "phantoms", PhantomSpec(n_per_class=10, size=48),
                                splits=("train",))
    result = invoke(str(data), "--out", str(tmp / "seg"), "--epochs", "1", "--image-size", "32",
                    "--weights", "none", "--batch-size", "4", "--device", "cpu",
                    "--decoder-channels", "8,8,8,8,8", "--val-fraction", "0.2",
                    "--test-fraction", "0.3", "--no-tune-threshold", "--no-progress")
    assert result.exit_code == 0, result.output
    return data, tmp / "seg"


def test_its_held_out_images_score_as_in_the_runs_metrics(trained, tmp_path):
    data, seg = trained
    held = tmp_path / "held"
    assert invoke(str(seg), "--held-out", "--out", str(held)).exit_code == 0
    out = tmp_path / "eval"
    result = invoke(str(seg), str(held / data.name), "--evaluate", "--out", str(out))
    assert result.exit_code == 0, result.output
    got = json.loads((out / "metrics.json").read_text())
    own = json.loads((seg / "metrics.json").read_text())
    for key in FIGURES:
        assert got[key] == pytest.approx(own[key]), key
        assert got["unseen"][key] == pytest.approx(own[key]), key
    assert got["n_seen"] == 0 and got["segmenters"] == [str(seg)]
    assert got["weak"]["n_images"] == 0
    assert f"all: {own['n_tumour_images']} tumour images, mean Dice " \
           f"{own['mean_dice']:.3f}" in result.output
    assert "learnt from" not in result.output and "without a mask" not in result.output


def test_weak_copies_of_outlined_images_are_left_out_as_in_training(trained, tmp_path):
    """Sartaj's copies of held-out Figshare slices, given with them, counted 415 more weak
    images than the run's own metrics.json, whose training leaves such copies out."""
    data, seg = trained
    copies = tmp_path / "copies" / "tumor"
    copies.mkdir(parents=True)
    originals = sorted((data / "Training" / "tumor").glob("*.png"))[:2]
    for i, image in enumerate(originals):
        shutil.copy(image, copies / f"copy{i}.png")
    out = tmp_path / "eval"
    result = invoke(str(seg), str(data), str(copies.parent), "--evaluate", "--out", str(out))
    assert result.exit_code == 0, result.output
    weak = json.loads((out / "metrics.json").read_text())["weak"]
    assert (weak["n_images"], weak["n_copies_left_out"]) == (0, 2)


def test_dice_by_hand_and_the_images_it_learnt_from_apart(trained):
    data, seg = trained
    score = evaluate_segmenter(seg, [data], "cpu")
    m = score.metrics
    split = pd.read_csv(seg / "split.csv")
    learnt = (split["split"] != "test").sum()
    assert m["n_seen"] >= learnt > 0  # its training and validation images, and their copies
    total = m["n_tumour_images"] + m["n_tumour_free_images"]
    assert total == len(split)
    unseen = m["unseen"]
    assert unseen["n_tumour_images"] + unseen["n_tumour_free_images"] == total - m["n_seen"]

    from braincam.data.preprocess import PreprocessCache, PreprocessConfig, tumour_mask
    from braincam.data.records import load_dataset
    from braincam.models.segment import load_segmenter

    segmenter = load_segmenter(seg, "cpu")
    records = [r for r in load_dataset([data]).records if r.label == "tumor"]
    config = PreprocessConfig(size=32)
    cache = PreprocessCache()
    preps = [cache.get(r, config) for r in records]
    pred = predicted(segmenter, np.stack([p.image for p in preps]))
    by_hand = np.mean([dice(p, tumour_mask(r, prep))
                       for p, r, prep in zip(pred, records, preps, strict=True)])
    assert m["mean_dice"] == pytest.approx(by_hand)

    table = score.per_image  # per_image.csv: the same figures per image
    assert len(table) == total and table["seen"].sum() == m["n_seen"]
    tumour = table[table["tumour_share"] > 0]
    assert tumour["dice"].mean() == pytest.approx(m["mean_dice"], abs=1e-4)
    free = table[table["tumour_share"] == 0]
    assert (free["dice"] == (free["predicted_share"] == 0)).all()  # 1 without a false alarm
    assert ((table["dice"] == 1) | (table["predicted_share"] > 0)).all()
    # overlays: up to four unseen images per label, the worst Dice first in each
    names = sorted(score.overlays)
    assert {n.split("_")[0] for n in names} == {"tumor", "no"}
    for label in ("tumor", "no_tumor"):
        unseen = table[(table["label"] == label) & ~table["seen"]]
        drawn = [n for n in names if n.startswith(f"{label}_{data.name}_")]
        assert len(drawn) == min(4, len(unseen))
        stems = {Path(p).stem for p in unseen["path"]}
        assert all(n.removeprefix(f"{label}_{data.name}_").rsplit("_", 1)[0] in stems
                   for n in drawn)
        assert f"dice{unseen['dice'].min():.2f}" in " ".join(drawn)
    png = score.overlays[names[0]]
    assert Image.open(io.BytesIO(png)).size == (64, 64)  # the 32 px model input, 2x


def test_a_mean_of_segmenters_and_bad_input(trained, tmp_path):
    data, seg = trained
    alone = evaluate_segmenter(seg, [data], "cpu").metrics
    mean = evaluate_segmenter(f"{seg},{seg}", [data], "cpu").metrics  # the same probabilities
    assert mean["segmenters"] == [str(seg), str(seg)]
    for key in FIGURES:
        assert mean[key] == pytest.approx(alone[key]), key

    bad = make_phantom_dataset(tmp_path / "bad", PhantomSpec(n_per_class=3, size=48),
                               splits=("train",))
    mask = sorted((bad / "masks" / "Training" / "tumor").iterdir())[0]
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(mask)  # the wrong size
    out = tmp_path / "eval"
    result = invoke(str(seg), str(bad), "--evaluate", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "1 files skipped (skipped.csv)" in result.output
    assert "; 1 tumour images without a mask, some tumour found on" in result.output
    skipped = pd.read_csv(out / "skipped.csv")
    assert len(skipped) == 1 and "mask is 20x20 px" in skipped["reason"].item()
    got = json.loads((out / "metrics.json").read_text())  # kept, without its mask
    assert got["n_tumour_images"] == 2 and got["weak"]["n_images"] == 1
    table = pd.read_csv(out / "per_image.csv")
    weak = table[~table["mask"]]
    assert len(weak) == 1 and weak["dice"].isna().all() and weak["tumour_share"].isna().all()
    assert Path(weak["path"].item()).stem == mask.stem
    pictures = sorted(p.name for p in (out / "overlays").iterdir())
    assert len(pictures) == 3 + 2 + 1 and "wrote metrics.json, per_image.csv and 6 overlays" \
        in result.output  # tumour-free 3, outlined tumours 2, without a mask 1
    assert [p for p in pictures if p.startswith("tumor_nomask_")] == [
        f"tumor_nomask_bad_{mask.stem}_"
        f"{'found' if weak['predicted_share'].item() > 0 else 'missed'}.png"]

    result = invoke(str(seg), str(bad), "--evaluate", "--out", str(out))
    assert result.exit_code != 0 and "--force" in str(result.exception)
    free = tmp_path / "free" / "Training"  # tumour-free images only: no Dice to speak of
    shutil.copytree(bad / "Training" / "no_tumor", free / "no_tumor")
    result = invoke(str(seg), str(free.parent), "--evaluate", "--out", str(tmp_path / "e1"))
    assert result.exit_code == 0, result.output
    assert "all: 3 tumour-free, false-positive rate " in result.output
    assert "Dice" not in result.output
    result = invoke(str(seg), "--evaluate", "--out", str(tmp_path / "e2"))
    assert "needs the segment run directory" in str(result.exception)
    (tmp_path / "afile").write_text("")  # in the way: said before any image is scored
    scored = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(braincam.evaluate.segmenter, "load_segmentation_data",
                   lambda *a, **k: scored.append(a))
        result = invoke(str(seg), str(bad), "--evaluate", "--out",
                        str(tmp_path / "afile" / "sub"))
    assert result.exit_code != 0 and "afile" in str(result.exception) and scored == []
    result = invoke(str(seg), str(bad), "--evaluate", "--predict", "--out", str(tmp_path / "e3"))
    assert "exclude each other" in str(result.exception)
    assert not (tmp_path / "e2").exists() and not (tmp_path / "e3").exists()
    with pytest.MonkeyPatch.context() as mp:  # under torchrun each process would run it whole
        mp.setenv("WORLD_SIZE", "2")
        result = invoke(str(seg), str(free.parent), "--evaluate", "--out", str(tmp_path / "e4"))
    assert "braincam segment --evaluate runs in one process" in str(result.exception)
    assert not (tmp_path / "e4").exists()


def test_outputs_never_replace_a_segmenter_or_land_in_their_inputs(trained, tmp_path):
    data, seg = trained
    copy = shutil.copytree(seg, tmp_path / "seg")
    result = invoke(f"{copy},{seg}", str(data), "--evaluate", "--out", str(copy), "--force")
    assert "is a run or segmenter folder" in str(result.exception)
    assert (copy / "model.safetensors").is_file()
    image = str(sorted((data / "Training" / "tumor").glob("*.png"))[0])
    for mode in (["--predict", image], ["--evaluate", str(data)], ["--held-out"]):
        result = invoke(str(seg), *mode, "--out", str(copy), "--force")  # another segmenter
        assert str(result.exception) == (f"{copy} is a run or segmenter folder, whose own "
                                         "files would be replaced: choose another output folder")
        assert (copy / "model.safetensors").is_file() and (copy / "split.csv").is_file()
    mine = tmp_path / "mine"  # --force replaces an earlier call's files, not the user's
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "thesis.txt").write_text("keep")
    for mode in (["--predict", image], ["--evaluate", str(data)], ["--held-out"]):
        for _ in range(2):
            result = invoke(str(seg), *mode, "--out", str(mine), "--force")
            assert result.exit_code == 0, result.output
    assert (mine / "notes" / "thesis.txt").read_text() == "keep"
    twice = invoke(str(seg), "--predict", image, image, "--out", str(tmp_path / "twice"))
    assert "is given more than once; predicted once" in twice.output
    assert len(pd.read_csv(tmp_path / "twice" / "masks.csv")) == 1
    assert {p.name for p in mine.iterdir()} >= {"masks.csv", "metrics.json", data.name}
    images = tmp_path / "scans"
    shutil.copytree(data / "Training" / "tumor", images)
    inside = invoke(str(seg), str(images), "--predict", "--out", str(images / "pred"))
    assert "lies inside the dataset folder" in str(inside.exception)
    assert not (images / "pred").exists()
    result = invoke(str(seg), str(data), "--predict", "--out", str(tmp_path / "pred"))
    assert result.exit_code == 0, result.output
    masks = pd.read_csv(tmp_path / "pred" / "masks.csv")
    assert not masks["path"].astype(str).str.contains("/masks/").any()  # not read as images
    bad = tmp_path / "bad.png"
    bad.write_text("no image here")
    result = invoke(str(seg), str(bad), "--predict", "--out", str(tmp_path / "none"))
    assert str(result.exception) == ("none of the 1 inputs could be read "
                                     f"({tmp_path / 'none' / 'skipped.csv'})")
    assert (tmp_path / "none" / "skipped.csv").read_text().splitlines()[1:] == [
        f"{bad},not a readable image file"]


def test_held_out_refuses_a_classifier_run_and_names_its_guide(trained, tmp_path):
    _, seg = trained
    run = tmp_path / "run"  # a guided classifier run: its own split, its segmenter in guide/
    run.mkdir()
    shutil.copy(seg / "split.csv", run / "split.csv")
    (run / "config.yaml").write_text("command: braincam train DATA --guide DATA\n")
    shutil.copytree(seg, run / "guide")
    result = invoke(str(run), "--held-out", "--out", str(tmp_path / "held"))
    assert str(result.exception) == (
        f"{run} is a classifier run, not a segment run (braincam segment); its guide is one: "
        f"--held-out {run / 'guide'}")
    assert not (tmp_path / "held").exists()
    assert invoke(str(run / "guide"), "--held-out", "--out", str(tmp_path / "held")).exit_code == 0
