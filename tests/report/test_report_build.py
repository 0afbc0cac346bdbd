"""The HTML report of a hand-written run: sections, numbers, ordering, embedding, gaps."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import yaml
from PIL import Image

from braincam.errors import BraincamError
from braincam.report import build_report
from braincam.report.fmt import MISSING
from braincam.runs import RunDir

SECTIONS = ("findings", "data", "data-counts", "probes", "duplicates", "properties", "clusters",
            "data-findings", "training", "metrics",
            "metrics-table", "confusion-roc", "gallery", "model-audit", "attention",
            "localization", "faithfulness", "sanity", "counterfactual", "where-tumour", "settings")


@pytest.fixture(scope="module")
def full(tmp_path_factory, kit):
    root = tmp_path_factory.mktemp("report")
    run = kit.make_fake_run(root)
    path = build_report(run)
    html = path.read_text(encoding="utf-8")
    return root, run, path, html, kit.parse(html)


@pytest.fixture(scope="module")
def text(kit):
    return kit.text


def decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_written_to_the_run_atomically(full):
    _, run, path, _, _ = full
    assert path == RunDir(run).report
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_every_section_has_its_stable_id_once_and_the_html_is_balanced(full):
    page = full[4]
    for section in SECTIONS:
        assert page.ids.count(section) == 1, section
    assert len(page.ids) == len(set(page.ids))
    assert page.errors == []
    assert full[3].startswith("<!DOCTYPE html>")


def test_findings_are_sorted_by_severity_across_stages(full, text):
    page = full[4]
    assert page.severities_by_id["findings"] == ["critical"] * 2 + ["warning"] * 2 + ["info"] * 2
    top = text(page, "findings")
    # critical: data audit's probe before the model audit's sanity (stage order kept)
    assert top.index("geometry-only probe") < top.index("barely change") < top.index(
        "57 test images") < top.index("41% of CAM energy") < top.index("Image clusters")
    assert "critical 2 warning 2 info 2" in top
    assert ("The data audit raised 3 findings: critical 1, warning 1, info 1."
            in text(page, "data-findings"))


def test_metrics_with_intervals_and_leak_free_comparison(full, text):
    page = full[4]
    table = text(page, "metrics-table")
    assert ("test set 394 0.973 [0.951, 0.989] 0.937 [0.900, 0.960] 0.991 [0.982, 0.997] 0.0412"
            in table)
    assert "test, leak-free subset 120 0.900 [0.850, 0.940] 0.877 [0.810, 0.920]" in table
    assert "br35h-no-tumor-sample 500 0.612 [0.570, 0.650] n/a n/a" in table
    metrics = text(page, "metrics")
    assert ("On the leak-free test subset (n = 120) it is 0.877 [0.810, 0.920], 0.0602 lower."
            in metrics)
    assert "no_tumor 0.951 0.887 0.918 100" in metrics
    assert "no_tumor 89 11 tumor 4 290" in text(page, "confusion")


def test_data_audit_training_and_model_audit_numbers(full, text):
    page = full[4]
    assert ("geometry width, height, aspect 0.971 [0.951, 0.988] 0.853 [0.810, 0.890] 0.912 "
            "[0.880, 0.940]") in text(page, "probes")
    assert f"thumbnail 16x16 thumbnail 0.660 [0.600, 0.720] {MISSING} 0.6" in text(page, "probes")
    dup = text(page, "duplicates")
    assert "41 groups of byte-identical images and 12 groups of near-identical" in dup
    assert "conflicting labels: 1." in dup and "no_tumor 45 tumor 12" in dup
    assert "no_tumor 3 3 0 6 tumor 3 0 3 6 all 6 3 3 12" in text(page, "data-counts")
    assert "2 of 3 test images have no exact or near duplicate" in text(page, "data")
    # numeric properties only, best first; categorical ones (format) have no AUC
    assert ("The 2 of 2 measured properties" in text(page, "properties"))
    assert ("width 0.988 0.9 1e-12 no_tumor no_tumor: 512, tumor: 256 mean 0.61"
            in text(page, "properties"))
    # phase 2: 3 epochs, best 0.8321 at epoch 2, last val loss 0.43, 30.25 s
    assert "2 3 0.832 2 0.43 30.2" in text(page, "training")
    assert text(page, "recipe").startswith("Recipe: plain (no segmenter guide). "
                                           "efficientnet_lite0 may use any part of the image")
    assert ("41% of CAM energy lies in the background outside the head; a uniform map would "
            "put 35% there.") in text(page, "attention")
    assert "sartaj: 16 images audited, accuracy 0.812; explained with gradcam." in text(
        page, "model-audit")
    # groups table: n, brain, rim, background, uniform background
    assert ("images n brain rim background uniform background all images 16 0.523 0.0666 0.41 "
            "0.35 class no_tumor 6 0.3 0.1 0.6 0.35 incorrect 2 0.2 0.1 0.7 0.35") in text(
        page, "attention")
    assert "3.14 times the box's share" in text(page, "localization")
    assert "deletion AUC of 0.123 (lower is better) against 0.4" in text(page, "faithfulness")
    assert "fails the sanity check" in text(page, "sanity")
    assert "flips 12% of predictions and lowers the tumour probability by 0.333" in text(
        page, "counterfactual")


def test_clusters_and_counts_from_the_data_audit(tmp_path, kit, text):
    run = kit.make_fake_run(tmp_path)
    (run / "split.csv").unlink()  # e.g. `braincam audit-data` alone: counts from its json
    page = kit.parse(build_report(run).read_text())
    assert "class train test total no_tumor 395 105 500 tumor 2475 289 2764 all 2870 394 3264" in (
        text(page, "data-counts"))
    clusters = text(page, "clusters")
    assert "fall into 2 clusters of similar intensity and texture" in clusters
    assert "silhouette 0.457" in clusters and "Cramer's V between cluster and label: 0.314" in (
        clusters)
    assert "cluster no_tumor tumor total cluster 0 400 100 500 cluster 1 100 2664 2764" in clusters
    assert "source dataset" not in clusters  # one source: no V


def test_gallery_merges_audited_and_only_predicted_images(tmp_path, kit, text):
    """The audit looked at 4 of the 8 explained images; predictions.csv knows them all."""
    run = kit.make_fake_run(tmp_path)
    table = (run / "audit" / "per_image.csv").read_text().splitlines()
    (run / "audit" / "per_image.csv").write_text("\n".join(table[:5]) + "\n")  # img0..img3
    rows = ["path,dataset,split,leak_free,label,pred,prob_no_tumor,prob_tumor"]
    rows += [f"{line.split(',')[0]},sartaj,test,True,{line.split(',')[1]},{line.split(',')[2]},"
             "0.5,0.5" for line in table[1:]]
    (run / "predictions.csv").write_text("\n".join(rows) + "\n")
    page = kit.parse(build_report(run).read_text())
    gallery = text(page, "gallery")
    assert "8 images explained with gradcam; 4 of them have the share" in gallery
    # correct tumour images: audited img0 (90%), img3 (70%) | img1 (10%), img2 (50%);
    # img4 (not audited) does not fit in the 4 places
    shown = [f"sartaj: true tumor, predicted tumor, background {bg}% (img{i}.png)"
             for i, bg in ((0, 90), (3, 70), (1, 10), (2, 50))]
    assert (f"true tumor, correct (5 images) Most background {shown[0]} {shown[1]} "
            f"Least background {shown[2]} {shown[3]}") in gallery
    unranked = "No background share (not audited, or a blank map)"
    assert (f"true tumor, wrong (1 image) {unranked} sartaj: true tumor, predicted "
            "no_tumor (img5.png)") in gallery
    assert f"true no_tumor, wrong (1 image) {unranked}" in gallery


def test_gallery_captions_the_prediction_the_map_was_made_with(tmp_path, kit, text):
    """predictions.csv may disagree with the explanations (a model spec's evaluation reads
    images its own way): the caption gives the class the explanations file predicted."""
    run = kit.make_fake_run(tmp_path)
    (run / "audit" / "per_image.csv").unlink()
    rows = ["path,dataset,split,leak_free,label,pred,prob_no_tumor,prob_tumor"]
    for i, (label, _, _) in enumerate(kit.GALLERY):  # every prediction "no_tumor" here
        path = tmp_path / "images" / label / f"img{i}.png"
        rows.append(f"{path},sartaj,test,True,{label},no_tumor,0.9,0.1")
    (run / "predictions.csv").write_text("\n".join(rows) + "\n")
    gallery = text(kit.parse(build_report(run).read_text()), "gallery")
    assert "true tumor, correct (5 images)" in gallery  # as explained, not as predictions.csv
    assert "true no_tumor, wrong (1 image)" in gallery


def test_a_spec_evaluation_without_intervals_says_so(tmp_path, kit, text):
    """A model spec's metrics.json (a ``model`` block, every set a --data folder) scored with
    ``--n-boot 0``: no interval is promised, no set called another source or leak-free."""
    import json

    run = kit.make_fake_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics |= {"test": None, "test_leak_free": None, "n_boot": 0, "model": {"format": "onnx"},
                "extra": {"sartaj_test": metrics["test"]}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    section = text(kit.parse(build_report(run).read_text()), "metrics")
    assert "No intervals: the evaluation drew no bootstrap resamples" in section
    assert "Intervals are 95%" not in section
    assert "sartaj_test (a --data folder) (n = 394)" in section
    assert "none is called leak-free or another source" in section
    full = json.loads((run / "metrics.json").read_text()) | {"n_boot": 1000}
    (run / "metrics.json").write_text(json.dumps(full))
    section = text(kit.parse(build_report(run).read_text()), "metrics")
    assert "Intervals are 95% bootstrap confidence intervals (1000 resamples)." in section


def test_settings_show_command_and_versions_exactly(full, text, kit):
    settings = text(full[4], "settings")
    assert kit.CONFIG["command"] in settings
    assert "torch 2.14.1" in settings
    assert "train / lr 0.00012345" in settings


def test_images_are_embedded_never_linked(full, kit):
    root, _, _, html, page = full
    # training curves + data-audit plot + confusion and ROC + the gallery (7 of 8 images:
    # of the 5 correct tumour images only the 2 highest and 2 lowest background shares)
    # + the deletion/insertion curves and the randomisation curve
    assert len(page.images) == 1 + 1 + 2 + len(kit.GALLERY) - 1 + 2
    for img in page.images:
        assert decode(img["src"]).size > 0
        assert img.get("alt")
    assert not re.search(r"(src|href)=\"(?!data:|#)", html)
    assert "http://" not in html and "https://" not in html
    assert str(root) not in html  # no file paths, not even in captions
    assert "<script" not in html and "<link" not in html and "@import" not in html


def test_gallery_ranks_background_share_and_draws_missing_overlays(full, text, kit):
    n = len(kit.GALLERY)
    page = full[4]
    captions = [img["alt"] for img in page.images
                if img["alt"].startswith("true tumor, predicted tumor")]
    # most background first (90%, 70%), then least (10%, 30%): of 5 correct tumour images
    shares = [re.search(r"background (\d+)%", c).group(1) for c in captions]
    assert shares == ["90", "70", "10", "30"]
    assert "true tumor, correct (5 images)" in text(page, "gallery")
    by_name = {re.search(r"\((img\d+)\.png\)", img["alt"]).group(1): decode(img["src"])
               for img in page.images if "(img" in img["alt"]}
    assert sorted(by_name) == sorted(f"img{i}" for i in range(n) if i != 2)  # 2: 50%, middle
    # explain's overlay PNGs are used as they are (their red channel is 255 everywhere) ...
    assert all((by_name[name][..., 0] == 255).all() for name in by_name if name != f"img{n - 1}")
    # ... and the image without one is drawn from its map over the grey original
    drawn = by_name[f"img{n - 1}"]
    assert (drawn[..., 0] == drawn[..., 2]).mean() > 0.5


def test_a_run_with_only_its_config_says_what_has_not_run(tmp_path, kit, text):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(kit.CONFIG))
    page = kit.parse(build_report(run).read_text())
    assert page.errors == []
    for section in ("data", "training", "metrics", "gallery", "model-audit", "attention",
                    "sanity"):
        assert "not run" in text(page, section), section
    assert ("Not run yet: data split, skipped files, data audit, training history, evaluation, "
            "CAM gallery, model audit.") in text(page, "summary")
    assert "Model audit: not run (audit/audit.json is missing)." in text(page, "findings")
    assert page.images == []


def test_stages_an_ensemble_or_a_spec_never_has_are_not_asked_for(tmp_path, kit, text):
    ensemble = tmp_path / "ens"
    ensemble.mkdir()
    (ensemble / "config.yaml").write_text(yaml.safe_dump({**kit.CONFIG, "members": ["a", "b"]}))
    page = kit.parse(build_report(ensemble).read_text())
    assert page.errors == []
    assert ("Not run yet: data split, data audit, evaluation.") in text(page, "summary")
    assert "Training history: does not apply (an ensemble is not trained" in text(
        page, "findings")
    assert "Model audit: does not apply (audits need one model: audit a member)." in text(
        page, "findings")
    assert "No verdict: an ensemble has no model audit of its own" in text(page, "verdict")
    for section in ("training", "model-audit", "where-tumour"):  # so do the sections
        assert "does not apply" in text(page, section) and "not run" not in text(page, section)
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "metrics.json").write_text(json.dumps({
        "task": "binary", "classes": ["no_tumor", "tumor"], "test": None,
        "model": {"spec": "/specs/m.yaml", "format": "onnx"}}))
    page = kit.parse(build_report(spec).read_text())
    assert "Not run yet: data audit, CAM gallery, model audit." in text(page, "summary")
    assert "Run settings: does not apply (a model spec is the settings" in text(
        page, "findings")


def test_broken_and_partial_files_are_reported_not_raised(tmp_path, kit, text):
    run = kit.make_fake_run(tmp_path)
    (run / "metrics.json").write_text('{"task": "binary", ')  # a run killed mid-write
    (run / "history.csv").write_text(
        "phase,epoch,train_loss,val_loss,val_accuracy,val_balanced_accuracy,lr,seconds\n")
    (run / "data_audit" / "data_audit.json").write_text("[1, 2]")
    block = {"attention": 5, "sanity": {"passed": True}, "localization": {"iou": None}}
    audit = {"datasets": {"sartaj": block},
             "findings": [{"severity": "urgent", "check": "x", "message": "bad severity"},
                          {"severity": "warning", "check": "y", "value": None,
                           "threshold": None, "message": "kept"}, "junk"]}
    (run / "audit" / "audit.json").write_text(json.dumps(audit))
    (run / "audit" / "per_image.csv").write_text("")
    page = kit.parse(build_report(run).read_text())
    assert page.errors == []
    assert "metrics.json could not be read" in text(page, "metrics")
    assert "Unreadable: data audit, training history, evaluation." in text(page, "summary")
    (run / "audit" / "tumour_examples.npz").write_bytes(b"not an npz")
    page = kit.parse(build_report(run).read_text())
    assert "evaluation, tumour examples." in text(page, "summary")
    assert "history.csv could not be read (no epochs recorded)" in text(page, "training")
    assert "expected a JSON object, found list" in text(page, "data")
    assert "Attention: not run." in text(page, "attention")
    assert "passes the sanity check" in text(page, "sanity")
    assert "No tumour boxes were available" in text(page, "localization")
    assert page.severities_by_id["findings"] == ["warning"]
    assert "2 malformed finding(s) were left out." in text(page, "findings")
    # no per-image table: the gallery falls back to predictions.csv, which this run lacks
    assert "cannot be grouped" in text(page, "gallery")


def test_empty_cells_and_a_cut_split_csv_are_counted_not_raised(tmp_path, kit, text):
    run = kit.make_fake_run(tmp_path)
    lines = (run / "split.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("source")] = ""  # a row without its source
    (run / "split.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    page = kit.parse(build_report(run).read_text())
    assert page.errors == [] and f"{len(lines) - 1} images in" in text(page, "data")
    (run / "split.csv").write_text(lines[0] + "\n" + lines[1][:20] + "\n")  # cut mid-row
    page = kit.parse(build_report(run).read_text())
    assert page.errors == [] and "1 images in" in text(page, "data")


def test_unreadable_explanations_are_reported(tmp_path, kit, text):
    run = kit.make_fake_run(tmp_path)
    (run / "explain" / "gradcam" / "explanations.npz").write_bytes(b"not a zip")
    page = kit.parse(build_report(run).read_text())
    assert ("CAM gallery: explain/gradcam/explanations.npz could not be read (not a readable "
            "explanations .npz).") in text(page, "gallery")
    assert "CAM gallery: explain/gradcam" in text(page, "findings")  # listed among the gaps


def test_audit_per_dataset_and_per_method(tmp_path, kit, text):
    run = kit.make_fake_run(tmp_path)
    per_method = {"gradcam": {"background": 0.5, "uniform_background": 0.25},
                  "layercam": {"background": 0.1, "uniform_background": 0.25}}
    found = [{"severity": "critical", "check": "attention", "value": 2.0, "threshold": 1.5,
              "message": "[sartaj] looks outside"}]
    audit = {"datasets": {"sartaj": {"attention": per_method, "findings": found},
                          "figshare": {"attention": {"background": 0.05,
                                                     "uniform_background": 0.3}}},
             "findings": found}
    (run / "audit" / "audit.json").write_text(json.dumps(audit))
    page = kit.parse(build_report(run).read_text())
    attention = text(page, "attention")
    assert "sartaj gradcam: 50% of CAM energy" in attention
    assert "layercam: 10% of CAM energy" in attention
    assert "figshare 5% of CAM energy" in attention
    assert "[sartaj] looks outside" in text(page, "findings")
    assert "from the model audit" in text(page, "findings")
    mask = {"pointing_game": 0.5, "pointing_chance": 0.02, "energy_in_mask_ratio": 7.0,
            "dice": 0.4}
    by_method = {m: {"pointing_game": None, "energy_in_box": None, "iou": None, "mask": mask}
                 for m in ("gradcam", "gradcam++")}
    audit["datasets"]["sartaj"]["localization"] = by_method  # masks alone, two methods
    (run / "audit" / "audit.json").write_text(json.dumps(audit))
    localisation = text(kit.parse(build_report(run).read_text()), "localization")
    assert "No tumour boxes were available" not in localisation
    assert "gradcam++: Against the expert tumour masks: the maximum falls inside" in localisation


def test_several_datasets_with_findings_listed_once_at_the_top(tmp_path, kit, text):
    run = kit.make_fake_run(tmp_path)
    block = {"attention": {"background": 0.2, "uniform_background": 0.3},
             "findings": [{"severity": "warning", "check": "attention", "value": 1.0,
                           "threshold": 1.0, "message": "[a] looks around"}]}
    audit = {"run": str(run), "datasets": {"a": block, "b": {"sanity": {"passed": True}}},
             "findings": block["findings"]}
    (run / "audit" / "audit.json").write_text(json.dumps(audit))
    page = kit.parse(build_report(run).read_text())
    assert text(page, "findings").count("[a] looks around") == 1
    assert "a 20% of CAM energy" in text(page, "attention")
    assert "Attention" in text(page, "attention") and "b " not in text(page, "attention")
    assert "b The maps change" in text(page, "sanity")
    assert str(run) not in text(page, "model-audit")


def _mangle(value, leaf):
    """``value`` with every number, string and bool replaced by ``leaf(value)``."""
    if isinstance(value, dict):
        return {k: _mangle(v, leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [_mangle(v, leaf) for v in value]
    return leaf(value)


@pytest.mark.parametrize("leaf", [lambda v: None, lambda v: "x", lambda v: [], lambda v: {}],
                         ids=["null", "text", "list", "object"])
def test_values_of_the_wrong_type_never_crash_the_report(tmp_path, kit, leaf):
    run = kit.make_fake_run(tmp_path)
    for relpath in ("metrics.json", "data_audit/data_audit.json", "audit/audit.json"):
        data = json.loads((run / relpath).read_text())
        (run / relpath).write_text(json.dumps(_mangle(data, leaf)))
    page = kit.parse(build_report(run).read_text())
    assert page.errors == []
    assert len(page.ids) == len(set(page.ids))


def test_not_a_run_is_a_one_line_error(tmp_path):
    with pytest.raises(BraincamError, match="does not look like a braincam run"):
        build_report(tmp_path)
    with pytest.raises(BraincamError, match="is not a directory"):
        build_report(tmp_path / "nowhere")


def test_spec_model_and_skipped_parts_are_stated(tmp_path, kit, text):
    run = kit.make_fake_run(tmp_path)
    audit = {"run": None, "model": {"spec": "/specs/m.yaml", "format": "onnx",
                                    "path": "/models/m.onnx", "classes": ["no_tumor", "tumor"],
                                    "gradients": False, "conversion_max_diff": None},
             "skipped": [{"methods": ["gradcam"], "checks": ["sanity"],
                          "reason": "onnx2torch cannot convert the model (Fancy)"}],
             "datasets": {"a": {"attention": {"background": 0.2, "uniform_background": 0.3}}},
             "findings": []}
    (run / "audit" / "audit.json").write_text(json.dumps(audit))
    page = kit.parse(build_report(run).read_text())
    section = text(page, "model-audit")
    assert "Model from the spec /specs/m.yaml: onnx file /models/m.onnx" in section
    assert "Skipped gradcam, sanity: onnx2torch cannot convert the model (Fancy)." in section


def test_metrics_rows_score_extra_sets_without_their_seen_copies(tmp_path):
    from braincam.report.metrics import collect_metrics

    def m(n, bacc):
        return {"n": n, "accuracy": bacc, "balanced_accuracy": bacc, "auc": None}

    (tmp_path / "metrics.json").write_text(json.dumps({
        "task": "binary", "classes": ["no_tumor", "tumor"], "test": m(394, 0.93),
        "extra": {"figshare": m(543, 0.99), "br35h": m(100, 0.97)},
        "extra_seen": {"figshare": 430, "br35h": 0},
        "extra_leak_free": {"figshare": m(113, 0.97), "br35h": m(100, 0.97)},
        "extra_combined": m(643, 0.98), "extra_combined_leak_free": m(213, 0.975),
    }))
    section = collect_metrics(RunDir(tmp_path))
    assert [(r.name, r.n) for r in section.rows] == [
        ("test set", 394), ("figshare", 543), ("figshare, leak-free", 113), ("br35h", 100),
        ("other datasets pooled", 643), ("other datasets pooled, leak-free", 213)]
    assert any("figshare without the 430 images the model learnt from (n = 113)" in sentence
               for sentence in section.sentences)


def test_the_group_interval_follows_the_image_interval_where_copies_group_images(tmp_path):
    from braincam.report.metrics import collect_metrics

    test = {"n": 394, "accuracy": 0.934, "balanced_accuracy": 0.922, "auc": 0.97,
            "ci": {"balanced_accuracy": [0.887, 0.953]}, "n_groups": 279,
            "ci_groups": {"balanced_accuracy": [0.875, 0.96]}}
    (tmp_path / "metrics.json").write_text(json.dumps({
        "task": "binary", "classes": ["no_tumor", "tumor"], "test": test,
        "extra": {"br35h": dict(test, n=279)}}))  # as many groups as images: no second one
    assert collect_metrics(RunDir(tmp_path)).sentences == [
        "Balanced accuracy on the whole test set (n = 394) is 0.922 [0.887, 0.953] ([0.875, "
        "0.960] resampling its 279 groups of copies).",
        "On br35h (another dataset) (n = 279) it is 0.922 [0.887, 0.953], the same."]


def test_a_set_of_one_class_is_not_compared_as_a_balanced_accuracy(tmp_path):
    from braincam.report.metrics import collect_metrics

    def m(n, bacc, supports):
        return {"n": n, "accuracy": bacc, "balanced_accuracy": bacc, "auc": None,
                "per_class": {c: {"support": k} for c, k in zip(("no_tumor", "tumor"),
                                                                 supports, strict=True)}}

    (tmp_path / "metrics.json").write_text(json.dumps({
        "task": "binary", "classes": ["no_tumor", "tumor"], "test": m(394, 0.922, (105, 289)),
        "test_leak_free": m(129, 0.891, (0, 129))}))
    sentences = collect_metrics(RunDir(tmp_path)).sentences
    assert sentences[1] == ("The leak-free test subset (n = 129) holds tumor images only: its "
                            "recall of them is 0.891, not comparable with a balanced accuracy.")
    assert not any("lower" in sentence for sentence in sentences)
    (tmp_path / "metrics.json").write_text(json.dumps({  # the first set holds one class
        "task": "binary", "classes": ["no_tumor", "tumor"], "test": m(8, 1.0, (0, 8)),
        "extra": {"ph2": m(24, 0.5, (12, 12))}}))
    assert collect_metrics(RunDir(tmp_path)).sentences == [
        "The whole test set (n = 8) holds tumor images only: its recall of them is 1, not "
        "comparable with a balanced accuracy.",
        "Balanced accuracy on ph2 (another dataset) (n = 24) is 0.5."]


def test_model_audit_sentence_counts_copies_of_training_images():
    from braincam.report.model_audit import _dataset_sentence

    block = {"n_images": 113, "n_seen": 0, "accuracy": 0.973, "methods": ["gradcam"]}
    assert _dataset_sentence("figshare", block) == (
        "figshare: 113 images audited, accuracy 0.973; explained with gradcam.")
    assert _dataset_sentence("figshare", {**block, "n_images": 543, "n_seen": 430}) == (
        "figshare: 543 images audited (430 of them copies of images the model or its guide "
        "learnt from), accuracy 0.973; explained with gradcam.")


def test_a_guided_run_reports_its_segmenters_held_out_dice(tmp_path, kit, text):
    """The guide names a segment run and dataset folders (which trained run/guide): both
    runs' metrics.json figures, in the Training section; a member without one is left out."""
    import json

    import yaml

    run = kit.make_fake_run(tmp_path)
    seg, data = tmp_path / "seg", tmp_path / "figshare"
    data.mkdir()
    for folder, dice in ((seg, 0.7778), (run / "guide", 0.8123)):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")  # marks a segment run
        (folder / "config.yaml").write_text("segment: {size: 192}\n")
        (folder / "metrics.json").write_text(json.dumps({
            "n_tumour_images": 559, "mean_dice": dice,
            "per_class_dice": {"glioma": 0.708, "meningioma": 0.864}, "detection_rate": 0.882,
            "n_tumour_free_images": 179, "false_positive_rate": 0.028}))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["guide"] = f"{seg},{data}"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    page = kit.parse(build_report(run).read_text())
    assert text(page, "guide-scores") == (
        f"segmenter tumour slices mean Dice by class detected tumour-free images marked "
        f"{seg} 559 0.778 glioma 0.708, meningioma 0.864 0.882 179 0.028 "
        f"{run / 'guide'} 559 0.812 glioma 0.708, meningioma 0.864 0.882 179 0.028")
    build_report(run / "guide")  # its own page: the classifier's report links to it
    page = kit.parse(build_report(run).read_text())
    assert f"{run / 'guide'} ( its page ) 559 0.812" in text(page, "guide-scores")
    assert "braincam segmenter report: guide" in (run / "guide" / "report.html").read_text()
    assert f"{seg} 559 0.778" in text(page, "guide-scores")  # no page: no link
    assert '<a href="guide/report.html">its page</a>' in (run / "report.html").read_text()
    (seg / "metrics.json").write_text("{")  # unreadable: that row goes, the other stays
    page = kit.parse(build_report(run).read_text())
    assert str(seg) not in text(page, "guide-scores")
    assert f"{run / 'guide'} ( its page ) 559 0.812" in text(page, "guide-scores")
