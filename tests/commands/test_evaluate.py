"""``braincam evaluate``: test split, leak-free subset, extra datasets, predictions, figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from braincam.commands import evaluate
from braincam.data.preprocess import PreprocessConfig
from braincam.data.synthetic import PhantomSpec, make_phantom_arrays, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.evaluate.metrics import compute_metrics
from braincam.train import TrainConfig, train_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run on phantoms whose test set holds copies of training images."""
    base = tmp_path_factory.mktemp("eval")
    spec = PhantomSpec(n_per_class=10, size=48, shortcut="duplicates")
    data = make_phantom_dataset(base / "phantoms", spec)
    config = TrainConfig(
        arch="test_resnet", weights="none", head_epochs=2, finetune_epochs=0, batch_size=8,
        preprocess=PreprocessConfig(size=32), device="cpu",
    )
    train_run([data], config, base / "run", progress=False)
    return base / "run"


@pytest.fixture(scope="module")
def extras(tmp_path_factory):
    """Two class-folder datasets: one all no_tumor, one all tumor."""
    base = tmp_path_factory.mktemp("extra")
    items = make_phantom_arrays(PhantomSpec(n_per_class=4, size=48, seed=7), splits=("test",))
    roots = []
    for label in ("no_tumor", "tumor"):
        root = base / f"only-{label}"
        (root / label).mkdir(parents=True)
        for item in (it for it in items if it.label == label):
            Image.fromarray(item.phantom.image).save(root / label / f"{item.name}.png")
        roots.append(root)
    return roots


def invoke(*args: str):
    app = typer.Typer()
    app.command("evaluate")(evaluate.command)
    app.command("unused")(lambda: None)
    return CliRunner().invoke(app, ["evaluate", *args])


