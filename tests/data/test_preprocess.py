"""preprocess (crop, resize, standardise), the crop mapping back, and the on-disk cache."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from PIL import Image

import braincam.data.preprocess as pp
from braincam.data.imageio import ImageReadError, read_grey
from braincam.data.mask import head_mask
from braincam.data.preprocess import (
    PreprocessCache,
    PreprocessConfig,
    box_mask,
    box_to_output,
    preprocess,
    uncrop,
)
from braincam.data.records import Box, ImageRecord, without_skipped
from braincam.errors import BraincamError


def _head(height=60, width=80, centre=(28, 36), radii=(18, 24), seed=0):
    """Grey ellipse head with texture on a dark noisy background, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1
    grey = np.where(inside, 0.4 + 0.3 * np.sin(xx / 3.0) ** 2, 0.02)
    grey = grey + rng.normal(0, 0.01, grey.shape)
    return np.clip(grey, 0, 1).astype(np.float32), inside


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_config_is_validated():
    with pytest.raises(BraincamError, match="unknown standardisation 'zscore'"):
        PreprocessConfig(standardize="zscore")
    with pytest.raises(BraincamError, match="at least 8 px"):
        PreprocessConfig(size=4)
    for size in (64.5, "64", None):
        with pytest.raises(BraincamError, match="image size must be a whole number of px"):
            PreprocessConfig(size=size)
    assert PreprocessConfig(size=np.int64(64)).size == 64


def test_crop_is_the_head_box_plus_margin():
    grey, inside = _head()
    prep = preprocess(grey, PreprocessConfig(size=32))
    assert prep.image.shape == (32, 32) and prep.image.dtype == np.uint8
    assert prep.mask.shape == (32, 32) and prep.mask.dtype == bool
    assert prep.original_size == (80, 60)
    # ellipse rows 10..46, cols 12..60 (exclusive ends); margin round(0.02 * 49) = 1
    assert prep.crop == (11, 9, 62, 48)
    assert abs(prep.mask.mean() - np.pi * 18 * 24 / (51 * 39)) < 0.03  # ellipse area / crop
    full = preprocess(grey, PreprocessConfig(size=32, crop=False))
    assert full.crop == (0, 0, 80, 60)


