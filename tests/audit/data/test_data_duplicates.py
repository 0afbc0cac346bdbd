"""Duplicate summary: exact vs near groups, train->test leaks per class, label conflicts,
display order and the example grid."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from braincam.audit.data.duplicates import find_duplicates, save_duplicate_grid
from braincam.data.records import ImageRecord


def _records(tmp_path: Path, n: int) -> list[ImageRecord]:
    out = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((20, 20), 10 * i, np.uint8)).save(path)
        out.append(ImageRecord(path, "src", None, "x", 20, 20, None))
    return out


def test_groups_leaks_and_conflicts(tmp_path):
    # 0,1,2: byte-identical (train, train, test; no_tumor)       -> exact group, leak (exact)
    # 3,4:   near (train tumor, test tumor)                       -> near group, leak (near)
    # 5,6:   near (train no_tumor, train tumor)                   -> near group, label conflict
    # 7:     alone (test tumor)
    records = _records(tmp_path, 8)
    labels = ["no_tumor"] * 3 + ["tumor", "tumor", "no_tumor", "tumor", "tumor"]
    split = np.array(["train", "train", "test", "train", "test", "train", "train", "test"])
    groups = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    hashes = ["a", "a", "a", "b", "c", "d", "e", "f"]
    phashes = np.array([0, 0, 0, 0b11, 0b1, 0b111, 0b1, 0xFF], dtype=np.uint64)
    rep = find_duplicates(records, labels, split, groups, hashes, phashes,
                          root_of={r.path: tmp_path.parent for r in records})
    s = rep.summary
    assert (s["exact_groups"], s["near_groups"], s["images_in_groups"]) == (1, 2, 7)
    assert s["test_images"] == 3
    assert s["test_images_with_train_duplicate"] == 2
    assert s["test_images_with_exact_train_duplicate"] == 1
    assert s["per_class_test_with_train_duplicate"] == {"no_tumor": 1, "tumor": 1}
    assert s["per_class"]["tumor"] == {"test": 2, "with_train_duplicate": 1, "exact": 0}
    assert s["within_split"] == {"train": 4}
    assert (s["label_conflicts"], s["label_conflict_images"]) == (1, 2)
    # most relevant first: the conflict, then leaking groups by size
    assert [g["group"] for g in s["groups"]] == [2, 0, 1]
    assert s["groups"][1]["files"][0] == f"{tmp_path.name}/img0.png"
    assert s["groups"][1]["splits"] == {"test": 1, "train": 2}
    # display order: the closest cross-split pair first (test image 2 with a train copy)
    assert rep.grid_groups[1][:2] in ([0, 2], [2, 0], [1, 2], [2, 1])
    assert save_duplicate_grid(tmp_path / "grid.png", records, labels, split, rep.grid_groups,
                               phashes)
    assert Image.open(tmp_path / "grid.png").size[0] > 100
    # a validation image (an official Validation folder) is learnt from too: its test copy leaks
    split[3] = "val"
    again = find_duplicates(records, labels, split, groups, hashes, phashes,
                            root_of={r.path: tmp_path.parent for r in records}).summary
    assert again["test_images_with_train_duplicate"] == 2
    assert again["per_class"]["tumor"]["with_train_duplicate"] == 1


def test_images_duplicated_across_sources_are_counted_and_found(tmp_path):
    from braincam.audit.data.rules import duplicate_findings

    # sources a (0-3) and b (4-6); groups: {0, 4} exact, {1, 5, 6} near, 2 and 3 alone
    records = [replace(r, source="a" if i < 4 else "b")
               for i, r in enumerate(_records(tmp_path, 7))]
    groups = np.array([0, 1, 2, 3, 0, 1, 1])
    split = np.array(["train"] * 7)
    rep = find_duplicates(records, ["tumor"] * 7, split, groups, list("xyzwxuv"),
                          np.zeros(7, dtype=np.uint64))
    assert rep.summary["cross_source"] == {"a": {"images": 4, "duplicated_in": {"b": 2}},
                                           "b": {"images": 3, "duplicated_in": {"a": 3}}}
    found = {f.message.split(" images")[0]: f for f in duplicate_findings(rep.summary)
             if f.check == "duplicates.cross_source"}
    assert set(found) == {"2 of 4 a", "3 of 3 b"}
    assert found["2 of 4 a"].severity == "critical" and found["2 of 4 a"].value == 0.5
    assert "trained on b and scored on a" in found["2 of 4 a"].message
    one = find_duplicates(records[:4], ["tumor"] * 4, split[:4], groups[:4], list("xyzw"),
                          np.zeros(4, dtype=np.uint64))
    assert one.summary["cross_source"] == {}


def test_no_duplicates(tmp_path):
    records = _records(tmp_path, 3)
    split = np.array(["train", "test", "test"])
    rep = find_duplicates(records, ["a", "b", "a"], split, np.arange(3), ["x", "y", "z"],
                          np.arange(3, dtype=np.uint64))
    assert rep.summary["groups"] == [] and rep.summary["test_images_with_train_duplicate"] == 0
    assert rep.summary["per_class_test_with_train_duplicate"] == {"a": 0, "b": 0}
    assert not save_duplicate_grid(tmp_path / "g.png", records, ["a", "b", "a"], split,
                                   rep.grid_groups, np.arange(3, dtype=np.uint64))
    assert not (tmp_path / "g.png").exists()


def test_slices_of_a_volume_are_listed_by_their_keys(tmp_path):
    """Two slices of one volume that repeat each other: the group names ``<path>#<k>``."""
    volume = tmp_path / "vol.nii.gz"
    volume.write_bytes(b"")  # the listing needs only the path
    records = [replace(_records(tmp_path, 1)[0], path=volume, slice=k) for k in (0, 2)]
    rep = find_duplicates(records, ["tumor"] * 2, np.array(["train", "test"]),
                          np.array([0, 0]), ["a#0", "a#2"], np.zeros(2, np.uint64),
                          root_of={volume: tmp_path.parent})
    assert rep.summary["groups"][0]["files"] == [f"{tmp_path.name}/vol.nii.gz#0",
                                                 f"{tmp_path.name}/vol.nii.gz#2"]