def test_metrics_for_test_leak_free_and_extra_data(run, extras):
    result = invoke(str(run), "--data", str(extras[0]), "--data", str(extras[1]),
                    "--no-progress", "--force", "--n-boot", "200")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    split = pd.read_csv(run / "split.csv")
    test = split[split["split"] == "test"]
    assert metrics["test"]["n"] == len(test) == 20
    assert metrics["test_leak_free"]["n"] == test["leak_free"].sum()
    assert 0 < metrics["test_leak_free"]["n"] < 20  # the planted copies are not leak-free
    assert set(metrics["extra"]) == {"only-no_tumor", "only-tumor"}
    lines = result.output.splitlines()
    assert next(line for line in lines if line.startswith("only-tumor: ")).endswith(
        ", tumor images only")  # its balanced accuracy is the tumour recall
    assert not next(line for line in lines if line.startswith("test: ")).endswith("only")
    one_class = metrics["extra"]["only-tumor"]
    assert one_class["n"] == 4 and one_class["auc"] is None
    assert one_class["balanced_accuracy"] == pytest.approx(one_class["accuracy"])
    assert one_class["per_class"]["tumor"]["recall"] == pytest.approx(one_class["accuracy"])
    assert metrics["extra_combined"]["n"] == 8 and metrics["extra_combined"]["auc"] is not None
    for name, files in metrics["figures"].items():
        assert (run / files["confusion"]).is_file(), name
    assert metrics["figures"]["only-tumor"]["roc"] is None
    assert "only-tumor: n=4, acc" in result.output

    predictions = pd.read_csv(run / "predictions.csv")
    assert predictions["split"].value_counts().to_dict() == {"test": 20, "extra": 8}
    rows = predictions[predictions["split"] == "test"]
    y = (rows["label"] == "tumor").to_numpy().astype(int)
    prob = rows[["prob_no_tumor", "prob_tumor"]].to_numpy()
    again = compute_metrics(y, prob, ["no_tumor", "tumor"], n_boot=0)
    assert again["confusion_matrix"] == metrics["test"]["confusion_matrix"]
    assert again["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-4)
    np.testing.assert_allclose(prob.sum(1), 1, atol=1e-5)


def test_extra_copies_of_training_images_are_scored_apart(run, extras, tmp_path):
    """An extra folder holding two training images (one re-encoded and resized) and four new
    phantoms: two seen images, a leak-free set of four."""
    mixed = tmp_path / "mixed"
    shutil.copytree(extras[1], mixed)
    split = pd.read_csv(run / "split.csv")
    train = split[(split["split"] == "train") & (split["label"] == "tumor")]["path"].tolist()
    shutil.copy(train[0], mixed / "tumor" / "copy.png")
    Image.open(train[1]).resize((40, 40)).convert("L").save(mixed / "tumor" / "copy.jpg",
                                                             quality=80)
    out = tmp_path / "eval"
    result = invoke(str(run), "--data", str(mixed), "--data", str(extras[0]), "--out", str(out),
                    "--no-progress", "--n-boot", "0")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["extra_seen"] == {"mixed": 2, "only-no_tumor": 0}
    assert metrics["extra"]["mixed"]["n"] == 6 and metrics["extra_leak_free"]["mixed"]["n"] == 4
    assert metrics["extra_leak_free"]["only-no_tumor"] == metrics["extra"]["only-no_tumor"]
    assert metrics["extra_combined"]["n"] == 10
    assert metrics["extra_combined_leak_free"]["n"] == 8
    predictions = pd.read_csv(out / "predictions.csv").query("dataset == 'mixed'")
    seen = predictions[~predictions["leak_free"].astype(bool)]["path"]
    assert sorted(Path(p).name for p in seen) == ["copy.jpg", "copy.png"]
    assert "mixed, leak-free: n=4" in result.output
    assert "only-no_tumor, leak-free" not in result.output


def test_copies_within_a_set_are_one_group_of_its_bootstrap(run, extras, tmp_path):
    """Two re-encoded copies of one image in an extra folder make a group of three; four
    groups, or the pooled eight, are too few for a group interval (at least ten), so none
    is given or printed. With enough groups the line gives it."""
    dup = shutil.copytree(extras[1], tmp_path / "dup")
    first = Image.open(sorted((dup / "tumor").glob("*.png"))[0])
    first.save(dup / "tumor" / "again.jpg", quality=90)
    first.resize((40, 40)).save(dup / "tumor" / "again.bmp")
    out = tmp_path / "eval"
    result = invoke(str(run), "--data", str(dup), "--data", str(extras[0]), "--out", str(out),
                    "--no-progress", "--n-boot", "50")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    m = metrics["extra"]["dup"]
    assert m["n"] == 6 and m["n_groups"] == 4
    assert m["ci_groups"] == {"accuracy": None, "balanced_accuracy": None, "auc": None}
    assert "groups" not in next(line for line in result.output.splitlines()
                                if line.startswith("dup:"))
    combined = metrics["extra_combined"]
    assert combined["n_groups"] == 4 + metrics["extra"]["only-no_tumor"]["n_groups"] == 8
    grouped = dict(m, n=30, n_groups=12, ci_groups={"balanced_accuracy": [0.25, 0.75]})
    assert evaluate.metrics_lines({"test": grouped})[0].endswith(
        "bal.acc [0.250, 0.750] over 12 groups, tumor images only")


def test_a_copy_in_two_sets_is_one_group_of_the_pooled_set(run, extras, tmp_path):
    twin = shutil.copytree(extras[1], tmp_path / "twin")
    out = tmp_path / "eval"
    result = invoke(str(run), "--data", str(extras[1]), "--data", str(twin), "--out", str(out),
                    "--no-progress", "--n-boot", "0")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["extra"]["twin"]["n_groups"] == metrics["extra"]["only-tumor"]["n_groups"] == 4
    assert metrics["extra_combined"]["n"] == 8 and metrics["extra_combined"]["n_groups"] == 4


def test_extra_rows_carry_their_sets_name_where_folder_names_repeat(run, extras, tmp_path):
    named_test = shutil.copytree(extras[0], tmp_path / "test")  # an extra folder called test
    twin = shutil.copytree(extras[1], tmp_path / "other" / "test")
    out = tmp_path / "eval"
    result = invoke(str(run), "--data", str(named_test), "--data", str(twin), "--out", str(out),
                    "--no-progress", "--n-boot", "0")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["n"] == 20 and set(metrics["extra"]) == {"test_", "test__"}
    predictions = pd.read_csv(out / "predictions.csv")
    counts = predictions.groupby(["split", "dataset"]).size().to_dict()
    assert counts[("extra", "test_")] == metrics["extra"]["test_"]["n"] == 4
    assert counts[("extra", "test__")] == metrics["extra"]["test__"]["n"] == 4
    assert ("extra", "test") not in counts
    like_training = shutil.copytree(extras[0], tmp_path / "site" / "phantoms")  # the run's name
    out = tmp_path / "eval2"
    assert invoke(str(run), "--data", str(like_training), "--out", str(out), "--no-progress",
                  "--n-boot", "0").exit_code == 0
    assert set(json.loads((out / "metrics.json").read_text())["extra"]) == {"phantoms_"}
    datasets = pd.read_csv(out / "predictions.csv").groupby("split")["dataset"].unique()
    assert list(datasets["test"]) == ["phantoms"] and list(datasets["extra"]) == ["phantoms_"]
    assert (out / "confusion_phantoms_.png").is_file()
    assert invoke(str(run), "--out", str(out), "--no-progress", "--n-boot", "0",
                  "--force").exit_code == 0  # without the extra folder: its figures go
    assert not (out / "confusion_phantoms_.png").exists()


def test_a_folder_given_twice_is_scored_once(run, extras, tmp_path, caplog):
    out = tmp_path / "eval"
    with caplog.at_level("WARNING"):
        result = invoke(str(run), "--data", str(extras[0]), "--data", str(extras[1]), "--data",
                        f"{extras[0]}/.", "--out", str(out), "--no-progress", "--n-boot", "0")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["extra"]) == {"only-no_tumor", "only-tumor"}
    assert metrics["extra_combined"]["n"] == 8
    assert "a --data folder given twice is scored once" in caplog.text


