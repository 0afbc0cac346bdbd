"""Frames of a multi-frame DICOM file in a dataset are images of their own in every file of a
run: split, predictions, explanations, audit and the held-out links."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
from PIL import Image

from braincam.data.subset import link_split
from braincam.explain.io import load_explanations
from braincam.runs import RunDir


def test_each_frame_is_split_predicted_explained_and_audited_as_its_own_image(
        phantoms, tmp_path, tiny_options, record, write_dicom):
    data = tmp_path / "phantoms"
    shutil.copytree(phantoms, data)
    folder = data / "Testing" / "tumor"
    pngs = sorted(folder.glob("*.png"))[:3]
    frames = np.stack([np.asarray(Image.open(p).convert("L")) for p in pngs])
    dicom = write_dicom(folder / "frames.dcm", frames, window=(127.5, 255.0))
    keys = [f"{dicom}#{k}" for k in range(3)]
    options = tiny_options(explain_cap=100)
    options = options.replace(train=replace(options.train, split="official"))
    run = RunDir(record([data], options, tmp_path / "run").run_dir)

    split = run.read_split().set_index("path")
    assert split.loc[keys, "split"].tolist() == ["test"] * 3
    predictions = pd.read_csv(run.predictions).set_index("path")
    by_frame = predictions.loc[keys, "prob_tumor"].to_numpy()
    by_png = predictions.loc[[str(p) for p in pngs], "prob_tumor"].to_numpy()
    np.testing.assert_allclose(by_frame, by_png, atol=1e-5)
    assert len(np.unique(by_png.round(5))) == 3  # three different images, not one thrice

    exp = load_explanations(run.explain / "gradcam" / "explanations.npz")
    at = {p: i for i, p in enumerate(exp.paths)}
    for key, png in zip(keys, pngs, strict=True):
        np.testing.assert_allclose(exp.maps[at[key]], exp.maps[at[str(png)]], atol=1e-4)
    overlays = {p.name for p in (run.explain / "gradcam" / "overlays").iterdir()}
    assert {f"{at[key]:04d}_frames_s{k}.png" for k, key in enumerate(keys)} <= overlays

    audited = pd.read_csv(run.audit / "audit_images.csv")
    assert set(keys) <= set(audited["path"])

    held_out = tmp_path / "held-out"
    held_out.mkdir()
    assert link_split(run, held_out)["phantoms"] == 16 + 1  # the PNGs and the file once
    assert (held_out / "phantoms" / "Testing" / "tumor" / "frames.dcm").is_file()
