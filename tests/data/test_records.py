"""load_dataset: layouts, label names, boxes.csv, unreadable files, errors."""

from __future__ import annotations

import io
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braincam.data.records import NOT_UTF8, Box, load_dataset, without_skipped, write_skipped_csv
from braincam.data.splits import make_split, write_split_csv
from braincam.errors import BraincamError


def _image(path, size=(24, 20), fmt=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)).save(path, fmt)
    return path


def test_split_layout_normalises_splits_and_labels(tmp_path):
    root = tmp_path / "ds"
    _image(root / "Training" / "glioma_tumor" / "a.jpg")
    _image(root / "Training" / "notumor" / "b.PNG")
    _image(root / "Testing" / "glioma_tumor" / "c.jpeg")
    _image(root / "val" / "No" / "d.bmp")
    _image(root / "Testing" / "notumor" / "sub" / "e.tif")
    (root / "Training" / "notumor" / "notes.txt").write_text("not an image")
    ds = load_dataset([root])
    got = {(r.path.name, r.split, r.label) for r in ds.records}
    assert got == {
        ("a.jpg", "train", "glioma"), ("b.PNG", "train", "no_tumor"),
        ("c.jpeg", "test", "glioma"), ("d.bmp", "val", "no_tumor"), ("e.tif", "test", "no_tumor"),
    }
    assert all(r.source == "ds" and r.path.is_absolute() for r in ds.records)
    assert {(r.width, r.height) for r in ds.records} == {(24, 20)}
    assert ds.skipped == []


def test_class_layout_and_several_roots(tmp_path):
    _image(tmp_path / "one" / "yes" / "1.png")
    _image(tmp_path / "one" / "no" / "2.png")
    _image(tmp_path / "two" / "Pituitary Tumor" / "3.png")
    (tmp_path / "one" / "masks" / "yes").mkdir(parents=True)  # annotation folder: ignored
    ds = load_dataset([tmp_path / "two", tmp_path / "one", tmp_path / "two"])  # each root once
    assert [(r.source, r.split, r.label) for r in ds.records] == [
        ("one", None, "no_tumor"), ("one", None, "tumor"), ("two", None, "pituitary"),
    ]


def test_a_folder_given_again_through_a_link_is_refused(tmp_path):
    """audit-data read `xa xa_link` as two folders, each copying all of the other."""
    _image(tmp_path / "one" / "yes" / "1.png")
    (tmp_path / "link").symlink_to(tmp_path / "one")
    with pytest.raises(BraincamError, match=r"one and .*link are one folder \(through a link\)"):
        load_dataset([tmp_path / "one", tmp_path / "link"])


def test_records_are_sorted_whatever_the_root_order(tmp_path):
    for i, label in enumerate(["glioma", "meningioma", "no_tumor"]):
        for j in range(3):
            _image(tmp_path / f"r{i % 2}" / label / f"{j}.png", seed=j)
    a = load_dataset([tmp_path / "r0", tmp_path / "r1"]).records
    b = load_dataset([tmp_path / "r1", tmp_path / "r0"]).records
    assert a == b
    assert [r.path for r in a] == sorted(
        (r.path for r in a), key=lambda p: (p.parts[-3], p.parts[-2], str(p))
    )


def test_unreadable_files_are_skipped_with_reasons(tmp_path, caplog):
    folder = tmp_path / "ds" / "glioma"
    good = _image(folder / "good.jpg", size=(32, 32))
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), np.uint8)).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[:600])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("hello, I am not a JPEG\n")
    _image(folder / "dot.png", size=(1, 1))
    _image(folder / "thin.png", size=(100, 7))
    _image(tmp_path / "ds" / "no_tumor" / "ok.png")
    with caplog.at_level(logging.WARNING, logger="braincam.data.records"):
        ds = load_dataset([tmp_path / "ds"])
    assert {r.path.name for r in ds.records} == {"good.jpg", "ok.png"}
    reasons = {s.path.name: s.reason for s in ds.skipped}
    assert set(reasons) == {"truncated.jpg", "zero.jpg", "text.jpg", "dot.png", "thin.png"}
    assert "cannot decode" in reasons["truncated.jpg"]
    assert reasons["zero.jpg"] == "empty file (0 bytes)"
    assert reasons["text.jpg"] == "not a readable image file"
    assert reasons["dot.png"] == "image too small (1x1 px, minimum 8)"
    assert "100x7" in reasons["thin.png"]
    assert sum("skipping" in m for m in caplog.messages) == 5
    assert without_skipped([*ds.records], ds.skipped) == ds.records
    assert good in {r.path for r in ds.records}


