"""The report of a segment run: a hand-written run folder in the files ``braincam segment``
writes (docs/segment.md "Files in SEG"; fixture ``kit.make_segment_run``), read back from the
HTML."""

from __future__ import annotations

import subprocess
import sys

import pytest

from braincam.models.segment import is_segment_run
from braincam.report import build_report, collect_report
from braincam.report.segmenter import SegmenterReport


def test_a_segment_run_gets_the_segmenter_report(tmp_path, kit):
    run = kit.make_segment_run(tmp_path / "seg")
    context = collect_report(run)
    assert isinstance(context, SegmenterReport)
    assert context.summary == ("Segmenter: held-out mean Dice 0.654 on 5 tumour images; "
                               "false-positive rate 0.25 on 4 tumour-free images.")
    page = kit.parse((build_report(run)).read_text(encoding="utf-8"))
    assert page.errors == []
    measures = kit.text(page, "measures")
    assert "mean Dice 0.654" in measures and "mean IoU 0.543" in measures
    assert "detection rate (Dice > 0.5) 0.6" in measures
    # mean Dice from metrics.json; image counts and detection rates from per_image.csv
    assert kit.text(page, "per-class") == (
        "class mean Dice images detection rate glioma 0.4 3 0.667 meningioma 0.9 2 1")
    assert kit.text(page, "false-positives") == "br35h 0 sartaj 0.5"
    assert kit.text(page, "rule") == ("A pixel is tumour when P(tumour) >= 0.4, on the mean of "
                                      "the image and its mirror image; chosen by validation "
                                      "all_image_dice.")
    assert kit.text(page, "candidates").endswith("yes 0.4 0.83 0.72 yes")
    assert "n pairs 3 removed any rate 0.667" in kit.text(page, "extra-1")
    assert "best epoch 2" in kit.text(page, "schedule")
    captions = [img["alt"] for img in page.images]
    # training curves, the Dice box plot, then the overlays worst first within each class
    assert captions[:2] == ["Dice per held-out image by class", "training curves"]
    assert captions[2:] == ["glioma, g1: Dice 0.10", "glioma, g3: Dice 0.70",
                            "no_tumor, image (4): Dice 0.00"]
    assert all(img["src"].startswith("data:image/png;base64,") for img in page.images)
    assert "braincam segment DATA --out SEG --epochs 2" in kit.text(page, "settings")


def test_without_validation_the_page_says_the_last_epoch_is_kept(tmp_path, kit):
    import pandas as pd

    run = kit.make_segment_run(tmp_path / "seg")
    history = pd.read_csv(run / "history.csv")
    history[["val_dice", "val_false_positive_rate", "val_score"]] = float("nan")
    history.to_csv(run / "history.csv", index=False)  # as --val-fraction 0 writes it
    assert not collect_report(run).training.validated
    html = build_report(run).read_text(encoding="utf-8")
    assert "Without validation images the last epoch is kept." in html
    assert "The kept epoch has the highest val score" not in html


def test_missing_parts_read_not_run(tmp_path, kit):
    run = kit.make_segment_run(tmp_path / "seg", overlays=False)
    for name in ("metrics.json", "history.csv", "per_image.csv"):
        (run / name).unlink()
    context = collect_report(run)
    assert context.summary == "Segmenter: Held-out scores: not run (metrics.json is missing)."
    page = kit.parse(build_report(run).read_text(encoding="utf-8"))
    assert page.errors == [] and page.images == []
    assert "not run (metrics.json is missing)" in kit.text(page, "held-out")
    assert "not run (history.csv is missing)" in kit.text(page, "training")
    kept = kit.make_segment_run(tmp_path / "seg2", overlays=False)
    (kept / "per_image.csv").unlink()  # the counts and the box plot come from it
    page = kit.parse(build_report(kept).read_text(encoding="utf-8"))
    assert "Per-image scores: not run (per_image.csv is missing)." in kit.text(page, "held-out")
    assert "No overlay pictures" in kit.text(page, "overlays")


