"""``braincam radiomics`` end to end on a small generated dataset with expert masks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from braincam.cli import app

# class -> (tumour radius, tumour brightness over the head): three visibly different types
TYPES = {"glioma": (10, 0.35), "meningioma": (22, 0.15), "pituitary": (6, 0.5)}


def write_dataset(root, per_class: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :128]
    head = (yy - 64) ** 2 / 56**2 + (xx - 64) ** 2 / 48**2 <= 1
    number = 0
    for label, (radius, lift) in TYPES.items():
        (root / label).mkdir(parents=True)
        (root / "masks" / label).mkdir(parents=True)
        for _ in range(per_class):
            number += 2  # a gap in the numbering: every image is its own patient
            r = radius * rng.uniform(0.8, 1.2)
            cy, cx = rng.uniform(45, 83, size=2)
            tumour = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            grey = np.where(head, 0.35 + 0.04 * rng.standard_normal(head.shape), 0.0)
            grey = np.where(tumour, grey + lift, grey)
            Image.fromarray(np.clip(grey * 255, 0, 255).astype(np.uint8)).save(
                root / label / f"{number}.png"
            )
            Image.fromarray(tumour.astype(np.uint8) * 255).save(
                root / "masks" / label / f"{number}.png"
            )
    (root / "glioma" / "999.png").write_bytes((root / "glioma" / "2.png").read_bytes())
    return root  # glioma/999.png has no mask


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = write_dataset(tmp_path_factory.mktemp("data") / "types")
    out = tmp_path_factory.mktemp("out") / "rad"
    runner = CliRunner()
    invoke = runner.invoke(app, ["radiomics", str(root), "--out", str(out), "--folds", "3",
                                 "--workers", "1"])
    return invoke, out


def test_features_csv_has_one_row_per_masked_image(result):
    invoke, out = result
    assert invoke.exit_code == 0, invoke.output
    table = pd.read_csv(out / "features.csv")
    assert len(table) == 30
    assert list(table.columns[:3]) == ["path", "label", "group"]
    assert {"shape2D_PixelSurface", "glcm_Contrast", "ngtdm_Busyness"} <= set(table.columns)
    areas = table.groupby("label")["shape2D_PixelSurface"].median()
    assert areas["meningioma"] > areas["glioma"] > areas["pituitary"]
    # the ring (default 8 px) and the location: the tumours lie inside the 128 px heads
    assert {"ring_glcm_Contrast", "ring_firstorder_Mean", "location_edge_distance"} <= set(
        table.columns
    )
    assert not any(c.startswith("ring_shape2D") for c in table.columns)
    assert table["ring_firstorder_Mean"].notna().all()
    assert (table["ring_firstorder_Mean"] < table["firstorder_Mean"]).all()  # tumours are bright
    assert table["location_distance"].between(0, 0.5).all()
    ratio = table.groupby("label")["location_area_ratio"].median()
    assert ratio["meningioma"] > ratio["glioma"] > ratio["pituitary"]


def test_an_image_without_a_mask_is_skipped_with_its_reason(result):
    _, out = result
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["path"].str.endswith("999.png").tolist() == [True]
    assert skipped["reason"].tolist() == ["no tumour mask"]


def test_summary_reports_grouped_cv_of_both_baselines(result):
    invoke, out = result
    summary = json.loads((out / "radiomics.json").read_text())
    assert summary["n_images"] == 30 and summary["classes"] == list(TYPES)
    assert summary["config"]["bin_width"] == pytest.approx(1 / 32)
    assert summary["config"]["ring"] == 8
    assert summary["config"]["families"] == [
        "shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "location"
    ]
    assert summary["n_features"] == 102 + 93 + 5  # tumour, ring, location
    assert summary["config"]["library"].startswith("pyradiomics")
    assert set(summary["cv"]["models"]) == {"logistic-l1", "gradient-boosting"}
    # the types differ in size and brightness (boosting needs more than 20 training images)
    metrics = summary["cv"]["models"]["logistic-l1"]["metrics"]
    assert metrics["accuracy"] > 0.8
    assert metrics["ci"]["accuracy"][0] <= metrics["accuracy"] <= metrics["ci"]["accuracy"][1]
    assert summary["cv"]["models"]["logistic-l1"]["top_features"]
    assert (out / "top_features.png").stat().st_size > 1000
    assert "logistic-l1: accuracy" in invoke.output


def test_an_existing_output_is_not_overwritten(result, tmp_path):
    _, out = result
    invoke = CliRunner().invoke(app, ["radiomics", str(tmp_path), "--out", str(out)])
    assert invoke.exit_code != 0
    assert "--force" in str(invoke.exception or invoke.output)


def test_families_and_ring_are_options(tmp_path):
    root = write_dataset(tmp_path / "types", per_class=6)
    out = tmp_path / "rad"
    invoke = CliRunner().invoke(app, [
        "radiomics", str(root), "--out", str(out), "--folds", "2", "--workers", "1",
        "--families", "firstorder, location", "--ring", "0",
    ])
    assert invoke.exit_code == 0, invoke.output
    table = pd.read_csv(out / "features.csv")
    summary = json.loads((out / "radiomics.json").read_text())
    names = list(table.columns[3:])
    assert {n.split("_")[0] for n in names} == {"firstorder", "location"}
    assert len(names) == 18 + 5 == summary["n_features"]
    assert summary["config"]["ring"] == 0
    assert summary["config"]["families"] == ["firstorder", "location"]
    bad = CliRunner().invoke(app, ["radiomics", str(root), "--out", str(tmp_path / "x"),
                                   "--families", "wavelet"])
    assert bad.exit_code != 0


class BrightSegmenter:
    """Stands in for a trained segmenter: tumour = pixels brighter than the head's range."""

    meta = {"preprocess": {"size": 64}}

    def predict(self, images: np.ndarray) -> np.ndarray:
        return (images > 0.6 * 255).astype(np.float32)


