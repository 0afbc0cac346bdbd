"""Inputs as slices: DICOM series per folder, files of their own beside them, and files that
cannot be read skipped with their reason instead of ending the whole expansion."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from braincam.data.dicom import dicom_info
from braincam.data.imageio import ImageReadError
from braincam.data.inputs import SliceChoice, expand_inputs
from braincam.data.nifti import no_slice_reason
from braincam.data.records import NOT_UTF8
from braincam.errors import BraincamError


def _head(value: int = 200) -> np.ndarray:
    """A 64 x 64 uint8 slice: a bright disc (a head) on black."""
    image = np.zeros((64, 64), np.uint8)
    cv2.circle(image, (32, 32), 24, value, -1)
    return image


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), _head())
    return path


def _rows(slices) -> list[tuple[str, int | None, str | None]]:
    return [(Path(s.name).name, s.slice, s.file.name if s.file else None) for s in slices]


def test_each_folder_of_a_tree_is_one_series_beside_its_images(tmp_path, write_dicom):
    study = tmp_path / "study"
    (study / "SE1").mkdir(parents=True)
    (study / "SE2").mkdir()
    for k, name in enumerate(("z.dcm", "IM0002", "a.dcm")):  # names against instance order
        write_dicom(study / "SE1" / name, _head(100 + k), instance=k + 1)
    write_dicom(study / "SE2" / "b.dcm", _head(), instance=1)
    (study / "SE1" / "notes.txt").write_text("not DICOM")
    _png(study / "scan.png")
    _png(study / ".thumbs" / "hidden.png")
    assert _rows(expand_inputs(study)) == [
        ("SE1", 0, "z.dcm"), ("SE1", 1, "IM0002"), ("SE1", 2, "a.dcm"),
        ("SE2", 0, "b.dcm"), ("scan.png", None, "scan.png"),
    ]
    assert _rows(expand_inputs(study, SliceChoice(every=2)))[:2] == [
        ("SE1", 0, "z.dcm"), ("SE1", 2, "a.dcm")]


def test_a_folder_holding_two_series_gives_one_input_per_series(tmp_path, write_dicom):
    flat = tmp_path / "flat"
    flat.mkdir()
    for k in range(2):  # instance numbers restart in each series
        write_dicom(flat / f"t1_{k}.dcm", _head(100 + k), instance=k + 1,
                    series=("1.2.826.0.1.7", 3))
        write_dicom(flat / f"flair_{k}.dcm", _head(150 + k), instance=k + 1,
                    series=("1.2.826.0.1.9", 5))
    assert _rows(expand_inputs(flat)) == [
        ("flat#series3", 0, "t1_0.dcm"), ("flat#series3", 1, "t1_1.dcm"),
        ("flat#series5", 0, "flair_0.dcm"), ("flat#series5", 1, "flair_1.dcm"),
    ]


def test_a_sagittal_series_is_ordered_along_its_own_normal(tmp_path, write_dicom):
    """Without Instance Numbers, slices follow Image Position (Patient) projected on the
    normal of Image Orientation (Patient), row x column: -x for this sagittal series, whose z
    is constant."""
    sagittal = tmp_path / "sag"
    sagittal.mkdir()
    for name, x in (("a.dcm", 10.0), ("b.dcm", -20.0), ("c.dcm", 0.0)):
        write_dicom(sagittal / name, _head(), position=(x, -100.0, 50.0),
                    orientation=(0, 1, 0, 0, 0, -1))
    assert _rows(expand_inputs(sagittal)) == [
        ("sag", 0, "a.dcm"), ("sag", 1, "c.dcm"), ("sag", 2, "b.dcm")]
    axial = tmp_path / "ax"
    axial.mkdir()
    for name, z in (("a.dcm", 3.0), ("b.dcm", 1.0)):  # no orientation: by z
        write_dicom(axial / name, _head(), position=z)
    assert _rows(expand_inputs(axial)) == [("ax", 0, "b.dcm"), ("ax", 1, "a.dcm")]


def test_a_file_without_an_image_in_a_series_folder_is_skipped_by_name(tmp_path, write_dicom):
    """A DICOMDIR (no Rows/Columns) beside a series neither renames the series nor becomes a
    second one: it is a skip entry naming the file."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(2):
        write_dicom(folder / f"IM{k}.dcm", _head(), instance=k + 1, series=("1.2.3", 4))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    directory = Dataset()
    directory.file_meta = meta
    directory.save_as(folder / "DICOMDIR", enforce_file_format=True)
    skipped = []
    assert _rows(expand_inputs(folder, skipped=skipped)) == [
        ("series", 0, "IM0.dcm"), ("series", 1, "IM1.dcm")]
    assert [(s.path.name, s.reason) for s in skipped] == [
        ("DICOMDIR", "DICOM file without an image (no Rows/Columns)")]


def test_unreadable_files_are_skipped_with_their_reason_or_raise_without_a_list(
        tmp_path, write_dicom, write_nifti):
    folder = tmp_path / "mixed"
    good = _png(folder / "good.png")
    write_dicom(folder / "series.dcm", _head(), instance=1)
    (folder / "bad.nii.gz").write_bytes(b"not a volume")
    write_nifti(folder / "blank.nii.gz", np.zeros((3, 64, 64), np.uint8))
    (folder / "fake.png").write_text("not an image")  # unreadable only when decoded: kept here
    skipped = []
    slices = expand_inputs(folder, skipped=skipped)
    assert _rows(slices) == [("mixed", 0, "series.dcm"), ("fake.png", None, "fake.png"),
                             ("good.png", None, "good.png")]
    assert [(s.path.name, s.reason) for s in skipped] == [
        ("bad.nii.gz", "not a NIfTI file (no NIfTI-1/2 header)"),
        ("blank.nii.gz", no_slice_reason(SliceChoice().min_head)),
    ]
    with pytest.raises(BraincamError, match="bad.nii.gz: not a NIfTI file"):
        expand_inputs(folder)
    with pytest.raises(BraincamError, match="blank.nii.gz: no slice whose head"):
        expand_inputs([good, folder / "blank.nii.gz"])  # not dropped without a word
    only_bad = []
    assert expand_inputs([folder / "bad.nii.gz"], skipped=only_bad) == [] and len(only_bad) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BraincamError, match="no images found"):
        expand_inputs(empty, skipped=[])
    assert expand_inputs([good])[0].file == good


