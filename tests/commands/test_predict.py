"""``braincam predict``: predictions.csv rows and columns, volume rows, overlays, no patient
fields in any output, no silent overwrite; with --segment the tumour fraction, masks/ (with
NIfTI mask volumes) and the tumour outline."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import braincam
from braincam.commands import predict
from braincam.data.inputs import SliceChoice
from braincam.data.preprocess import PreprocessConfig
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.train import TrainConfig, train_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    data = make_phantom_dataset(base / "phantoms", PhantomSpec(n_per_class=20, size=48))
    config = TrainConfig(
        arch="test_resnet", weights="none", head_epochs=2, finetune_epochs=0, batch_size=8,
        preprocess=PreprocessConfig(size=32), device="cpu",
    )
    train_run([data], config, base / "run", progress=False)
    return base / "run"


def invoke(*args: str):
    app = typer.Typer()
    app.command("predict")(predict.command)
    app.command("unused")(lambda: None)
    return CliRunner().invoke(app, ["predict", *args])


def test_predictions_csv_volumes_overlays_and_no_patient_fields(run, tmp_path, write_dicom,
                                                                 write_nifti):
    tests = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[:6]
    images = tmp_path / "images"
    images.mkdir()
    for p in tests[:2]:
        shutil.copy(p, images / p.name)
    slices = np.stack([np.asarray(Image.open(p).convert("L")) for p in tests[2:6]])
    series = tmp_path / "series"
    series.mkdir()
    for k, s in enumerate(slices):
        write_dicom(series / f"im{k}", s, window=(127.5, 255.0), instance=k + 1)
    volume = write_nifti(tmp_path / "vol.nii.gz", slices)
    out = tmp_path / "out"
    args = [str(run), str(images), str(series), str(volume), "--out", str(out),
            "--explain", "gradcam", "--min-head", "0"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(table.columns) == ["path", "slice", "kind", "pred", "prob_no_tumor",
                                   "prob_tumor", "ood_score", "warnings"]
    assert table["kind"].tolist() == ["image"] * 2 + ["slice"] * 4 + ["volume"] \
        + ["slice"] * 4 + ["volume"]
    for source in (series, volume):
        rows = table[table["path"] == str(source)]
        slice_rows = rows[rows["kind"] == "slice"]
        assert slice_rows["slice"].astype(int).tolist() == [0, 1, 2, 3]
        best = slice_rows.loc[slice_rows["prob_tumor"].idxmax()]
        (summary,) = rows[rows["kind"] == "volume"].itertuples()
        assert int(summary.slice) == int(best["slice"])
        assert summary.prob_tumor == best["prob_tumor"]
    np.testing.assert_allclose(table["prob_no_tumor"] + table["prob_tumor"], 1.0, atol=1e-5)
    assert (table["pred"] == np.where(table["prob_tumor"] > 0.5, "tumor", "no_tumor")).all()
    assert len(list((out / "overlays").glob("*.png"))) == 10
    for file in out.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            assert b"Secret" not in data and b"PID-31337" not in data, file
    again = invoke(*args)
    assert isinstance(again.exception, BraincamError) and "--force" in str(again.exception)
    assert invoke(*args, "--force").exit_code == 0


def test_force_replaces_the_earlier_files_and_the_run_and_inputs_are_never_outputs(run,
                                                                                  tmp_path):
    """``--force`` leaves no overlay or skip entry of an earlier call beside the new ones and
    keeps the folder's other files; an output folder that is the run, or lies inside an input
    folder, is refused before anything is written."""
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[:3]:
        shutil.copy(p, images / p.name)
    (images / "bad.png").write_text("no image")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    first = invoke(str(run), str(images), "--out", str(out), "--explain", "gradcam", "--no-ood")
    assert first.exit_code == 0, first.output
    assert len(list((out / "overlays").glob("*.png"))) == 3 and (out / "skipped.csv").exists()
    one = sorted(images.glob("*_test_*.png"))[0]
    again = invoke(str(run), str(one), "--out", str(out), "--no-ood", "--force")
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "predictions.csv",
                                                     "skipped.csv"]
    assert len(pd.read_csv(out / "predictions.csv")) == 1
    assert pd.read_csv(out / "skipped.csv").empty
    held = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    other_run = tmp_path / "other-run"
    shutil.copytree(run, other_run)
    for target, words in ((run, "is a run"), (other_run, "is a run"),
                          (images / "out", "lies inside")):
        refused = invoke(str(run), str(images), "--out", str(target), "--no-ood", "--force")
        assert isinstance(refused.exception, BraincamError), refused.output
        assert words in str(refused.exception)
    assert not (images / "out").exists()
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == held
    refused = invoke(str(run), str(one), "--out", str(images), "--no-ood")
    assert "holds the input" in str(refused.exception)
    assert not (images / "predictions.csv").exists()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "scan.png").symlink_to(one)
    refused = invoke(str(run), str(linked / "scan.png"), "--out", str(linked), "--no-ood")
    assert "holds the input" in str(refused.exception)  # the link's folder, not the target's


def test_a_failed_call_leaves_the_earlier_files_in_place(run, tmp_path):
    """Inputs and options are checked before ``--force`` makes room: a call that ends in an
    error deletes nothing."""
    image = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[0]
    out = tmp_path / "out"
    assert invoke(str(run), str(image), "--out", str(out), "--no-ood",
                  "--explain", "gradcam").exit_code == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    for args in (["--every", "0"], []):
        inputs = [str(image)] if args else [str(empty)]
        failed = invoke(str(run), *inputs, "--out", str(out), "--no-ood", "--force", *args)
        assert isinstance(failed.exception, BraincamError), failed.output
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_unreadable_files_are_skipped_and_listed(run, tmp_path, write_nifti):
    good = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[0]
    bad = tmp_path / "bad.png"
    bad.write_text("no image here")
    folder = tmp_path / "volumes"  # one bad file in a folder costs only itself
    folder.mkdir()
    (folder / "broken.nii.gz").write_bytes(b"not a volume")
    write_nifti(folder / "blank.nii", np.zeros((2, 32, 32), np.uint8))
    out = tmp_path / "out"
    result = invoke(str(run), str(good), str(bad), str(folder), "--out", str(out), "--no-ood")
    assert result.exit_code == 0, result.output
    assert "(0 volumes)" in result.output and "3 skipped" in result.output
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert table["path"].tolist() == [str(good)]
    assert table["ood_score"].tolist() == [""]
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["path"].tolist() == [str(folder / "blank.nii"), str(folder / "broken.nii.gz"),
                                        str(bad)]


def test_bad_options_are_one_line_errors(run, tmp_path):
    result = invoke(str(run), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o"))
    assert isinstance(result.exception, BraincamError) and "no such file" in str(result.exception)
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    result = invoke(str(run), str(tmp_path / "dangling.png"), "--out", str(tmp_path / "o"))
    assert str(result.exception) == f"{tmp_path / 'dangling.png'}: a link to nothing"
    image = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[0]
    result = invoke(str(run), str(image), "--out", str(tmp_path / "o"), "--explain", "magic")
    assert isinstance(result.exception, BraincamError) and "unknown method" in str(
        result.exception)


def test_segment_adds_fractions_masks_and_outlines(run, tmp_path, segmenter_run,
                                                  disc_segmenter, write_nifti):
    import nibabel as nib

    from braincam.data.nifti import read_volume
    from braincam.explain.render import TUMOUR_RGB

    tests = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[:4]
    slices = np.stack([np.asarray(Image.open(p).convert("L")) for p in tests[2:4]])
    volume = write_nifti(tmp_path / "vol.nii.gz", slices)
    inputs = [tests[0], tests[1], volume]
    out = tmp_path / "out"
    result = invoke(str(run), *map(str, inputs), "--out", str(out), "--explain", "gradcam",
                    "--min-head", "0", "--no-ood", "--segment", str(segmenter_run))
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(table.columns) == ["path", "slice", "kind", "pred", "prob_no_tumor",
                                   "prob_tumor", "ood_score", "tumour_fraction", "warnings"]
    assert table["kind"].tolist() == ["image", "image", "slice", "slice", "volume"]
    assert table["tumour_fraction"].tolist() == [disc_segmenter.fraction(32)] * 5
    masks = sorted((out / "masks").glob("*.png"))
    overlays = sorted((out / "overlays").iterdir())
    assert [m.name for m in masks] == [o.name for o in overlays] == [
        f"0000_{tests[0].stem}.png", f"0001_{tests[1].stem}.png", "0002_vol_s0.png",
        "0003_vol_s1.png"]
    assert sorted(p.name for p in (out / "masks").glob("*.nii.gz")) == ["0002_vol.nii.gz"]
    shown = read_volume(out / "masks" / "0002_vol.nii.gz") > 0.5  # the slices' masks again
    for k in (0, 1):
        np.testing.assert_array_equal(shown[k], np.asarray(Image.open(masks[2 + k])) == 255)
    assert nib.load(out / "masks" / "0002_vol.nii.gz").shape == nib.load(volume).shape
    model = braincam.load(run, segment=segmenter_run, device="cpu", ood=False)
    expected = model.segment(inputs, choice=SliceChoice(min_head=0.0))
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    for mask_file, overlay_file, tumour in zip(masks, overlays, expected, strict=True):
        png = np.asarray(Image.open(mask_file))
        assert png.shape == (48, 48) == tumour.preprocessed.original_size[::-1]
        assert set(np.unique(png).tolist()) == {0, 255}
        disc_segmenter.assert_matches(png == 255, tumour.preprocessed)
        np.testing.assert_array_equal(png == 255, tumour.mask)
        magenta = (np.asarray(Image.open(overlay_file)) == TUMOUR_RGB).all(axis=2)
        rim = tumour.mask & ~cv2.erode(tumour.mask.astype(np.uint8), cross).astype(bool)
        np.testing.assert_array_equal(magenta, rim)
    plain = invoke(str(run), str(tests[0]), "--out", str(tmp_path / "plain"), "--no-ood",
                   "--segment", str(segmenter_run))  # masks without --explain too
    assert plain.exit_code == 0, plain.output
    assert [p.name for p in (tmp_path / "plain" / "masks").iterdir()] == [masks[0].name]
    assert not (tmp_path / "plain" / "overlays").exists()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "plain" / "masks" /
                                                        masks[0].name)), np.asarray(
        Image.open(masks[0])))


def test_a_run_that_is_not_a_segmenter_is_a_one_line_error(run, tmp_path, monkeypatch,
                                                           capsys):
    image = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[0]
    args = [str(run), str(image), "--out", str(tmp_path / "o"), "--segment", str(run)]
    result = invoke(*args)
    assert result.exit_code != 0
    assert isinstance(result.exception, BraincamError)
    assert "not a segmenter" in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "o").exists()
    from braincam.cli import main

    monkeypatch.setattr("sys.argv", ["braincam", "predict", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a segmenter" in err and err.count("\n") == 1


def test_a_segmenter_run_as_the_model_is_a_one_line_error(segmenter_run, run, tmp_path,
                                                          monkeypatch, capsys):
    image = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[0]
    from braincam.cli import main

    monkeypatch.setattr("sys.argv", ["braincam", "predict", str(segmenter_run), str(image),
                                     "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "holds a tumour segmenter" in err and "braincam segment RUN --predict" in err
    assert not (tmp_path / "o").exists()


def test_two_processes_predict_like_one(run, tmp_path, segmenter_run):
    """torchrun --nproc_per_node=2: the same predictions.csv, overlay and mask names and masks
    as one process."""
    import os
    import subprocess
    import sys

    tests = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[:5]
    args = [str(run), *map(str, tests), "--explain", "gradcam", "--device", "cpu",
            "--segment", str(segmenter_run)]
    one = invoke(*args, "--out", str(tmp_path / "one"))
    assert one.exit_code == 0, one.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "braincam", "predict", *args,
               "--out", str(tmp_path / "two")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("wrote ") == 1
    first = pd.read_csv(tmp_path / "one" / "predictions.csv", keep_default_na=False)
    second = pd.read_csv(tmp_path / "two" / "predictions.csv", keep_default_na=False)
    # an untrained U-Net: a pixel's P may sit within float noise of 0.5 (batches differ)
    np.testing.assert_allclose(first.pop("tumour_fraction"), second.pop("tumour_fraction"),
                               atol=0.003)
    pd.testing.assert_frame_equal(first, second, check_exact=False, atol=1e-5)
    for folder in ("overlays", "masks"):
        names = [sorted(p.name for p in (tmp_path / d / folder).iterdir()) for d in ("one", "two")]
        assert names[0] == names[1] and len(names[0]) == 5
    for name in names[0]:
        one, two = (np.asarray(Image.open(tmp_path / d / "masks" / name)) for d in ("one", "two"))
        assert one.shape == two.shape == (48, 48) and (one != two).mean() < 0.005


def test_an_input_given_twice_is_predicted_once(run, tmp_path, write_nifti):
    """Its rows would otherwise merge into one volume of twice the slices."""
    tests = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[:3]
    (tmp_path / "vols").mkdir()
    volume = write_nifti(tmp_path / "vols" / "vol.nii.gz",
                         np.stack([np.asarray(Image.open(p).convert("L")) for p in tests]))
    out = tmp_path / "out"
    result = invoke(str(run), str(volume), str(tmp_path / "vols" / ".." / "vols" / "vol.nii.gz"),
                    "--out", str(out), "--no-ood", "--min-head", "0")
    assert result.exit_code == 0, result.output
    assert "is given more than once; predicted once" in result.output
    rows = pd.read_csv(out / "predictions.csv")
    assert list(rows["kind"]) == ["slice"] * 3 + ["volume"]
    result = invoke(str(run), str(volume.parent), str(volume), "--out", str(tmp_path / "o2"),
                    "--no-ood", "--min-head", "0")  # the file also inside the folder given
    assert result.exit_code == 0, result.output
    assert f"{volume} is given more than once (in {volume.parent}); predicted once" in (
        result.output)
    rows = pd.read_csv(tmp_path / "o2" / "predictions.csv")
    assert list(rows["kind"]).count("volume") == 1 and len(rows) == 4


def test_an_unwritable_output_and_inputs_all_skipped_are_clear(run, tmp_path, monkeypatch):
    """An output that cannot be made stops before the model loads, in one line; when every
    input is skipped, the command fails in one line, and predictions.csv still has the
    documented columns."""
    import braincam.runs

    bad = tmp_path / "bad.png"
    bad.write_text("no image here")
    out = tmp_path / "out"
    result = invoke(str(run), str(bad), "--out", str(out), "--no-ood")
    assert isinstance(result.exception, BraincamError), result.output
    assert str(result.exception) == f"none of the 1 inputs could be read ({out / 'skipped.csv'})"
    assert (out / "skipped.csv").read_text().splitlines()[1:] == [
        f"{bad},not a readable image file"]
    assert (out / "predictions.csv").read_text().splitlines() == [
        "path,slice,kind,pred,prob_no_tumor,prob_tumor,ood_score,warnings"]
    broken = shutil.copytree(run, tmp_path / "broken")  # the output is checked first
    (broken / "model.safetensors").write_bytes(b"not a model")
    result = invoke(str(broken), str(bad), "--out", "/proc/braincam-out")  # refuses even root
    assert isinstance(result.exception, BraincamError)
    assert str(result.exception).startswith("/proc/braincam-out: cannot write there (/proc: ")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(BraincamError, match="cannot create the output folder .Permission denied"):
        braincam.runs.prepare_output_dir(tmp_path / "new")


def test_the_one_off_calibration_is_announced_once(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "ood.safetensors").unlink(missing_ok=True)
    image = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[0]
    said = []
    for k in range(2):
        result = invoke(str(copy), str(image), "--out", str(tmp_path / f"o{k}"))
        assert result.exit_code == 0, result.output
        said.append("calibrating the out-of-distribution check" in result.output)
    assert said == [True, False]


def test_a_force_that_fails_keeps_the_earlier_predictions(run, tmp_path, monkeypatch, capsys):
    """braincam predict --force whose inputs are all unreadable fails, in one line, and leaves
    the earlier predictions as they were (not a header-only predictions.csv)."""
    import sys

    from braincam import cli

    image = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[0]
    out = tmp_path / "out"
    assert invoke(str(run), str(image), "--out", str(out), "--no-ood").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "notes.txt"
    bad.write_text("no image here")
    monkeypatch.setattr(sys, "argv", ["braincam", "predict", str(run), str(bad), "--out",
                                      str(out), "--force", "--no-ood"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 2 and "none of the 1 inputs could be read" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
