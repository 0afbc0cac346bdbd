"""``braincam info``: versions, device and offline weights."""

from __future__ import annotations

import json

import torch
import typer
from typer.testing import CliRunner

from braincam.commands import info


def invoke(*args: str):
    app = typer.Typer()
    app.command("info")(info.command)
    app.command("unused")(lambda: None)
    return CliRunner().invoke(app, ["info", *args])


def test_json_reports_versions_device_and_offline_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    result = invoke("--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert torch.__version__.startswith(facts["versions"]["torch"])
    assert facts["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert facts["architectures"] == ["resnet50", "efficientnet_lite0"]
    assert facts["offline_weights"]["resnet50"] is None  # empty torch hub cache
    for lite in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        assert facts["offline_weights"][lite].endswith(".pth")

    cached = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    facts = json.loads(invoke("--json").output)
    assert facts["offline_weights"]["resnet50"] == str(cached)


def test_text_output_names_the_offline_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    result = invoke()
    assert result.exit_code == 0, result.output
    assert "ImageNet weights for resnet50: not cached" in result.output
    assert "--arch efficientnet_lite0" in result.output
    assert "ImageNet weights for efficientnet_lite0: available offline" in result.output
