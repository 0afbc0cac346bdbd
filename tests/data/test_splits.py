"""Splits: official/random/dedup, group-awareness, leak-free test images, split.csv."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from braincam.data.records import ImageRecord, load_dataset
from braincam.data.splits import make_split, read_split_csv, write_split_csv
from braincam.errors import BraincamError

LABELS = ("glioma", "meningioma", "no_tumor")


def _records(n=300, split=None, source="ds"):
    """Fake records (no files): labels cycle through LABELS, official split by ``split(i)``."""
    return [
        ImageRecord(Path(f"/data/{source}/{i:04d}.png"), source, split(i) if split else None,
                    LABELS[i % 3], 64, 64, None)
        for i in range(n)
    ]


def _groups(n, size=4):
    """Duplicate groups of ``size`` consecutive records (mixed labels, as in real leaks)."""
    return np.arange(n) // size


def _straddling(split, groups):
    return sum(len(set(split[groups == g])) > 1 for g in np.unique(groups))


def test_official_keeps_test_and_carves_group_aware_val():
    records = _records(300, split=lambda i: "test" if i >= 240 else "train")
    groups = _groups(300)
    s = make_split(records, "multiclass", "official", val_fraction=0.15, groups=groups)
    assert (s.split[240:] == "test").all()
    train_pool = s.split[:240]
    assert set(train_pool) == {"train", "val"}
    assert abs((train_pool == "val").sum() - 0.15 * 240) <= 12  # fold of 1/7 of the pool
    pool_groups = groups[:240]
    assert _straddling(train_pool, pool_groups) == 0
    val_labels = Counter(records[i].label for i in s.indices("val"))
    assert max(val_labels.values()) - min(val_labels.values()) <= 4  # stratified
    assert s.counts["test"] == 60 and s.counts["train"] + s.counts["val"] == 240
    assert s.counts["straddling_groups"] == 0  # groups of 4 never cross index 240


def test_official_without_any_split_suggests_other_strategies():
    with pytest.raises(BraincamError, match="--split random or --split dedup"):
        make_split(_records(30), "binary", "official", groups=np.arange(30))


def test_official_uses_sources_without_split_as_extra_training_data():
    official = _records(60, split=lambda i: "test" if i % 4 == 0 else "train", source="a")
    extra = _records(30, source="b")
    s = make_split(official + extra, "binary", "official", val_fraction=0, groups=np.arange(90))
    assert (s.split[60:] == "train").all()
    assert s.counts == {**s.counts, "train": 45 + 30, "val": 0, "test": 15}


def test_leak_free_marks_test_images_duplicated_in_train_or_val():
    records = _records(12, split=lambda i: ["train", "val", "test"][i // 4])
    groups = np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, 5, 8, 8])  # test 8 ~ train 0, test 9 ~ val 5
    s = make_split(records, "multiclass", "official", groups=groups)
    np.testing.assert_array_equal(s.leak_free_test, [False] * 8 + [False, False, True, True])
    assert s.counts["train_test_duplicates"] == 1
    assert s.counts["val_test_duplicates"] == 1
    assert s.counts["leak_free_test"] == 2
    assert s.counts["duplicate_groups"] == 3 and s.counts["straddling_groups"] == 2


def test_random_split_is_stratified_and_seeded():
    records = _records(300)
    s = make_split(records, "multiclass", "random", val_fraction=0.15, test_fraction=0.2,
                   groups=np.arange(300))
    assert (s.counts["train"], s.counts["val"], s.counts["test"]) == (195, 45, 60)
    assert Counter(records[i].label for i in s.indices("test")) == dict.fromkeys(LABELS, 20)
    again = make_split(records, "multiclass", "random", groups=np.arange(300))
    other = make_split(records, "multiclass", "random", seed=1, groups=np.arange(300))
    np.testing.assert_array_equal(s.split, again.split)
    assert (s.split != other.split).any()


def test_dedup_split_has_no_group_straddling_splits():
    records = _records(600)
    rng = np.random.default_rng(0)
    groups = rng.permutation(np.repeat(np.arange(200), 3))  # 200 groups of 3, scattered
    s = make_split(records, "multiclass", "dedup", val_fraction=0.15, test_fraction=0.2,
                   groups=groups, seed=3)
    assert _straddling(s.split, groups) == 0
    assert s.counts["straddling_groups"] == 0 and s.counts["leak_free_test"] == s.counts["test"]
    assert abs(s.counts["test"] - 120) <= 6  # 1/5
    assert abs(s.counts["val"] - 0.15 * 600) <= 15  # 1/5 of the remaining 80%
    test_labels = Counter(records[i].label for i in s.indices("test"))
    assert max(test_labels.values()) - min(test_labels.values()) <= 12


def test_folds_test_every_image_once_and_keep_groups_whole():
    records = _records(600)
    groups = np.random.default_rng(0).permutation(np.repeat(np.arange(200), 3))
    splits = [make_split(records, "multiclass", "fold", val_fraction=0.15, groups=groups,
                         seed=3, fold=k, folds=4) for k in range(4)]
    tested = np.zeros(600, int)
    for s in splits:
        tested[s.indices("test")] += 1
        assert _straddling(s.split, groups) == 0
        assert abs(s.counts["test"] - 150) <= 6  # 1/4
        assert abs(s.counts["val"] - 0.15 * 600) <= 15
        labels = Counter(records[i].label for i in s.indices("test"))
        assert max(labels.values()) - min(labels.values()) <= 12
    assert (tested == 1).all()
    again = make_split(records, "multiclass", "fold", val_fraction=0.15, groups=groups, seed=3,
                       fold=2, folds=4)
    assert (again.split == splits[2].split).all()  # the seed fixes the folds


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fold": 4, "folds": 4}, "0 <= fold < folds"),
        ({"folds": 1}, "2 or more folds"),
        ({"split": lambda i: "test" if i < 10 else "train"}, "official test split"),
    ],
)
def test_folds_refuse_bad_numbers_and_official_test_data(kwargs, match):
    split = kwargs.pop("split", None)
    with pytest.raises(BraincamError, match=match):
        make_split(_records(60, split=split), "binary", "fold", groups=np.arange(60), **kwargs)


def test_binary_task_stratifies_on_tumour_vs_no_tumour():
    records = _records(90)
    s = make_split(records, "binary", "random", val_fraction=0, test_fraction=1 / 3,
                   groups=np.arange(90))
    assert Counter(records[i].label == "no_tumor" for i in s.indices("test")) == {
        False: 20, True: 10,
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"strategy": "patient"}, "unknown split strategy"),
        ({"task": "regression"}, "unknown task"),
        ({"val_fraction": 0.5, "test_fraction": 0.5, "strategy": "random"}, "less than 1"),
        ({"test_fraction": 0.0}, "test fraction"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"task": "binary", "strategy": "official", **kwargs}
    with pytest.raises(BraincamError, match=match):
        make_split(_records(30, split=lambda i: "train"), groups=np.arange(30), **args)


def test_single_group_cannot_be_split():
    with pytest.raises(BraincamError, match="single duplicate group"):
        make_split(_records(30), "binary", "dedup", groups=np.zeros(30, int))


def test_split_csv_round_trip(tmp_path):
    records = _records(40)
    s = make_split(records, "multiclass", "dedup", groups=_groups(40, 2))
    write_split_csv(s, records, tmp_path / "split.csv")
    header, first = (tmp_path / "split.csv").read_text().splitlines()[:2]
    assert header == "path,source,label,split,group,leak_free"
    assert first.startswith("/data/ds/0000.png,ds,glioma,")
    back = read_split_csv(tmp_path / "split.csv", records)
    np.testing.assert_array_equal(back.split, s.split)
    np.testing.assert_array_equal(back.group, s.group)
    np.testing.assert_array_equal(back.leak_free_test, s.leak_free_test)
    assert back.counts == s.counts
    reordered = read_split_csv(tmp_path / "split.csv", records[::-1])
    np.testing.assert_array_equal(reordered.split, s.split[::-1])
    with pytest.raises(BraincamError, match="1 images are not in the split file"):
        read_split_csv(tmp_path / "split.csv", [*records, *_records(1, source="new")])


@pytest.mark.realdata
def test_sartaj_official_split_counts_leaks(datasets_dir):
    records = load_dataset([datasets_dir / "sartaj-brain-tumor-mri"]).records
    s = make_split(records, "binary", "official")
    assert s.counts["test"] == 394 and s.counts["train"] + s.counts["val"] == 2870
    assert s.counts["straddling_groups"] > 150
    assert s.counts["train_val_duplicates"] == 0
    leaky = s.counts["test"] - s.counts["leak_free_test"]
    assert 250 <= leaky <= 280
    dedup = make_split(records, "binary", "dedup", groups=s.group)
    assert dedup.counts["straddling_groups"] == 0


def test_a_slice_repeated_in_two_volumes_joins_their_groups(tmp_path, write_nifti,
                                                            monkeypatch):
    """Each slice is hashed on its own (not the volume's middle slice), so a slice that two
    volumes share puts both volumes in one group; a volume's own slices share one group."""
    from braincam.data.splits import record_groups
    from braincam.data.synthetic import PhantomSpec, make_phantom_arrays

    monkeypatch.setenv("BRAINCAM_CACHE", str(tmp_path / "cache"))
    images = [item.phantom.image for item in
              make_phantom_arrays(PhantomSpec(n_per_class=4, size=48, seed=3), splits=("train",))]
    shared = images[0]
    volumes = {"vA": [shared, images[1], images[2]], "vB": [images[3], images[4], shared],
               "vC": [images[5], images[6], images[7]]}
    records = []
    for name, slices in volumes.items():
        path = write_nifti(tmp_path / f"{name}.nii", np.stack(slices))
        records += [ImageRecord(path, "src", None, "tumor", 48, 48, None, slice=k)
                    for k in range(3)]
    groups = record_groups(records)
    assert len(set(groups[:6])) == 1  # vA and vB, through their shared slice
    assert len(set(groups[6:])) == 1 and groups[6] != groups[0]  # vC alone
