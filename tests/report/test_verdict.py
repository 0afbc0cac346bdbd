"""The report's verdict on fixture audits (a shortcut model, a tumour-driven one, a model
without skill, no counterfactuals), the grouping of related findings, and the verdict at
the top of a built report."""

from __future__ import annotations

import json

from braincam.audit.findings import Finding
from braincam.report import build_report
from braincam.report.findings import group_findings, parse_findings
from braincam.report.verdict import collect_verdict

METRICS = {"test": {"accuracy": 0.98}}
SHORTCUT_CF = {  # a marker reader: right with the background alone, chance without it
    "n_images": 32, "accuracy": 0.96875, "background_only_survival": 0.9375,
    "background_only_accuracy": 0.90625, "head_only_flip_rate": 0.46875,
    "head_only_accuracy": 0.5, "intensity_swap_flip_rate": 0.0625,
    "intensity_swap_accuracy": 0.9375,
}
TUMOUR_CF = {  # looks at the tumour: inpainting it costs the tumour images their accuracy
    "n_images": 32, "accuracy": 0.90625, "background_only_survival": 0.5,
    "background_only_accuracy": 0.5, "head_only_flip_rate": 0.0, "head_only_accuracy": 0.90625,
    "intensity_swap_flip_rate": 0.0625, "intensity_swap_accuracy": 0.875,
    "tumor_removal_flip_rate": 0.75, "tumor_removal_accuracy": 0.1875,
    "tumor_removal_original_accuracy": 0.9375,
}


def audit(cf, classes=("no_tumor", "tumor")):
    block = {"dataset": "phantoms", "classes": list(classes), "accuracy": cf.get("accuracy"),
             "attention": {"background": 0.4}, "counterfactual": cf}
    return {"datasets": {"phantoms": block}, "findings": []}


def critical(check):
    return Finding("critical", check, 0.9, 0.8, "bad")


def test_a_shortcut_model_is_named_with_accuracy_beside_each_flip_rate():
    partly = collect_verdict(METRICS, audit(dict(SHORTCUT_CF, head_only_accuracy=0.72)), [])
    assert "0.72 (flip rate 47%): part of the model's above-chance accuracy" in partly.text
    verdict = collect_verdict(METRICS, audit(SHORTCUT_CF), [critical("attention.region.marker"),
                                                          critical("property.background")])
    assert verdict.kind == "shortcut"
    assert verdict.text == (
        "The model's skill comes from a shortcut, not from the tumour: test accuracy 0.98 "
        "(0.97 on the 32 audited images); with the area outside the head blanked, 0.50 (flip "
        "rate 47%): all of the model's above-chance accuracy comes from outside the head; with "
        "the head replaced by background, still 0.91 (94% of predictions unchanged): the "
        "background alone tells the class. Critical findings: attention.region.marker, "
        "property.background.")
    assert len(verdict.evidence) == 2  # the intensity swap costs 3 points: not evidence


def test_with_several_audited_sets_the_verdict_names_the_one_it_reads():
    """A model spec has no own data: its first --data folder is read, and named."""
    doc = audit(SHORTCUT_CF)
    doc["datasets"]["other"] = dict(doc["datasets"]["phantoms"], dataset="other")
    verdict = collect_verdict(METRICS, doc, [])
    assert "(0.97 on the 32 audited images of phantoms)" in verdict.text
    assert "audited images)" in collect_verdict(METRICS, audit(SHORTCUT_CF), []).text


def test_a_tumour_driven_model_is_credited_from_the_tumour_removal():
    verdict = collect_verdict(METRICS, audit(TUMOUR_CF), [])
    assert verdict.kind == "tumour"
    assert verdict.text == (
        "The model's skill comes from the head and the tumour: test accuracy 0.98 (0.91 on "
        "the 32 audited images); with the tumour inpainted, accuracy on the tumour images "
        "falls from 0.94 to 0.19 (flip rate 75%).")


