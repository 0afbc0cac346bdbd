"""``braincam bench serve``: one JSON line; with one repeat the ratio is the plain ratio of
the two medians (the speed itself is a benchmark result, not a test assertion)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from braincam.commands.bench import app
from braincam.errors import BraincamError


def test_bench_serve_reports_both_paths_side_by_side(tiny_run, png_file):
    result = CliRunner().invoke(app, ["serve", str(tiny_run), str(png_file), "--repeats", "1",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (line,) = result.output.strip().splitlines()
    out = json.loads(line)
    assert (out["arch"], out["device"], out["method"]) == ("test_efficientnet", "cpu", "gradcam")
    assert out["file_bytes"] == png_file.stat().st_size and out["repeats"] == 1
    assert out["api_explain_ms"] > 0 and out["http_predict_ms"] > 0
    ratio = out["http_predict_ms"] / out["api_explain_ms"]
    assert out["http_vs_api"] == pytest.approx(ratio, rel=0.05)


@pytest.mark.parametrize(("args", "words"), [
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--method", "magic"], "unknown method"),
])
def test_bad_settings(tiny_run, png_file, args, words):
    result = CliRunner().invoke(app, ["serve", str(tiny_run), str(png_file), *args])
    assert isinstance(result.exception, BraincamError) and words in str(result.exception)


def test_a_missing_file_is_an_error(tiny_run, tmp_path):
    result = CliRunner().invoke(app, ["serve", str(tiny_run), str(tmp_path / "nope.png")])
    assert isinstance(result.exception, BraincamError) and "not a file" in str(result.exception)


def test_a_file_the_server_refuses_is_a_one_line_error(tiny_run, png_file, tmp_path):
    """braincam reads a GIF, the page takes only the formats of scanners: the benchmark says
    what the server answered instead of a traceback."""
    from PIL import Image

    gif = tmp_path / "scan.gif"
    Image.open(png_file).save(gif)
    result = CliRunner().invoke(app, ["serve", str(tiny_run), str(gif), "--repeats", "1"])
    assert isinstance(result.exception, BraincamError), result.output
    assert str(result.exception).startswith(f"the server answers 415 for {gif}: ")


def test_no_ood_benchmarks_without_calibrating(tiny_run, png_file, tmp_path):
    """``--no-ood`` as in serve: no out-of-distribution reference is made in the run."""
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    (run / "ood.safetensors").unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["serve", str(run), str(png_file), "--repeats", "1",
                                      "--no-ood"])
    assert result.exit_code == 0, result.output
    assert not (run / "ood.safetensors").exists()
