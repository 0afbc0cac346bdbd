"""``braincam audit``: a tiny trained run audited on its phantoms, from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from braincam.commands import audit
from braincam.data.preprocess import PreprocessConfig
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.device import torch_threads
from braincam.errors import BraincamError
from braincam.train import TrainConfig, train_run

FAST = ("--faithfulness-images", "4", "--road-images", "1", "--sanity-images", "2",
        "--occlusion-images", "1", "--no-progress")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Steady timing on a shared CPU."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """test_efficientnet (100k parameters) trained briefly on 48-px marker phantoms."""
    base = tmp_path_factory.mktemp("audit-cmd")
    data = make_phantom_dataset(base / "phantoms",
                                PhantomSpec(n_per_class=8, size=48, shortcut="marker"))
    config = TrainConfig(
        arch="test_efficientnet", weights="none", head_epochs=2, finetune_epochs=0,
        batch_size=8, preprocess=PreprocessConfig(size=32), device="cpu",
    )
    train_run([data], config, base / "run", progress=False)
    return base / "run"


def invoke(*args: str):
    app = typer.Typer()
    app.command("audit")(audit.command)
    app.command("unused")(lambda: None)
    return CliRunner().invoke(app, ["audit", *args])


def test_audit_writes_the_files_and_prints_the_findings(run):
    data = run.parent / "phantoms"
    result = invoke(str(run), "--data", str(data), "--methods", "gradcam, hirescam", *FAST)
    assert result.exit_code == 0, result.output
    top = json.loads((run / "audit" / "audit.json").read_text())
    doc = top["datasets"]["phantoms"]
    assert doc["n_images"] == 16  # the Testing folder; Training images were trained on
    assert doc["methods"] == ["gradcam", "hirescam"]
    assert set(doc["attention"]["by_method"]) == {"gradcam", "hirescam"}
    assert doc["faithfulness"]["n_images"] == 4 and doc["sanity"]["n_images"] == 2
    lines = result.output.splitlines()
    assert lines[0].startswith("phantoms: n=16, acc ")
    assert "background-only survival" in lines[0]
    mask = doc["localization"]["mask"]  # the phantoms' masks/ hold their tumours
    assert f"pointing game in the expert mask {mask['pointing_game']:.0%}" in lines[0]
    assert f"grid's ceiling {mask['pointing_ceiling']:.0%})" in lines[0]
    effect = doc["counterfactual"]["tumor_effect_prob_drop"]
    assert f"tumour removal minus control: P(tumour) drop {effect:.3f}" in lines[0]
    n_critical = sum(f["severity"] == "critical" for f in top["findings"])
    assert f"findings: {n_critical} critical" in result.output
    assert lines[-1].endswith("audit_images.csv")
    frame = pd.read_csv(run / "audit" / "audit_images.csv")
    assert len(frame) == 32 and list(frame["method"].unique()) == ["gradcam", "hirescam"]

    again = invoke(str(run), "--data", str(data), *FAST)
    assert isinstance(again.exception, BraincamError) and "--force" in str(again.exception)
    out = run.parent / "elsewhere"
    capped = invoke(str(run), "--data", str(data), "--out", str(out), "--max-images", "5",
                    *FAST)
    assert capped.exit_code == 0, capped.output
    capped_doc = json.loads((out / "audit.json").read_text())
    assert capped_doc["datasets"]["phantoms"]["n_images"] == 5


def test_bad_options_are_one_line_errors(run, tmp_path):
    data = str(run.parent / "phantoms")
    result = invoke(str(run), "--data", data, "--methods", "gradcam,nonsense", "--out",
                    str(tmp_path / "a"))
    assert isinstance(result.exception, BraincamError)
    assert "unknown method(s) nonsense" in str(result.exception)
    result = invoke(str(run), "--data", data, "--road-images", "-1", "--out", str(tmp_path / "b"))
    assert isinstance(result.exception, BraincamError)
    result = invoke(str(run), "--data", data, "--split", "Testing", "--out", str(tmp_path / "c"))
    assert isinstance(result.exception, BraincamError)
    assert "--split must be train, val or test, got 'Testing'" in str(result.exception)
    result = invoke(str(run), "--data", data, "--out", str(Path(data) / "audit"))
    assert isinstance(result.exception, BraincamError)
    assert "lies inside the dataset folder" in str(result.exception)
    assert not (Path(data) / "audit").exists()
    done = subprocess.run(
        [sys.executable, "-c", "from braincam.cli import main; main()", "audit",
         str(tmp_path), "--data", data],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("error: ") and "no model.safetensors" in done.stderr


def test_the_printed_headline_calls_a_map_by_its_kind():
    """Grad-CAM maps are CAMs; integrated gradients and occlusion are not."""
    block = {"n_images": 4, "accuracy": 0.5, "counterfactual": {}, "sanity": {},
             "attention": {"brain": 0.5, "uniform_brain": 0.6, "background": 0.1,
                           "uniform_background": 0.3}}
    assert "CAM energy in brain 50%" in audit._headline(block | {"methods": ["gradcam"]})
    assert "map energy in brain 50%" in audit._headline(block | {"methods": ["ig"]})
