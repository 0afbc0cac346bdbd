"""``compare_runs`` on hand-written runs: the table's values, '-' for missing parts, files."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from braincam.errors import BraincamError
from braincam.pipeline import compare_runs, write_comparison

COUNTERFACTUAL = {"background_only_survival": 0.875, "head_only_change": 0.03,
                  "head_only_flip_rate": 0.0625, "intensity_swap_flip_rate": 0.25,
                  "tumor_removal_flip_rate": 0.125, "tumor_removal_prob_drop": 0.33}


def m(acc, bacc):
    return {"n": 10, "accuracy": acc, "balanced_accuracy": bacc, "auc": None}


def write_run(root, metrics=None, audit=None):
    root.mkdir(parents=True)
    if metrics is not None:
        (root / "metrics.json").write_text(json.dumps(metrics))
    if audit is not None:
        (root / "audit").mkdir()
        (root / "audit" / "audit.json").write_text(json.dumps(audit))
    return root


@pytest.fixture
def runs(tmp_path):
    # a: one audited dataset, one method, one extra dataset
    a = write_run(tmp_path / "a", {
        "test": m(0.9, 0.85), "test_leak_free": m(0.8, 0.75), "extra": {"figshare": m(0.7, 0.65)},
    }, {"datasets": {"sartaj": {
        "attention": {"brain": 0.5, "background": 0.41, "by_class": {"tumor": {"brain": 0.6}}},
        "localization": {"method": "hirescam", "pointing_game": 0.8, "energy_in_box_ratio": 1.0,
                         "by_method": {"hirescam": {"energy_in_box_ratio": 1.0},
                                       "gradcam": {"energy_in_box_ratio": 3.125}}},
        "counterfactual": COUNTERFACTUAL, "findings": [],
    }}})
    # b: audit per dataset (extra first), attention per method; no leak-free subset
    b = write_run(tmp_path / "b", {
        "test": m(0.75, 0.7), "test_leak_free": None, "extra": {"br35h": m(0.6, 0.6)},
    }, {"datasets": {
        "figshare": {"attention": {"gradcam": {"background": 0.9}},
                     "localization": {"energy_in_box_ratio": 2.5},
                     "counterfactual": {"background_only_survival": 1.0}},
        "sartaj": {"attention": {"hirescam": {"background": 0.3}, "gradcam": {"background": 0.2}},
                 "localization": {"gradcam": {"energy_in_box_ratio": None}},
                 "counterfactual": {"background_only_survival": 0.5,
                                    "intensity_swap_flip_rate": 0.0}},
    }})
    (b / "config.yaml").write_text("data: [/data/sartaj]\n")
    # c: evaluated, never audited
    c = write_run(tmp_path / "c", {"test": m(0.5, 0.5), "extra": {}})
    return [a, b, c]


def test_table_values(runs):
    table = compare_runs(runs)
    assert table.runs == ["a", "b", "c"]
    assert table.columns == [
        "accuracy", "balanced_accuracy", "leak_free_accuracy", "balanced_accuracy@figshare",
        "balanced_accuracy@br35h", "background_share", "background_only_survival",
        "head_only_flip_rate", "intensity_swap_flip_rate", "tumor_removal_flip_rate",
        "energy_in_box_ratio", "energy_in_box_ratio@figshare",
    ]
    assert table.rows[0] == {
        "accuracy": 0.9, "balanced_accuracy": 0.85, "leak_free_accuracy": 0.8,
        "balanced_accuracy@figshare": 0.65, "balanced_accuracy@br35h": None,
        "background_share": 0.41, "background_only_survival": 0.875,
        "head_only_flip_rate": 0.0625, "intensity_swap_flip_rate": 0.25,
        "tumor_removal_flip_rate": 0.125, "energy_in_box_ratio": 3.125,
        "energy_in_box_ratio@figshare": None,
    }
    # b: the in-domain entry (its data root's name) and gradcam, not figshare or hirescam;
    # figshare's box ratio in a column of its own
    assert table.rows[1] == {
        "accuracy": 0.75, "balanced_accuracy": 0.7, "leak_free_accuracy": None,
        "balanced_accuracy@figshare": None, "balanced_accuracy@br35h": 0.6,
        "background_share": 0.2, "background_only_survival": 0.5,
        "head_only_flip_rate": None, "intensity_swap_flip_rate": 0.0,
        "tumor_removal_flip_rate": None, "energy_in_box_ratio": None,
        "energy_in_box_ratio@figshare": 2.5,
    }
    assert table.cell("c", "accuracy") == 0.5
    assert [table.cell("c", col) for col in table.columns[3:]] == [None] * 9


def test_files(runs, tmp_path):
    table = compare_runs(runs)
    files = write_comparison(table, tmp_path / "out")
    assert [f.name for f in files] == ["compare.csv", "compare.json", "compare.png"]
    rows = list(csv.DictReader(io.StringIO(files[0].read_text())))
    assert [r["run"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["energy_in_box_ratio"] == "3.125" and rows[1]["leak_free_accuracy"] == "-"
    assert rows[2]["background_share"] == "-" and rows[1]["intensity_swap_flip_rate"] == "0.0"
    doc = json.loads(files[1].read_text())
    assert doc["columns"] == table.columns
    assert doc["runs"][1]["run"] == "b" and doc["runs"][1]["leak_free_accuracy"] is None
    assert doc["runs"][0]["path"] == str(runs[0])
    image = np.asarray(Image.open(files[2]))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400


def test_printed_table_shows_dashes(runs):
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=100).print(compare_runs(runs).to_table())
    rows = {}
    for line in buf.getvalue().splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 4:
            rows[cells[0]] = cells[1:]
    assert rows["accuracy"] == ["0.900", "0.750", "0.500"]
    assert rows["leak free accuracy"] == ["0.800", "-", "-"]
    assert rows["balanced accuracy@br35h"] == ["-", "0.600", "-"]
    assert rows["energy in box ratio"] == ["3.125", "-", "-"]
    assert rows["energy in box ratio@figshare"] == ["-", "2.500", "-"]


def test_runs_of_different_tasks_carry_a_note(tmp_path):
    a = write_run(tmp_path / "bin", {"test": m(0.9, 0.9)})
    b = write_run(tmp_path / "multi", {"test": m(0.8, 0.8)})
    doc = json.loads((b / "metrics.json").read_text())
    (b / "metrics.json").write_text(json.dumps({**doc, "task": "multiclass"}))
    (a / "metrics.json").write_text(json.dumps({**json.loads((a / "metrics.json").read_text()),
                                                "task": "binary"}))
    note = compare_runs([a, b]).note
    assert note == ("the runs solve different tasks (bin: binary, multi: multiclass): "
                    "accuracies have other chance levels and do not compare")
    assert compare_runs([a, a]).note is None and compare_runs([a, b]).to_dict()["note"] == note


def test_sets_of_one_name_with_other_images_and_audits_of_other_rows_carry_a_note(tmp_path):
    """Two folders named ``extern`` (other images) share a column, and an audit of validation
    images stands beside one of unseen images: the note says so; the same images under one
    name do not."""
    header = "path,dataset,split,leak_free,label,pred\n"
    runs = []
    for name, extern, rows in (("a", "site1", "unseen"), ("b", "site2", "validation"),
                               ("c", "site1", "unseen")):
        run = write_run(tmp_path / name, {"test": m(0.9, 0.9), "extra": {"extern": m(1, 1)}},
                        {"rows": rows, "datasets": {}})
        (run / "predictions.csv").write_text(
            header + f"x1,s,test,True,tumor,tumor\n/{extern}/e1,extern,extra,True,tumor,tumor\n"
            + ("/site2/e2,extern,extra,True,tumor,tumor\n" if extern == "site2" else ""))
        runs.append(run)
    assert compare_runs(runs).note == (
        "balanced_accuracy@extern: the runs scored other images under that name (a 1, b 2, "
        "c 1); the audits read other images (a: unseen, b: validation, c: unseen): their "
        "rates do not compare")
    assert compare_runs([runs[0], runs[2]]).note is None


def test_bad_runs(tmp_path):
    with pytest.raises(BraincamError, match="is not a directory"):
        compare_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BraincamError, match="neither metrics.json nor audit/audit.json"):
        compare_runs([tmp_path / "empty"])
    cut = write_run(tmp_path / "cut", audit={"datasets": {}})
    (cut / "metrics.json").write_text('{"test": {"accuracy": 0.9, "bal')  # half written
    with pytest.raises(BraincamError, match=r"cut/metrics.json cannot be read as a JSON object"):
        compare_runs([cut])
    seg = tmp_path / "seg"
    seg.mkdir()
    (seg / "metrics.json").write_text(json.dumps({"mean_dice": 0.8}))
    (seg / "config.yaml").write_text("segment: {size: 64}\n")
    with pytest.raises(BraincamError, match=r"is a segment run .*braincam report"):
        compare_runs([seg])
    score = tmp_path / "score"  # a `braincam segment SEG --evaluate` folder
    score.mkdir()
    (score / "metrics.json").write_text(json.dumps({"segmenters": [str(seg)], "dice": 0.8}))
    with pytest.raises(BraincamError, match=r"is a segment run .* or its scores"):
        compare_runs([score])


def test_same_folder_names_are_told_apart(tmp_path):
    a = write_run(tmp_path / "x" / "run", {"test": m(0.9, 0.9)})
    b = write_run(tmp_path / "y" / "run", {"test": m(0.8, 0.8)})
    assert compare_runs([a, b, a]).runs == ["x/run", "y/run", "x/run (2)"]


def mask_audit(pointing, dice, ratio, removal, control, ceiling=None, views=None):
    """A mask-aware audit block (docs/audit.md): ``localization.by_method.gradcam.mask``, the
    counterfactual removal rates and the lesion views' balanced accuracy."""
    return {
        "attention": {"background": 0.1},
        "localization": {"pointing_game": 0.05, "mask": {"pointing_game": 0.0},
                         "by_method": {"gradcam": {"mask": {
                             "pointing_game": pointing, "dice": dice,
                             "energy_in_mask_ratio": ratio, "pointing_ceiling": ceiling}}}},
        "counterfactual": {"mask_removal_flip_rate": removal,
                           "control_removal_flip_rate": control,
                           "tumor_effect_flip_rate": removal - control,
                           "lesion_view_balanced_accuracy": views},
    }


