"""Phantom generator: anatomy, determinism, each planted shortcut, and the on-disk layout."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from braincam.data.synthetic import (
    BRIGHTNESS_OFFSET,
    MARKER_FRACTION,
    PhantomSpec,
    make_phantom_arrays,
    make_phantom_dataset,
    render_phantom,
    shortcut_contrast,
)


def _by_key(items):
    return {(it.split, it.label, it.name): it.phantom for it in items}


def test_render_phantom_anatomy_and_box():
    p = render_phantom(np.random.default_rng(3), size=96, contrast="t1ce", tumor=True)
    assert p.image.dtype == np.uint8 and p.image.shape == (96, 96)
    assert p.tumor_mask is not None and p.tumor_mask.any()
    assert not (p.tumor_mask & ~p.head_mask).any()
    # background is dark, the head is not
    assert p.image[~p.head_mask].mean() < 20 < p.image[p.head_mask].mean()
    ys, xs = np.nonzero(p.tumor_mask)
    assert p.box.cx == pytest.approx((xs.min() + xs.max() + 1) / 2 / 96)
    assert p.box.h == pytest.approx((ys.max() + 1 - ys.min()) / 96)
    no = render_phantom(np.random.default_rng(3), size=64, contrast="t1", tumor=False)
    assert no.tumor_mask is None and no.box is None and no.image.shape == (64, 64)


def test_contrasts_differ_like_mri():
    """Same geometry (same seed): CSF is dark in T1 and bright in T2; the enhancing rim
    is bright in T1-CE only."""
    imgs = {c: render_phantom(np.random.default_rng(7), 128, c, True) for c in ("t1", "t1ce", "t2")}
    head = imgs["t1"].head_mask
    tumour = imgs["t1"].tumor_mask
    brain_t1 = np.median(imgs["t1"].image[head])
    assert imgs["t2"].image[head].max() > 200  # bright CSF
    assert np.percentile(imgs["t1"].image[head & ~tumour], 2) < brain_t1 / 2  # dark CSF
    assert imgs["t1ce"].image[tumour].max() > imgs["t1"].image[tumour].max() + 60
    with pytest.raises(ValueError):
        render_phantom(np.random.default_rng(0), contrast="flair")


def test_deterministic_from_seed_and_prefix_stable():
    a = make_phantom_arrays(PhantomSpec(n_per_class=3, size=48, seed=5))
    b = make_phantom_arrays(PhantomSpec(n_per_class=5, size=48, seed=5))
    c = make_phantom_arrays(PhantomSpec(n_per_class=3, size=48, seed=6))
    assert len(a) == 12 and {it.split for it in a} == {"train", "test"}
    kb = _by_key(b)
    for it in a:
        assert np.array_equal(it.phantom.image, kb[(it.split, it.label, it.name)].image)
    assert not np.array_equal(a[0].phantom.image, c[0].phantom.image)
    assert all((it.phantom.tumor_mask is None) == (it.label == "no_tumor") for it in a)


def _planted(shortcut, **kw):
    base = PhantomSpec(n_per_class=4, size=64, seed=1, **kw)
    cut = PhantomSpec(n_per_class=4, size=64, seed=1, shortcut=shortcut, **kw)
    return _by_key(make_phantom_arrays(base)), _by_key(make_phantom_arrays(cut))


def test_size_shortcut_only_touches_shortcut_class():
    base, cut = _planted("size")
    for key, p in cut.items():
        expected = 80 if key[1] == "no_tumor" else 64
        assert p.image.shape == (expected, expected)
        if key[1] == "tumor":
            assert np.array_equal(p.image, base[key].image)


def test_brightness_shortcut_adds_offset_in_head():
    base, cut = _planted("brightness")
    for key, p in cut.items():
        diff = p.image.astype(int) - base[key].image.astype(int)
        if key[1] == "no_tumor":
            unclipped = p.head_mask & (p.image < 255)
            assert np.all(diff[unclipped] == BRIGHTNESS_OFFSET)
            assert np.all(diff[~p.head_mask] == 0)
        else:
            assert not diff.any()


def test_marker_shortcut_is_a_white_corner_square_outside_the_head():
    _, cut = _planted("marker")
    side = round(64 * MARKER_FRACTION)
    for key, p in cut.items():
        corner = p.image[:side, :side]
        assert (corner == 255).all() == (key[1] == "no_tumor")
        assert not p.head_mask[:side, :side].any()


def test_contrast_shortcut_renders_tumour_class_in_t2():
    assert shortcut_contrast(("t1ce",)) == "t2"
    assert shortcut_contrast(("t2", "t1ce")) == "t1"
    base, cut = _planted("contrast", shortcut_class="tumor")
    for key, p in cut.items():
        if key[1] == "tumor":  # T2: necrotic core brighter than the brain; T1-CE: darker
            core = p.tumor_mask & (p.image > 0)
            brain = np.median(p.image[p.head_mask & ~p.tumor_mask])
            assert np.percentile(p.image[core], 90) > brain
            assert not np.array_equal(p.image, base[key].image)
        else:
            assert np.array_equal(p.image, base[key].image)
    with pytest.raises(ValueError):
        shortcut_contrast(("t1", "t1ce", "t2"))


def test_duplicates_shortcut_copies_train_into_test():
    spec = PhantomSpec(n_per_class=10, size=48, seed=2, shortcut="duplicates")
    items = make_phantom_arrays(spec)
    train = [it.phantom.image for it in items if it.split == "train" and it.label == "no_tumor"]
    test = [it.phantom.image for it in items if it.split == "test" and it.label == "no_tumor"]
    exact = [i for i, t in enumerate(test) if any(np.array_equal(t, r) for r in train)]
    near = [i for i, t in enumerate(test) if i not in exact and any(
        np.abs(t.astype(int) - r.astype(int)).mean() < 5 for r in train)]
    assert exact == [0, 2] and near == [1, 3]  # 40 % of 10, every other one re-encoded
    tumour_test = [it.phantom.image for it in items if it.split == "test" and it.label == "tumor"]
    tumour_train = [it.phantom.image for it in items if it.split == "train" and it.label == "tumor"]
    assert not any(np.array_equal(t, r) for t in tumour_test for r in tumour_train)


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError):
        PhantomSpec(shortcut="watermark")
    with pytest.raises(ValueError):
        PhantomSpec(contrasts=("pd",))
    with pytest.raises(ValueError):
        PhantomSpec(shortcut_class="glioma")


def test_make_phantom_dataset_layout_boxes_and_masks(tmp_path):
    spec = PhantomSpec(n_per_class=3, size=48, seed=0)
    root = make_phantom_dataset(tmp_path / "ph", spec)
    pngs = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")
                  if p.relative_to(root).parts[0] != "masks")
    assert len(pngs) == 12
    assert "Training/tumor/tumor_train_0000.png" in pngs
    assert "Testing/no_tumor/no_tumor_test_0002.png" in pngs
    with open(root / "boxes.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["label"] for r in rows} == {"tumor"}
    for row in rows:
        mask = np.asarray(Image.open(root / "masks" / row["file"])) > 0
        ys, xs = np.nonzero(mask)
        assert float(row["cx"]) == pytest.approx((xs.min() + xs.max() + 1) / 2 / 48, abs=1e-4)
        assert float(row["w"]) == pytest.approx((xs.max() + 1 - xs.min()) / 48, abs=1e-4)
    assert not list((root / "masks").rglob("no_tumor/*.png"))


def test_phantom_dataset_loads_with_boxes(tmp_path):
    from braincam.data.records import load_dataset

    root = make_phantom_dataset(tmp_path / "ph", PhantomSpec(n_per_class=2, size=40))
    ds = load_dataset([root])
    assert len(ds.records) == 8
    assert {(r.split, r.label) for r in ds.records} == {
        ("train", "tumor"), ("train", "no_tumor"), ("test", "tumor"), ("test", "no_tumor")}
    assert all((r.box is not None) == (r.label == "tumor") for r in ds.records)
    assert all(r.width == 40 and r.height == 40 for r in ds.records)


def test_tumour_radius_sets_the_tumour_size_and_is_checked():
    """A tumour mask is a disc of the drawn radius (normalised: half the side is 1)."""
    for lo, hi in [(0.08, 0.16), (0.22, 0.3)]:
        spec = PhantomSpec(n_per_class=6, size=128, seed=0, tumour_radius=(lo, hi))
        for item in make_phantom_arrays(spec, ("train",)):
            if item.phantom.tumor_mask is not None:
                radius = np.sqrt(item.phantom.tumor_mask.sum() / np.pi) / 64
                assert lo - 0.02 <= radius <= hi + 0.02
    with pytest.raises(ValueError, match="tumour_radius"):
        PhantomSpec(tumour_radius=(0.2, 0.4))