def test_uncrop_maps_back_onto_the_original():
    grey, inside = _head()
    prep = preprocess(grey, PreprocessConfig(size=48))
    back = uncrop(prep.mask.astype(np.float32), prep)
    assert back.shape == (60, 80)
    assert _iou(back >= 0.5, inside) > 0.93
    x0, y0, x1, y1 = prep.crop
    assert back[:y0].sum() == 0 and back[:, x1:].sum() == 0
    again = cv2.resize(back[y0:y1, x0:x1], prep.mask.shape[::-1], interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(again, prep.mask, atol=0.5)  # cropping and resizing undo it


def test_box_maps_to_model_input():
    grey, _ = _head()
    prep = preprocess(grey, PreprocessConfig(size=51))  # crop (11, 9, 62, 48): 51 x 39 px
    # box covering original x 21..41 and y 19..29
    box = Box(cx=31 / 80, cy=24 / 60, w=20 / 80, h=10 / 60)
    x0, y0, x1, y1 = box_to_output(box, prep)
    np.testing.assert_allclose([x0, x1], [10, 30], atol=1e-4)
    np.testing.assert_allclose([y0, y1], [10 * 51 / 39, 20 * 51 / 39], atol=1e-4)
    mask = box_mask(box, prep)
    assert mask.sum() == 20 * 13 and mask[14, 10] and not mask[14, 9]


@pytest.mark.parametrize("method", ["none", "minmax", "zscore-in-mask", "percentile", "histmatch"])
def test_standardisations(method):
    grey, _ = _head()
    prep = preprocess(grey, PreprocessConfig(size=40, standardize=method))
    inside = prep.image[prep.mask].astype(float)
    if method == "minmax":
        assert prep.image.min() == 0 and prep.image.max() == 255
    if method == "zscore-in-mask":  # mean -> 127.5, +-3 SD -> 0..255
        assert abs(inside.mean() - 127.5) < 3
        assert abs(inside.std() - 255 / 6) < 3
    if method == "percentile":
        assert abs(np.percentile(inside, 1)) <= 1 and abs(np.percentile(inside, 99) - 255) <= 1
    if method == "histmatch":  # in-head histogram follows Beta(2, 2.5): mean 2 / 4.5
        assert abs(inside.mean() / 255 - 2 / 4.5) < 0.02
    again = preprocess(grey, PreprocessConfig(size=40, standardize=method))
    np.testing.assert_array_equal(again.image, prep.image)


def test_histmatch_removes_a_monotone_intensity_change():
    grey, _ = _head()
    config = PreprocessConfig(size=40, standardize="histmatch")
    a = preprocess(grey, config).image.astype(int)
    b = preprocess(grey**2 * 0.8, config).image.astype(int)
    assert np.abs(a - b).mean() < 4  # resizing before the mapping leaves small differences
    plain = PreprocessConfig(size=40)
    gap = np.abs(
        preprocess(grey, plain).image.astype(int) - preprocess(grey**2 * 0.8, plain).image
    )
    assert gap.mean() > 20


def test_mask_background_zeroes_outside_the_head():
    grey, _ = _head()
    prep = preprocess(grey + 0.2, PreprocessConfig(size=40, mask_background=True))
    assert (prep.image[~prep.mask] == 0).all()
    assert (prep.image[prep.mask] > 0).all()


def test_mask_skull_keeps_only_the_brain_interior():
    from braincam.data.mask import brain_region

    grey, _ = _head()
    prep = preprocess(grey + 0.2, PreprocessConfig(size=40, mask_skull=True))
    brain = brain_region(prep.mask)
    assert prep.mask[~brain].any()  # a rim band exists and is erased
    assert (prep.image[~brain] == 0).all() and (prep.image[brain] > 0).all()
    plain = preprocess(grey + 0.2, PreprocessConfig(size=40)).image
    assert (prep.image[brain] == plain[brain]).all()


def test_black_image_is_kept_whole():
    prep = preprocess(np.zeros((20, 30), np.float32), PreprocessConfig(size=16))
    assert prep.crop == (0, 0, 30, 20) and not prep.mask.any() and not prep.image.any()


def _write_record(path, seed=0, label="glioma"):
    grey, _ = _head(seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(grey * 255).astype(np.uint8)).save(path)
    return ImageRecord(path, "ds", None, label, 80, 60, None)


def test_cache_hit_never_decodes(tmp_path, monkeypatch):
    record = _write_record(tmp_path / "a.png")
    cache = PreprocessCache(tmp_path / "cache")
    config = PreprocessConfig(size=32)
    first = cache.get(record, config)
    assert len(list((tmp_path / "cache" / "preprocess").rglob("*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cache hit decoded the image")

    monkeypatch.setattr(pp, "read_grey", no_decoding)
    second = cache.get(record, config)
    np.testing.assert_array_equal(second.image, first.image)
    np.testing.assert_array_equal(second.mask, first.mask)
    assert second.crop == first.crop and second.original_size == first.original_size
    copy = tmp_path / "renamed.png"  # same bytes under another name: still a hit
    copy.write_bytes(record.path.read_bytes())
    np.testing.assert_array_equal(cache.get(copy, config).image, first.image)
    with pytest.raises(AssertionError, match="decoded"):  # another config is another entry
        cache.get(record, PreprocessConfig(size=32, standardize="minmax"))


def test_a_volume_is_read_and_hashed_once_for_all_its_slices(tmp_path, monkeypatch,
                                                             write_nifti):
    yy, xx = np.mgrid[:48, :48]
    head = ((xx - 24) / 20) ** 2 + ((yy - 24) / 18) ** 2 <= 1
    volume = np.stack([np.where(head, 60 + 40 * k, 0) for k in range(4)]).astype(np.uint8)
    path = write_nifti(tmp_path / "vol.nii.gz", volume)
    records = [ImageRecord(path, "src", None, "tumor", 48, 48, None, slice=k) for k in range(4)]
    config = PreprocessConfig(size=32)
    images, _, _ = PreprocessCache(tmp_path / "cache").load(records, config)  # fills the cache
    assert len({int(i.max()) for i in images}) == 4  # four different slices
    reads = []
    real = pp._read_bytes
    monkeypatch.setattr(pp, "_read_bytes", lambda p: reads.append(p) or real(p))
    cache = PreprocessCache(tmp_path / "cache", workers=1)
    np.testing.assert_array_equal(cache.load(records, config)[0], images)
    assert len(reads) == 1  # four cache hits, one read of the file
    write_nifti(path, volume[::-1])  # edited in place: hashed again, no stale images
    os.utime(path, ns=(1, 1))
    np.testing.assert_array_equal(cache.load(records, config)[0], images[::-1])


def test_cache_matches_direct_preprocessing_and_heals_a_broken_entry(tmp_path):
    record = _write_record(tmp_path / "a.png")
    cache = PreprocessCache(tmp_path / "cache")
    config = PreprocessConfig(size=24, standardize="zscore-in-mask")
    direct = preprocess(read_grey(record.path), config)
    np.testing.assert_array_equal(cache.get(record, config).image, direct.image)
    (entry,) = (tmp_path / "cache" / "preprocess").rglob("*.npz")
    entry.write_bytes(b"garbage")
    np.testing.assert_array_equal(cache.get(record, config).image, direct.image)
    assert entry.stat().st_size > 100


def test_cache_load_returns_arrays_and_skips_bad_files(tmp_path):
    records = [_write_record(tmp_path / f"{i}.png", seed=i) for i in range(4)]
    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    records.insert(2, ImageRecord(bad, "ds", None, "glioma", 80, 60, None))
    config = PreprocessConfig(size=16)
    images, masks, skipped = PreprocessCache(tmp_path / "cache").load(records, config)
    assert images.shape == (4, 16, 16) and images.dtype == np.uint8
    assert masks.shape == (4, 16, 16) and masks.dtype == bool
    assert [s.path for s in skipped] == [bad] and "not a readable image" in skipped[0].reason
    kept = without_skipped(records, skipped)
    for image, record in zip(images, kept, strict=True):
        np.testing.assert_array_equal(image, preprocess(read_grey(record.path), config).image)
    empty = PreprocessCache(tmp_path / "cache").load([], config)
    assert empty[0].shape == (0, 16, 16) and empty[2] == []


def test_cache_dir_defaults_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINCAM_CACHE", str(tmp_path / "env-cache"))
    assert PreprocessCache().dir == tmp_path / "env-cache" / "preprocess"


def test_missing_file_is_a_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="cannot read file"):
        PreprocessCache(tmp_path).get(tmp_path / "gone.png", PreprocessConfig(size=16))


def test_head_mask_of_output_agrees_with_stored_mask():
    grey, _ = _head(seed=3)
    prep = preprocess(grey, PreprocessConfig(size=48))
    assert _iou(head_mask(prep.image), prep.mask) > 0.9


def test_cache_load_also_caches_phashes(tmp_path, monkeypatch):
    import braincam.data.hashing as hashing

    records = [_write_record(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    expected = hashing.perceptual_hashes([r.path for r in records], cache_dir=tmp_path / "other")
    PreprocessCache(tmp_path / "cache").load(records, PreprocessConfig(size=16))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(hashing, "read_grey", no_decoding)
    got = hashing.perceptual_hashes([r.path for r in records], cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(got, expected)


def test_preprocess_config_of_checkpoint_meta():
    from braincam.data.preprocess import preprocess_config

    meta = {"preprocess": {"size": 64, "crop": False, "standardize": "minmax",
                           "mask_background": True, "mask_skull": False}}
    assert preprocess_config(meta) == PreprocessConfig(64, False, "minmax", True, False)
    with pytest.raises(BraincamError, match="no valid preprocess entry"):
        preprocess_config({"preprocess": {"size": 64, "colour": True}})