def test_mask_columns_for_plain_and_grounded_runs(tmp_path):
    """The mask numbers of an extra dataset get ``@<dataset>`` columns (gradcam's, not the
    first method's); columns no run fills stay out."""
    sartaj = {"attention": {"background": 0.3}, "counterfactual": {}}
    plain = write_run(tmp_path / "plain", {"test": m(0.9, 0.9)}, {"datasets": {
        "sartaj": sartaj, "figshare": mask_audit(0.25, 0.125, 1.5, 0.5, 0.25, 0.75, 0.5)}})
    grounded = write_run(tmp_path / "grounded", {"test": m(0.9, 0.875)}, {"datasets": {
        "sartaj": sartaj, "figshare": mask_audit(0.875, 0.5, 6.0, 0.75, 0.0, 1.0, 0.875)}})
    for run in (plain, grounded):
        (run / "config.yaml").write_text("data: [/data/sartaj]\n")
    table = compare_runs([plain, grounded])
    masks = ["mask_pointing_game@figshare", "mask_pointing_ceiling@figshare",
             "mask_dice@figshare", "mask_removal_flip_rate@figshare",
             "control_removal_flip_rate@figshare", "tumor_effect_flip_rate@figshare",
             "lesion_view_balanced_accuracy@figshare"]
    assert [c for c in table.columns if "@figshare" in c] == [
        *masks, "energy_in_mask_ratio@figshare"]
    assert "mask_pointing_game" not in table.columns  # the in-domain data has no masks
    assert [table.cell("plain", c) for c in masks] == [0.25, 0.75, 0.125, 0.5, 0.25, 0.25, 0.5]
    assert [table.cell("grounded", c) for c in masks] == [0.875, 1.0, 0.5, 0.75, 0.0, 0.75, 0.875]
    assert table.cell("grounded", "energy_in_mask_ratio@figshare") == 6.0
    assert table.columns.index(masks[0]) > table.columns.index("tumor_removal_flip_rate")
    files = write_comparison(table, tmp_path / "out")
    assert json.loads(files[1].read_text())["runs"][1]["mask_dice@figshare"] == 0.5