def test_without_tumour_masks_the_head_alone_keeping_accuracy_is_the_evidence():
    cf = {k: v for k, v in TUMOUR_CF.items() if not k.startswith("tumor_removal")}
    verdict = collect_verdict(None, audit(cf), [])
    assert verdict.kind == "tumour"
    assert "with the area outside the head blanked, 0.91 (flip rate 0%); with the head " \
           "replaced by background, 0.50 (chance 0.50)" in verdict.text
    assert verdict.text.startswith("The model's skill comes from the head and the tumour: "
                                   "accuracy 0.91 on the audited images")


def test_with_tumours_annotated_a_model_the_removal_leaves_unmoved_must_point_at_them():
    """The head alone keeps the accuracy, but inpainting the annotated tumour costs 4 points:
    the maps must find the tumour for a tumour verdict."""
    cf = dict(TUMOUR_CF, tumor_removal_accuracy=0.90625, tumor_removal_flip_rate=0.03)
    doc = audit(cf)
    doc["datasets"]["phantoms"]["localization"] = {
        "method": "gradcam", "pointing_game": 0.9, "pointing_chance": 0.05,
        "mask": {"pointing_game": 0.2, "pointing_chance": 0.03}}
    unclear = collect_verdict(METRICS, doc, [])
    assert unclear.kind == "unclear"  # the mask wins over the box
    assert unclear.text.endswith("by less than 15 points either way, and the gradcam map's "
                                 "maximum falls in the tumour on only 20% of the tumour images "
                                 "(chance 3%).")
    doc["datasets"]["phantoms"]["localization"]["mask"]["pointing_game"] = 0.82
    verdict = collect_verdict(METRICS, doc, [])
    assert verdict.kind == "tumour"
    assert verdict.evidence[-1] == (
        "the gradcam map's maximum falls in the tumour on 82% of the tumour images (chance "
        "3%), though inpainting the tumour moves their accuracy only from 0.94 to 0.91")
    del doc["datasets"]["phantoms"]["localization"]  # not measured: no tumour verdict
    assert collect_verdict(METRICS, doc, []).kind == "unclear"


def test_intensity_reading_counts_as_a_shortcut():
    cf = dict(TUMOUR_CF, intensity_swap_accuracy=0.5, intensity_swap_flip_rate=0.4)
    verdict = collect_verdict(METRICS, audit(cf), [])
    assert verdict.kind == "shortcut"
    assert verdict.evidence == [
        "with each image's intensity histogram matched to another class, 0.50 (flip rate 40%): "
        "the model reads global intensity"]


def test_near_chance_and_missing_numbers_give_no_attribution():
    four = ("glioma", "meningioma", "pituitary", "no_tumor")  # chance 0.25
    assert collect_verdict(METRICS, audit(dict(SHORTCUT_CF, accuracy=0.3), four), []).kind \
        == "no_skill"
    assert collect_verdict(METRICS, audit(dict(SHORTCUT_CF, accuracy=0.4), four), []).kind \
        == "shortcut"
    near = collect_verdict(METRICS, audit(dict(SHORTCUT_CF, accuracy=0.55)), [])
    assert near.kind == "no_skill"
    assert "near chance (test accuracy 0.98 (0.55 on the 32 audited images); chance 0.50)" \
        in near.text
    flat = {"n_images": 32, "accuracy": 0.9, "head_only_accuracy": 0.85,
            "background_only_accuracy": 0.62}  # neither side
    assert collect_verdict(METRICS, audit(flat), []).kind == "unclear"
    none = collect_verdict(METRICS, None, [critical("probe.background")])
    assert none.kind == "none"
    assert none.text.endswith("Critical finding: probe.background.")
    old = audit({"background_only_survival": 0.875})  # an audit without the accuracy keys
    del old["datasets"]["phantoms"]["accuracy"]
    assert collect_verdict(METRICS, old, []).kind == "none"


