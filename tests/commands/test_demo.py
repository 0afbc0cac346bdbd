"""``braincam demo`` at toy size: phantoms with the corner marker are written, the pipeline
runs offline with efficientnet_lite0's packaged weights, the data audit's background probe
flags the marker, and a second demo resumes instead of redoing anything."""

from __future__ import annotations

import json

import numpy as np
import typer
from PIL import Image
from typer.testing import CliRunner

import braincam.pipeline.demo as demo_module
from braincam.audit.model.base import AuditSettings
from braincam.commands import demo
from braincam.data.synthetic import MARKER_FRACTION
from braincam.errors import BraincamError

TOY = ["--n-per-class", "6", "--image-size", "64", "--head-epochs", "1", "--finetune-epochs",
       "1", "--device", "cpu", "--no-progress"]


def invoke(*args: str):
    app = typer.Typer()
    app.command("demo")(demo.command)
    app.command("unused")(lambda: None)  # keeps "demo" a subcommand, as in braincam.cli
    return CliRunner().invoke(app, ["demo", *args])


def test_demo_finds_the_marker_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_module, "DEMO_AUDIT", AuditSettings(
        faithfulness_images=2, road_images=1, road_percentiles=(50,), sanity_images=2,
        occlusion_images=1, steps=5))  # the smallest model audit
    out = tmp_path / "demo"
    first = invoke("--out", str(out), *TOY)
    assert first.exit_code == 0, first.output
    side = round(64 * MARKER_FRACTION)
    no_tumor = sorted((out / "phantoms" / "Training" / "no_tumor").glob("*.png"))
    tumor = sorted((out / "phantoms" / "Training" / "tumor").glob("*.png"))
    assert len(no_tumor) == len(tumor) == 6
    assert (np.asarray(Image.open(no_tumor[0]))[:side, :side] == 255).all()
    assert not (np.asarray(Image.open(tumor[0]))[:side, :side] == 255).all()
    assert "stages: 6 ran" in first.output
    assert "planted: a 'marker' shortcut on the no_tumor phantoms" in first.output
    assert "critical probe.background" in first.output.replace("\n", " ")
    assert (out / "report.html").is_file()
    audit = json.loads((out / "audit" / "audit.json").read_text())["datasets"]["phantoms"]
    assert set(audit["attention"]["regions"]) == {"marker"}  # the corner's energy is reported
    assert audit["attention"]["uniform_regions"]["marker"] == (side / 64) ** 2

    written = no_tumor[0].stat().st_mtime_ns
    again = invoke("--out", str(out), *TOY)
    assert again.exit_code == 0, again.output
    assert "stages: 0 ran, 6 skipped" in again.output
    assert no_tumor[0].stat().st_mtime_ns == written  # phantoms not rewritten

    for change in (["--seed", "1"], ["--shortcut", "contrast"]):
        other = invoke("--out", str(out), *TOY, *change)
        assert isinstance(other.exception, BraincamError), change
        assert "--force" in str(other.exception)
    assert no_tumor[0].stat().st_mtime_ns == written  # nothing replaced


def test_unknown_shortcut_is_refused(tmp_path):
    bad = invoke("--out", str(tmp_path / "d"), "--shortcut", "watermark")
    assert isinstance(bad.exception, BraincamError) and "marker" in str(bad.exception)
    assert not (tmp_path / "d").exists()