def test_masks_from_a_segmenter_are_mapped_back_to_the_original_pixels(tmp_path, monkeypatch):
    import braincam.models.segment as segment
    from braincam.radiomics import radiomics_run

    monkeypatch.setattr(segment, "load_segmenter", lambda seg_dir: BrightSegmenter())
    root = write_dataset(tmp_path / "types", per_class=6)
    expert = radiomics_run([root], tmp_path / "expert", folds=2, workers=1, n_boot=0,
                           progress=False)
    seg = radiomics_run([root], tmp_path / "seg", segment=tmp_path / "SEG", folds=2, workers=1,
                        n_boot=0, progress=False)
    a = pd.read_csv(tmp_path / "expert" / "features.csv").set_index("path")
    b = pd.read_csv(tmp_path / "seg" / "features.csv").set_index("path")

    assert seg["masks"] == str(tmp_path / "SEG") and expert["masks"] == "expert"
    # the bright glioma and pituitary tumours are found; meningioma (lift 0.15) is not; the
    # copy of glioma 2 without an expert mask gets one from the segmenter
    assert b.index.str.endswith("999.png").sum() == 1
    assert (b["label"] == "meningioma").sum() == 0 and len(b) == 13
    skipped = pd.read_csv(tmp_path / "seg" / "skipped.csv")
    assert (skipped["reason"] == "the segmenter found no tumour").sum() == 6
    found = a.index.intersection(b.index)
    area = b.loc[found, "shape2D_PixelSurface"] / a.loc[found, "shape2D_PixelSurface"]
    assert area.between(0.7, 1.3).all()  # 64 px model input mapped back onto 128 px images


