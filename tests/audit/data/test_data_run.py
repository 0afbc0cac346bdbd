"""The whole data audit: files written, JSON schema, unreadable files, bad input, real data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from braincam.audit.data.run import audit_data
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError

PROBES = ["geometry", "intensity", "background", "thumbnail"]


@pytest.fixture
def phantoms(tmp_path):
    spec = PhantomSpec(n_per_class=20, size=48, seed=3, shortcut="size")
    return make_phantom_dataset(tmp_path / "ph", spec)


def test_writes_json_csv_and_figures_and_lists_corrupt_files(phantoms, tmp_path):
    (phantoms / "Training" / "tumor" / "empty.png").write_bytes(b"")
    broken = phantoms / "Testing" / "no_tumor" / "broken.png"  # header and end marker intact
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64 + b"IEND")
    out = tmp_path / "audit"
    audit = audit_data([phantoms], out_dir=out, n_boot=50)

    assert {p.name for p in out.iterdir()} == {
        "data_audit.json", "properties.csv", "skipped.csv", "property_histograms.png",
        "probe_auc.png"}  # no duplicate grid: this set has no duplicates
    data = json.loads((out / "data_audit.json").read_text())
    assert data["n_images"] == 80 and data["n_skipped"] == 2
    assert sorted(s["path"].rsplit("/", 1)[-1] for s in data["skipped"]) == ["broken.png",
                                                                              "empty.png"]
    assert data["classes"] == ["no_tumor", "tumor"] and data["task"] == "binary"
    assert data["counts"] == {"train": {"no_tumor": 20, "tumor": 20},
                              "test": {"no_tumor": 20, "tumor": 20}}
    assert [p["name"] for p in data["probes"]] == PROBES
    geometry = data["probes"][0]
    assert geometry["test_auc"] == 1.0 and geometry["test_balanced_accuracy"] == 1.0
    assert set(geometry["ci"]) == {"test_auc", "test_balanced_accuracy"}
    assert "file properties alone (pixel size, file size in bytes" in geometry["message"]
    assert data["properties"]["width"]["auc"] == 1.0
    assert data["properties"]["width"]["higher_in"] == "no_tumor"  # 60 vs 48 px
    assert {"exact_groups", "near_groups", "test_images_with_train_duplicate",
            "per_class_test_with_train_duplicate", "label_conflicts", "groups"} <= set(
        data["duplicates"])
    assert {"k", "crosstab", "cramers_v"} <= set(data["clusters"])
    checks = {f["check"]: f for f in data["findings"]}
    assert {"probe.geometry", "files.skipped", "property.width"} <= set(checks)
    assert checks["property.width"]["message"].startswith(
        "width alone separates tumor from no_tumor (AUC 1.00, KS 1.00); higher in no_tumor")
    assert checks["files.skipped"]["value"] == 2
    severities = [f["severity"] for f in data["findings"]]
    assert severities == sorted(severities, key=["critical", "warning", "info"].index)

    table = pd.read_csv(out / "properties.csv")
    assert len(table) == 80 and {"path", "split", "label", "group", "width", "p99"} <= set(
        table.columns)
    assert set(table.loc[table["label"] == "no_tumor", "width"]) == {60}
    skipped = pd.read_csv(out / "skipped.csv")
    assert len(skipped) == 2
    assert "geometry-only probe reaches AUC 1.00" in audit.summary()


def test_other_folders_are_checked_for_copies_of_the_audited_images(phantoms, tmp_path):
    other = tmp_path / "other" / "tumor"
    other.mkdir(parents=True)
    for i, image in enumerate(sorted((phantoms / "Training" / "tumor").iterdir())[:2]):
        Image.open(image).convert("L").save(other / f"copy{i}.jpg", quality=90)
    noise = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    Image.fromarray(noise).save(other / "noise.png")
    audit = audit_data([phantoms], n_boot=0, others=[tmp_path / "other"])
    assert audit.duplicates["cross_source"] == {
        "other": {"images": 3, "duplicated_in": {"ph": 2}}}
    found = [f for f in audit.findings if f.check == "duplicates.cross_source"]
    assert [(f.severity, f.message.split(":")[0]) for f in found] == [
        ("critical", "2 of 3 other images (67%) have an exact or near duplicate in ph")]
    assert audit.n_images == 80  # the other folder is not audited itself
    # copies of the audited data's test images are no training images of a model trained on
    # it: they are not counted, as evaluate's extra_seen does not count them
    tested = tmp_path / "tested" / "tumor"
    tested.mkdir(parents=True)
    for i, image in enumerate(sorted((phantoms / "Testing" / "tumor").iterdir())[:2]):
        Image.open(image).convert("L").save(tested / f"copy{i}.jpg", quality=90)
    audit = audit_data([phantoms], n_boot=0, others=[tmp_path / "tested"])
    assert audit.duplicates["cross_source"] == {
        "tested": {"images": 2, "duplicated_in": {"ph": 0}}}
    assert not [f for f in audit.findings if f.check == "duplicates.cross_source"]


def test_folders_of_one_name_are_told_apart(phantoms, tmp_path):
    """A --data folder named like the audited one, and two --data folders of one name, are
    sources of their own (``_`` appended), so their copies of the audited images are found."""
    import shutil

    for site in ("siteA", "siteB"):
        shutil.copytree(phantoms / "Training" / "tumor", tmp_path / site / "ph" / "tumor")
    noise = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "siteB" / "ph" / "tumor" / "noise.png")
    n = len(list((phantoms / "Training" / "tumor").iterdir()))
    audit = audit_data([phantoms], n_boot=0,
                       others=[tmp_path / "siteA" / "ph", tmp_path / "siteB" / "ph"])
    assert audit.duplicates["cross_source"] == {
        "ph_": {"images": n, "duplicated_in": {"ph": n}},
        "ph__": {"images": n + 1, "duplicated_in": {"ph": n}}}


def test_two_dataset_folders_of_one_name_are_two_sources(phantoms, tmp_path):
    import shutil

    from braincam.data.records import load_dataset

    for site in ("siteA", "siteB"):
        shutil.copytree(phantoms / "Testing", tmp_path / site / "Testing")
    records = load_dataset([tmp_path / "siteA" / "Testing", tmp_path / "siteB" / "Testing"]).records
    by_source = {s: sum(r.source == s for r in records) for s in {r.source for r in records}}
    assert by_source == {"Testing": len(records) // 2, "Testing_": len(records) // 2}


def test_bad_input_gives_one_line_errors(tmp_path):
    only_tumour = tmp_path / "one"
    (only_tumour / "tumor").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((16, 16), 50 * i, np.uint8)).save(only_tumour / f"tumor/{i}.png")
    with pytest.raises(BraincamError, match="found only tumor images"):
        audit_data([only_tumour], split_strategy="random")
    spec = PhantomSpec(n_per_class=4, size=40)
    root = make_phantom_dataset(tmp_path / "ph", spec, splits=("train",))
    with pytest.raises(BraincamError, match="no test images"):
        audit_data([root])
    with pytest.raises(BraincamError, match="unknown task"):
        audit_data([root], task="segmentation")


def test_dedup_split_on_class_folders(tmp_path):
    spec = PhantomSpec(n_per_class=15, size=40, seed=1, shortcut="brightness")
    root = make_phantom_dataset(tmp_path / "ph", spec, splits=("train",))
    audit = audit_data([root / "Training"], split_strategy="dedup", n_boot=0)
    assert sum(audit.counts["test"].values()) == 6  # 1/5 of 30, stratified
    assert audit.probe("intensity").test_auc == 1.0 and audit.probe("intensity").ci == {
        "test_auc": None, "test_balanced_accuracy": None}


def test_the_slices_of_a_volume_are_one_group(tmp_path, write_nifti):
    """A volume's slices are kept together by dedup and, split apart by random, a test slice
    with its siblings in train is a leak, as in every split of braincam train."""
    spec = PhantomSpec(n_per_class=10, size=64, seed=4)
    root = make_phantom_dataset(tmp_path / "ph", spec, splits=("train",)) / "Training"
    rng = np.random.default_rng(0)
    slices = (rng.random((6, 64, 64)) * 60 + 100).astype(np.uint8)
    slices[:, :8] = slices[:, -8:] = 0  # a head inside a dark border
    write_nifti(root / "tumor" / "scan.nii.gz", slices)
    apart = []
    for strategy, seed in [("dedup", 1), *(("random", k) for k in range(4))]:
        out = tmp_path / f"{strategy}{seed}"
        audit = audit_data([root], split_strategy=strategy, seed=seed, n_boot=0, out_dir=out)
        table = pd.read_csv(out / "properties.csv")
        volume = table[table["path"].str.contains("scan.nii.gz#")]
        assert len(volume) >= 4 and volume["group"].nunique() == 1
        if volume["split"].nunique() > 1:
            apart.append(strategy)
            assert audit.duplicates["test_images_with_train_duplicate"] >= (
                volume["split"] == "test").sum()
    assert apart and set(apart) == {"random"}  # dedup keeps the volume on one side


@pytest.mark.realdata
def test_sartaj_leaks_and_size_shortcut(datasets_dir, tmp_path):
    """Sartaj binary, official split, on every Testing image and a third of Training
    (symlinks), to keep the test short; the full set is measured with `braincam audit-data`."""
    source = datasets_dir / "sartaj-brain-tumor-mri"
    root = tmp_path / "sartaj-brain-tumor-mri"
    for folder in sorted(source.glob("*/*")):
        target = root / folder.relative_to(source)
        target.mkdir(parents=True)
        files = sorted(folder.iterdir())
        for f in files if folder.parent.name == "Testing" else files[::3]:
            (target / f.name).symlink_to(f)
    audit = audit_data([root], n_boot=200)
    dup = audit.duplicates
    assert dup["test_images"] == 394
    assert dup["per_class_test_with_train_duplicate"]["no_tumor"] >= 40
    assert dup["per_class_test_with_train_duplicate"]["tumor"] >= 40
    geometry = audit.probe("geometry")
    assert geometry.test_auc >= 0.85
    # a third of Training leaves some no_tumor test images without a copy: judged on those
    assert geometry.leak_free["n_test"] < 394 and geometry.judged[0] >= 0.75
    assert next(f for f in audit.findings if f.check == "probe.geometry").severity == "warning"

    multi = audit_data([root], task="multiclass", n_boot=0)  # properties now cached
    assert multi.classes == ["glioma", "meningioma", "no_tumor", "pituitary"]
    assert multi.probe("geometry").test_auc >= 0.75  # macro one-vs-rest; chance is 0.5


def test_a_volume_labelled_slice_by_slice_is_no_label_conflict(tmp_path, write_nifti):
    """A label volume makes a tumour volume's slices tumour and no_tumor: they stay one
    group for the split, yet they are no copies filed under two classes."""
    spec = PhantomSpec(n_per_class=10, size=64, seed=4)
    root = make_phantom_dataset(tmp_path / "ph", spec, splits=("train",)) / "Training"
    rng = np.random.default_rng(0)
    slices = (rng.random((6, 64, 64)) * 60 + 100).astype(np.uint8)
    slices[:, :8] = slices[:, -8:] = 0
    labels = np.zeros_like(slices)
    labels[2:4, 20:30, 20:30] = 1
    write_nifti(root / "tumor" / "scan.nii.gz", slices)
    write_nifti(root.parent / "masks" / "Training" / "tumor" / "scan.nii.gz", labels)
    audit = audit_data([root.parent], split_strategy="dedup", n_boot=0, out_dir=tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "properties.csv")
    volume = table[table["path"].str.contains("scan.nii.gz#")]
    assert set(volume["label"]) == {"tumor", "no_tumor"} and volume["group"].nunique() == 1
    assert audit.duplicates["label_conflicts"] == 0
    assert not any("scan.nii.gz" in f for g in audit.duplicates["groups"] for f in g["files"])


def test_masks_set_aside_are_not_called_unreadable_files():
    from pathlib import Path

    from braincam.audit.data.rules import skipped_findings
    from braincam.data.records import MASK_SET_ASIDE, SkippedFile

    skipped = [SkippedFile(Path("a/cut.png"), "truncated file"),
               SkippedFile(Path("masks/glioma/multi.png"),
                           "one 2D mask for a file of several frames" + MASK_SET_ASIDE)]
    found = {f.check: f.message for f in skipped_findings(skipped)}
    assert found == {
        "files.skipped": "1 files could not be read and were skipped (first: cut.png: "
                         "truncated file)",
        "files.masks_set_aside": "1 tumour masks were set aside, their images kept without "
                                 "them (first: multi.png: one 2D mask for a file of several "
                                 "frames)"}


def test_other_folders_count_each_slice_and_leave_out_what_cannot_be_decoded(
        phantoms, tmp_path, write_nifti, write_dicom, caplog):
    """A --data volume is compared slice by slice (its middle slice alone stood for all); an
    image whose pixels cannot be decoded is not counted, with a warning."""
    training = sorted((phantoms / "Training" / "tumor").iterdir())
    copy = np.asarray(Image.open(training[0]).convert("L"))
    rng = np.random.default_rng(1)
    slices = np.stack([rng.integers(0, 255, copy.shape, dtype=np.uint8), copy,
                       rng.integers(0, 255, copy.shape, dtype=np.uint8)])
    other = tmp_path / "vol" / "tumor"
    other.mkdir(parents=True)
    write_nifti(other / "scan.nii.gz", slices)
    cut = write_dicom(other / "cut.dcm", copy)
    cut.write_bytes(cut.read_bytes()[:-500])
    with caplog.at_level("WARNING", logger="braincam.audit.data.run"):
        audit = audit_data([phantoms], n_boot=0, others=[tmp_path / "vol"])
    from braincam.data.records import load_dataset

    listed = len(load_dataset([tmp_path / "vol"]).records)
    assert audit.duplicates["cross_source"] == {
        "vol": {"images": listed - 1, "duplicated_in": {"ph": 1}}}
    assert "1 images of the --data folders cannot be decoded and are not counted" in caplog.text


def test_probes_are_scored_without_test_copies_of_training_images(tmp_path):
    """Labels carry no signal, but half the test images copy training images of their class:
    a probe that memorises file sizes would score those copies. Probes score the other half
    (the copies are the leak finding's), and stay near chance."""
    import shutil

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for c in ("tumor", "no_tumor"):
        for split, n in (("Training", 40), ("Testing", 12)):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                noise = rng.uniform(0, rng.uniform(10, 250))  # file sizes vary, not by class
                pixels = np.clip(rng.normal(128, noise, (48, 48)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
        for i in range(24):
            shutil.copy(root / "Training" / c / f"{i}.png", root / "Testing" / c / f"c{i}.png")
    audit = audit_data([root], n_boot=20)

    assert audit.duplicates["test_images_with_train_duplicate"] == 48
    for probe in audit.probes:
        assert probe.n_test == 72 and probe.leak_free["n_test"] == 24
        assert probe.judged[0] == probe.leak_free["test_auc"]
    # with the copies: geometry 0.86, thumbnail 0.88 (a memorised file or image)
    geometry, thumbnail = audit.probe("geometry"), audit.probe("thumbnail")
    assert geometry.test_auc > 0.85 and thumbnail.test_auc > 0.85
    assert geometry.judged[0] < 0.75 and thumbnail.judged[0] < 0.6
    assert "on leak-free test: no strong thumbnail shortcut" in thumbnail.message
    assert not any(f.severity != "info" for f in audit.findings if f.check.startswith("probe."))
