"""Tumour masks: attached from ROOT/masks, bad masks skipped, crop/resize like the box."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from braincam.data.imageio import ImageReadError
from braincam.data.preprocess import (
    PreprocessConfig,
    box_mask,
    mask_to_output,
    preprocess,
    read_tumour_mask,
    tumour_mask,
)
from braincam.data.records import Box, load_dataset
from braincam.data.synthetic import PhantomSpec, make_phantom_arrays, make_phantom_dataset

W, H = 100, 80
RECT = (40, 30, 56, 42)  # x0, y0, x1, y1 of the known tumour, original pixels


def _head(seed=0):
    """A bright ellipse (the head) on black, so preprocessing crops to it."""
    yy, xx = np.mgrid[:H, :W]
    head = ((xx - 50) / 40) ** 2 + ((yy - 40) / 30) ** 2 <= 1
    rng = np.random.default_rng(seed)
    return np.where(head, 150 + rng.integers(0, 40, (H, W)), 0).astype(np.uint8)


def _rect_mask():
    mask = np.zeros((H, W), np.uint8)
    x0, y0, x1, y1 = RECT
    mask[y0:y1, x0:x1] = 255
    return mask


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _dataset(tmp_path, box=None):
    root = tmp_path / "ds"
    _save(root / "glioma" / "1.png", _head())
    _save(root / "masks" / "glioma" / "1.png", _rect_mask())
    if box is not None:
        (root / "boxes.csv").write_text("file,label,cx,cy,w,h\nglioma/1.png,glioma," +
                                        ",".join(str(v) for v in box) + "\n")
    return root


def test_rectangular_mask_follows_crop_and_resize_exactly_like_its_box(tmp_path):
    ds = load_dataset([_dataset(tmp_path)])
    (record,) = ds.records
    assert record.mask == tmp_path / "ds" / "masks" / "glioma" / "1.png" and ds.skipped == []
    prep = preprocess(_head(), PreprocessConfig(size=32))
    assert prep.crop != (0, 0, W, H)  # the crop matters
    x0, y0, x1, y1 = RECT
    box = Box((x0 + x1) / 2 / W, (y0 + y1) / 2 / H, (x1 - x0) / W, (y1 - y0) / H)
    got = tumour_mask(record, prep)
    assert got.dtype == bool and got.shape == (32, 32)
    np.testing.assert_array_equal(got, box_mask(box, prep))
    # by hand: output column j is inside when x0 <= cx0 + (j + 0.5) * crop_w / 32 < x1
    cx0, cy0, cx1, cy1 = prep.crop
    cols = cx0 + (np.arange(32) + 0.5) * (cx1 - cx0) / 32
    rows = cy0 + (np.arange(32) + 0.5) * (cy1 - cy0) / 32
    expected = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    np.testing.assert_array_equal(got, expected)


def test_mask_wins_over_box_and_box_is_the_fallback(tmp_path):
    far_box = (0.2, 0.2, 0.1, 0.1)  # nowhere near RECT
    (record,) = load_dataset([_dataset(tmp_path, box=far_box)]).records
    prep = preprocess(_head(), PreprocessConfig(size=32))
    from_box = box_mask(Box(*far_box), prep)
    got = tumour_mask(record, prep)
    assert got.sum() > 0 and not (got & from_box).any()
    np.testing.assert_array_equal(tumour_mask(replace(record, mask=None), prep), from_box)
    assert tumour_mask(replace(record, mask=None, box=None), prep) is None


def test_phantom_masks_are_attached_and_match_the_generator(tmp_path):
    spec = PhantomSpec(n_per_class=2, size=64, seed=3)
    root = make_phantom_dataset(tmp_path / "ph", spec, splits=("train",))
    records = load_dataset([root]).records
    truth = {f"{item.name}.png": item.phantom.tumor_mask
             for item in make_phantom_arrays(spec, ("train",))}
    config = PreprocessConfig(size=48)
    for r in records:
        if r.label == "no_tumor":
            assert r.mask is None
            continue
        prep = preprocess(np.asarray(Image.open(r.path)), config)
        np.testing.assert_array_equal(read_tumour_mask(r.mask, (r.width, r.height)),
                                      truth[r.path.name])
        got = tumour_mask(r, prep)
        assert got.any() and (got & ~box_mask(r.box, prep)).sum() == 0  # the mask is in its box


def test_bad_masks_warn_and_are_listed_the_images_kept(tmp_path, caplog):
    root = tmp_path / "ds"
    for name in ("1", "2", "3", "4"):
        _save(root / "glioma" / f"{name}.png", _head())
    _save(root / "no_tumor" / "5.png", _head())
    _save(root / "no_tumor" / "6.png", _head())
    _save(root / "masks" / "no_tumor" / "6.png", _rect_mask())  # a tumour on a no-tumour image
    _save(root / "masks" / "glioma" / "1.png", _rect_mask())  # good
    _save(root / "masks" / "glioma" / "2.png", _rect_mask()[:40])  # wrong size
    (root / "masks" / "glioma" / "3.png").write_bytes(b"not a png")  # unreadable
    _save(root / "masks" / "glioma" / "4.png", np.zeros((H, W), np.uint8))  # empty on a tumour
    _save(root / "masks" / "no_tumor" / "5.png", np.zeros((H, W), np.uint8))  # fine: no tumour
    with caplog.at_level(logging.WARNING, logger="braincam.data.records"):
        ds = load_dataset([root])
    assert [r.path.name for r in ds.records] == ["1.png", "2.png", "3.png", "4.png", "5.png",
                                                 "6.png"]
    assert [r.mask is not None for r in ds.records] == [True, False, False, False, True, False]
    reasons = {s.path.name: s.reason for s in ds.skipped}
    assert set(reasons) == {"2.png", "3.png", "4.png", "6.png"}
    assert reasons["6.png"].startswith("tumour pixels in the mask of a no_tumor image")
    assert all(s.path.parent.parent.name == "masks" for s in ds.skipped)
    assert reasons["2.png"].startswith("mask is 100x40 px, image is 100x80")
    assert reasons["3.png"].startswith("not a readable image file")
    assert reasons["4.png"].startswith("empty mask on a glioma image")
    assert all(r.endswith("image kept without it") for r in reasons.values())
    assert sum("tumour mask" in m for m in caplog.messages) == 4
    # a second load reads the emptiness from the cache and says the same
    assert {s.path.name: s.reason for s in load_dataset([root]).skipped} == reasons


def test_the_loader_and_the_reader_agree_on_every_mask_encoding(tmp_path):
    """16-bit label maps (0/1, 0/255, 0/65535) mark every pixel above 0; 8-bit masks, with or
    without alpha, mark grey (times alpha) >= 128, or every pixel above 0 where none reaches
    128 (0/1 and label maps, a palette mask drawn in dark red). The loader attaches a mask
    exactly when the reader finds tumour pixels in it."""
    rect = _rect_mask() > 0
    alpha_only = np.dstack([np.full((H, W), 255, np.uint8), np.where(rect, 255, 0)])
    labels = np.where(rect, 1, 0).astype(np.uint8)
    labels[RECT[1]:RECT[1] + 4, RECT[0]:RECT[2]] = 4  # a second tumour label inside
    noisy = np.where(rect, 250, 3).astype(np.uint8)  # a lossy 0/255 mask: 3 is not tumour
    encodings = {
        "u16_one": (rect.astype(np.uint16), rect),
        "u16_255": (rect.astype(np.uint16) * 255, rect),
        "u16_max": (rect.astype(np.uint16) * 65535, rect),
        "la": (alpha_only.astype(np.uint8), rect),  # white everywhere, opaque on the tumour
        "u8_one": (rect.astype(np.uint8), rect),
        "u8_labels": (labels, rect),
        "u8_noisy": (noisy, rect),
        "palette_red": (rect.astype(np.uint8), rect),  # index 1 drawn (128, 0, 0)
        "u8_empty": (np.zeros((H, W), np.uint8), np.zeros_like(rect)),
    }
    root = tmp_path / "ds"
    for name, (array, _) in encodings.items():
        _save(root / "glioma" / f"{name}.png", _head())
        if name == "palette_red":
            image = Image.fromarray(array, "P")
            image.putpalette([0, 0, 0, 128, 0, 0])
            (root / "masks" / "glioma").mkdir(parents=True, exist_ok=True)
            image.save(root / "masks" / "glioma" / f"{name}.png")
        else:
            _save(root / "masks" / "glioma" / f"{name}.png", array)
    records = {r.path.stem: r for r in load_dataset([root]).records}
    for name, (_, expected) in encodings.items():
        mask = read_tumour_mask(root / "masks" / "glioma" / f"{name}.png", (W, H))
        np.testing.assert_array_equal(mask, expected, err_msg=name)
        assert (records[name].mask is not None) == bool(expected.any()), name


def test_read_tumour_mask_rejects_another_size_in_one_line(tmp_path):
    path = tmp_path / "m.png"
    _save(path, _rect_mask())
    assert read_tumour_mask(path, (W, H)).sum() == 16 * 12
    with pytest.raises(ImageReadError, match=r"mask is 100x80 px, image is 50x40$"):
        read_tumour_mask(path, (50, 40))


def _volume(tumour_slices=(1, 2), z=4):
    """``z`` head slices (uint8, H x W) with the known rectangle brighter on ``tumour_slices``,
    and the matching 0/1 label volume."""
    slices = np.stack([_head(seed=k) for k in range(z)])
    labels = np.zeros_like(slices)
    x0, y0, x1, y1 = RECT
    for k in tumour_slices:
        slices[k, y0:y1, x0:x1] = 250
        labels[k, y0:y1, x0:x1] = 1
    return slices, labels


def test_nifti_label_volumes_annotate_and_label_each_slice(tmp_path, write_nifti):
    root = tmp_path / "brats"
    for folder in ("glioma", "no_tumor", "masks/glioma", "masks/no_tumor"):
        (root / folder).mkdir(parents=True)
    image, labels = _volume()
    write_nifti(root / "glioma" / "p1.nii.gz", image, axcodes=("L", "P", "S"))
    write_nifti(root / "masks" / "glioma" / "p1.nii.gz", labels, axcodes=("L", "P", "S"))
    write_nifti(root / "glioma" / "p2.nii.gz", image)
    write_nifti(root / "masks" / "glioma" / "p2.nii.gz", labels[:3])  # another shape
    write_nifti(root / "no_tumor" / "p3.nii.gz", image)
    write_nifti(root / "masks" / "no_tumor" / "p3.nii.gz", labels)  # tumour on tumour-free
    data = load_dataset([root])
    p1 = sorted((r for r in data.records if r.path.name == "p1.nii.gz"), key=lambda r: r.slice)
    assert [(r.slice, r.label) for r in p1] == [
        (0, "no_tumor"), (1, "glioma"), (2, "glioma"), (3, "no_tumor")]
    assert all(r.mask == root / "masks" / "glioma" / "p1.nii.gz" for r in p1)
    config = PreprocessConfig(size=W, crop=False)
    for r in p1:
        prep = preprocess(image[r.slice].astype(np.float32) / 255, config)
        expected = _rect_mask() > 0 if r.label == "glioma" else np.zeros((H, W), bool)
        got = read_tumour_mask(r.mask, (W, H), r.slice)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(tumour_mask(r, prep), mask_to_output(expected, prep))
    p2 = [r for r in data.records if r.path.name == "p2.nii.gz"]
    assert {(r.label, r.mask) for r in p2} == {("glioma", None)}
    p3 = sorted((r for r in data.records if r.path.name == "p3.nii.gz"), key=lambda r: r.slice)
    assert [r.mask is not None for r in p3] == [True, False, False, True]  # empty slices: valid
    reasons = {str(s.path.relative_to(root)): s.reason for s in data.skipped}
    assert reasons["masks/glioma/p2.nii.gz"].startswith("mask volume is 3x80x100 voxels")
    assert not any(k.startswith("masks/glioma/p2.nii.gz#") for k in reasons)  # one entry
    assert reasons["masks/no_tumor/p3.nii.gz#1"] == (
        "tumour voxels on a no_tumor slice; image kept without it")
    assert "masks/no_tumor/p3.nii.gz#0" not in reasons


def test_label_volumes_of_another_orientation_or_empty_on_a_tumour_are_set_aside(
        tmp_path, write_nifti, caplog):
    """A label volume stored mirrored against its image (same grid, other affine) would mark
    healthy brain; an empty one on a tumour volume would turn every slice into no_tumor. Both
    are set aside in one entry, the slices keep the folder's class."""
    root = tmp_path / "brats"
    for folder in ("glioma", "masks/glioma"):
        (root / folder).mkdir(parents=True)
    image, labels = _volume()
    write_nifti(root / "glioma" / "mirrored.nii.gz", image, axcodes=("L", "P", "S"))
    write_nifti(root / "masks" / "glioma" / "mirrored.nii.gz", labels)  # RAS affine
    write_nifti(root / "glioma" / "empty.nii.gz", image)
    write_nifti(root / "masks" / "glioma" / "empty.nii.gz", np.zeros_like(labels))
    with caplog.at_level(logging.WARNING, logger="braincam.data.records"):
        data = load_dataset([root])
    assert {(r.path.name, r.label, r.mask) for r in data.records} == {
        ("mirrored.nii.gz", "glioma", None), ("empty.nii.gz", "glioma", None)}
    reasons = {str(s.path.relative_to(root)): s.reason for s in data.skipped}
    assert reasons == {
        "masks/glioma/mirrored.nii.gz": "mask volume is stored RAS, image volume LPS (affines "
                                        "differ); image kept without it",
        "masks/glioma/empty.nii.gz": "empty mask volume on a glioma volume; image kept without "
                                     "it"}
    assert sum("tumour mask" in m for m in caplog.messages) == 2