def test_linked_folders_are_read_and_a_dangling_link_is_a_skip_entry(tmp_path):
    store = tmp_path / "store" / "deep"
    for k in range(3):
        _image(store / f"m{k}.png", seed=k)
    root = tmp_path / "ds"
    _image(root / "no_tumor" / "ok.png")
    (root / "meningioma").mkdir()
    (root / "meningioma" / "linked").symlink_to(store)  # a linked subfolder of a class
    (root / "no_tumor" / "gone.png").symlink_to(tmp_path / "nothing.png")
    ds = load_dataset([root])
    assert Counter(r.label for r in ds.records) == {"meningioma": 3, "no_tumor": 1}
    assert [(s.path.name, s.reason) for s in ds.skipped] == [
        ("gone.png", f"a link to {tmp_path / 'nothing.png'}, which does not exist")]


def test_a_dataset_folder_inside_another_given_one_is_an_error(tmp_path):
    _image(tmp_path / "ds" / "Training" / "glioma" / "a.png")
    _image(tmp_path / "ds" / "Training" / "no_tumor" / "b.png")
    with pytest.raises(BraincamError, match=r"ds/Training lies inside .*ds, also given"):
        load_dataset([tmp_path / "ds", tmp_path / "ds" / "Training"])
    assert len(load_dataset([tmp_path / "ds", tmp_path / "ds/"]).records) == 2  # the same one


def test_a_macos_zip_folder_beside_the_splits_is_ignored(tmp_path):
    _image(tmp_path / "ds" / "Training" / "glioma" / "a.png")
    _image(tmp_path / "ds" / "Testing" / "no_tumor" / "b.png")
    (tmp_path / "ds" / "__MACOSX" / "Training").mkdir(parents=True)
    assert len(load_dataset([tmp_path / "ds"]).records) == 2


def test_files_of_other_types_are_named_in_a_warning(tmp_path, caplog):
    _image(tmp_path / "ds" / "glioma" / "a.png")
    _image(tmp_path / "ds" / "glioma" / "b.webp", fmt="WEBP")
    _image(tmp_path / "ds" / "no_tumor" / "c.png")
    (tmp_path / "ds" / "no_tumor" / ".DS_Store").write_bytes(b"hidden: not named")
    with caplog.at_level(logging.WARNING, logger="braincam.data.records"):
        assert len(load_dataset([tmp_path / "ds"]).records) == 2
    left_out = [m for m in caplog.messages if "left out" in m]
    assert len(left_out) == 1 and left_out[0].endswith("DICOM or NIfTI file: b.webp")


def test_write_skipped_csv(tmp_path):
    (tmp_path / "ds" / "glioma").mkdir(parents=True)
    (tmp_path / "ds" / "glioma" / "zero.jpg").write_bytes(b"")
    _image(tmp_path / "ds" / "glioma" / "ok.png")
    ds = load_dataset([tmp_path / "ds"])
    write_skipped_csv(ds.skipped, tmp_path / "skipped.csv")
    lines = (tmp_path / "skipped.csv").read_text().splitlines()
    zero = tmp_path / "ds" / "glioma" / "zero.jpg"
    assert lines == ["path,reason", f"{zero},empty file (0 bytes)"]


def test_empty_class_folder_warns(tmp_path, caplog):
    _image(tmp_path / "ds" / "glioma" / "a.png")
    (tmp_path / "ds" / "meningioma").mkdir()
    with caplog.at_level(logging.WARNING, logger="braincam.data.records"):
        ds = load_dataset([tmp_path / "ds"])
    assert len(ds.records) == 1
    assert any("meningioma" in m and "no images" in m for m in caplog.messages)


@pytest.mark.parametrize(
    "folders, files, match",
    [
        (["glioma", "cats"], [], "folder 'cats' is not a known class"),
        (["Training/glioma", "Training/dogs"], [], "folder 'dogs' is not a known class"),
        (["Training/glioma", "glioma"], [], r"split folders \(Training\) and other folders "
         r"\('glioma'\)"),
        (["Training/glioma", "Testing/glioma", "out/audit"], [],
         r"split folders \(Testing, Training\) and other folders \('out'\).*move the others"),
        ([], ["loose.png"], "no class or split folders found"),
    ],
)
def test_unknown_layouts_name_the_folder(tmp_path, folders, files, match):
    root = tmp_path / "ds"
    for folder in folders:
        _image(root / folder / "x.png")
    for file in files:
        _image(root / file)
    with pytest.raises(BraincamError, match=match) as info:
        load_dataset([root])
    assert "expected ROOT/<class>/<images> or ROOT/<split>/<class>/<images>" in str(info.value)
    assert "\n" not in str(info.value)


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "ds" / "glioma").mkdir(parents=True)
    (tmp_path / "ds" / "glioma" / "zero.jpg").write_bytes(b"")
    with pytest.raises(BraincamError, match=r"no usable images .* \(1 files skipped\)"):
        load_dataset([tmp_path / "ds"])
    with pytest.raises(BraincamError, match="not a directory"):
        load_dataset([tmp_path / "missing"])