def test_folds_seed_and_classes_too_small_to_split_are_one_line_errors(tmp_path):
    """Bad ``--folds``/``--seed`` stop before anything is written; tumour types with too few
    images for the folds end in one line naming the cause, not scikit-learn's traceback."""
    root = write_dataset(tmp_path / "types", per_class=2)
    runner = CliRunner()
    for option, value, words in (("--folds", "1", "--folds must be >= 2"),
                                 ("--seed", "-1", "--seed must be in")):
        invoke = runner.invoke(app, ["radiomics", str(root), "--out", str(tmp_path / "o1"),
                                     option, value])
        assert invoke.exit_code != 0 and words in str(invoke.exception)
        assert not (tmp_path / "o1").exists()
    invoke = runner.invoke(app, ["radiomics", str(root), "--out", str(tmp_path / "o2"),
                                 "--folds", "2", "--workers", "1"])
    assert invoke.exit_code != 0
    message = str(invoke.exception)
    assert "cannot split these images" in message and "\n" not in message
    assert (tmp_path / "o2" / "features.csv").is_file()
    for extra in sorted((root / "meningioma").glob("*.png"))[1:]:  # one masked meningioma
        extra.unlink()
        (root / "masks" / "meningioma" / extra.name).unlink()
    invoke = runner.invoke(app, ["radiomics", str(root), "--out", str(tmp_path / "o3"),
                                 "--folds", "2", "--workers", "1"])
    assert str(invoke.exception) == (
        "meningioma has masked images in 1 patient/duplicate group(s): the grouped 2-fold "
        "cross-validation needs each tumour type in at least 2 (--folds); features.csv is kept "
        f"in {tmp_path / 'o3'}")


def _predictions(run, records, classes=("glioma", "meningioma", "no_tumor", "pituitary")):
    """A classifier run's predictions.csv: ``records`` as test rows, every third one wrong."""
    run.mkdir()
    rows = []
    for i, r in enumerate(records):
        pred = "no_tumor" if i % 3 == 0 else r.label
        rows.append({"path": r.key, "dataset": "types", "split": "test", "leak_free": True,
                     "label": r.label, "pred": pred,
                     **{f"prob_{c}": float(c == pred) for c in classes}})
    pd.DataFrame(rows).to_csv(run / "predictions.csv", index=False)
    return run


def test_cnn_comparison_and_a_wrong_cnn_refused_before_any_feature(tmp_path):
    from braincam.data.records import load_dataset

    root = write_dataset(tmp_path / "types")
    records = load_dataset([root]).records
    run = _predictions(tmp_path / "clf", records[::2])
    runner = CliRunner()
    out = tmp_path / "rad"
    link = tmp_path / "linked"  # the same images reached another way
    link.symlink_to(root)
    invoke = runner.invoke(app, ["radiomics", str(link), "--out", str(out), "--folds", "3",
                                 "--workers", "1", "--cnn", str(run)])
    assert invoke.exit_code == 0, invoke.output
    cnn = json.loads((out / "radiomics.json").read_text())["cnn"]
    featured = {p.replace(str(link), str(root)) for p in pd.read_csv(out / "features.csv")["path"]}
    scored = [r for r in records[::2] if r.key in featured]  # glioma/999.png has no mask
    errors = sum(i % 3 == 0 for i, r in enumerate(records[::2]) if r.key in featured)
    assert cnn["n"] == len(scored) and cnn["cnn_errors"] == errors
    assert cnn["cnn"]["accuracy"] == pytest.approx(1 - errors / len(scored))
    assert 0 <= cnn["radiomics_right_on_cnn_errors"] <= errors

    binary = _predictions(tmp_path / "binary", records, classes=("no_tumor", "tumor"))
    other = write_dataset(tmp_path / "other", seed=1)
    elsewhere = _predictions(tmp_path / "elsewhere", load_dataset([other]).records)
    for cnn_run, words in ((tmp_path / "missing", "has no predictions.csv; evaluate it first"),
                           (binary, "does not predict ['glioma', 'meningioma', 'pituitary']"),
                           (elsewhere, "test images are none of the images given here")):
        invoke = runner.invoke(app, ["radiomics", str(root), "--out", str(tmp_path / "o"),
                                     "--cnn", str(cnn_run)])
        assert invoke.exit_code != 0 and words in str(invoke.exception), invoke.output
        assert not (tmp_path / "o").exists()  # refused before the features
