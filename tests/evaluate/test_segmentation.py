"""Segmentation metrics against hand computations, outlines, and masks of new images."""

from __future__ import annotations

import numpy as np
import pytest

from braincam.evaluate.segmentation import (
    PRED_BGR,
    dice,
    iou,
    outline,
    overlay_rows,
    predict_files,
    segmentation_metrics,
)


def _square(x0, y0, side, size=10):
    m = np.zeros((size, size), bool)
    m[y0:y0 + side, x0:x0 + side] = True
    return m


def test_dice_and_iou_by_hand():
    truth, pred = _square(0, 0, 4), _square(2, 0, 4)  # 16 px each, overlap 2 x 4 = 8
    assert dice(pred, truth) == pytest.approx(2 * 8 / 32)  # 0.5
    assert iou(pred, truth) == pytest.approx(8 / 24)
    assert dice(truth, truth) == iou(truth, truth) == 1.0
    empty = np.zeros_like(truth)
    assert dice(empty, empty) == iou(empty, empty) == 1.0
    assert dice(pred, empty) == iou(pred, empty) == 0.0


def test_metrics_average_tumour_images_and_count_false_positives():
    truth = np.stack([_square(0, 0, 4), _square(0, 0, 4), _square(5, 5, 2),
                      np.zeros((10, 10), bool), np.zeros((10, 10), bool),
                      np.zeros((10, 10), bool)])
    pred = np.stack([_square(0, 0, 4),  # Dice 1
                     _square(2, 0, 4),  # Dice 0.5 (not > 0.5: not detected)
                     np.zeros((10, 10), bool),  # missed: Dice 0
                     _square(1, 1, 1),  # a false positive
                     np.zeros((10, 10), bool), np.zeros((10, 10), bool)])
    labels = ["glioma", "glioma", "pituitary", "no_tumor", "no_tumor", "no_tumor"]
    sources = ["fig", "fig", "fig", "br35h", "br35h", "other"]
    m = segmentation_metrics(pred, truth, labels, sources)
    assert m["n_tumour_images"] == 3 and m["n_tumour_free_images"] == 3
    assert m["mean_dice"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["mean_iou"] == pytest.approx((1 + 8 / 24 + 0) / 3)
    assert m["per_class_dice"] == {"glioma": pytest.approx(0.75), "pituitary": 0.0}
    assert m["detection_rate"] == pytest.approx(1 / 3)
    assert m["false_positive_rate"] == pytest.approx(1 / 3)
    assert m["false_positive_rate_by_source"] == {"br35h": 0.5, "other": 0.0}
    # every image: the tumour Dices, 0 for the false positive, 1 for each clean tumour-free one
    assert m["all_image_dice"] == pytest.approx((1 + 0.5 + 0 + 0 + 1 + 1) / 6)


def test_outline_draws_the_contour_only():
    image = np.full((10, 10), 100, np.uint8)
    out = outline(image, [(_square(2, 2, 5), PRED_BGR)])
    red = np.all(out == PRED_BGR, axis=2)
    assert red.sum() == 16  # the 5 x 5 square's border: 4 * 5 - 4 pixels
    assert not red[4, 4] and (out[~red] == 100).all()


def test_overlay_rows_spread_from_worst_to_best_within_each_group_preferring_some():
    groups = ["a"] * 7 + ["b"] * 3
    keys = [0.6, 0.1, 0.9, 0.3, 0.5, 0.2, 0.8, 1.0, 0.0, 0.4]
    rows = overlay_rows(groups, keys, 3)
    assert rows == [1, 4, 2, 8, 9, 7]  # a: 0.1, 0.5, 0.9; b: all three, ascending
    assert overlay_rows(groups, keys, 1) == [1, 8]
    preferred = np.array([True, False, True, False, False, False, True, False, False, False])
    # a's preferred rows only (0.6, 0.9, 0.8 -> worst, middle, best); b has none, so any
    assert overlay_rows(groups, keys, 3, preferred) == [0, 6, 2, 8, 9, 7]
    assert overlay_rows([], [], 4) == []


def test_predict_files_writes_masks_of_images_slices_and_nifti_volumes(
        tmp_path, segmenter_run, disc_segmenter, write_nifti):
    """Every image and chosen slice gets its mask (the known disc mapped back) and outline; a
    NIfTI volume also gets a mask volume on its own voxel grid that holds the same slices, and
    one masks.csv row after its slices with the voxels and millilitres."""
    import cv2
    import nibabel as nib
    import pandas as pd

    from braincam.data.inputs import expand_inputs
    from braincam.data.nifti import read_volume
    from braincam.data.preprocess import preprocess, preprocess_config
    from braincam.models.segment import load_segmenter

    rows, cols = np.mgrid[:40, :32]
    head = (((rows - 20) / 16) ** 2 + ((cols - 16) / 12) ** 2 <= 1).astype(np.uint8) * 180
    volume = write_nifti(tmp_path / "v.nii.gz", np.stack([0 * head, head, head // 2 + 60]),
                         axcodes=("L", "P", "S"))
    (tmp_path / "other").mkdir()
    cv2.imwrite(str(tmp_path / "other" / "v.png"), head)
    segmenter = load_segmenter(segmenter_run, "cpu")
    out = tmp_path / "out"
    items = expand_inputs([volume, tmp_path / "other" / "v.png"])  # the blank slice 0 left out
    written, skipped = predict_files(segmenter, items, out)
    assert not skipped
    assert [(r["slice"], r["kind"], r["mask"]) for r in written] == [
        (1, "slice", "v_s1_mask.png"), (2, "slice", "v_s2_mask.png"),
        (None, "volume", "v_mask.nii.gz"), (None, "image", "other_v_mask.png")]
    config = preprocess_config(segmenter.meta)
    shown = read_volume(volume)
    for k in (1, 2):
        mask = np.asarray(cv2.imread(str(out / f"v_s{k}_mask.png"), cv2.IMREAD_GRAYSCALE)) > 0
        disc_segmenter.assert_matches(mask, preprocess(shown[k], config))
        assert (out / f"v_s{k}_outline.png").is_file()
    masks = read_volume(out / "v_mask.nii.gz") > 0.5
    assert not masks[0].any()
    for k in (1, 2):
        np.testing.assert_array_equal(
            masks[k], cv2.imread(str(out / f"v_s{k}_mask.png"), cv2.IMREAD_GRAYSCALE) > 0)
    source, written_volume = nib.load(volume), nib.load(out / "v_mask.nii.gz")
    assert written_volume.shape == source.shape
    np.testing.assert_allclose(written_volume.affine, source.affine)
    voxels = written[2]["tumour_pixels"]
    assert voxels == written[0]["tumour_pixels"] + written[1]["tumour_pixels"] == masks.sum() > 0
    assert written[2]["tumour_ml"] == pytest.approx(voxels * 0.9 * 0.9 * 5.0 / 1000, abs=1e-3)
    table = pd.read_csv(out / "masks.csv")
    assert list(table.columns) == ["path", "slice", "kind", "mask", "tumour_pixels", "tumour_ml"]
    assert table["slice"].isna().tolist() == [False, False, True, True]
    assert table["tumour_ml"].notna().tolist() == [False, False, True, False]


def test_predict_files_gives_each_input_its_own_files(tmp_path, segmenter_run, write_nifti):
    """Inputs whose stems meet, the ``<parent>_<stem>`` fallback included (``a/x/scan.png``,
    ``b/x/scan.png``, ``c/x/scan.png``), and an image named like a volume's slice
    (``vol_s1.png`` beside ``vol.nii.gz``) each get masks and outlines of their own: no file
    is written twice, and every masks.csv row's file holds that input's mask."""
    import cv2

    from braincam.data.inputs import expand_inputs
    from braincam.models.segment import load_segmenter

    rows, cols = np.mgrid[:40, :32]
    head = (((rows - 20) / 16) ** 2 + ((cols - 16) / 12) ** 2 <= 1).astype(np.uint8) * 180
    paths = []
    for folder, image in (("a", head), ("b", 0 * head), ("c", head // 2 + 60)):
        (tmp_path / folder / "x").mkdir(parents=True)
        paths.append(tmp_path / folder / "x" / "scan.png")
        cv2.imwrite(str(paths[-1]), image)
    paths.append(write_nifti(tmp_path / "vol.nii.gz", np.stack([head, head // 2 + 60]),
                             axcodes=("L", "P", "S")))
    paths.append(tmp_path / "vol_s1.png")
    cv2.imwrite(str(paths[-1]), 0 * head)
    out = tmp_path / "out"
    written, skipped = predict_files(load_segmenter(segmenter_run, "cpu"), expand_inputs(paths),
                                     out)
    assert not skipped
    masks = [r["mask"] for r in written]
    assert len(masks) == len(set(masks)) == 7
    outlines = sorted(p.name for p in out.glob("*_outline.png"))
    assert len(outlines) == 6
    for row in written:
        if row["kind"] != "volume":
            mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_GRAYSCALE) > 0
            assert mask.sum() == row["tumour_pixels"]


def test_a_taken_stem_of_a_file_in_the_working_folder_takes_that_folders_name(tmp_path,
                                                                              monkeypatch):
    """``scan.png scan.dcm`` given in the working folder: the second is ``<folder>_scan``,
    not ``_scan``."""
    from braincam.evaluate.segmentation import _unique_stem

    (tmp_path / "study").mkdir()
    monkeypatch.chdir(tmp_path / "study")
    assert _unique_stem("scan.png", set()) == "scan"
    assert _unique_stem("scan.dcm", {"scan"}) == "study_scan"
    assert _unique_stem("other/scan.dcm", {"scan", "other_scan"}) == "other_scan_2"


def test_each_series_of_a_folder_is_named_like_predicts_overlays(tmp_path, segmenter_run,
                                                                 write_dicom):
    """Two series in one folder: ``<folder>_series<N>_s<k>``, no ``#`` in a file name."""
    from braincam.data.inputs import expand_inputs
    from braincam.models.segment import load_segmenter

    rows, cols = np.mgrid[:40, :32]
    head = (((rows - 20) / 16) ** 2 + ((cols - 16) / 12) ** 2 <= 1).astype(np.uint8) * 180
    folder = tmp_path / "ser"
    folder.mkdir()
    for uid, number in (("1.2.826.0.1.7", 3), ("1.2.826.0.1.9", 7)):
        for k in (1, 2):
            write_dicom(folder / f"{number}_{k}.dcm", head, instance=k, series=(uid, number))
    out = tmp_path / "out"
    written, skipped = predict_files(load_segmenter(segmenter_run, "cpu"),
                                     expand_inputs([folder]), out)
    assert not skipped
    assert [r["mask"] for r in written] == [
        f"ser_series{n}_s{k}_mask.png" for n in (3, 7) for k in (0, 1)]
    assert sorted(p.name for p in out.glob("*.png")) == [
        f"ser_series{n}_s{k}_{kind}.png" for n in (3, 7) for k in (0, 1)
        for kind in ("mask", "outline")]