def test_existing_metrics_need_force_and_missing_model_is_clear(run, tmp_path):
    (run / "metrics.json").write_text("{}")
    result = invoke(str(run), "--no-progress")
    assert isinstance(result.exception, BraincamError)
    assert "pass --force" in str(result.exception)
    result = invoke(str(tmp_path), "--no-progress")
    assert isinstance(result.exception, BraincamError)
    assert "no model.safetensors" in str(result.exception)


def test_an_output_inside_a_data_folder_is_refused_before_anything_is_made(run, extras):
    """The loader would read the output's files as images of that dataset, in this and every
    later command."""
    inside = extras[0] / "out"
    result = invoke(str(run), "--data", str(extras[0]), "--out", str(inside), "--no-progress")
    assert isinstance(result.exception, BraincamError)
    assert "lies inside the dataset folder" in str(result.exception)
    assert not inside.exists()
    own = run.parent / "phantoms" / "Training" / "eval"  # inside the run's own data
    result = invoke(str(run), "--out", str(own), "--no-progress")
    assert "lies inside the dataset folder" in str(result.exception)
    assert not own.exists()


def test_an_undecodable_image_in_data_is_left_out_with_a_warning(run, extras, tmp_path, caplog,
                                                                 write_dicom):
    """A DICOM whose header reads but whose pixels do not is listed with the folder and fails
    only once decoded: it is left out of the scores, as training skips it."""
    data = shutil.copytree(extras[1], tmp_path / "with-bad")
    bad = write_dicom(data / "tumor" / "cut.dcm", np.full((48, 48), 90, np.uint8))
    bad.write_bytes(bad.read_bytes()[:-1000])
    out = tmp_path / "eval"
    with caplog.at_level("WARNING"):
        result = invoke(str(run), "--data", str(data), "--out", str(out), "--no-progress",
                        "--n-boot", "0")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["extra"]["with-bad"]["n"] == 4
    assert "with-bad: 1 images cannot be read and are left out (first: " in caplog.text
    assert "cut.dcm" in caplog.text
    assert "cut.dcm" not in (out / "predictions.csv").read_text()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--batch-size", "-1", "--batch-size must be >= 1, got -1"),
    ("--n-boot", "-5", "--n-boot must be >= 0, got -5"),
])
def test_bad_counts_are_one_line_errors(tmp_path, option, value, message):
    """Checked before the run is read: a batch of 0 failed in range(), -1 in torch.cat, and a
    negative --n-boot wrote null intervals."""
    result = invoke(str(tmp_path / "run"), option, value)
    assert isinstance(result.exception, BraincamError) and str(result.exception) == message


def test_a_split_without_leak_free_flags_finds_them(run, tmp_path):
    """A split.csv without its leak_free column (written by an older braincam) failed in
    subset(); the test images are compared with the run's own images instead."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    split = pd.read_csv(copy / "split.csv")
    split.drop(columns="leak_free").to_csv(copy / "split.csv", index=False)
    result = invoke(str(copy), "--no-progress", "--force", "--n-boot", "0")
    assert result.exit_code == 0, result.output
    metrics = json.loads((copy / "metrics.json").read_text())
    test = split[split["split"] == "test"]
    assert metrics["test_leak_free"]["n"] == test["leak_free"].sum() < len(test)
