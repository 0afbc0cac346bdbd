"""``braincam report RUN [--open-path-only]``: rebuild the report, print its path."""

from __future__ import annotations

import json

import pytest
import typer
import yaml
from typer.testing import CliRunner

from braincam.commands import report
from braincam.errors import BraincamError

METRICS = {
    "task": "binary", "classes": ["no_tumor", "tumor"],
    "test": {"n": 40, "accuracy": 0.875, "balanced_accuracy": 0.8612, "auc": 0.93,
             "ci": {"accuracy": [0.75, 0.95]}, "confusion_matrix": [[15, 5], [0, 20]]},
}


def invoke(*args: str):
    app = typer.Typer()
    app.command("report")(report.command)
    app.command("unused")(lambda: None)
    return CliRunner().invoke(app, ["report", *args])


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"command": "braincam train x"}))
    (run / "metrics.json").write_text(json.dumps(METRICS))
    return run


def test_rebuilds_and_prints_only_the_path_on_stdout(run):
    result = invoke(str(run))
    assert result.exit_code == 0, result.output
    path = run / "report.html"
    assert result.stdout == f"{path}\n"
    assert "0 findings" in result.stderr and "Not run yet: data split" in result.stderr
    html = path.read_text()
    assert "0.875 [0.750, 0.950]" in html and "Model audit: not run" in html


def test_open_path_only_does_not_rebuild(run):
    missing = invoke(str(run), "--open-path-only")
    assert isinstance(missing.exception, BraincamError)
    assert "does not exist yet" in str(missing.exception)
    (run / "report.html").write_text("kept")
    result = invoke(str(run), "--open-path-only")
    assert result.exit_code == 0
    assert result.stdout == f"{run / 'report.html'}\n"
    assert (run / "report.html").read_text() == "kept"


def test_another_folders_report_is_replaced_only_with_force(run, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.html").write_text("the other run's report")
    refused = invoke(str(run), "--out", str(other))
    assert isinstance(refused.exception, BraincamError)
    assert f"{other / 'report.html'} already exists, outside {run}; pass --force" in str(
        refused.exception)
    assert (other / "report.html").read_text() == "the other run's report"
    assert invoke(str(run), "--out", str(other), "--force").exit_code == 0
    assert "0.875 [0.750, 0.950]" in (other / "report.html").read_text()
    assert invoke(str(run)).exit_code == invoke(str(run)).exit_code == 0  # its own: rebuilt
    (tmp_path / "afile").write_text("x")
    in_the_way = invoke(str(run), "--out", str(tmp_path / "afile"))
    assert str(in_the_way.exception) == f"{tmp_path / 'afile'} exists and is not a directory"


def test_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path):
    result = invoke(str(tmp_path))
    assert isinstance(result.exception, BraincamError)
    assert "does not look like a braincam run" in str(result.exception)
    assert "\n" not in str(result.exception)
    assert not (tmp_path / "report.html").exists()


def test_the_cli_prints_one_error_line_and_exits_2(tmp_path, monkeypatch, capsys):
    from braincam.cli import main

    monkeypatch.setattr("sys.argv", ["braincam", "report", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not look like a braincam run" in err
    assert err.count("\n") == 1


def test_every_option_has_help():
    result = invoke("--help")
    assert "--open-path-only" in result.stdout and "Do not rebuild" in result.stdout
