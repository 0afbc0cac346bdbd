"""``braincam serve``: options are checked before anything loads, the model is loaded once
at start-up, and the app goes to uvicorn on the requested address (loopback by default)."""

from __future__ import annotations

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import braincam
from braincam.cli import app
from braincam.errors import BraincamError


@pytest.fixture
def served(monkeypatch, model):
    """Calls of braincam.load and uvicorn.run, recorded instead of served."""
    calls = {"load": [], "run": []}

    def load(run, segment=None):
        calls["load"].append((run, segment))
        return model

    monkeypatch.setattr(braincam, "load", load, raising=False)
    monkeypatch.setattr(uvicorn, "run", lambda a, **kw: calls["run"].append((a, kw)))
    return calls


def test_defaults_load_once_and_listen_on_loopback(served, tiny_run, png_file):
    result = CliRunner().invoke(app, ["serve", str(tiny_run)], standalone_mode=False)
    assert result.exception is None, result.output
    assert served["load"] == [(tiny_run, None)]
    ((served_app, options),) = served["run"]
    assert (options["host"], options["port"]) == ("127.0.0.1", 8000)
    assert "http://127.0.0.1:8000/" in result.output and "warning" not in result.output
    with TestClient(served_app) as client:
        for _ in range(2):
            files = {"file": ("a.png", png_file.read_bytes(), "image/png")}
            assert client.post("/api/predict", files=files).status_code == 200
    assert len(served["load"]) == 1  # not per request


def test_options_reach_the_app(served, tiny_run, png_file):
    args = ["serve", str(tiny_run), "--segment", str(tiny_run), "--host", "0.0.0.0",
            "--port", "8123", "--max-upload-mb", "0.001", "--method", "gradcam++"]
    result = CliRunner().invoke(app, args, standalone_mode=False)
    assert result.exception is None, result.output
    assert served["load"] == [(tiny_run, tiny_run)]
    ((served_app, options),) = served["run"]
    assert (options["host"], options["port"]) == ("0.0.0.0", 8123)
    assert "other computers can reach this page" in result.output
    with TestClient(served_app) as client:
        files = {"file": ("a.png", png_file.read_bytes(), "image/png")}
        reply = client.post("/api/predict", files=files)
    assert len(png_file.read_bytes()) > 1048  # 0.001 MiB
    assert reply.status_code == 413 and "1048 bytes" in reply.json()["error"]


@pytest.mark.parametrize(("option", "words"), [
    (["--method", "magic"], "unknown method 'magic'"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be > 0"),
    (["--port", "70000"], "--port must be between 1 and 65535"),
    (["--port", "0"], "--port must be between 1 and 65535"),
])
def test_bad_options_are_one_line_errors_before_loading(served, tiny_run, option, words):
    result = CliRunner().invoke(app, ["serve", str(tiny_run), *option], standalone_mode=False)
    assert isinstance(result.exception, BraincamError) and words in str(result.exception)
    assert served["load"] == [] and served["run"] == []