def test_mask_names_keep_a_files_own_dots_and_frames_need_their_own_masks(
        tmp_path, write_dicom, caplog):
    """An extension-less DICOM named by UID keeps its dots (``1.2.5`` -> ``1.2.5.png``, not
    ``1.2.png``); one 2D mask cannot annotate a multi-frame file; masks that annotate no image
    are named in a warning."""
    root = tmp_path / "ds"
    (root / "glioma").mkdir(parents=True)
    head = _head()
    for uid in ("1.2.5", "1.2.6"):
        write_dicom(root / "glioma" / uid, head)
    _save(root / "masks" / "glioma" / "1.2.5.png", _rect_mask())
    _save(root / "masks" / "glioma" / "1.2.png", np.zeros((H, W), np.uint8))  # nobody's
    write_dicom(root / "glioma" / "multi.dcm", np.stack([head, head, head]))
    _save(root / "masks" / "glioma" / "multi.png", _rect_mask())
    with caplog.at_level(logging.WARNING, logger="braincam.data.records"):
        data = load_dataset([root])
    masks = {(r.path.name, r.slice): r.mask and r.mask.name for r in data.records}
    assert masks == {("1.2.5", None): "1.2.5.png", ("1.2.6", None): None,
                     ("multi.dcm", 0): None, ("multi.dcm", 1): None, ("multi.dcm", 2): None}
    assert len(data.skipped) == 1  # one entry for the file, not one per frame
    reasons = {str(s.path.relative_to(root)): s.reason for s in data.skipped}
    assert set(reasons) == {"masks/glioma/multi.png"}
    assert reasons["masks/glioma/multi.png"].startswith("one 2D mask for a file of several")
    assert any("1 files under" in m and "masks/glioma/1.2.png" in m for m in caplog.messages)


