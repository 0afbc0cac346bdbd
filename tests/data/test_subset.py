"""``link_split`` / ``braincam segment SEG --held-out``: a run's test rows become dataset
folders that braincam reads as the same source, with their masks and box rows only."""

from __future__ import annotations

import csv

import numpy as np
import typer
import yaml
from PIL import Image
from typer.testing import CliRunner

from braincam.commands import segment
from braincam.data.records import load_dataset
from braincam.data.subset import link_split
from braincam.runs import RunDir


def make_source(root):
    """Four 8 x 8 images in two classes, each with a mask, and a boxes.csv row each."""
    rows = ["file,label,cx,cy,w,h"]
    for label in ("glioma", "meningioma"):
        for n in (1, 2):
            for folder, value in ((root / label, 90), (root / "masks" / label, 255)):
                folder.mkdir(parents=True, exist_ok=True)
                Image.new("L", (8, 8), value).save(folder / f"{n}.png")
            rows.append(f"{label}/{n}.png,{label},0.5,0.5,0.25,0.25")
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return root


def make_run(tmp_path, root):
    run = RunDir(tmp_path / "seg")
    run.root.mkdir()
    run.config.write_text(yaml.safe_dump({"data": [str(root)], "segment": {"size": 32}}))
    lines = ["path,source,label,split,group,leak_free"]
    for label, n, split in [("glioma", 1, "test"), ("glioma", 2, "train"),
                            ("meningioma", 1, "val"), ("meningioma", 2, "test")]:
        lines.append(f"{root / label / f'{n}.png'},{root.name},{label},{split},0,True")
    run.split.write_text("\n".join(lines) + "\n")
    return run


def test_link_split_keeps_only_the_test_rows_with_masks_and_boxes(tmp_path):
    root = make_source(tmp_path / "figshare-like")
    run = make_run(tmp_path, root)
    out = tmp_path / "held"
    out.mkdir()
    assert link_split(run, out) == {"figshare-like": 2}
    linked = out / "figshare-like"
    dataset = load_dataset([linked])
    got = sorted((r.label, r.path.name, r.source, r.mask is not None, r.box is not None)
                 for r in dataset.records)
    assert got == [("glioma", "1.png", "figshare-like", True, True),
                   ("meningioma", "2.png", "figshare-like", True, True)]
    assert (linked / "boxes.csv").read_text().splitlines() == [
        "file,label,cx,cy,w,h", "glioma/1.png,glioma,0.5,0.5,0.25,0.25",
        "meningioma/2.png,meningioma,0.5,0.5,0.25,0.25"]
    assert (linked / "glioma" / "1.png").resolve() == root / "glioma" / "1.png"


def test_two_roots_of_one_name_are_linked_into_two_folders(tmp_path):
    """``siteA/data`` and ``siteB/data``: their held-out images go to ``data/`` and ``data_/``
    (the loader's sources), each with its own box rows."""
    roots = [make_source(tmp_path / site / "data") for site in ("siteA", "siteB")]
    run = RunDir(tmp_path / "seg")
    run.root.mkdir()
    run.config.write_text(yaml.safe_dump({"data": [str(r) for r in roots]}))
    lines = ["path,source,label,split,group,leak_free"]
    for root, source in zip(roots, ("data", "data_"), strict=True):
        lines.append(f"{root / 'glioma' / '1.png'},{source},glioma,test,0,True")
    run.split.write_text("\n".join(lines) + "\n")
    out = tmp_path / "held"
    out.mkdir()
    assert link_split(run, out) == {"data": 1, "data_": 1}
    for name, root in zip(("data", "data_"), roots, strict=True):
        assert (out / name / "glioma" / "1.png").resolve() == root / "glioma" / "1.png"
        assert len((out / name / "boxes.csv").read_text().splitlines()) == 2


def test_cli_held_out_writes_the_folders_and_refuses_a_run_without_split(tmp_path):
    app = typer.Typer()
    app.command("segment")(segment.command)
    app.command("unused")(lambda: None)
    root = make_source(tmp_path / "figshare-like")
    run = make_run(tmp_path, root)
    result = CliRunner().invoke(app, ["segment", str(run.root), "--held-out", "--out",
                                      str(tmp_path / "held")])
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'held' / 'figshare-like'} (2)" in result.output
    run.split.unlink()
    result = CliRunner().invoke(app, ["segment", str(run.root), "--held-out", "--out",
                                      str(tmp_path / "held2")])
    assert "holds no split.csv" in str(result.exception)
    assert not (tmp_path / "held2").exists()
    (tmp_path / "elsewhere").mkdir()
    moved = make_run(tmp_path / "elsewhere", tmp_path / "moved")  # its data folder is gone
    result = CliRunner().invoke(app, ["segment", str(moved.root), "--held-out", "--out",
                                      str(tmp_path / "held3")])
    assert "which is no longer there" in str(result.exception)
    assert not (tmp_path / "held3").exists()