def test_leak_free_extra_columns_only_where_copies_were_seen(tmp_path):
    a = write_run(tmp_path / "a", {
        "test": m(0.9, 0.85), "extra": {"figshare": m(0.99, 0.99), "br35h": m(0.9, 0.9)},
        "extra_seen": {"figshare": 430, "br35h": 0},
        "extra_leak_free": {"figshare": m(0.97, 0.97), "br35h": m(0.9, 0.9)},
    })
    b = write_run(tmp_path / "b", {"test": m(0.8, 0.8), "extra": {"figshare": m(0.9, 0.9)}})
    table = compare_runs([a, b])
    extra = [c for c in table.columns if c.startswith("balanced_accuracy@")]
    assert extra == ["balanced_accuracy@figshare", "balanced_accuracy@figshare, leak-free",
                     "balanced_accuracy@br35h"]
    assert table.cell("a", "balanced_accuracy@figshare, leak-free") == 0.97
    assert table.cell("b", "balanced_accuracy@figshare, leak-free") is None


def test_shared_leak_free_scores_every_run_on_the_images_leak_free_in_all(tmp_path):
    """Run b's leak-free subset is smaller (a guide learnt from x2): both runs are scored on
    x1, x3, x4 of the test set and on e2 of the extra set; a run without predictions.csv
    turns the shared columns off."""
    header = "path,dataset,split,leak_free,label,pred\n"
    a_rows = ("x1,s,test,True,tumor,tumor\nx2,s,test,True,tumor,tumor\n"
              "x3,s,test,True,no_tumor,tumor\nx4,s,test,true,no_tumor,no_tumor\n"
              "x5,s,test,False,tumor,no_tumor\ne1,fig,extra,False,tumor,tumor\n"
              "e2,fig,extra,True,tumor,no_tumor\n")
    b_rows = ("x1,s,test,True,tumor,no_tumor\nx2,s,test,False,tumor,no_tumor\n"
              "x3,s,test,True,no_tumor,no_tumor\nx4,s,test,True,no_tumor,no_tumor\n"
              "x5,s,test,True,tumor,tumor\ne1,fig,extra,True,tumor,tumor\n"
              "e2,fig,extra,True,tumor,tumor\n")
    runs = []
    for name, rows in (("a", a_rows), ("b", b_rows)):
        run = write_run(tmp_path / name, {"test": m(0.9, 0.9), "extra": {"fig": m(1, 1)}})
        (run / "predictions.csv").write_text(header + rows)
        runs.append(run)
    comparison = compare_runs(runs)
    shared = "balanced_accuracy@fig, leak-free in every run"
    # a: tumour recall 1/1, no-tumour recall 1/2 -> 0.75; b: 0/1 and 2/2 -> 0.5
    assert comparison.cell("a", "shared_leak_free_balanced_accuracy") == 0.75
    assert comparison.cell("b", "shared_leak_free_balanced_accuracy") == 0.5
    assert (comparison.cell("a", shared), comparison.cell("b", shared)) == (0.0, 1.0)
    assert comparison.shared_n == {"test": 3, "fig": 1}
    assert comparison.to_dict()["shared_leak_free_n"] == {"test": 3, "fig": 1}
    assert comparison.columns.index("shared_leak_free_balanced_accuracy") == 3
    plain = write_run(tmp_path / "c", {"test": m(0.9, 0.9)})
    assert "shared_leak_free_balanced_accuracy" not in compare_runs([*runs, plain]).columns


