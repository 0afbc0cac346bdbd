"""``braincam run``: the tiny pipeline through the command line, resumed, and refused."""

from __future__ import annotations

import pytest
import typer
import yaml
from typer.testing import CliRunner

from braincam.commands import run
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.pipeline import STAGES

TINY = [
    "--arch", "resnet10t", "--weights", "none", "--image-size", "32", "--head-epochs", "1",
    "--finetune-epochs", "1", "--batch-size", "8", "--explain-cap", "4", "--n-boot", "20",
    "--device", "cpu", "--no-progress",
]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("data") / "phantoms",
                                PhantomSpec(n_per_class=8, size=48, seed=2))


def invoke(*args: str):
    app = typer.Typer()
    app.command("run")(run.command)
    app.command("unused")(lambda: None)  # keeps "run" a subcommand, as in braincam.cli
    return CliRunner().invoke(app, ["run", *args])


def test_run_resume_and_refusal(phantoms, tmp_path):
    out = tmp_path / "run"
    first = invoke(str(phantoms), "--out", str(out), *TINY)
    assert first.exit_code == 0, first.output
    for i, name in enumerate(STAGES, 1):
        assert f"[{i}/6] {name}: done in" in first.output
        assert (out / ".stages" / f"{name}.json").is_file()
    assert "stages: 6 ran, 0 skipped" in first.output
    assert "test, leak-free" in first.output and "top findings:" in first.output
    assert f"report: {out / 'report.html'}" in first.output.replace("\n", "")
    doc = yaml.safe_load((out / "config.yaml").read_text())
    assert doc["command"].startswith("braincam run ") and "--split dedup" in doc["command"]
    assert doc["train"]["split"] == "dedup" and doc["train"]["arch"] == "resnet10t"

    again = invoke(str(phantoms), "--out", str(out), *TINY)
    assert again.exit_code == 0, again.output
    assert again.output.count(": done, skipped") == 6
    assert "stages: 0 ran, 6 skipped" in again.output

    other = invoke(str(phantoms), "--out", str(out), *TINY, "--methods", "gradcam,hirescam")
    assert isinstance(other.exception, BraincamError)
    assert "methods" in str(other.exception) and "--force" in str(other.exception)


def test_bad_options_are_one_line_errors(phantoms, tmp_path):
    bad = invoke(str(phantoms), "--out", str(tmp_path / "r"), *TINY, "--methods", "gradcam,foo")
    assert isinstance(bad.exception, BraincamError) and "unknown: foo" in str(bad.exception)
    bad = invoke(str(phantoms), "--out", str(tmp_path / "r"), *TINY, "--explain-cap", "0")
    assert isinstance(bad.exception, BraincamError) and "--explain-cap" in str(bad.exception)
    assert not (tmp_path / "r").exists()


def test_every_option_has_help():
    import click

    app = typer.Typer()
    app.command("run")(run.command)
    app.command("unused")(lambda: None)
    group = typer.main.get_command(app)
    params = group.get_command(click.Context(group), "run").params
    assert [p.name for p in params if isinstance(p, click.Option) and not p.help] == []
    assert {"--extra", "--methods", "--split", "--force", "--mask-background"} <= {
        opt for p in params for opt in p.opts}
    split = next(p for p in params if p.name == "split")
    assert split.default == "dedup"