def test_malformed_header_numbers_count_as_missing_not_as_a_crash(tmp_path, write_dicom,
                                                                   caplog):
    path = write_dicom(tmp_path / "a.dcm", _head(), instance=3)
    data = path.read_bytes()
    tag = data.index(b"\x20\x00\x13\x00IS")  # Instance Number, value "3 " (padded)
    path.write_bytes(data[:tag + 8] + b"ab" + data[tag + 10:])
    with caplog.at_level("WARNING"):
        info = dicom_info(path)
    assert (info.instance, info.frames, info.width, info.height) == (None, 1, 64, 64)
    assert not caplog.records  # pydicom's line without the file's name is not passed on
    frames = write_dicom(tmp_path / "f.dcm", np.stack([_head()] * 2))
    data = frames.read_bytes()
    tag = data.index(b"\x28\x00\x08\x00IS")  # Number of Frames, value "2 "
    frames.write_bytes(data[:tag + 8] + b"x " + data[tag + 10:])
    with pytest.raises(BraincamError, match="Number of Frames is not a positive whole number"):
        dicom_info(frames)


def test_non_finite_values_count_as_zero_and_leave_the_window_alone():
    """An inf among raw values would stretch the percentile window over everything."""
    from braincam.data.inputs import as_grey

    raw = np.random.default_rng(0).uniform(100, 900, (32, 32))
    raw[:4, :4] = 0.0
    spoilt = raw.copy()
    spoilt[0, :2], spoilt[1, :2] = np.inf, -np.inf
    spoilt[2, :2] = np.nan
    np.testing.assert_array_equal(as_grey(spoilt), as_grey(raw))


def test_a_folder_of_files_each_its_own_series_names_each_file(tmp_path, write_dicom):
    """Single-slice exports, each with its own Series Instance UID, are inputs of their own
    named by their files, not ``<folder>#series<N>`` rows of slice 0; a series of several
    files in the same folder stays one input."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for k in range(2):
        write_dicom(flat / f"g{k}.dcm", _head(100 + k), series=(f"1.2.826.0.1.{k}", k + 1))
        write_dicom(flat / f"s{k}.dcm", _head(120 + k), instance=k + 1,
                    series=("1.2.826.0.1.9", 9))
    slices = expand_inputs(flat)
    assert _rows(slices) == [
        ("g0.dcm", None, "g0.dcm"), ("g1.dcm", None, "g1.dcm"),
        ("flat#series9", 0, "s0.dcm"), ("flat#series9", 1, "s1.dcm"),
    ]
    assert slices[0].name == str(flat / "g0.dcm")


def test_links_back_up_end_there_and_odd_entries_are_skipped(tmp_path):
    """A link to a folder above is expanded once, not 40 levels deep; a link to nothing and a
    FIFO are skip entries, not silence or a blocked read."""
    import os

    root = tmp_path / "loop"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_head(3)).save(root / "a.png")
    os.symlink("..", root / "sub" / "up")
    os.symlink(tmp_path / "gone.png", root / "broken.png")
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    skipped = []
    slices = expand_inputs([root, fifo], skipped=skipped)
    assert [Path(s.name).name for s in slices] == ["a.png"]
    assert {s.path.name: s.reason for s in skipped} == {
        "broken.png": "a link to nothing", "fifo.png": "not a regular file"}


def test_slice_choices_and_arrays_are_checked_and_string_arrays_are_paths(tmp_path):
    for bad, message in (({"every": 1.5}, "--every must be a whole number"),
                         ({"every": 0}, "--every must be"), ({"min_head": 2}, "--min-head"),
                         ({"min_head": -1}, "--min-head must be in")):
        with pytest.raises(BraincamError, match=message):
            SliceChoice(**bad)
    Image.fromarray(_head(3)).save(tmp_path / "a.png")
    Image.fromarray(_head(4)).save(tmp_path / "b.png")
    paths = np.array([str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    assert [Path(s.name).name for s in expand_inputs(paths)] == ["a.png", "b.png"]
    with pytest.raises(BraincamError, match="array of numbers, got dtype complex128"):
        expand_inputs(np.ones((8, 8), complex))


def test_a_file_name_that_is_not_utf8_is_a_skip_entry(tmp_path, write_dicom):
    """predictions.csv could not hold its name: skipped with the reason (a DICOM file of a
    series too), or refused alone."""
    bad = tmp_path / os.fsdecode(b"caf\xe9.png")
    good = tmp_path / "good.png"
    for path in (bad, good):
        Image.fromarray(np.full((32, 32), 90, np.uint8)).save(path)
    series = write_dicom(tmp_path / os.fsdecode(b"s\xe9rie"), _head(), instance=1)
    skipped = []
    assert [s.file for s in expand_inputs(tmp_path, skipped=skipped)] == [good]
    assert [(s.path, s.reason) for s in skipped] == [(bad, NOT_UTF8), (series, NOT_UTF8)]
    with pytest.raises(ImageReadError, match="not valid UTF-8"):
        expand_inputs(bad)
