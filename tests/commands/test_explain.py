"""``braincam explain``: a saved run on tiny phantoms, by split, by files and by folder."""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from braincam.commands import explain as explain_command
from braincam.data.preprocess import PreprocessCache, PreprocessConfig
from braincam.data.records import load_dataset
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.explain import explain
from braincam.explain.io import load_explanations
from braincam.models import build_model, load_checkpoint, save_checkpoint

PREP = PreprocessConfig(size=64)
CLASSES = ["no_tumor", "tumor"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_dataset(
        tmp_path_factory.mktemp("data") / "phantoms", PhantomSpec(n_per_class=3, size=48)
    )


@pytest.fixture(scope="module")
def run(phantoms, tmp_path_factory):
    """A run directory as `braincam train` leaves it (random efficientnet_lite0 weights)."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", len(CLASSES)).eval()
    save_checkpoint(model, root / "model.safetensors", {
        "arch": "efficientnet_lite0", "classes": CLASSES, "task": "binary",
        "preprocess": asdict(PREP),
    })
    (root / "config.yaml").write_text(yaml.safe_dump({"data": [str(phantoms)]}))
    with open(root / "split.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "source", "label", "split", "group", "leak_free"])
        for i, r in enumerate(load_dataset([phantoms]).records):
            writer.writerow([r.path, r.source, r.label, r.split, i, r.split == "test"])
    return root


def invoke(*args: str):
    app = typer.Typer()
    app.command("explain")(explain_command.command)
    app.command("unused")(lambda: None)  # keeps "explain" a subcommand, as in braincam.cli
    return CliRunner().invoke(app, ["explain", *args, "--device", "cpu", "--no-progress"])


def test_run_test_split_by_default(run, phantoms):
    result = invoke(str(run), "--batch-size", "4")
    assert result.exit_code == 0, result.output
    out = run / "explain" / "gradcam"
    exp = load_explanations(out / "explanations.npz")
    test = [r for r in load_dataset([phantoms]).records if r.split == "test"]
    assert exp.paths == [str(r.path) for r in test] and len(exp) == 6
    assert exp.maps.shape == (6, 64, 64) and exp.raw.shape == (6, 2, 2)
    assert exp.layer == "backbone.bn2" and exp.classes == CLASSES
    assert np.array_equal(exp.targets, exp.probs.argmax(axis=1))
    assert exp.original_sizes.tolist() == [[48, 48]] * 6
    # the stored maps are those of the library on the cached preprocessed images
    images = np.stack([PreprocessCache().get(r, PREP).image for r in test])
    model, _ = load_checkpoint(run / "model.safetensors")
    direct = explain(model, images, exp.targets, "gradcam").numpy()
    assert np.abs(direct["maps"] - exp.maps).max() <= 1e-5
    pngs = sorted((out / "overlays").iterdir())
    assert len(pngs) == 6 and pngs[0].name == f"0000_{test[0].path.stem}.png"
    assert cv2.imread(str(pngs[0])).shape == (48, 48, 3)  # drawn on the original image
    assert "explained 6 images with gradcam" in result.output and "0 skipped" in result.output
    again = invoke(str(run))
    assert isinstance(again.exception, BraincamError) and "--force" in str(again.exception)


def test_files_with_an_unreadable_one_are_skipped(run, phantoms, tmp_path):
    good = sorted(phantoms.glob("Testing/tumor/*.png"))[:2]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    result = invoke(str(run), *map(str, good), str(bad), "--out", str(out), "--no-overlays",
                    "--method", "hirescam")
    assert result.exit_code == 0, result.output
    exp = load_explanations(out / "explanations.npz")
    assert exp.paths == [str(p.absolute()) for p in good] and exp.method == "hirescam"
    assert not (out / "overlays").exists()
    with open(out / "skipped.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == [str(bad.absolute())]
    assert "1 skipped" in result.output and "broken.png" in result.output
    for methods in ("gradcam", "gradcam,ig"):  # nothing readable: no empty folder left
        only_bad = invoke(str(run), str(bad), "--out", str(tmp_path / "none"),
                          "--methods", methods)
        assert "none of the 1 images could be read" in str(only_bad.exception)
        assert not (tmp_path / "none").exists()


def test_each_slice_of_a_volume_is_explained_and_a_broken_one_is_skipped(
        run, phantoms, tmp_path, write_nifti):
    pngs = sorted(phantoms.glob("Testing/tumor/*.png"))[:2]
    volume = write_nifti(tmp_path / "vol.nii.gz",
                         np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in pngs]))
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a volume")
    out = tmp_path / "out"
    result = invoke(str(run), *map(str, pngs), str(volume), str(broken), "--out", str(out))
    assert result.exit_code == 0, result.output
    exp = load_explanations(out / "explanations.npz")
    keys = [f"{volume.absolute()}#{k}" for k in range(2)]
    assert exp.paths == [str(p.absolute()) for p in pngs] + keys
    np.testing.assert_allclose(exp.maps[2:], exp.maps[:2], atol=1e-5)  # the same images
    assert sorted(p.name for p in (out / "overlays").iterdir())[2:] == [
        "0002_vol_s0.png", "0003_vol_s1.png"]
    with open(out / "skipped.csv") as fh:
        assert [r["path"] for r in csv.DictReader(fh)] == [str(broken)]


def test_folder_with_true_class_targets(run, phantoms, tmp_path):
    out = tmp_path / "out"
    result = invoke(str(run), "--data", str(phantoms), "--split", "all", "--target", "label",
                    "--method", "gradcam++", "--out", str(out))
    assert result.exit_code == 0, result.output
    exp = load_explanations(out / "explanations.npz")
    records = load_dataset([phantoms]).records
    assert len(exp) == len(records) == 12
    labels = [CLASSES.index(r.label) for r in records]
    assert exp.targets.tolist() == labels
    assert len(list((out / "overlays").iterdir())) == 12


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--method", "gradcam+"], "unknown method"),
     (["--target", "label", "IMAGE"], "needs labelled images"),
     (["--split", "dev"], "--split"),
     (["--layer", "backbone.nope"], "unknown layer"),
     # occlusion's options, checked before gradcam's folder is written
     (["--methods", "gradcam,occlusion", "--window", "200"], "occlusion window must be 1.."),
     (["--methods", "gradcam,occlusion", "--stride", "0"], "occlusion stride must be 1.."),
     (["--methods", "gradcam,occlusion", "--fill", "blurr"], "unknown occlusion fill")],
)
def test_bad_options_are_one_line_errors(run, phantoms, tmp_path, args, message):
    image = next(phantoms.glob("Testing/tumor/*.png"))
    args = [str(image) if a == "IMAGE" else a for a in args]
    result = invoke(str(run), *args, "--out", str(tmp_path / "x"))
    assert isinstance(result.exception, BraincamError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "x").exists()


def test_several_methods_each_get_a_folder(run, phantoms, tmp_path):
    """``--methods a,b`` with --out writes OUT/a and OUT/b; the old ``--method`` adds to it."""
    good = sorted(phantoms.glob("Testing/tumor/*.png"))[:2]
    out = tmp_path / "out"
    result = invoke(str(run), *map(str, good), "--out", str(out), "--no-overlays",
                    "--methods", "gradcam, hirescam", "--method", "gradcam")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["gradcam", "hirescam"]
    for method in ("gradcam", "hirescam"):
        exp = load_explanations(out / method / "explanations.npz")
        assert exp.method == method and exp.paths == [str(p.absolute()) for p in good]
    assert result.output.count("explained 2 images") == 2


def test_force_replaces_the_overlays_and_nothing_is_written_before_every_folder_is_free(
        run, phantoms, tmp_path):
    """``--force`` leaves no overlay of an earlier call; with several methods an occupied
    folder of a later one stops the command before the first is written; an output inside
    --data is refused; --data's unreadable files are in skipped.csv."""
    import shutil

    out = tmp_path / "out"
    assert invoke(str(run), "--data", str(phantoms), "--split", "all", "--out",
                  str(out)).exit_code == 0
    assert len(list((out / "overlays").iterdir())) == 12
    few = tmp_path / "few"
    shutil.copytree(phantoms / "Testing", few)
    (few / "tumor" / "broken.png").write_text("not an image")
    again = invoke(str(run), "--data", str(few), "--out", str(out), "--force")
    assert again.exit_code == 0, again.output
    assert len(list((out / "overlays").iterdir())) == len(load_explanations(
        out / "explanations.npz")) == 6
    skipped = (out / "skipped.csv").read_text().splitlines()
    assert len(skipped) == 2 and "broken.png" in skipped[1]
    both = tmp_path / "both"
    assert invoke(str(run), "--data", str(few), "--methods", "hirescam",
                  "--out", str(both / "hirescam")).exit_code == 0
    refused = invoke(str(run), "--data", str(few), "--methods", "gradcam,hirescam",
                     "--out", str(both))
    assert isinstance(refused.exception, BraincamError) and "--force" in str(refused.exception)
    assert not (both / "gradcam").exists()
    inside = invoke(str(run), "--data", str(few), "--out", str(few / "maps"))
    assert isinstance(inside.exception, BraincamError)
    assert "inside the dataset folder" in str(inside.exception) and not (few / "maps").exists()
    maps = phantoms / "Training" / "tumor" / "maps"  # the run's own data: read back as images
    inside = invoke(str(run), "--out", str(maps))
    assert f"lies inside the dataset folder {phantoms}" in str(inside.exception)
    assert not maps.exists()


def test_data_skip_entries_are_images_of_the_split_left_out(run, phantoms, tmp_path):
    """--data's skipped.csv lists its unreadable images of the split explained: not a bad
    mask (its image is explained without it), nor an unreadable image of another split."""
    import shutil

    data = shutil.copytree(phantoms, tmp_path / "data")
    (data / "Testing" / "tumor" / "bad.png").write_text("not an image")
    (data / "Training" / "tumor" / "other.png").write_text("not an image")
    image = next((data / "Testing" / "tumor").glob("*_test_*.png"))
    (data / "masks" / "Testing" / "tumor").mkdir(parents=True, exist_ok=True)
    (data / "masks" / "Testing" / "tumor" / image.name).write_text("not a mask")
    out = tmp_path / "out"
    result = invoke(str(run), "--data", str(data), "--out", str(out), "--no-overlays")
    assert result.exit_code == 0, result.output
    listed = [line.split(",")[0] for line in (out / "skipped.csv").read_text().splitlines()[1:]]
    assert [Path(p).name for p in listed] == ["bad.png"]