def test_boxes_csv_relative_to_root_or_class_folder(tmp_path, caplog):
    root = tmp_path / "ds"
    _image(root / "glioma" / "1.png")
    _image(root / "meningioma" / "1.png")
    _image(root / "meningioma" / "2.png")
    _image(root / "meningioma" / "3.png")
    (root / "boxes.csv").write_text(
        "file,label,cx,cy,w,h\n"
        "glioma/1.png,glioma,0.5,0.4,0.2,0.1\n"  # relative to the root
        "1.png,meningioma,0.25,0.75,0.1,0.3\n"  # relative to the class folder, label picks it
        "3.png,meningioma,0.5,0.5,1.5,0.1\n"  # out of range: ignored
        "glioma/9.png,glioma,0.5,0.5,0.1,0.1\n"  # no such image: ignored
    )
    with caplog.at_level(logging.WARNING, logger="braincam.data.records"):
        ds = load_dataset([root])
    boxes = {(r.label, r.path.name): r.box for r in ds.records}
    assert boxes == {
        ("glioma", "1.png"): Box(0.5, 0.4, 0.2, 0.1),
        ("meningioma", "1.png"): Box(0.25, 0.75, 0.1, 0.3),
        ("meningioma", "2.png"): None,
        ("meningioma", "3.png"): None,
    }
    assert any("2 rows ignored" in m for m in caplog.messages)


def test_boxes_on_no_tumor_images_are_ignored_with_a_warning(tmp_path, caplog):
    """A tumour box on a healthy image would become tumour pixels in a segmenter's target."""
    root = tmp_path / "ds"
    _image(root / "glioma" / "1.png")
    _image(root / "no_tumor" / "2.png")
    (root / "boxes.csv").write_text("file,label,cx,cy,w,h\n"
                                    "no_tumor/2.png,no_tumor,0.5,0.5,0.3,0.3\n"
                                    "glioma/1.png,glioma,0.5,0.5,0.3,0.3\n")
    with caplog.at_level(logging.WARNING, logger="braincam.data.records"):
        ds = load_dataset([root])
    assert {r.path.name: r.box for r in ds.records} == {"1.png": Box(0.5, 0.5, 0.3, 0.3),
                                                         "2.png": None}
    assert any("1 rows ignored (first: line 2: a tumour box on the no_tumor image "
               "'no_tumor/2.png')" in m for m in caplog.messages)


def test_boxes_csv_matches_names_composed_or_decomposed(tmp_path):
    """'patiënt' typed (composed) in boxes.csv names a file stored decomposed on disk."""
    root = tmp_path / "ds"
    _image(root / "glioma" / "pati\u0065\u0308nt 1.png")  # e + combining diaeresis
    (root / "boxes.csv").write_text("file,label,cx,cy,w,h\n"
                                    "glioma/pati\u00ebnt 1.png,glioma,.5,.5,.2,.2\n",
                                    encoding="utf-8")
    (record,) = load_dataset([root]).records
    assert record.box == Box(0.5, 0.5, 0.2, 0.2)


def test_a_file_name_that_is_not_utf8_is_skipped_and_listed(tmp_path):
    """Such a name (from another system's zip) cannot be written to split.csv: skipped at
    load, and written to skipped.csv with U+FFFD for its undecodable byte."""
    root = tmp_path / "ds"
    bad = _image(root / "glioma" / os.fsdecode(b"caf\xe9.png"))
    volume = root / "glioma" / os.fsdecode(b"t\xe9te.nii.gz")  # a volume the same
    volume.write_bytes(b"not read")
    for k in range(4):
        _image(root / "glioma" / f"{k}.png", seed=k)
        _image(root / "no_tumor" / f"{k}.png", seed=10 + k)
    ds = load_dataset([root])
    assert [(s.path, s.reason) for s in ds.skipped] == [(bad, NOT_UTF8), (volume, NOT_UTF8)]
    assert len(ds.records) == 8 and bad not in {r.path for r in ds.records}
    write_split_csv(make_split(ds.records, "binary", "random", 0.25, 0.25, seed=0), ds.records,
                    tmp_path / "split.csv")
    write_skipped_csv(ds.skipped, tmp_path / "skipped.csv")
    assert (tmp_path / "skipped.csv").read_text(encoding="utf-8").splitlines()[1:] == [
        f"{root}/glioma/caf\ufffd.png,{NOT_UTF8}", f"{root}/glioma/t\ufffdte.nii.gz,{NOT_UTF8}"]