def test_masks_folders_in_other_places_are_named_and_never_read_as_images(tmp_path, caplog):
    """Masks are read from ROOT/masks alone: ROOT/Masks, ROOT/Training/masks and a class
    folder's masks/ are each named in a warning, and the last is not read as images."""
    flat, split = tmp_path / "flat", tmp_path / "split"
    _save(flat / "glioma" / "1.png", _head())
    _save(flat / "glioma" / "masks" / "1.png", _rect_mask())
    _save(flat / "Masks" / "glioma" / "1.png", _rect_mask())
    _save(split / "Training" / "glioma" / "1.png", _head())
    _save(split / "Training" / "masks" / "glioma" / "1.png", _rect_mask())
    with caplog.at_level(logging.WARNING, logger="braincam.data.records"):
        records = load_dataset([flat, split]).records
    assert [(r.path.relative_to(tmp_path).as_posix(), r.mask) for r in records] == [
        ("flat/glioma/1.png", None), ("split/Training/glioma/1.png", None)]
    named = [m.split(":")[0] for m in caplog.messages if "not read" in m]
    assert sorted(named) == [str(flat / "Masks"), str(flat / "glioma" / "masks"),
                             str(split / "Training" / "masks")]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="braincam.data.records"):
        load_dataset([_dataset(tmp_path)])  # ROOT/masks itself: no such warning
    assert not [m for m in caplog.messages if "not read" in m]
