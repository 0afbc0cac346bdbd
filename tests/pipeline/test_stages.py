"""Fingerprints, data listings, stage markers, and the audit regions option."""

from __future__ import annotations

import os

import pytest

from braincam.commands.run import parse_regions
from braincam.data.preprocess import PreprocessConfig
from braincam.errors import BraincamError
from braincam.pipeline import PipelineOptions
from braincam.pipeline.stages import (
    clear_marker,
    data_fingerprint,
    fingerprint,
    read_marker,
    write_marker,
)
from braincam.runs import RunDir
from braincam.train import TrainConfig


def test_fingerprint_is_canonical():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 1.5})
    assert len(fingerprint({})) == 64


def test_data_fingerprint_follows_files(tmp_path):
    root = tmp_path / "data"
    (root / "tumor").mkdir(parents=True)
    (root / "tumor" / "a.png").write_bytes(b"x")
    first = data_fingerprint([root])
    assert list(first) == [str(root.resolve())]
    (root / ".DS_Store").write_bytes(b"junk")  # hidden: not data
    (root / ".cache").mkdir()
    (root / ".cache" / "b.png").write_bytes(b"y")
    assert data_fingerprint([root]) == first
    stat = (root / "tumor" / "a.png").stat()
    os.utime(root / "tumor" / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    touched = data_fingerprint([root])
    assert touched != first
    (root / "tumor" / "c.png").write_bytes(b"z")
    assert data_fingerprint([root]) != touched


def test_data_fingerprint_follows_linked_folders_and_survives_a_dangling_link(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.png").write_bytes(b"x")
    root = tmp_path / "data"
    root.mkdir()
    (root / "tumor").symlink_to(store)  # a linked class folder, as the loader reads it
    (root / "no_tumor").mkdir()
    (root / "no_tumor" / "loop").symlink_to(root)  # a link to a folder above: walked once
    first = data_fingerprint([root])
    (store / "b.png").write_bytes(b"y")  # added behind the link
    second = data_fingerprint([root])
    assert second != first
    (root / "no_tumor" / "gone.png").symlink_to(tmp_path / "nothing.png")
    assert data_fingerprint([root]) != second


def test_markers_round_trip_and_bad_ones_read_as_absent(tmp_path):
    run = RunDir(tmp_path)
    assert read_marker(run, "train") is None
    marker = write_marker(run, "train", "abc", {"x": 1}, 1.23456)
    assert read_marker(run, "train") == marker and marker.seconds == 1.235
    (run.stages / "train.json").write_text("{not json")
    assert read_marker(run, "train") is None
    (run.stages / "train.json").write_text('{"stage": "train"}')
    assert read_marker(run, "train") is None
    clear_marker(run, "train")
    clear_marker(run, "train")  # absent is fine
    assert not (run.stages / "train.json").exists()


def test_region_masks_and_their_validation():
    options = PipelineOptions(train=TrainConfig(preprocess=PreprocessConfig(size=10)),
                              regions={"corner": (0, 0, 0.2, 0.3), "all": (0, 0, 1, 1)})
    masks = options.region_masks()
    assert masks["corner"].shape == (10, 10) and masks["corner"].sum() == 2 * 3
    assert masks["corner"][:3, :2].all() and masks["all"].all()
    assert options.to_dict()["regions"] == {"all": [0.0, 0.0, 1.0, 1.0],
                                            "corner": [0.0, 0.0, 0.2, 0.3]}
    with pytest.raises(BraincamError, match="region 'bad'"):
        options.replace(regions={"bad": (0.5, 0, 0.4, 1)}).validate()
    assert parse_regions(["marker=0,0,0.12,0.12"]) == {"marker": (0.0, 0.0, 0.12, 0.12)}
    with pytest.raises(BraincamError, match="NAME=x0,y0,x1,y1"):
        parse_regions(["marker=0,0,1"])


def test_guide_folders_enter_the_train_fingerprint_and_nothing_else_does(tmp_path):
    """``--guide`` dataset folders train a segmenter inside the train stage: a change to their
    files redoes the stage. Without them the stage's inputs keep their earlier keys, so runs
    made before still resume."""
    from braincam.pipeline.run import _plan

    data, masks = tmp_path / "data", tmp_path / "masked"
    for root in (data, masks):
        (root / "tumor").mkdir(parents=True)
        (root / "tumor" / "a.png").write_bytes(b"x")

    def train_stage(guide: str | None):
        options = PipelineOptions(train=TrainConfig(guide=guide))
        return next(s for s in _plan(RunDir(tmp_path / "run"), [data], options)
                    if s.name == "train")

    assert set(train_stage(None).inputs) == {"data", "train"}
    first = train_stage(str(masks))
    assert first.inputs["guide_data"] == data_fingerprint([masks])
    assert train_stage(str(masks)).fingerprint == first.fingerprint
    (masks / "tumor" / "b.png").write_bytes(b"y")
    assert train_stage(str(masks)).fingerprint != first.fingerprint


def test_extra_folders_enter_the_data_audit_fingerprint_only_when_given(tmp_path):
    """The data audit checks ``--data`` folders for copies of the training images, so their
    files are among its inputs; runs without them keep the earlier keys."""
    from braincam.pipeline.run import _plan

    data, extra = tmp_path / "data", tmp_path / "extra"
    for root in (data, extra):
        (root / "tumor").mkdir(parents=True)
        (root / "tumor" / "a.png").write_bytes(b"x")

    def audit_stage(extras: list):
        options = PipelineOptions(train=TrainConfig(), extra=extras)
        return next(s for s in _plan(RunDir(tmp_path / "run"), [data], options)
                    if s.name == "data-audit")

    assert set(audit_stage([]).inputs) == {"data", "task", "split", "seed", "n_boot"}
    first = audit_stage([extra])
    assert first.inputs["extra"] == data_fingerprint([extra])
    (extra / "tumor" / "b.png").write_bytes(b"y")
    assert audit_stage([extra]).fingerprint != first.fingerprint
