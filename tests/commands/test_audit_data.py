"""``braincam audit-data``: options, output folder rules and the printed summary."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from braincam.commands import audit_data
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError


def invoke(*args: str):
    app = typer.Typer()
    app.command("audit-data")(audit_data.command)
    app.command("unused")(lambda: None)
    return CliRunner().invoke(app, ["audit-data", *args])


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    spec = PhantomSpec(n_per_class=20, size=48, seed=2, shortcut="marker")
    return make_phantom_dataset(tmp_path_factory.mktemp("data") / "ph", spec)


def test_audit_writes_and_summarises(marked, tmp_path):
    out = tmp_path / "audit"
    result = invoke(str(marked), "--out", str(out), "--n-boot", "50")
    assert result.exit_code == 0, result.output
    assert "audited 80 images (0 skipped); classes no_tumor, tumor; train 40, test 40" in (
        result.output)
    assert "background-only probe reaches AUC 1.00" in result.output
    assert "[critical]" in result.output and f"wrote {out / 'data_audit.json'}" in result.output
    data = json.loads((out / "data_audit.json").read_text())
    assert data["split_strategy"] == "official"
    assert data["probes"][2]["name"] == "background" and data["probes"][2]["test_auc"] == 1.0

    again = invoke(str(marked), "--out", str(out))
    assert isinstance(again.exception, BraincamError) and "--force" in str(again.exception)
    forced = invoke(str(marked), "--out", str(out), "--force", "--split", "dedup",
                    "--n-boot", "0")
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "data_audit.json").read_text())["split_strategy"] == "dedup"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "grading"], "unknown task 'grading'"),
        (["--split", "by-patient"], "unknown split 'by-patient'"),
        (["--n-boot", "-1"], "--n-boot must be >= 0"),
        (["--seed", "-5"], "--seed must be in [0, 2**32), got -5"),
    ],
)
def test_bad_options_are_one_line_errors(marked, tmp_path, args, message):
    result = invoke(str(marked), "--out", str(tmp_path / "o"), *args)
    assert isinstance(result.exception, BraincamError)
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_bad_data_fails_before_measuring_and_leaves_no_output_folder(marked, tmp_path,
                                                                     monkeypatch):
    """A missing --data folder, or a task whose classes the data lacks, failed only after
    every image was measured, and left an empty --out folder."""
    import braincam.audit.data.run as run

    def measured(*args, **kwargs):
        raise AssertionError("measured before the check")

    monkeypatch.setattr(run, "measure_properties", measured)
    result = invoke(str(marked), "--data", str(tmp_path / "gone"), "--out", str(tmp_path / "o"))
    assert isinstance(result.exception, BraincamError), result.exception
    assert str(tmp_path / "gone") in str(result.exception)
    tumours = tmp_path / "tumours"
    (tumours / "tumor").mkdir(parents=True)
    for image in sorted((marked / "Training" / "tumor").iterdir())[:3]:
        (tumours / "tumor" / image.name).write_bytes(image.read_bytes())
    result = invoke(str(tumours), "--task", "multiclass", "--out", str(tmp_path / "o"))
    assert isinstance(result.exception, BraincamError), result.exception
    assert not (tmp_path / "o").exists()


def test_an_output_inside_a_data_folder_is_refused_before_anything_is_made(marked, tmp_path):
    import shutil

    other = shutil.copytree(marked / "Testing", tmp_path / "other")
    result = invoke(str(marked), "--data", str(other), "--out", str(other / "audit"))
    assert f"lies inside the dataset folder {other}" in str(result.exception)
    assert not (other / "audit").exists()  # it would be read as a class folder next time


def test_a_mask_set_aside_is_no_skipped_image(marked, tmp_path):
    import shutil

    from PIL import Image

    from braincam.report.overview import collect_overview
    from braincam.runs import RunDir

    data = shutil.copytree(marked, tmp_path / "ph")
    mask = sorted((data / "masks").rglob("*.png"))[0]
    Image.new("L", (7, 7)).save(mask)  # the wrong size: its image is kept without it
    result = invoke(str(data), "--out", str(tmp_path / "audit"), "--n-boot", "0")
    assert "audited 80 images (0 skipped, 1 masks set aside); classes" in result.output
    run = RunDir(tmp_path / "run")  # a run's report lists it as a mask, not as an image
    run.root.mkdir()
    shutil.copy(tmp_path / "audit" / "skipped.csv", run.skipped)
    assert collect_overview(run).skipped[0][0] == f"mask {mask.name}"


def test_help_lists_every_option():
    result = invoke("--help")
    assert result.exit_code == 0
    for option in ("--out", "--task", "--split", "--force", "--seed", "--n-boot"):
        assert option in result.output


def test_force_leaves_no_duplicate_grid_of_an_earlier_audit(marked, tmp_path):
    """An audit with duplicates writes duplicate_grid.png; a forced audit of data without any
    removes it (the grid is there only when there are duplicates) and keeps other files."""
    import shutil

    copied = tmp_path / "copied"
    shutil.copytree(marked, copied)
    first = next((copied / "Training" / "tumor").iterdir())
    shutil.copy(first, copied / "Testing" / "tumor" / "copy.png")
    out = tmp_path / "audit"
    assert invoke(str(copied), "--out", str(out), "--n-boot", "0").exit_code == 0
    assert (out / "duplicate_grid.png").is_file()
    (out / "notes.txt").write_text("mine")
    unique = tmp_path / "unique"
    (unique / "tumor").mkdir(parents=True)
    (unique / "no_tumor").mkdir()
    for label in ("tumor", "no_tumor"):
        for image in sorted((marked / "Training" / label).iterdir())[:6]:
            shutil.copy(image, unique / label / image.name)
    forced = invoke(str(unique), "--out", str(out), "--force", "--n-boot", "0",
                    "--split", "random")
    assert forced.exit_code == 0, forced.output
    assert not (out / "duplicate_grid.png").exists() and (out / "notes.txt").is_file()
