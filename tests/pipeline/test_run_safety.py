"""``run_pipeline`` never loses or mixes a run's work: one command at a time, changed inputs
redone only with ``--force``, missing outputs made again, a replaced model's files gone, and a
``--guide`` segment run fingerprinted by its model, however its path is spelt."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest

from braincam.errors import BraincamError
from braincam.pipeline.run import _plan, _resolved_guide
from braincam.runs import RunDir


def statuses(result) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}


def test_a_second_command_on_the_same_run_stops_at_once(phantoms, run_copy, record,
                                                         tiny_options):
    import fcntl

    with open(run_copy / ".stages" / "lock", "w") as held:  # another braincam run
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BraincamError, match="is being written by another braincam run"):
            record([phantoms], tiny_options(), run_copy)
    assert set(statuses(record([phantoms], tiny_options(), run_copy)).values()) == {"skipped"}


def test_a_deleted_output_is_made_again(phantoms, run_copy, record, tiny_options):
    (run_copy / "predictions.csv").unlink()
    result = record([phantoms], tiny_options(), run_copy)
    assert statuses(result)["evaluate"] == "ran" and statuses(result)["train"] == "skipped"
    assert "[3/6] evaluate: outputs missing" in record.text
    assert statuses(result)["report"] == "ran"  # it reads the evaluation again
    assert "[6/6] report: a stage it reads ran again" in record.text
    assert (run_copy / "predictions.csv").is_file()
    (run_copy / "data_audit" / "probe_auc.png").unlink()  # a figure, not only the JSON
    result = record([phantoms], tiny_options(), run_copy)
    assert statuses(result)["data-audit"] == "ran"
    assert (run_copy / "data_audit" / "probe_auc.png").is_file()
    # outputs written only for some runs: one figure per scored set, the tumour examples
    from braincam.pipeline.stages import read_marker

    assert "roc_test.png" in read_marker(RunDir(run_copy), "evaluate").produced
    assert read_marker(RunDir(run_copy), "model-audit").produced == (
        "audit/tumour_examples.npz",)
    for name, stage in (("roc_test.png", "evaluate"),
                        ("audit/tumour_examples.npz", "model-audit")):
        (run_copy / name).unlink()
        result = record([phantoms], tiny_options(), run_copy)
        assert statuses(result)[stage] == "ran" and (run_copy / name).is_file()


def test_a_retrained_model_takes_the_files_of_the_old_one_with_it(phantoms, run_copy, record,
                                                                   tiny_options):
    (run_copy / "ood.safetensors").write_bytes(b"the old model's reference")
    (run_copy / "upweighted.csv").write_text("path,label,prob_label\n")
    longer = tiny_options(train=dataclasses.replace(tiny_options().train, head_epochs=2))
    result = record([phantoms], longer, run_copy, force=True)
    assert statuses(result)["train"] == "ran"
    assert not (run_copy / "ood.safetensors").exists()
    assert not (run_copy / "upweighted.csv").exists()


def test_changed_data_is_redone_only_with_force(phantoms, tmp_path, record, tiny_options):
    data = shutil.copytree(phantoms, tmp_path / "data")
    record([data], tiny_options(), tmp_path / "run")
    some = next((data / "Training" / "tumor").iterdir())
    os.utime(some, ns=(some.stat().st_atime_ns, some.stat().st_mtime_ns + 10**9))
    with pytest.raises(BraincamError, match=r"inputs changed since \(data-audit, train, "):
        record([data], tiny_options(), tmp_path / "run")
    result = record([data], tiny_options(), tmp_path / "run", force=True)
    assert statuses(result)["train"] == "ran"


def test_a_guide_run_is_its_model_however_it_is_spelt(phantoms, segmenter_run, tmp_path,
                                                      tiny_options, monkeypatch):
    run = RunDir(tmp_path / "run")

    def train_print(guide: str) -> str:
        options = _resolved_guide(tiny_options(train=dataclasses.replace(
            tiny_options().train, guide=guide)))
        (train,) = [s for s in _plan(run, [phantoms], options) if s.name == "train"]
        return train.fingerprint

    first = train_print(str(segmenter_run))
    monkeypatch.chdir(segmenter_run.parent)
    assert train_print(f"./{segmenter_run.name}") == first
    model = segmenter_run / "model.safetensors"
    stat = model.stat()
    try:  # the segment run trained again: another model file
        os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert train_print(str(segmenter_run)) != first
    finally:
        os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_the_guide_run_or_the_data_is_never_the_output(phantoms, segmenter_run, record,
                                                       tiny_options):
    options = tiny_options(train=dataclasses.replace(tiny_options().train,
                                                     guide=str(segmenter_run)))
    with pytest.raises(BraincamError, match="which this command reads; its outputs would "
                                            "land among its inputs"):
        record([phantoms], options, segmenter_run, force=True)
    assert (segmenter_run / "model.safetensors").is_file()
    with pytest.raises(BraincamError, match="lies inside the dataset folder"):
        record([phantoms], tiny_options(), phantoms / "run")


def test_an_output_inside_a_guide_folder_or_under_a_file_stops_before_any_stage(
        phantoms, tmp_path, record, tiny_options):
    """``--guide`` dataset folders are data too: nothing is written into them; a file where a
    folder of ``--out`` should be is one line."""
    guide = shutil.copytree(phantoms, tmp_path / "guide-data")
    options = tiny_options(train=dataclasses.replace(tiny_options().train, guide=str(guide)))
    with pytest.raises(BraincamError, match="lies inside the dataset folder"):
        record([phantoms], options, guide / "myrun")
    assert not (guide / "myrun").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BraincamError, match="afile exists and is not a directory"):
        record([phantoms], tiny_options(), tmp_path / "afile" / "sub")
    with pytest.raises(BraincamError, match=r"^--data \S*typo is not a directory$"):
        record([phantoms], tiny_options(extra=[tmp_path / "typo"]), tmp_path / "run")


def test_a_folder_of_other_files_is_refused_and_a_bad_arch_keeps_every_stage(
        phantoms, run_copy, record, tiny_options, tmp_path):
    """A user's folder (notes, a ``guide/`` of their own) is not a run: refused with or
    without ``--force``, untouched. A mistyped ``--arch`` with ``--force`` stops before any
    stage, so the finished run keeps every stage."""
    mine = tmp_path / "mine"
    (mine / "guide").mkdir(parents=True)
    (mine / "guide" / "notes.txt").write_text("precious")
    for force in (False, True):
        with pytest.raises(BraincamError, match=r"mine holds guide, which braincam did not "
                                                r"write: choose another --out$"):
            record([phantoms], tiny_options(), mine, force=force)
    assert sorted(p.name for p in mine.rglob("*")) == ["guide", "notes.txt"]
    typo = tiny_options(train=dataclasses.replace(tiny_options().train, arch="resnet10x"))
    with pytest.raises(BraincamError, match="unknown architecture 'resnet10x'"):
        record([phantoms], typo, run_copy, force=True)
    assert set(statuses(record([phantoms], tiny_options(), run_copy)).values()) == {"skipped"}


def test_a_guide_trained_into_the_run_is_an_output_of_train_and_report(phantoms, tmp_path,
                                                                       tiny_options):
    """Deleting RUN/guide or its page makes the stage that writes it run again."""
    options = tiny_options(train=dataclasses.replace(tiny_options().train, guide=str(phantoms)))
    run = RunDir(tmp_path / "run")
    stages = {s.name: s for s in _plan(run, [phantoms], options)}
    assert RunDir(run.guide).model in stages["train"].outputs
    assert RunDir(run.guide).report in stages["report"].outputs
    plain = {s.name: s for s in _plan(run, [phantoms], tiny_options())}
    assert RunDir(run.guide).model not in plain["train"].outputs


def test_an_interrupted_forced_rerun_resumes_without_force(phantoms, run_copy, record,
                                                           tiny_options, monkeypatch):
    """``--force`` with a changed option, stopped in the train stage: the next command with the
    same options resumes (trains) instead of blaming changed data."""
    import braincam.pipeline.run as pipeline_run

    longer = tiny_options(train=dataclasses.replace(tiny_options().train, head_epochs=2))

    def stopped(*_args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(pipeline_run, "_train", stopped)
        with pytest.raises(KeyboardInterrupt):
            record([phantoms], longer, run_copy, force=True)
    result = record([phantoms], longer, run_copy)
    assert statuses(result)["train"] == "ran" and statuses(result)["data-audit"] == "skipped"


def test_the_order_of_two_data_folders_of_one_name_is_an_input(phantoms, tmp_path,
                                                                tiny_options):
    """``--data e1/dZ --data e2/dZ`` names them dZ and dZ_: the other order is another run;
    the order of differently named folders changes no stage."""
    one, two, other = (shutil.copytree(phantoms / "Testing", tmp_path / p)
                       for p in ("e1/dZ", "e2/dZ", "e3/dY"))
    run = RunDir(tmp_path / "run")

    def fingerprints(extra):
        return {s.name: s.fingerprint for s in _plan(run, [phantoms], tiny_options(extra=extra))}

    first, swapped = fingerprints([one, two]), fingerprints([two, one])
    assert {n for n in first if first[n] != swapped[n]} == {
        "data-audit", "evaluate", "model-audit", "explain", "report"}
    assert fingerprints([one, other]) == fingerprints([other, one])


def test_a_stage_file_another_command_wrote_is_redone_only_with_force(phantoms, run_copy, record,
                                                                      tiny_options, tmp_path):
    """``braincam evaluate RUN --data X --force`` rewrote metrics.json: skipping the stage would
    show X beside the report's figures, redoing it would replace that work; so ``--force``."""
    import shutil

    import braincam.evaluate

    extra = shutil.copytree(phantoms / "Testing", tmp_path / "extra")
    braincam.evaluate.evaluate_run(run_copy, [extra], force=True, progress=False, n_boot=0)
    with pytest.raises(BraincamError, match=r"holds metrics.json, written by another command "
                                            r"since braincam run made it \(evaluate would be "
                                            r"redone\); pass --force"):
        record([phantoms], tiny_options(), run_copy)
    result = record([phantoms], tiny_options(), run_copy, force=True)
    assert statuses(result)["evaluate"] == "ran" and statuses(result)["train"] == "skipped"
    assert "evaluate: outputs missing or written by another command" in record.text
    assert json.loads((run_copy / "metrics.json").read_text())["extra"] == {}
    assert set(statuses(record([phantoms], tiny_options(), run_copy)).values()) == {"skipped"}



def test_one_folder_given_as_a_string_is_one_folder(tmp_path, tiny_options):
    from braincam.pipeline import run_pipeline

    typo = tmp_path / "typo"
    with pytest.raises(BraincamError, match=f"^{typo} is not a directory$"):
        run_pipeline(str(typo), tiny_options(), tmp_path / "run")
