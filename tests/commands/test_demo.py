"""``braincam demo`` at toy size: the phantoms carry the corner marker, the shortcut model
scores higher on them than on the same phantoms without it, the audits raise critical
findings and the verdict names the shortcut; a second demo resumes instead of redoing
anything. (The remedy run, the same pipeline with --attention-penalty, is left out for speed;
tests/train/test_mitigation.py holds the penalty to its numbers.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import braincam.pipeline.demo as demo_module
from braincam.audit.model.base import AuditSettings
from braincam.commands import demo
from braincam.data.synthetic import MARKER_FRACTION
from braincam.errors import BraincamError
from braincam.pipeline.demo import DemoSettings, run_demo

SETTINGS = DemoSettings(n_per_class=48, phantom_size=64, image_size=64, epochs=12,
                        penalty=0.0, seed=1, train_seed=1, device="cpu")
TOY = ["--n-per-class", "48", "--phantom-size", "64", "--image-size", "64", "--epochs", "12",
       "--penalty", "0", "--train-seed", "1", "--device", "cpu"]  # the same: the CLI resumes


def invoke(*args: str):
    app = typer.Typer()
    app.command("demo")(demo.command)
    app.command("unused")(lambda: None)  # keeps "demo" a subcommand, as in braincam.cli
    return CliRunner().invoke(app, ["demo", *args])


def test_demo_tells_the_story_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_module, "DEMO_AUDIT", AuditSettings(
        faithfulness_images=2, road_images=1, road_percentiles=(50,), sanity_images=2,
        occlusion_images=1, steps=5))  # the smallest model audit
    out = tmp_path / "demo"
    result = run_demo(out, SETTINGS)  # no remedy run: the shortcut's story only, for speed
    (shortcut,) = result.runs
    assert shortcut.name == "shortcut" and result.comparison is None
    # the shortcut model is right on the marked phantoms, not on the same ones without it
    assert shortcut.marked_accuracy >= shortcut.clean_accuracy + 0.25
    critical = {f.check for f in shortcut.pipeline.findings if f.severity == "critical"}
    assert "probe.background" in critical  # the data audit sees the marker
    assert critical & {"attention.region.marker", "counterfactual.background_only",
                       "counterfactual.background_only_gap"}  # and the model audit its use
    assert shortcut.verdict.kind == "shortcut"
    assert {p.name for p in out.iterdir()} == {"phantoms", "shortcut"}
    side = round(64 * MARKER_FRACTION)
    no_tumor = sorted((out / "phantoms" / "Training" / "no_tumor").glob("*.png"))
    tumor = sorted((out / "phantoms" / "Training" / "tumor").glob("*.png"))
    assert len(no_tumor) == len(tumor) == 48
    assert (np.asarray(Image.open(no_tumor[0]))[:side, :side] == 255).all()
    assert not (np.asarray(Image.open(tumor[0]))[:side, :side] == 255).all()
    audit = json.loads((out / "shortcut" / "audit" / "audit.json").read_text())
    audit = audit["datasets"]["phantoms"]
    assert set(audit["attention"]["regions"]) == {"marker"}  # the corner's energy is reported
    assert audit["attention"]["uniform_regions"]["marker"] == (side / 64) ** 2

    written = no_tumor[0].stat().st_mtime_ns
    again = invoke("--out", str(out), *TOY)
    assert again.exit_code == 0, again.output
    text = " ".join(again.output.split())
    assert text.count("done, skipped") == 6  # resumed
    assert "planted: a 'marker' shortcut on the no_tumor phantoms" in text
    assert (f"shortcut: test accuracy {shortcut.marked_accuracy:.2f} on the phantoms as given, "
            f"{shortcut.clean_accuracy:.2f} on the same phantoms without the shortcut") in text
    assert "verdict: The model's skill comes from a shortcut" in text
    assert no_tumor[0].stat().st_mtime_ns == written  # phantoms not rewritten

    for change in (["--seed", "2"], ["--shortcut", "contrast"]):
        other = invoke("--out", str(out), *TOY, *change)
        assert isinstance(other.exception, BraincamError), change
        assert "--force" in str(other.exception)
    assert no_tumor[0].stat().st_mtime_ns == written  # nothing replaced


def test_bad_options_are_refused(tmp_path):
    bad = invoke("--out", str(tmp_path / "d"), "--shortcut", "watermark")
    assert isinstance(bad.exception, BraincamError) and "marker" in str(bad.exception)
    bad = invoke("--out", str(tmp_path / "d"), "--penalty", "-1")
    assert isinstance(bad.exception, BraincamError) and "--penalty" in str(bad.exception)
    assert not (tmp_path / "d").exists()


def test_a_phantom_folder_braincam_did_not_write_is_never_replaced(tmp_path):
    root = tmp_path / "out" / demo_module.DATA_FOLDER
    root.mkdir(parents=True)
    (root / "scan.png").write_bytes(b"mine")
    spec = DemoSettings(n_per_class=2).spec()
    for force in (False, True):
        with pytest.raises(BraincamError, match="demo did not write"):
            demo_module.check_phantoms(root, spec, force)
    assert (root / "scan.png").read_bytes() == b"mine"
    taken = tmp_path / "file" / demo_module.DATA_FOLDER
    taken.parent.mkdir()
    taken.write_text("a file")
    with pytest.raises(BraincamError, match="exists and is not a directory"):
        demo_module.check_phantoms(taken, spec, True)


def test_phantoms_are_written_beside_their_folder_then_take_its_place(tmp_path):
    root = tmp_path / demo_module.DATA_FOLDER
    partial = tmp_path / f".{root.name}.partial"
    partial.mkdir()
    (partial / "half.png").write_bytes(b"x")  # an interrupted write
    spec = DemoSettings(n_per_class=2).spec()
    assert demo_module.write_phantoms(root, spec)
    assert not partial.exists() and not (root / "half.png").exists()
    assert (root / demo_module.SPEC_FILE).is_file() and any(root.rglob("*.png"))
    demo_module.check_phantoms(root, spec, force=False)
    assert not demo_module.write_phantoms(root, spec)  # the same spec: kept