def test_link_split_leaves_out_copies_of_images_another_run_learnt_from(tmp_path):
    root = make_source(tmp_path / "figshare-like")
    rng = np.random.default_rng(0)
    for image in sorted(root.glob("*/[12].png")):  # distinct textures, so no two are copies
        if image.parent.name != "masks":
            small = rng.integers(0, 255, (8, 8), dtype=np.uint8)
            Image.fromarray(small).resize((64, 64), Image.Resampling.BICUBIC).save(image)
    seen = tmp_path / "seen.jpg"  # a re-encoded copy of the test image glioma/1.png
    Image.open(root / "glioma" / "1.png").save(seen, quality=90)
    run = make_run(tmp_path, root)
    out = tmp_path / "held"
    out.mkdir()
    assert link_split(run, out, unseen_by=[seen]) == {"figshare-like": 1}
    assert [r.path.name for r in load_dataset([out / "figshare-like"]).records] == ["2.png"]
    assert (out / "figshare-like" / "boxes.csv").read_text().splitlines()[1:] == [
        "meningioma/2.png,meningioma,0.5,0.5,0.25,0.25"]


def test_link_split_leaves_out_a_volume_one_of_whose_slices_was_learnt(tmp_path, write_nifti):
    rng = np.random.default_rng(0)
    slices = np.stack([np.asarray(Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8))
                                  .resize((64, 64), Image.Resampling.BICUBIC))
                       for _ in range(8)])
    root = tmp_path / "volumes"
    (root / "glioma").mkdir(parents=True)
    held = [write_nifti(root / "glioma" / f"{n}.nii.gz", slices[4 * n: 4 * n + 4])
            for n in range(2)]
    other = write_nifti(tmp_path / "other.nii.gz", slices[[6, 7]])  # slices 2, 3 of held[1]
    run = RunDir(tmp_path / "seg")
    run.root.mkdir()
    run.config.write_text(yaml.safe_dump({"data": [str(root)], "segment": {"size": 32}}))
    run.split.write_text("\n".join(["path,source,label,split,group,leak_free"] + [
        f"{v}#{k},volumes,glioma,test,{n},True" for n, v in enumerate(held) for k in range(4)])
        + "\n")
    out = tmp_path / "held"
    out.mkdir()
    assert link_split(run, out, unseen_by=[(other, 1)]) == {"volumes": 1}
    assert sorted(p.name for p in (out / "volumes" / "glioma").iterdir()) == ["0.nii.gz"]


def test_cli_unseen_by_needs_held_out_and_a_train_run(tmp_path):
    app = typer.Typer()
    app.command("segment")(segment.command)
    app.command("unused")(lambda: None)
    run = make_run(tmp_path, make_source(tmp_path / "figshare-like"))
    result = CliRunner().invoke(app, ["segment", str(run.root), "--unseen-by", str(run.root),
                                      "--out", str(tmp_path / "held")])
    assert "--unseen-by goes with --held-out" in str(result.exception)
    result = CliRunner().invoke(app, ["segment", str(run.root), "--held-out", "--unseen-by",
                                      str(tmp_path), "--out", str(tmp_path / "held")])
    assert "not a braincam train run" in str(result.exception)
    assert not (tmp_path / "held").exists()


def test_box_rows_of_names_with_commas_and_quotes_survive_the_link(tmp_path):
    """boxes.csv of the held-out folder is CSV: a comma in a file name does not cut its row."""
    root = tmp_path / "src"
    names = ['scan, 1.png', 'say "a".png']
    (root / "glioma").mkdir(parents=True)
    for name in names:
        Image.new("L", (8, 8), 90).save(root / "glioma" / name)
    with open(root / "boxes.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["file", "label", "cx", "cy", "w", "h"]] +
                                 [[f"glioma/{n}", "glioma", 0.5, 0.5, 0.25, 0.25] for n in names])
    run = RunDir(tmp_path / "seg")
    run.root.mkdir()
    run.config.write_text(yaml.safe_dump({"data": [str(root)], "segment": {"size": 32}}))
    with open(run.split, "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "source", "label", "split", "group", "leak_free"]] + [
            [root / "glioma" / n, "src", "glioma", "test", k, True] for k, n in enumerate(names)])
    out = tmp_path / "held"
    out.mkdir()
    assert link_split(run, out) == {"src": 2}
    boxes = {r.path.name: r.box for r in load_dataset([out / "src"]).records}
    assert set(boxes) == set(names) and None not in boxes.values()