def test_a_model_that_says_one_class_for_every_image_has_no_skill():
    """Five tumour images and one tumour-free, all called tumour: accuracy 0.83, balanced
    accuracy 0.50; the background alone keeps 0.83. No skill, not a shortcut."""
    one_class = {"n_images": 6, "accuracy": 5 / 6, "background_only_accuracy": 5 / 6,
                 "background_only_survival": 1.0, "head_only_accuracy": 5 / 6}
    metrics = {"test": {"accuracy": 5 / 6, "balanced_accuracy": 0.5}}
    verdict = collect_verdict(metrics, audit(one_class), [])
    assert verdict.kind == "no_skill"
    assert verdict.text.startswith("The model is near chance: test balanced accuracy 0.50")


def test_background_properties_are_one_finding_at_the_strongest_ones_place():
    findings = [
        Finding("critical", "probe.background", 0.99, 0.9, "probe"),
        Finding("warning", "property.bg_std", 0.85, 0.8, "bg_std alone separates"),
        Finding("critical", "property.bg_mean", 0.97, 0.9, "bg_mean alone separates"),
        Finding("warning", "property.width", 0.82, 0.8, "width alone separates"),
        Finding("critical", "property.bg_p99", 0.95, 0.9, "bg_p99 alone separates"),
    ]
    grouped = group_findings(findings)
    assert [f.check for f in grouped] == ["probe.background", "property.background",
                                          "property.width"]
    merged = grouped[1]
    assert (merged.severity, merged.value, merged.threshold) == ("critical", 0.97, 0.9)
    assert merged.message == ("3 background properties (bg_std, bg_mean, bg_p99); strongest: "
                              "bg_mean alone separates")
    assert group_findings(findings[:2]) == findings[:2]  # a lone member stays as it is
    parsed, dropped = parse_findings([f.to_dict() for f in findings] + ["junk"], "data audit")
    assert [p.finding for p in parsed] == grouped and dropped == 1


def test_the_report_opens_with_the_verdict(tmp_path, kit):
    run = kit.make_fake_run(tmp_path)
    doc = json.loads((run / "audit" / "audit.json").read_text())
    next(iter(doc["datasets"].values()))["counterfactual"].update(SHORTCUT_CF)
    (run / "audit" / "audit.json").write_text(json.dumps(doc))
    html = build_report(run).read_text(encoding="utf-8")
    page = kit.parse(html)
    assert page.ids.index("verdict") < page.ids.index("findings")
    verdict = kit.text(page, "verdict")
    assert verdict.startswith("Verdict The model's skill comes from a shortcut")
    assert "test accuracy 0.97 (0.97 on the 32 audited images)" in verdict
    # the model audit's critical finding is named before the data audit's
    assert verdict.endswith("Critical findings: sanity, probe_geometry.")
    assert 'class="verdict-shortcut"' in html


def test_blank_images_answered_with_one_class_are_no_background_shortcut():
    """Three gliomas and three meningiomas under a four-class model: every blank image called
    meningioma keeps 0.50, twice the four classes' chance, but no more than one answer for
    all of them gets (``majority_share``)."""
    four = ("glioma", "meningioma", "no_tumor", "pituitary")
    constant = {"n_images": 6, "accuracy": 5 / 6, "head_only_accuracy": 5 / 6,
                "background_only_accuracy": 0.5, "background_only_survival": 0.5,
                "background_only_baseline": 0.5, "majority_share": 0.5}
    metrics = {"test": {"accuracy": 0.9, "balanced_accuracy": 0.9}}
    assert collect_verdict(metrics, audit(constant, four), []).kind == "unclear"
    told = dict(constant, background_only_accuracy=5 / 6, background_only_survival=5 / 6)
    assert collect_verdict(metrics, audit(told, four), []).kind == "shortcut"
    # a model that calls 3 of 4 images tumour on balanced labels: its prediction share is no
    # constant answer's accuracy, 0.81 on blank images is a shortcut
    skewed = {"n_images": 32, "accuracy": 0.84, "head_only_accuracy": 0.72,
              "background_only_accuracy": 0.81, "background_only_survival": 0.72,
              "background_only_baseline": 0.75, "majority_share": 0.5}
    assert collect_verdict(metrics, audit(skewed), []).kind == "shortcut"