def test_which_runs_are_segment_runs(tmp_path, kit, segmenter_run):
    assert is_segment_run(kit.make_segment_run(tmp_path / "seg"))
    assert is_segment_run(segmenter_run)  # no config.yaml: the model file says so
    assert not is_segment_run(kit.make_fake_run(tmp_path / "classifier"))
    assert not is_segment_run(tmp_path / "nothing-here")
    broken = kit.make_segment_run(tmp_path / "broken")  # neither config nor model readable
    (broken / "config.yaml").unlink()
    (broken / "model.safetensors").write_text("garbage")
    assert is_segment_run(broken)  # its per_image.csv says so: a segmenter's page, not a
    assert isinstance(collect_report(broken), SegmenterReport)  # classifier's


@pytest.mark.parametrize("flag", [[], ["--out"]])
def test_the_command_writes_the_page_and_prints_its_path(tmp_path, kit, flag):
    run = kit.make_segment_run(tmp_path / "seg")
    out = tmp_path / "elsewhere"
    args = [str(run), *([*flag, str(out)] if flag else [])]
    result = subprocess.run([sys.executable, "-m", "braincam", "report", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    target = (out if flag else run) / "report.html"
    assert result.stdout.strip() == str(target)
    assert result.stderr.startswith("Segmenter: held-out mean Dice 0.654")
    assert "braincam segmenter report: seg" in target.read_text(encoding="utf-8")


def test_many_overlays_of_a_class_are_spread_from_the_worst_to_the_best(tmp_path, kit):
    from PIL import Image

    from braincam.report.segmenter import OVERLAYS_PER_CLASS

    run = kit.make_segment_run(tmp_path / "seg", overlays=False)
    (run / "overlays").mkdir()
    for k in range(12):  # Dice 0.00, 0.05, ..., 0.55
        Image.new("RGB", (8, 8)).save(run / "overlays" / f"glioma_{k}_dice{k / 20:.2f}.png")
    captions = [f.caption for f in collect_report(run).overlays]
    assert len(captions) == OVERLAYS_PER_CLASS == 8
    assert captions[0] == "glioma, 0: Dice 0.00" and captions[-1] == "glioma, 11: Dice 0.55"
    assert captions == sorted(captions, key=lambda c: float(c.rsplit(" ", 1)[1]))


def test_a_segmenters_scores_on_other_folders_get_the_same_page(tmp_path, kit):
    """``braincam segment SEG --evaluate DATA --out DIR``: DIR's page names what was scored,
    shows the figures without the images a segmenter learnt from, and no run sections."""
    import json

    folder = kit.make_segment_run(tmp_path / "score")
    for name in ("config.yaml", "history.csv", "split.csv"):
        (folder / name).unlink()
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.update(segmenters=["runs/seg"], data=["hospital"], n_seen=4,
                   unseen={"n_tumour_images": 2, "mean_dice": 0.5, "per_class_dice": {}})
    (folder / "metrics.json").write_text(json.dumps(metrics))
    assert not is_segment_run(folder)
    context = collect_report(folder)
    assert isinstance(context, SegmenterReport)
    assert context.summary.startswith("Segmenter: mean Dice 0.654 on 5 tumour images;")
    page = kit.parse(build_report(folder).read_text(encoding="utf-8"))
    assert page.errors == [] and "data" not in page.ids and "training" not in page.ids
    assert kit.text(page, "held-out").startswith(
        "Scores Scores of runs/seg on hospital (braincam segment SEG --evaluate).")
    assert "Without the 4 images a segmenter learnt from or copies of them n tumour images 2 " \
           "mean dice 0.5" in kit.text(page, "held-out")
    assert "does not apply (an --evaluate folder trains nothing" in kit.text(page, "settings")


def test_a_mean_of_segmenters_gives_each_members_rule(tmp_path, kit):
    import json

    folder = kit.make_segment_run(tmp_path / "score")
    for name in ("config.yaml", "history.csv", "split.csv"):
        (folder / name).unlink()
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.update(segmenters=["s1", "s2"], data=["ds"], threshold=0.5, flip_average=False,
                   decision=None, member_rules=[{"flip_average": True, "threshold": 0.5},
                                                {"flip_average": False, "threshold": 0.6}])
    (folder / "metrics.json").write_text(json.dumps(metrics))
    page = kit.parse(build_report(folder).read_text(encoding="utf-8"))
    assert kit.text(page, "rule") == (
        "A pixel is tumour when the mean of the 2 segmenters' probabilities, each rescaled to "
        "its own rule (P >= 0.5 on the mirror average, P >= 0.6 on the image), is >= 0.5.")