def test_audits_of_several_sets_without_in_domain_data_line_up_by_set(tmp_path):
    """Two model-spec folders audited on the same two folders in opposite orders: no data
    root names an in-domain set, so every column names its set, and the runs agree."""
    ph2 = {"attention": {"background": 0.25},
           "counterfactual": {"background_only_survival": 0.5, "intensity_swap_flip_rate": 0.5}}
    sartaj = {"attention": {"background": 0.125},
              "counterfactual": {"background_only_survival": 0.25,
                                 "intensity_swap_flip_rate": 0.375}}
    first = write_run(tmp_path / "first", None, {"datasets": {"sartaj": sartaj, "ph2": ph2}})
    second = write_run(tmp_path / "second", None, {"datasets": {"ph2": ph2, "sartaj": sartaj}})
    table = compare_runs([first, second])
    for column, value in (("background_share@ph2", 0.25), ("background_share@sartaj", 0.125),
                          ("intensity_swap_flip_rate@sartaj", 0.375),
                          ("background_only_survival@ph2", 0.5)):
        assert table.cell("first", column) == table.cell("second", column) == value
    assert table.cell("first", "background_share") is None


def test_a_spec_audited_on_one_set_lines_up_with_one_audited_on_two(tmp_path):
    """A model spec has no in-domain data: its only set is named too, so two specs audited on
    the same folder share that folder's columns."""
    fig = {"attention": {"background": 0.25}}
    spec = {"spec": "x.yaml", "format": "onnx"}
    one = write_run(tmp_path / "one", None, {"model": spec, "datasets": {"fig": fig}})
    two = write_run(tmp_path / "two", None, {"model": spec, "datasets": {
        "sartaj": {"attention": {"background": 0.5}}, "fig": fig}})
    table = compare_runs([one, two])
    assert table.cell("one", "background_share@fig") == table.cell("two", "background_share@fig")
    assert table.cell("one", "background_share@fig") == 0.25
    assert table.cell("one", "background_share") is None