def test_boxes_csv_with_split_layout(tmp_path):
    root = tmp_path / "ds"
    _image(root / "Training" / "tumor" / "a.png")
    (root / "boxes.csv").write_text("file,label,cx,cy,w,h\nTraining/tumor/a.png,x,.5,.5,.2,.2\n")
    (record,) = load_dataset([root]).records
    assert record.box == Box(0.5, 0.5, 0.2, 0.2)


def test_boxes_csv_that_is_not_utf8_is_a_one_line_error(tmp_path):
    _image(tmp_path / "ds" / "glioma" / "tumeur_\u00e9.png")
    _image(tmp_path / "ds" / "no_tumor" / "a.png")
    (tmp_path / "ds" / "boxes.csv").write_bytes(
        b"file,label,cx,cy,w,h\nglioma/tumeur_\xe9.png,glioma,0.5,0.5,0.1,0.1\n")
    with pytest.raises(BraincamError, match=r"boxes.csv: not UTF-8 text; save it as UTF-8$"):
        load_dataset([tmp_path / "ds"])


def test_boxes_csv_without_columns_is_an_error(tmp_path):
    _image(tmp_path / "ds" / "glioma" / "a.png")
    (tmp_path / "ds" / "boxes.csv").write_text("name,x\na.png,1\n")
    with pytest.raises(BraincamError, match="missing columns cx, cy, file, h, label, w"):
        load_dataset([tmp_path / "ds"])


@pytest.mark.realdata
def test_real_datasets_load(datasets_dir):
    sartaj = load_dataset([datasets_dir / "sartaj-brain-tumor-mri"])
    assert Counter(r.split for r in sartaj.records) == {"train": 2870, "test": 394}
    assert {r.label for r in sartaj.records} == {"glioma", "meningioma", "pituitary", "no_tumor"}
    assert sartaj.skipped == []
    figshare = load_dataset([datasets_dir / "figshare-cheng-t1ce"])
    assert len(figshare.records) == 3064
    assert all(r.box is not None and r.split is None for r in figshare.records)


def test_a_volume_of_slices_below_the_minimum_side_is_skipped(tmp_path, write_nifti):
    """As a 2D image or a DICOM frame of that size: too small to be a scan."""
    rng = np.random.default_rng(0)
    (tmp_path / "ds" / "glioma").mkdir(parents=True)
    write_nifti(tmp_path / "ds" / "glioma" / "tiny.nii", rng.integers(0, 255, (3, 4, 4)))
    _image(tmp_path / "ds" / "glioma" / "a.png")
    ds = load_dataset([tmp_path / "ds"])
    assert [r.path.name for r in ds.records] == ["a.png"]
    assert [(s.path.name, s.reason) for s in ds.skipped] == [
        ("tiny.nii", "image too small (4x4 px, minimum 8)")]


def test_a_records_stem_keeps_its_slice_and_counts_nii_gz_as_one_suffix():
    from braincam.data.records import ImageRecord

    def record(path, k=None):
        return ImageRecord(Path(path), "src", None, "glioma", 64, 64, None, slice=k)

    assert [record("a/12.jpg").stem, record("a/vol.nii.gz", 3).stem,
            record("a/multi.dcm", 0).stem, record("a/1.2.840.5").stem] == [
        "12", "vol_s3", "multi_s0", "1.2.840.5"]


def test_a_multi_page_tiff_is_read_by_its_first_page_with_a_warning(tmp_path, caplog):
    root = tmp_path / "ds"
    (root / "glioma").mkdir(parents=True)
    pages = [Image.new("L", (16, 16), v) for v in (40, 200, 90)]
    pages[0].save(root / "glioma" / "stack.tif", save_all=True, append_images=pages[1:])
    with caplog.at_level(logging.WARNING, logger="braincam.data.records"):
        (record,) = load_dataset([root]).records
    assert record.slice is None
    assert f"{root / 'glioma' / 'stack.tif'}: 3 pages; only the first is read" in caplog.messages
