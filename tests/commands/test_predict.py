"""``braincam predict``: predictions.csv rows and columns, volume rows, overlays, no patient
fields in any output, no silent overwrite."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from braincam.commands import predict
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


def test_unreadable_files_are_skipped_and_listed(run, tmp_path):
    good = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[0]
    bad = tmp_path / "bad.png"
    bad.write_text("no image here")
    out = tmp_path / "out"
    result = invoke(str(run), str(good), str(bad), "--out", str(out), "--no-ood")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert table["path"].tolist() == [str(good)]
    assert table["ood_score"].tolist() == [""]
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["path"].tolist() == [str(bad)]


def test_bad_options_are_one_line_errors(run, tmp_path):
    result = invoke(str(run), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o"))
    assert isinstance(result.exception, BraincamError) and "no such file" in str(result.exception)
    image = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[0]
    result = invoke(str(run), str(image), "--out", str(tmp_path / "o"), "--explain", "magic")
    assert isinstance(result.exception, BraincamError) and "unknown method" in str(
        result.exception)


def test_two_processes_predict_like_one(run, tmp_path):
    """torchrun --nproc_per_node=2: the same predictions.csv and overlay names as one process."""
    import os
    import subprocess
    import sys

    tests = sorted((run.parent / "phantoms" / "Testing").rglob("*.png"))[:5]
    args = [str(run), *map(str, tests), "--explain", "gradcam", "--device", "cpu"]
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
    pd.testing.assert_frame_equal(first, second, check_exact=False, atol=1e-5)
    names = [sorted(p.name for p in (tmp_path / d / "overlays").iterdir()) for d in ("one", "two")]
    assert names[0] == names[1] and len(names[0]) == 5
