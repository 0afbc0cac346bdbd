"""``run_pipeline`` on tiny marker phantoms: every stage and file, skipping, redoing what an
option change affects, refusing other options without force, resuming after an interruption."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import yaml

import braincam.evaluate
from braincam.errors import BraincamError
from braincam.pipeline import STAGES
from braincam.pipeline.run import check_run_dir
from braincam.pipeline.stages import read_marker
from braincam.runs import OUTPUT_STAMP, RunDir

RUN_FILES = [
    "data_audit/data_audit.json", "data_audit/properties.csv", "config.yaml",
    "model.safetensors", "split.csv", "history.csv", "skipped.csv", "metrics.json",
    "predictions.csv", "confusion_test.png", "audit/audit.json", "audit/audit_images.csv",
    "explain/gradcam/explanations.npz", "report.html", ".stages/pipeline.json",
]


def statuses(result) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}


def test_first_run_runs_every_stage_and_writes_every_file(first_run, cap):
    result, text = first_run
    run = RunDir(result.run_dir)
    assert [s.name for s in result.stages] == list(STAGES)
    assert set(statuses(result).values()) == {"ran"}
    for name in RUN_FILES:
        assert (run.root / name).is_file(), name
    assert not (run.stages / "train.tmp").exists()  # train's work folder moved into the run
    for stage in result.stages:
        marker = read_marker(run, stage.name)
        assert marker is not None and marker.fingerprint == stage.fingerprint
        assert f"{stage.name}: done in" in text
    assert yaml.safe_load(run.config.read_text())["train"]["split"] == "dedup"

    # the model audit looks at the test split capped at `cap` images; explain at the same ones
    test = pd.read_csv(run.split).query("split == 'test'")
    audited = pd.read_csv(run.audit / "audit_images.csv")
    assert len(test) > cap and audited["path"].nunique() == cap
    assert set(audited["path"]) <= set(test["path"])
    with np.load(run.explain / "gradcam" / "explanations.npz") as exp:
        assert exp["paths"].tolist() == audited["path"].drop_duplicates().tolist()
    assert len(list((run.explain / "gradcam" / "overlays").glob("*.png"))) == cap

    assert result.metrics == json.loads(run.metrics.read_text())
    assert result.metrics["test"]["n"] == len(test)
    assert result.report == run.report
    # the data audit sees the corner marker outside the head: a critical background probe
    background = [f for f in result.findings if f.check == "probe.background"]
    assert background and background[0].severity == "critical"
    assert [f.severity for f in result.findings] == sorted(
        (f.severity for f in result.findings), key=("critical", "warning", "info").index)


def test_rerun_skips_every_stage_and_touches_no_file(first_run, phantoms, run_copy, record,
                                                     tiny_options, mtimes):
    before = mtimes(run_copy)
    result = record([phantoms], tiny_options(), run_copy)
    assert set(statuses(result).values()) == {"skipped"}
    for i, name in enumerate(STAGES, 1):
        assert f"[{i}/6] {name}: done, skipped" in record.text
    assert mtimes(run_copy) == before
    assert result.metrics == first_run[0].metrics


def test_other_options_are_refused_without_force(phantoms, run_copy, tiny_options, mtimes):
    with pytest.raises(BraincamError, match=r"other options \(n_boot: 20 -> 50\).*--force"):
        check_run_dir(RunDir(run_copy), [phantoms], tiny_options(n_boot=50), force=False)
    before = mtimes(run_copy)
    longer = tiny_options(train=dataclasses.replace(tiny_options().train, head_epochs=2))
    with pytest.raises(BraincamError, match="train.head_epochs: 1 -> 2"):
        check_run_dir(RunDir(run_copy), [phantoms], longer, force=False)
    with pytest.raises(BraincamError, match=r"\(train, report would be redone\)"):
        check_run_dir(RunDir(run_copy), [phantoms], longer, False, redone=["train", "report"])
    # other options after a failed stage replace nothing finished: allowed
    check_run_dir(RunDir(run_copy), [phantoms], longer, force=False, redone=[])
    assert mtimes(run_copy) == before
    # execution-only settings are not "other options"
    check_run_dir(RunDir(run_copy), [phantoms.resolve()], tiny_options(progress=True), False)


def test_a_directory_of_another_command_is_refused(phantoms, tmp_path, tiny_options):
    (tmp_path / "config.yaml").write_text("train: {}\n")
    with pytest.raises(BraincamError, match="holds config.yaml, which braincam did not write"):
        check_run_dir(RunDir(tmp_path), [phantoms], tiny_options(), force=True)
    (tmp_path / OUTPUT_STAMP).write_text("")  # braincam train's run: replaced with --force
    with pytest.raises(BraincamError, match="holds config.yaml, not written by braincam run"):
        check_run_dir(RunDir(tmp_path), [phantoms], tiny_options(), force=False)
    check_run_dir(RunDir(tmp_path), [phantoms], tiny_options(), force=True)


def test_changed_n_boot_redoes_data_audit_evaluation_and_report(phantoms, run_copy, record,
                                                               tiny_options, mtimes):
    before = mtimes(run_copy)
    with pytest.raises(BraincamError, match="--force"):
        record([phantoms], tiny_options(n_boot=30), run_copy)
    result = record([phantoms], tiny_options(n_boot=30, command="braincam run X --n-boot 30"),
                    run_copy, force=True)
    assert statuses(result) == {
        "data-audit": "ran", "train": "skipped", "evaluate": "ran", "model-audit": "skipped",
        "explain": "skipped", "report": "ran",
    }
    assert "[3/6] evaluate: inputs changed" in record.text
    after = mtimes(run_copy)
    assert after["model.safetensors"] == before["model.safetensors"]
    assert after["explain/gradcam/explanations.npz"] == before["explain/gradcam/explanations.npz"]
    assert after["metrics.json"] > before["metrics.json"]
    assert json.loads((run_copy / "metrics.json").read_text())["n_boot"] == 30
    config = yaml.safe_load((run_copy / "config.yaml").read_text())  # the report's "Command"
    assert config["command"] == "braincam run X --n-boot 30" and config["train"]
    # the new options are now the run's own
    again = record([phantoms], tiny_options(n_boot=30), run_copy)
    assert set(statuses(again).values()) == {"skipped"}


def test_interrupted_run_resumes_with_identical_metrics(first_run, phantoms, run_copy, record,
                                                        tiny_options, monkeypatch):
    """Kill after training: the later stages' outputs and markers are gone, and the next
    evaluation is interrupted half-way (predictions written, then Ctrl-C)."""
    run = RunDir(run_copy)
    for stage in ("evaluate", "model-audit", "explain", "report"):
        (run.stages / f"{stage}.json").unlink()
    run.metrics.unlink()
    model_time = run.model.stat().st_mtime_ns
    real = braincam.evaluate.evaluate_run

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(braincam.evaluate, "evaluate_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        record([phantoms], tiny_options(), run_copy)
    assert read_marker(run, "evaluate") is None  # not taken as done
    monkeypatch.setattr(braincam.evaluate, "evaluate_run", real)

    result = record([phantoms], tiny_options(), run_copy)
    assert statuses(result) == {
        "data-audit": "skipped", "train": "skipped", "evaluate": "ran", "model-audit": "ran",
        "explain": "ran", "report": "ran",
    }
    assert run.model.stat().st_mtime_ns == model_time
    original = first_run[0].run_dir / "metrics.json"
    assert run.metrics.read_bytes() == original.read_bytes()


def test_the_report_stage_writes_the_guides_page_too(tmp_path):
    """A segmenter trained into RUN/guide gets its own page beside the run's report."""
    from braincam.pipeline.run import _report

    run = tmp_path / "run"
    (run / "guide").mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    (run / "config.yaml").write_text(f"train: {{guide: {tmp_path / 'data'}}}\n")
    (run / "guide" / "model.safetensors").write_bytes(b"")
    (run / "guide" / "config.yaml").write_text("segment: {size: 64}\n")
    (run / "guide" / "metrics.json").write_text(
        '{"mean_dice": 0.5, "n_tumour_images": 3, "false_positive_rate": 0.1, '
        '"n_tumour_free_images": 10}')
    _report(RunDir(run))
    report = (run / "report.html").read_text()
    assert "<title>braincam report: run</title>" in report
    assert '<a href="guide/report.html">its page</a>' in report  # the guide's page came first
    page = (run / "guide" / "report.html").read_text()
    assert "<title>braincam segmenter report: guide</title>" in page
    assert "held-out mean Dice 0.5 on 3 tumour images" in page
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "metrics.json").write_text("{}")
    _report(RunDir(plain))
    assert (plain / "report.html").is_file() and not (plain / "guide").exists()
