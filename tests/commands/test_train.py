"""``braincam train``: resnet50 end to end on tiny phantoms, and the offline ImageNet error."""

from __future__ import annotations

import json
import urllib.error

import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner

from braincam.commands import train
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError

RUN_FILES = {
    "config.yaml", "model.safetensors", "history.csv", "split.csv", "skipped.csv",
    "metrics.json", "predictions.csv", "confusion_test.png", "roc_test.png",
}
M_KEYS = {
    "n", "accuracy", "balanced_accuracy", "auc", "per_class", "confusion_matrix", "ece", "ci",
    "n_groups", "ci_groups",
}
TINY = [
    "--image-size", "32", "--head-epochs", "1", "--finetune-epochs", "1", "--batch-size", "8",
    "--device", "cpu", "--no-progress",
]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_dataset(
        tmp_path_factory.mktemp("data") / "phantoms", PhantomSpec(n_per_class=8, size=48)
    )


def invoke(*args: str):
    app = typer.Typer()
    app.command("train")(train.command)
    app.command("unused")(lambda: None)  # keeps "train" a subcommand, as in braincam.cli
    return CliRunner().invoke(app, ["train", *args])


def test_resnet50_trains_end_to_end_with_random_weights(phantoms, tmp_path):
    run = tmp_path / "run"
    result = invoke(str(phantoms), "--out", str(run), "--arch", "resnet50", "--weights", "none",
                    *TINY)
    assert result.exit_code == 0, result.output
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    assert "classes: no_tumor, tumor; images train" in result.output
    assert "test: n=16, acc" in result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "binary" and metrics["classes"] == ["no_tumor", "tumor"]
    assert set(metrics["test"]) == M_KEYS and metrics["test"]["n"] == 16
    assert metrics["test_leak_free"]["n"] == 16 and metrics["extra"] == {}
    predictions = pd.read_csv(run / "predictions.csv")
    assert len(predictions) == 16
    accuracy = (predictions["label"] == predictions["pred"]).mean()
    assert metrics["test"]["accuracy"] == pytest.approx(accuracy)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["command"].startswith("braincam train")
    assert config["train"]["arch"] == "resnet50" and config["train"]["preprocess"]["size"] == 32


def test_imagenet_weights_offline_stop_with_the_alternatives(phantoms, tmp_path, monkeypatch):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    result = invoke(str(phantoms), "--out", str(tmp_path / "run"), "--weights", "imagenet",
                    *TINY)
    assert isinstance(result.exception, BraincamError)
    message = str(result.exception)
    assert "--weights none" in message and "--arch efficientnet_lite0" in message
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_existing_run_is_refused(phantoms, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"old")
    result = invoke(str(phantoms), "--out", str(run), "--weights", "none", *TINY)
    assert isinstance(result.exception, BraincamError)
    assert "pass --force" in str(result.exception)
    assert (run / "model.safetensors").read_bytes() == b"old"


def test_an_output_inside_the_data_is_refused_before_anything_is_written(phantoms):
    result = invoke(str(phantoms), "--out", str(phantoms / "myrun"), "--weights", "none", *TINY)
    assert isinstance(result.exception, BraincamError)
    assert "lies inside the dataset folder" in str(result.exception)
    assert not (phantoms / "myrun").exists()


def test_extra_data_folders_are_checked_before_training(phantoms, tmp_path):
    """A missing ``--data`` folder costs no training; ``--out EXTRA --force`` and an output
    holding EXTRA never delete it."""
    result = invoke(str(phantoms), "--data", str(tmp_path / "typo"), "--out",
                    str(tmp_path / "run"), "--weights", "none", *TINY)
    assert str(result.exception) == (f"{tmp_path / 'typo'} is not a directory (a dataset folder "
                                     "was expected)")
    assert not (tmp_path / "run").exists()
    extra = make_phantom_dataset(tmp_path / "site" / "extra", PhantomSpec(n_per_class=2, size=48))
    before = sorted(extra.rglob("*"))
    for out in (extra, extra.parent):
        result = invoke(str(phantoms), "--data", str(extra), "--out", str(out), "--force",
                        "--weights", "none", *TINY)
        assert isinstance(result.exception, BraincamError), result.output
        assert sorted(extra.rglob("*")) == before


def test_a_run_without_test_images_says_it_evaluated_nothing(phantoms, tmp_path):
    import shutil

    only = tmp_path / "only"
    shutil.copytree(phantoms / "Training", only / "Training")
    (only / "Testing").mkdir()  # official split, empty test folder
    result = invoke(str(only), "--out", str(tmp_path / "run"), "--weights", "none",
                    "--arch", "resnet10t", "--split", "official", *TINY)
    assert result.exit_code == 0, result.output
    assert "warning: no test images and no --data: nothing evaluated" in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_option_defaults_are_the_library_defaults():
    import inspect

    from braincam.data.preprocess import PreprocessConfig
    from braincam.train import TrainConfig

    defaults = {
        name: param.default for name, param in inspect.signature(train.command).parameters.items()
    }
    config, preprocess = TrainConfig(), PreprocessConfig()
    shared = set(defaults) & set(config.to_dict())
    assert {"task", "arch", "weights", "finetune_lr", "finetune_stages", "patience"} <= shared
    for name in shared:
        assert defaults[name] == getattr(config, name), name
    assert defaults["image_size"] == preprocess.size
    assert defaults["standardize"] == preprocess.standardize
