"""The "Where is the tumour?" section: example panels from tumour_examples.npz and the
localisation table from audit.json's localization.mask."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image

from braincam.audit.model.examples import EXAMPLES_FILE, TumourExamples
from braincam.report import build_report
from braincam.report.tumour import MASK_RGB, PREDICTED_RGB, outline

S = 32
MASK_BLOCK = {"n_images": 3, "pointing_game": 0.6667, "pointing_chance": 0.0625,
              "pointing_ceiling": 0.75,
              "energy_in_mask": 0.25, "mask_area": 0.0625, "energy_in_mask_ratio": 4.0,
              "iou": 0.1111, "dice": 0.2,
              "by_class": {"glioma": {"n_images": 2, "pointing_game": 0.5, "dice": 0.3125}},
              "by_size": {"small": {"n_images": 1, "pointing_game": 1.0, "dice": 0.4375}}}


def examples(n: int, predicted: bool) -> TumourExamples:
    images = np.full((n, S, S), 60, np.uint8)
    masks = np.zeros((n, S, S), bool)
    masks[:, 8:16, 8:16] = True
    images[masks] = 220
    maps = np.zeros((n, S, S), np.float32)
    maps[:, 10:14, 10:14] = 1.0
    return TumourExamples(
        "gradcam", images, masks, maps, np.array([f"/d/glioma/{i}.jpg" for i in range(n)]),
        np.array(["figshare"] * n), np.array(["glioma"] * n), np.array(["tumor"] * n),
        np.array(["tumor"] * n), masks.copy() if predicted else None)


def decode(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def make_run(tmp_path, kit, predicted: bool):
    run = kit.make_fake_run(tmp_path)
    audit = json.loads((run / "audit" / "audit.json").read_text())
    next(iter(audit["datasets"].values()))["localization"]["mask"] = MASK_BLOCK
    (run / "audit" / "audit.json").write_text(json.dumps(audit))
    examples(2, predicted).save(run / "audit" / EXAMPLES_FILE)
    html = build_report(run).read_text(encoding="utf-8")
    return kit.parse(html)


def test_panels_show_image_outline_and_map_side_by_side(tmp_path, kit):
    page = make_run(tmp_path, kit, predicted=False)
    assert page.errors == [] and page.ids.count("where-tumour") == 1
    shown = [img for img in page.images if img.get("alt") in ("image", "expert mask", "map",
                                                               "predicted mask")]
    assert [img["alt"] for img in shown] == ["image", "expert mask", "map"] * 2
    expert = decode(shown[1]["src"])
    green = np.all(expert == MASK_RGB, axis=-1)
    assert green.any() and green[8:16, 8:16].any() and not green[20:, 20:].any()
    assert np.array_equal(decode(shown[0]["src"]), np.full((S, S), 60, np.uint8) +
                          np.pad(np.full((8, 8), 160, np.uint8), ((8, 16), (8, 16))))
    words = kit.text(page, "where-tumour")
    assert "the predicted-mask panel is left out" in words
    assert "glioma, predicted tumor (0.jpg)" in words


def test_predicted_mask_panel_when_the_examples_carry_one(tmp_path, kit):
    page = make_run(tmp_path, kit, predicted=True)
    predicted = [img for img in page.images if img.get("alt") == "predicted mask"]
    assert len(predicted) == 2
    assert np.all(decode(predicted[0]["src"]) == PREDICTED_RGB, axis=-1).any()
    assert "left out" not in kit.text(page, "where-tumour")


def test_localisation_table_rows_and_numbers(tmp_path, kit):
    page = make_run(tmp_path, kit, predicted=False)
    assert ("Against the expert tumour masks: the maximum falls inside the mask in 67% of "
            "images (chance 6.2%; the map's grid can point into 75% of the masks at most), "
            "with 4 times the mask's share of the energy and top-k Dice 0.2.") in kit.text(
                page, "localization")
    words = kit.text(page, "where-tumour")
    assert "gradcam: all 3 0.667 0.0625 0.75 0.25 4 0.111 0.2" in words
    assert "gradcam: class glioma 2 0.5 n/a n/a n/a n/a n/a 0.312" in words
    assert "gradcam: size small 1 1 n/a n/a n/a n/a n/a 0.438" in words


def test_without_examples_the_section_says_not_run(tmp_path, kit):
    run = kit.make_fake_run(tmp_path)
    page = kit.parse(build_report(run).read_text(encoding="utf-8"))
    assert "Tumour examples: not run" in kit.text(page, "where-tumour")


def test_a_truncated_examples_file_is_reported_unreadable(tmp_path, kit):
    run = kit.make_fake_run(tmp_path)
    examples(2, False).save(run / "audit" / EXAMPLES_FILE)
    whole = (run / "audit" / EXAMPLES_FILE).read_bytes()
    (run / "audit" / EXAMPLES_FILE).write_bytes(whole[: len(whole) // 2])
    page = kit.parse(build_report(run).read_text(encoding="utf-8"))
    assert page.errors == []
    assert "Tumour examples: audit/tumour_examples.npz could not be read" in kit.text(
        page, "where-tumour")


def test_outline_draws_only_the_contour():
    mask = np.zeros((S, S), bool)
    mask[4:12, 4:12] = True
    out = outline(np.zeros((S, S), np.uint8), mask, (0, 255, 0))
    drawn = np.all(out == (0, 255, 0), axis=-1)
    assert drawn[4, 4:12].all() and drawn[4:12, 4].all() and not drawn[6:10, 6:10].any()
    assert not drawn[~mask].any()


def test_examples_round_trip_without_pickle(tmp_path):
    ex = examples(3, predicted=False)
    ex.save(tmp_path / "e.npz")
    back = TumourExamples.load(tmp_path / "e.npz")
    assert back.method == "gradcam" and back.predicted is None
    np.testing.assert_array_equal(back.masks, ex.masks)
    np.testing.assert_array_equal(back.paths, ex.paths)
    np.testing.assert_allclose(back.maps, ex.maps)


def test_lesion_views_are_described_in_the_counterfactual_section(tmp_path, kit):
    run = kit.make_fake_run(tmp_path)
    audit = json.loads((run / "audit" / "audit.json").read_text())
    next(iter(audit["datasets"].values()))["counterfactual"] |= {
        "lesion_view_tumor_recall": 0.9, "lesion_view_clear_recall": 0.6,
        "lesion_view_balanced_accuracy": 0.75, "lesion_view_auc": 0.8125, "n_lesion_view": 40}
    (run / "audit" / "audit.json").write_text(json.dumps(audit))
    page = kit.parse(build_report(run).read_text(encoding="utf-8"))
    assert ("Cut from the same 40 slices, a view holding the tumour and a view of tumour-free "
            "brain, each enlarged to the input: the model finds the tumour in 90% of the tumour "
            "views and calls 60% of the tumour-free views tumour-free (balanced accuracy 0.75, "
            "AUC 0.812).") in kit.text(page, "counterfactual")
