"""``braincam serve``: options are checked before anything loads, the model is loaded once
at start-up, and the app goes to uvicorn on the requested address (loopback by default)."""

from __future__ import annotations

import socket

import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import braincam
from braincam.cli import app
from braincam.commands import serve as serve_command
from braincam.errors import BraincamError

LISTEN = serve_command._listen  # the real one: the fixture below records calls instead


@pytest.fixture
def served(monkeypatch, model):
    """Calls of braincam.load, the address taken and uvicorn's server, recorded instead of
    served."""
    calls = {"load": [], "listen": [], "run": []}

    def load(run, segment=None, device="auto", ood=True):
        calls["load"].append((run, segment, ood))
        calls["device"] = device
        return model

    def listen(host, port):
        calls["listen"].append((host, port))
        return "socket"

    monkeypatch.setattr(braincam, "load", load, raising=False)
    monkeypatch.setattr(serve_command, "_listen", listen)
    monkeypatch.setattr(uvicorn.Server, "run",
                        lambda server, sockets=None: calls["run"].append((server.config.app,
                                                                          sockets)))
    return calls


def test_defaults_load_once_and_listen_on_loopback(served, tiny_run, png_file):
    result = CliRunner().invoke(app, ["serve", str(tiny_run)], standalone_mode=False)
    assert result.exception is None, result.output
    assert served["load"] == [(tiny_run, None, True)]
    assert served["device"] == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ((served_app, sockets),) = served["run"]
    assert served["listen"] == [("127.0.0.1", 8000)] and sockets == ["socket"]
    assert "http://127.0.0.1:8000/" in result.output and "warning" not in result.output
    with TestClient(served_app) as client:
        for _ in range(2):
            files = {"file": ("a.png", png_file.read_bytes(), "image/png")}
            assert client.post("/api/predict", files=files).status_code == 200
    assert len(served["load"]) == 1  # not per request


def test_options_reach_the_app(served, tiny_run, png_file):
    args = ["serve", str(tiny_run), "--segment", str(tiny_run), "--host", "0.0.0.0",
            "--port", "8123", "--max-upload-mb", "0.001", "--method", "gradcam++", "--no-ood",
            "--device", "cpu"]
    result = CliRunner().invoke(app, args, standalone_mode=False)
    assert result.exception is None, result.output
    assert served["load"] == [(tiny_run, tiny_run, False)]
    assert served["device"] == torch.device("cpu")
    ((served_app, _),) = served["run"]
    assert served["listen"] == [("0.0.0.0", 8123)]
    assert "other computers can reach this page" in result.output
    with TestClient(served_app) as client:
        files = {"file": ("a.png", png_file.read_bytes(), "image/png")}
        reply = client.post("/api/predict", files=files)
    assert len(png_file.read_bytes()) > 1048  # 0.001 MiB
    assert reply.status_code == 413 and "1048 bytes" in reply.json()["error"]


@pytest.mark.parametrize(("option", "words"), [
    (["--method", "magic"], "unknown method 'magic'"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be a positive, finite number"),
    (["--max-upload-mb", "nan"], "--max-upload-mb must be a positive, finite number"),
    (["--max-upload-mb", "inf"], "--max-upload-mb must be a positive, finite number"),
    (["--max-upload-mb", "1e-9"], "--max-upload-mb must be a positive, finite number"),
    (["--max-megapixels", "nan"], "--max-megapixels must be a positive, finite number"),
    (["--max-megapixels", "0"], "--max-megapixels must be a positive, finite number"),
    (["--port", "70000"], "--port must be between 1 and 65535"),
    (["--port", "0"], "--port must be between 1 and 65535"),
    (["--device", "foo"], "unknown device 'foo'; use auto, cpu, cuda or cuda:N"),
])
def test_bad_options_are_one_line_errors_before_loading(served, tiny_run, option, words):
    result = CliRunner().invoke(app, ["serve", str(tiny_run), *option], standalone_mode=False)
    assert isinstance(result.exception, BraincamError) and words in str(result.exception)
    assert served["load"] == [] and served["run"] == []


def test_a_busy_port_is_a_one_line_error_before_loading(served, monkeypatch, tiny_run):
    monkeypatch.setattr(serve_command, "_listen", LISTEN)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", str(tiny_run), "--port", str(port)],
                                    standalone_mode=False)
    assert isinstance(result.exception, BraincamError)
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" == \
        str(result.exception)
    assert served["load"] == [] and "serving" not in result.output


def test_every_loopback_address_counts_as_this_computer():
    from braincam.commands.serve import _loopback

    assert [_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost",
                                   "LOCALHOST")] == [True] * 6
    assert [_loopback(h) for h in ("0.0.0.0", "192.168.1.4", "::", "example.org")] == [
        False] * 4
