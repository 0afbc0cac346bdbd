"""Image properties: exact values on constructed images, the cache, unreadable files, and
per-property class separation."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from braincam.audit.data import properties as P
from braincam.audit.data.properties import jpeg_quality, measure_one, measure_properties
from braincam.audit.data.separation import separation
from braincam.data.records import ImageRecord


def _head_image(w: int = 80, h: int = 60, value: int = 200) -> np.ndarray:
    """A bright ellipse (the 'head') on black: known areas and bounding box."""
    yy, xx = np.mgrid[:h, :w]
    inside = ((xx - w / 2 + 0.5) / (w * 0.3)) ** 2 + ((yy - h / 2 + 0.5) / (h * 0.3)) ** 2 <= 1
    return np.where(inside, value, 0).astype(np.uint8)


def _save(path, array, fmt="PNG", **kw):
    Image.fromarray(array).save(path, format=fmt, **kw)
    return path


def _record(path, label="tumor", split="train"):
    with Image.open(path) as im:
        w, h = im.size
    return ImageRecord(path, "src", split, label, w, h, None)


def test_file_intensity_head_and_background_values(tmp_path):
    image = _head_image()
    path = _save(tmp_path / "a.png", image)
    row = measure_one(path, path.read_bytes())
    assert (row["width"], row["height"], row["aspect"]) == (80, 60, pytest.approx(80 / 60))
    assert (row["format"], row["mode"], row["bit_depth"]) == ("PNG", "L", 8)
    assert row["file_size"] == path.stat().st_size and np.isnan(row["jpeg_quality"])
    head = image > 0
    assert row["mean"] == pytest.approx(image.mean() / 255, abs=1e-6)
    assert row["std"] == pytest.approx((image / 255).std(), abs=1e-6)
    assert (row["p1"], row["p50"], row["p99"]) == (0.0, 0.0, 200 / 255)  # head: 28 % of pixels
    assert row["hist"].sum() == pytest.approx(1.0)
    assert row["hist"][200 * 32 // 256] == pytest.approx(head.mean())
    assert row["head_fraction"] == pytest.approx(head.mean(), abs=0.02)
    assert row["background_fraction"] == pytest.approx(1 - row["head_fraction"])
    assert (row["head_x0"], row["head_x1"]) == (pytest.approx(0.2, abs=0.03),
                                                pytest.approx(0.8, abs=0.03))
    assert row["bg_mean"] == row["border_mean"] == 0.0
    assert row["thumb"].shape == (256,) and row["bg_thumb"].max() == 0.0
    assert row["sharpness"] > 0 and isinstance(row["phash"], int)


def test_marker_outside_the_head_shows_in_background_numbers(tmp_path):
    image = _head_image()
    image[:6, :6] = 255
    path = _save(tmp_path / "m.png", image)
    row = measure_one(path, path.read_bytes())
    assert row["bg_p99"] == 1.0 and row["bg_hist"][-1] > 0
    assert row["bg_thumb"].reshape(16, 16)[0, 0] > 0.5


def test_modes_bit_depth_and_jpeg_quality(tmp_path):
    rgb = np.stack([_head_image()] * 3, axis=-1)
    row = measure_one(p := _save(tmp_path / "c.png", rgb), p.read_bytes())
    assert (row["mode"], row["bit_depth"]) == ("RGB", 8)
    deep = (_head_image().astype(np.uint16) * 257)
    row = measure_one(p := _save(tmp_path / "d.png", deep), p.read_bytes())
    assert row["bit_depth"] == 16 and row["p99"] == pytest.approx(200 / 255, abs=1e-3)
    noise = (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)
    for quality in (10, 50, 75, 95, 100):
        buf = io.BytesIO()
        Image.fromarray(noise).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        assert jpeg_quality(Image.open(buf).quantization) == pytest.approx(quality, abs=0.5)
    row = measure_one(p := _save(tmp_path / "e.jpg", _head_image(), "JPEG", quality=80),
                      p.read_bytes())
    assert row["format"] == "JPEG" and row["jpeg_quality"] == pytest.approx(80, abs=0.5)


def test_cache_is_reused_and_unreadable_files_are_listed(tmp_path, monkeypatch):
    good = [_record(_save(tmp_path / f"{i}.png", _head_image(value=100 + 40 * i)))
            for i in range(3)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64 + b"IEND")
    records = good[:2] + [ImageRecord(bad, "src", "train", "tumor", 8, 8, None)] + good[2:]
    first = measure_properties(records, cache_dir=tmp_path / "cache", workers=2)
    assert [r.path for r in first.records] == [r.path for r in good]
    assert [s.path for s in first.skipped] == [bad] and "bad.png" not in first.skipped[0].reason
    assert first.table["p99"].tolist() == pytest.approx([100 / 255, 140 / 255, 180 / 255],
                                                        abs=1e-6)

    def boom(*_):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(P, "measure_one", boom)
    again = measure_properties(good, cache_dir=tmp_path / "cache")
    pd.testing.assert_frame_equal(again.table, first.table)
    np.testing.assert_array_equal(again.vectors["thumb"], first.vectors["thumb"])
    np.testing.assert_array_equal(again.phashes, first.phashes)
    assert again.content_hashes == first.content_hashes


def test_separation_binary_and_multiclass():
    rng = np.random.default_rng(0)
    labels = np.array(["no_tumor"] * 50 + ["tumor"] * 50)
    table = pd.DataFrame({
        "size": np.r_[np.full(50, 128.0), np.full(50, 160.0)],
        "noise": rng.normal(size=100),
        "quality": np.r_[np.full(50, np.nan), rng.uniform(50, 90, 50)],
        "format": ["PNG"] * 50 + ["JPEG"] * 50,
    })
    sep = separation(table, labels, ["no_tumor", "tumor"])
    assert sep["size"]["auc"] == 1.0 and sep["size"]["ks"] == 1.0
    assert sep["size"]["higher_in"] == "tumor" and sep["size"]["p_value"] < 1e-20
    assert (sep["size"]["class"], sep["size"]["versus"]) == ("tumor", "no_tumor")
    assert sep["size"]["per_class"]["no_tumor"]["p50"] == 128.0
    assert 0.5 <= sep["noise"]["auc"] < 0.65
    assert sep["quality"]["auc"] is None  # defined for one class only
    assert sep["format"]["per_class"] == {"no_tumor": {"PNG": 50}, "tumor": {"JPEG": 50}}

    multi = np.repeat(["glioma", "meningioma", "pituitary"], 20)
    value = np.r_[rng.normal(0, 1, 20), rng.normal(0, 1, 20), rng.normal(-10, 1, 20)]
    sep = separation(pd.DataFrame({"v": value}), multi, ["glioma", "meningioma", "pituitary"])
    assert sep["v"]["class"] == "pituitary" and sep["v"]["auc"] == 1.0
    assert sep["v"]["higher_in"] == sep["v"]["versus"] == "rest"


def test_each_frame_and_slice_of_dicom_and_nifti_files_is_measured(tmp_path, write_dicom,
                                                                   write_nifti):
    frames = np.stack([_head_image(value=v) for v in (60, 120, 180)])
    dicom = write_dicom(tmp_path / "multi.dcm", frames, window=(127.5, 255.0))
    nifti = write_nifti(tmp_path / "vol.nii", frames[:2], cal=(0.0, 255.0))
    records = [ImageRecord(dicom, "src", "train", "tumor", 80, 60, None, slice=k)
               for k in range(3)]
    records += [ImageRecord(nifti, "src", "train", "no_tumor", 80, 60, None, slice=k)
                for k in range(2)]
    props = measure_properties(records, cache_dir=tmp_path / "cache", workers=2)
    assert not props.skipped and len(set(props.content_hashes)) == 5
    assert props.table["p99"].tolist() == pytest.approx(
        [60 / 255, 120 / 255, 180 / 255, 60 / 255, 120 / 255], abs=1e-6)
    assert props.table["format"].tolist() == ["DICOM"] * 3 + ["NIfTI"] * 2
    assert props.table["bit_depth"].isna().all()


def test_an_unreadable_frame_is_listed_by_its_key(tmp_path, write_dicom):
    """Each frame of a file that cannot be decoded is its own skip entry, ``<path>#<k>``."""
    frames = np.stack([_head_image(value=v) for v in (60, 120)])
    dicom = write_dicom(tmp_path / "multi.dcm", frames, window=(127.5, 255.0))
    records = [ImageRecord(dicom, "src", "train", "tumor", 80, 60, None, slice=k)
               for k in (0, 1, 5)]  # frame 5 does not exist
    props = measure_properties(records, cache_dir=tmp_path / "cache", workers=1)
    assert [str(s.path) for s in props.skipped] == [f"{dicom}#5"]
