"""Commands that take RUN, given a model spec instead (docs/foreign-models.md): evaluate,
explain and report write into --out, which plays the run directory; compare reads it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from braincam.commands import compare, evaluate, explain, report
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError

sys.path.insert(0, str(Path(__file__).parents[1] / "models" / "foreign"))
from foreign_tiny import SIZE, torch_spec, write_spec, write_torch_model  # noqa: E402


def invoke(name: str, command, *args: str):
    app = typer.Typer()
    app.command(name)(command)
    app.command("unused")(lambda: None)
    return CliRunner().invoke(app, [name, *args])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec-commands")
    write_torch_model(root)
    make_phantom_dataset(root / "phantoms", PhantomSpec(n_per_class=3, size=SIZE * 2))
    write_spec(root, torch_spec())
    return root


def test_evaluate_explain_and_report_write_into_out(folder, tmp_path):
    spec, data, out = folder / "spec.yaml", folder / "phantoms", tmp_path / "out"
    result = invoke("evaluate", evaluate.command, str(spec), "--data", str(data), "--out",
                    str(out), "--n-boot", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"] is None and metrics["model"]["format"] == "torch"
    assert set(metrics["extra"]) == {"phantoms_test", "phantoms_train"}
    assert metrics["extra"]["phantoms_test"]["n"] == 6
    predictions = pd.read_csv(out / "predictions.csv")
    probs = predictions[["prob_no_tumor", "prob_tumor"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert "phantoms_test: n=6, acc" in result.output
    assert not list(folder.glob("metrics.json"))  # nothing next to the spec
    assert (out / "confusion_phantoms_train.png").is_file()
    result = invoke("evaluate", evaluate.command, str(spec), "--data", str(data), "--out",
                    str(out), "--n-boot", "0", "--no-progress", "--split", "test", "--force")
    assert result.exit_code == 0, result.output  # one set now: the other's figures go
    assert not (out / "confusion_phantoms_train.png").exists()

    result = invoke("explain", explain.command, str(spec), "--data", str(data), "--out",
                    str(out), "--no-progress", "--no-overlays")
    assert result.exit_code == 0, result.output
    with np.load(out / "explain" / "gradcam" / "explanations.npz") as npz:
        assert npz["maps"].shape == (6, SIZE, SIZE)

    result = invoke("report", report.command, str(spec), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file() and str(out / "report.html") in result.output


def test_a_spec_layer_is_named_and_suggested_as_the_user_types_it(folder, tmp_path):
    """``--layer conv`` explains the spec's own ``conv``; an unknown name suggests names
    without the adapter's ``net.`` prefix."""
    spec, data = folder / "spec.yaml", folder / "phantoms"
    result = invoke("explain", explain.command, str(spec), "--data", str(data), "--out",
                    str(tmp_path / "a"), "--no-progress", "--no-overlays", "--layer", "conv")
    assert result.exit_code == 0, result.output
    result = invoke("explain", explain.command, str(spec), "--data", str(data), "--out",
                    str(tmp_path / "b"), "--no-progress", "--layer", "conv9")
    message = str(result.exception)
    assert "unknown layer 'conv9' (did you mean conv" in message and "net." not in message
    assert not (tmp_path / "b" / "explain").exists()


@pytest.mark.parametrize(("name", "command", "args", "message"), [
    ("evaluate", evaluate.command, ["--data", "x"], "model spec: pass --out"),
    ("explain", explain.command, [], "model spec: pass --out"),
    ("report", report.command, [], "model spec: pass --out"),
    ("compare", compare.command, [], "compare the folder"),
])
def test_spec_without_out_or_for_compare_is_one_line(folder, name, command, args, message):
    result = invoke(name, command, str(folder / "spec.yaml"), *args)
    assert isinstance(result.exception, BraincamError)
    assert message in str(result.exception) and "\n" not in str(result.exception)


def test_spec_options_refused_for_a_run_directory(tmp_path):
    result = invoke("evaluate", evaluate.command, str(tmp_path), "--task", "binary")
    assert isinstance(result.exception, BraincamError)
    assert "--task applies to a model spec only" in str(result.exception)


def test_evaluate_scores_each_frame_of_a_dicom_file_as_its_own_image(folder, tmp_path,
                                                                      write_dicom):
    from PIL import Image

    data = tmp_path / "phantoms"
    shutil.copytree(folder / "phantoms", data)
    pngs = sorted((data / "Testing" / "tumor").glob("*.png"))
    frames = np.stack([np.asarray(Image.open(p).convert("L")) for p in pngs])
    dicom = write_dicom(data / "Testing" / "tumor" / "frames.dcm", frames,
                        window=(127.5, 255.0))
    out = tmp_path / "out"
    result = invoke("evaluate", evaluate.command, str(folder / "spec.yaml"), "--data",
                    str(data), "--out", str(out), "--n-boot", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "predictions.csv").set_index("path")
    by_frame = table.loc[[f"{dicom}#{k}" for k in range(len(pngs))], "prob_tumor"].to_numpy()
    by_png = table.loc[[str(p) for p in pngs], "prob_tumor"].to_numpy()
    np.testing.assert_allclose(by_frame, by_png, atol=1e-5)
    assert len(np.unique(by_png.round(5))) == len(pngs)


def test_a_spec_output_inside_its_data_folder_is_refused(folder):
    data = folder / "phantoms"
    result = invoke("evaluate", evaluate.command, str(folder / "spec.yaml"), "--data",
                    str(data), "--out", str(data / "out"), "--n-boot", "0", "--no-progress")
    assert isinstance(result.exception, BraincamError)
    assert "lies inside the dataset folder" in str(result.exception)
    assert not (data / "out").exists()


def test_occlusion_of_a_model_smaller_than_the_default_window(folder, tmp_path):
    """A 16 px model: the default window and stride are cut to its side, as in the audit; a
    window given larger than the input is still an error."""
    spec, data, out = folder / "spec.yaml", folder / "phantoms", tmp_path / "out"
    result = invoke("explain", explain.command, str(spec), "--data", str(data), "--out",
                    str(out), "--methods", "occlusion", "--no-progress", "--no-overlays")
    assert result.exit_code == 0, result.output
    with np.load(out / "explain" / "occlusion" / "explanations.npz") as npz:
        maps = npz["maps"]
    assert maps.shape == (6, SIZE, SIZE) and np.isfinite(maps).all()
    result = invoke("explain", explain.command, str(spec), "--data", str(data), "--out",
                    str(tmp_path / "b"), "--methods", "occlusion", "--window", "32",
                    "--no-progress", "--no-overlays")
    assert "occlusion window must be 1..16 px, got 32" in str(result.exception)