def test_a_run_audited_on_another_dataset_only_names_that_dataset(tmp_path):
    """A run of Sartaj audited on Figshare alone: its numbers are Figshare's, so they carry
    ``@figshare`` and do not share a column with a run audited on its own Sartaj images."""
    block = {"attention": {"background": 0.125},
             "localization": {"method": "gradcam", "pointing_game": 0.5,
                              "mask": {"dice": 0.75, "pointing_game": 0.8}},
             "counterfactual": {"background_only_survival": 0.25}}
    away = write_run(tmp_path / "away", None, {"datasets": {"figshare": block}})
    home = write_run(tmp_path / "home", None, {"datasets": {"sartaj": dict(
        block, attention={"background": 0.5})}})
    for run in (away, home):
        (run / "config.yaml").write_text("data: [/data/sartaj]\n")
    table = compare_runs([away, home])
    assert table.cell("away", "mask_dice@figshare") == 0.75
    assert table.cell("away", "background_share@figshare") == 0.125
    assert table.cell("away", "background_share") is None and table.cell(
        "away", "mask_dice") is None
    assert table.cell("home", "background_share") == 0.5 and table.cell(
        "home", "mask_dice") == 0.75


@pytest.mark.parametrize("metrics", [
    {"test": [1, 2]}, {"test": m(0.9, 0.8), "test_leak_free": 5},
    {"test": {"accuracy": "0.9", "balanced_accuracy": 0.8}},
    {"test": m(0.9, 0.8), "extra": [1]},
    {"test": m(0.9, 0.8), "extra": {"foo": m(0.7, 0.7)}, "extra_seen": {"foo": "two"}}])
def test_hand_edited_files_of_the_wrong_shape_give_empty_cells(tmp_path, metrics):
    bad = write_run(tmp_path / "bad", metrics, {"datasets": {"sartaj": {
        "attention": {"background": 0.5}, "counterfactual": [1, 2]}}})
    table = compare_runs([bad])
    write_comparison(table, tmp_path / "out")
    assert table.cell("bad", "background_share") == 0.5
    assert table.cell("bad", "background_only_survival") is None
    assert table.cell("bad", "accuracy") in (None, 0.9)
    assert all(v is None or isinstance(v, float | int) for v in table.rows[0].values())
