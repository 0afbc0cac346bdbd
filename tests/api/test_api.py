"""``braincam.load``: predictions on paths, arrays, PIL images, DICOM and NIfTI copies; warnings;
explanations; the docs/api.md example."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import braincam
from braincam.api.warnings import cam_warning
from braincam.data.imageio import ImageReadError, read_grey
from braincam.data.preprocess import PreprocessConfig
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.runs import RunDir
from braincam.train import TrainConfig, train_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny binary run on phantoms (its split.csv names the training images)."""
    base = tmp_path_factory.mktemp("api")
    data = make_phantom_dataset(base / "phantoms", PhantomSpec(n_per_class=20, size=48))
    config = TrainConfig(
        arch="test_resnet", weights="none", head_epochs=2, finetune_epochs=0, batch_size=8,
        preprocess=PreprocessConfig(size=32), device="cpu",
    )
    train_run([data], config, base / "run", progress=False)
    return base / "run"


@pytest.fixture(scope="module")
def model(run):
    return braincam.load(run)


def _split_paths(run: Path, split: str) -> list[str]:
    import pandas as pd

    table = pd.read_csv(run / "split.csv")
    return table[table["split"] == split]["path"].tolist()


def test_paths_arrays_and_pil_images_agree(model, run):
    path = _split_paths(run, "test")[0]
    grey = read_grey(path)
    u8 = np.rint(grey * 255).astype(np.uint8)
    preds = model.predict([path, u8, Image.fromarray(u8), np.dstack([u8] * 3)])
    assert [p.path for p in preds] == [path, "<array 1>", "<array 2>", "<array 3>"]
    assert all(p.slice is None and p.kind == "image" for p in preds)
    for p in preds[1:]:
        assert p.probabilities == pytest.approx(preds[0].probabilities, abs=1e-6)
    first = preds[0]
    assert list(first.probabilities) == ["no_tumor", "tumor"]
    assert sum(first.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert first.label == max(first.probabilities, key=first.probabilities.get)
    assert first.image.shape == (32, 32) and first.image.dtype == np.uint8
    row = first.to_row()
    assert list(row) == ["path", "slice", "kind", "pred", "prob_no_tumor", "prob_tumor",
                         "ood_score", "warnings"]
    assert row["pred"] == first.label and row["slice"] == ""


def test_arrays_of_raw_values_are_windowed_not_clipped(model, run):
    """Scanner values (int16, float64 from nibabel or pydicom) are scaled as a DICOM slice
    without a window; integers within [0, 255] read as 8-bit grey."""
    from braincam.data.dicom import window
    from braincam.data.inputs import as_grey

    u8 = np.rint(read_grey(_split_paths(run, "test")[0]) * 255).astype(np.uint8)
    np.testing.assert_array_equal(as_grey(u8.astype(np.int64)), as_grey(u8))
    raw = u8.astype(np.int16) * 16 - 100  # 12-bit-like values with an offset
    expected = window(raw.astype(np.float64), None, None)
    assert 0.2 < expected.mean() < 0.8  # not clipped to black or white
    for array in (raw, raw.astype(np.float64), raw.astype(np.int32)):
        np.testing.assert_array_equal(as_grey(array), expected, err_msg=str(array.dtype))
    scaled, plain = model.predict([raw, window(u8.astype(np.float64), None, None)])
    assert scaled.probabilities == pytest.approx(plain.probabilities, abs=1e-6)



def test_colour_arrays_follow_the_rules_of_their_type():
    """A colour array reads as its luma under the rules of a grey array of its type: equal
    channels give the grey image, whatever the type; booleans read as 0 and 1."""
    from braincam.data.inputs import as_grey

    u8 = np.random.default_rng(0).integers(0, 256, (24, 24), dtype=np.uint8)
    grey = as_grey(u8)
    for colour in (np.dstack([u8] * 3), np.dstack([u8] * 3).astype(np.uint16) * 257,
                   np.dstack([u8] * 3).astype(np.int64), np.dstack([u8] * 4).astype(np.int32)):
        np.testing.assert_allclose(as_grey(colour), grey, atol=1e-6, err_msg=str(colour.dtype))
    mask = u8 > 127
    np.testing.assert_array_equal(as_grey(mask), mask.astype(np.float32))


def test_a_uint8_rgba_array_reads_as_its_png_file_and_pil_image(tmp_path):
    """Alpha is composited on black for an array too, so one picture gives one answer
    whether passed as an array, a PIL image or a file."""
    from PIL import Image

    from braincam.data.imageio import read_grey
    from braincam.data.inputs import as_grey

    rgba = np.random.default_rng(1).integers(0, 256, (16, 16, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    from_file = read_grey(tmp_path / "a.png")
    np.testing.assert_array_equal(as_grey(rgba), from_file)
    np.testing.assert_array_equal(as_grey(Image.fromarray(rgba)), from_file)


def test_training_duplicate_and_obvious_ood_are_flagged(model, run):
    train_path = _split_paths(run, "train")[3]
    noise = np.random.default_rng(0).random((48, 48)).astype(np.float32)
    held_out = _split_paths(run, "test")[:4]
    dup, ood, *normal = model.predict([train_path, noise, *held_out])
    assert any(w.startswith("exact duplicate") and w.endswith(train_path) for w in dup.warnings)
    assert any(w.startswith("unlike the training data") for w in ood.warnings)
    assert ood.ood_score > 1.0
    assert ood.ood_score > max(p.ood_score for p in normal)
    assert (RunDir(run).ood_reference).is_file()  # calibrated once, cached in the run


def test_reference_is_read_back_not_rebuilt(model, run):
    model.predict([_split_paths(run, "test")[0]])
    file = RunDir(run).ood_reference
    stamp = file.stat().st_mtime_ns
    again = braincam.load(run)
    assert again.reference.threshold == pytest.approx(model.reference.threshold)
    assert file.stat().st_mtime_ns == stamp


def test_reference_of_a_read_only_run_lives_in_memory(tmp_path, run, monkeypatch, caplog):
    import shutil

    import braincam.api.reference as reference

    copy = shutil.copytree(run, tmp_path / "run")
    RunDir(copy).ood_reference.unlink(missing_ok=True)

    def read_only(ref, file):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(reference, "save_reference", read_only)
    model = braincam.load(copy)
    with caplog.at_level("WARNING"):
        (pred,) = model.predict([_split_paths(run, "test")[0]])
    assert pred.ood_score is not None and not RunDir(copy).ood_reference.exists()
    assert "cannot keep the out-of-distribution reference (Read-only file system)" in caplog.text


def test_moved_training_data_names_the_check_and_its_way_out(tmp_path, run):
    import shutil

    import yaml

    copy = RunDir(shutil.copytree(run, tmp_path / "run"))
    copy.ood_reference.unlink(missing_ok=True)
    config = copy.read_config()
    config["data"] = [str(tmp_path / "moved")]
    copy.config.write_text(yaml.safe_dump(config))
    path = _split_paths(run, "test")[0]
    with pytest.raises(BraincamError, match=r"cannot calibrate the out-of-distribution check "
                                            r".*moved.*--no-ood"):
        braincam.load(copy.root).predict([path])
    (pred,) = braincam.load(copy.root, ood=False).predict([path])
    assert pred.ood_score is None


@pytest.mark.realdata
def test_dicom_and_nifti_copies_predict_like_the_png(tmp_path, run, datasets_dir, write_dicom,
                                                     write_nifti):
    folder = datasets_dir / "sartaj-brain-tumor-mri" / "Testing" / "meningioma_tumor"
    greys = [read_grey(f) for f in sorted(folder.iterdir())[:3]]
    slices = np.stack([
        cv2.resize(np.rint(g * 255).astype(np.uint8), (128, 160), interpolation=cv2.INTER_AREA)
        for g in greys
    ])
    pngs = []
    for k, s in enumerate(slices):
        pngs.append(tmp_path / f"{k}.png")
        Image.fromarray(s).save(pngs[-1])
    dicom = write_dicom(tmp_path / "one.dcm", slices[0], window=(127.5, 255.0))
    monochrome1 = write_dicom(tmp_path / "inv.dcm", 255 - slices[1], photometric="MONOCHROME1",
                              window=(127.5, 255.0))
    multi = write_dicom(tmp_path / "multi.dcm", slices, window=(127.5, 255.0))
    volume = write_nifti(tmp_path / "vol.nii.gz", slices, axcodes=("L", "P", "S"))
    model = braincam.load(run, ood=False)
    source = model.predict([str(p) for p in pngs], choice=None)
    copies = model.predict([dicom, monochrome1, multi, volume],
                           choice=braincam.api.SliceChoice(min_head=0.0))
    assert [(p.path, p.slice) for p in copies] == [
        (str(dicom), None), (str(monochrome1), None), (str(multi), 0), (str(multi), 1),
        (str(multi), 2), (str(volume), 0), (str(volume), 1), (str(volume), 2),
    ]
    expected = [0, 1, 0, 1, 2, 0, 1, 2]
    for copy, k in zip(copies, expected, strict=True):
        for c in model.classes:
            assert copy.probabilities[c] == pytest.approx(source[k].probabilities[c], abs=1e-4)
        np.testing.assert_array_equal(copy.image, source[k].image)


def test_explanations_and_the_cam_outside_head_warning(model, run):
    path = _split_paths(run, "test")[1]
    (exp,) = model.explain([path], method="gradcam")
    assert exp.map.shape == (32, 32) and 0.0 <= exp.map.min() and exp.map.max() <= 1.0
    assert exp.overlay.shape == (48, 48, 3) and exp.overlay.dtype == np.uint8
    (pred,) = model.predict([path])
    assert exp.prediction.probabilities == pytest.approx(pred.probabilities, abs=1e-5)
    head = np.zeros((32, 32), bool)
    head[8:24, 8:24] = True
    outside = (~head).astype(np.float32)
    assert cam_warning(outside, head) == ["CAM mostly outside the head (100% of its mass)"]
    assert cam_warning(head.astype(np.float32), head) == []
    half = np.where(head, 1.0, 0.25).astype(np.float32)  # 192 of 448 mass units outside
    assert cam_warning(half, head) == []


def test_bad_inputs_give_one_line_errors(model, tmp_path):
    bad = tmp_path / "fake.png"
    bad.write_text("not an image")
    with pytest.raises(ImageReadError, match="fake.png"):
        model.predict([bad])
    skipped = []
    assert model.predict([bad], skipped=skipped) == [] and skipped[0].path == bad
    with pytest.raises(BraincamError, match="shape"):
        model.predict([np.zeros((2, 8, 8, 8))])
    with pytest.raises(BraincamError, match="with pixels, got shape \\(0, 0\\)"):
        model.predict([np.zeros((0, 0), np.uint8)])
    for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 5, 3), np.float32)):
        with pytest.raises(BraincamError, match="with pixels"):
            model.predict([empty])
    volume = tmp_path / "cut.nii.gz"
    volume.write_bytes(b"\x1f\x8b" + b"\0" * 198)  # a gzip header and nothing after it
    with pytest.raises(ImageReadError, match="cut.nii.gz"):
        model.predict([volume])
    for size in (0, -1):
        with pytest.raises(BraincamError, match=f"batch_size must be >= 1, got {size}"):
            model.predict([np.zeros((8, 8), np.uint8)], batch_size=size)
        with pytest.raises(BraincamError, match=f"batch_size must be >= 1, got {size}"):
            model.explain([np.zeros((8, 8), np.uint8)], batch_size=size)
    with pytest.raises(BraincamError, match="segmentation"):
        model.segment([bad])
    for method in ("ig", "occlusion"):
        with pytest.raises(BraincamError, match=f"layer names a CAM's layer; {method}"):
            model.explain([np.zeros((8, 8), np.uint8)], method=method, layer="backbone")


def _run_docs_example(code: str, tmp_path: Path, run: Path, links: dict[str, Path]) -> dict:
    """Run a docs/api.md example in ``tmp_path`` with ``runs/<name>`` linked to each of
    ``links`` and ``scan.png`` a test image of ``run``; returns the example's variables."""
    (tmp_path / "runs").mkdir()
    for name, target in links.items():
        os.symlink(target, tmp_path / "runs" / name)
    Image.open(_split_paths(run, "test")[0]).save(tmp_path / "scan.png")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope: dict = {}
        exec(compile(code, "docs/api.md", "exec"), scope)
    finally:
        os.chdir(cwd)
    return scope


def test_docs_example_runs(run, tmp_path):
    text = (REPO / "docs" / "api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    scope = _run_docs_example(code, tmp_path, run, {"bin": run})
    assert scope["pred"].label in ("no_tumor", "tumor")
    assert (tmp_path / "overlay.png").is_file()


def test_bench_predict_reports_latency_and_side_by_side_throughput(model, run, tmp_path):
    from braincam.api.bench import bench_predict

    files = [Path(p) for p in _split_paths(run, "test")[:4]]
    cut = tmp_path / "cut.png"  # predict skips it: so does the benchmark, on both contenders
    cut.write_bytes(files[0].read_bytes()[:60])
    result = bench_predict(model, [cut, *files], repeats=2, folder_repeats=1, batch_size=2)
    assert result["images"] == 4 and result["ood"] is True
    assert 0 < result["predict_ms"] and 0 < result["predict_gradcam_ms"]
    ratio = result["folder_predict_img_s"] / result["folder_evaluate_img_s"]
    # one repeat: the ratio of the rates, rounded to 3 decimals
    assert result["folder_predict_vs_evaluate"] == pytest.approx(ratio, rel=0.01, abs=6e-4)


def test_duplicates_are_looked_up_among_all_training_images(model, run):
    from braincam.api.reference import build_reference
    from braincam.api.warnings import image_warnings
    from braincam.data.preprocess import PreprocessCache

    paths = _split_paths(run, "train")
    cache = PreprocessCache()
    preps = [cache.get(p, model.config) for p in paths]
    images = np.stack([p.image for p in preps])
    masks = np.stack([p.mask for p in preps])
    ref = build_reference(model.net, images, masks, paths, model.device, max_images=20)
    assert len(ref.phashes) == len(paths) > 20
    hits = [image_warnings(p, 0.5, ref) for p in preps]
    assert all(any(w.startswith("exact duplicate") for w in h) for h in hits)


def _magenta(overlay: np.ndarray) -> np.ndarray:
    from braincam.explain.render import TUMOUR_RGB

    return (overlay == np.array(TUMOUR_RGB, np.uint8)).all(axis=2)


def test_a_segmenter_run_loads_on_the_models_device_and_predicts_probabilities(
        run, segmenter_run):
    from braincam.models.segment import Segmenter

    model = braincam.load(run, segment=segmenter_run, device="cpu", ood=False)
    assert isinstance(model.segmenter, Segmenter)
    assert model.segmenter.device == model.device
    path = _split_paths(run, "test")[0]
    (mask,) = model.segment([path])
    assert (mask.path, mask.slice) == (path, None)
    assert mask.probability.shape == (32, 32) and mask.probability.dtype == np.float32
    assert 0.0 <= mask.probability.min() and mask.probability.max() <= 1.0
    assert mask.mask.shape == (48, 48) and mask.mask.dtype == bool
    assert mask.fraction == round(float((mask.probability >= 0.5).mean()), 4)
    (pred,) = model.predict([path])
    np.testing.assert_array_equal(pred.tumour, mask.probability >= 0.5)
    assert pred.tumour_fraction == mask.fraction


def test_segment_predict_and_explain_with_a_known_disc(run, segmenter_run, disc_segmenter):
    from braincam.data.preprocess import preprocess

    model = braincam.load(run, segment=segmenter_run, device="cpu", ood=False)
    paths = _split_paths(run, "test")[:3]
    u8 = np.rint(read_grey(paths[0]) * 255).astype(np.uint8)
    masks = model.segment([*paths, np.pad(u8, ((0, 0), (10, 0)))])  # and a wider array
    fraction = disc_segmenter.fraction(32)
    assert 0.2 < fraction < 0.35  # pi * 0.3^2 of the model input
    assert [m.path for m in masks] == [*paths, "<array 3>"]
    for m in masks:
        assert m.fraction == fraction
        np.testing.assert_array_equal(m.probability, disc_segmenter.probability(32))
        disc_segmenter.assert_matches(m.mask, m.preprocessed)
    assert masks[-1].mask.shape == (48, 58)
    np.testing.assert_array_equal(  # the mask's crop geometry is the classifier's
        masks[0].preprocessed.crop, preprocess(read_grey(paths[0]), model.config).crop)

    preds = model.predict(paths)
    for pred in preds:
        np.testing.assert_array_equal(pred.tumour, disc_segmenter.probability(32) > 0)
        assert pred.tumour_fraction == fraction
        row = pred.to_row()
        assert list(row)[-3:] == ["ood_score", "tumour_fraction", "warnings"]
        assert row["tumour_fraction"] == fraction

    (exp,) = model.explain([paths[0]], method="gradcam")
    assert exp.prediction.tumour_fraction == fraction
    magenta = _magenta(exp.overlay)
    tumour = masks[0].mask  # the disc mapped back (checked above)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    rim = tumour & ~cv2.erode(tumour.astype(np.uint8), cross).astype(bool)
    assert rim.sum() > 20
    np.testing.assert_array_equal(magenta, rim)  # exactly the disc's 1-px outline
    expected = disc_segmenter.original(masks[0].preprocessed).astype(np.uint8)
    near = cv2.dilate(expected, np.ones((3, 3), np.uint8), iterations=2).astype(bool) \
        & ~cv2.erode(expected, np.ones((3, 3), np.uint8), iterations=2).astype(bool)
    assert not magenta[~near].any()  # nowhere far from the disc's boundary
    (plain,) = braincam.load(run, device="cpu", ood=False).explain([paths[0]])
    assert not _magenta(plain.overlay).any()  # no segmenter, no outline
    assert np.array_equal(plain.overlay[~near], exp.overlay[~near])


def test_segment_errors_are_one_line(run, model, tmp_path):
    with pytest.raises(BraincamError, match="pass segment=SEG to braincam.load"):
        model.segment([_split_paths(run, "test")[0]])
    with pytest.raises(BraincamError, match="not a segmenter") as info:
        braincam.load(run, segment=run, device="cpu")
    assert "\n" not in str(info.value)
    with pytest.raises(BraincamError, match="holds no model.safetensors") as info:
        braincam.load(run, segment=tmp_path, device="cpu")
    assert "\n" not in str(info.value)


def test_docs_segment_example_runs(run, segmenter_run, disc_segmenter, tmp_path):
    text = (REPO / "docs" / "api.md").read_text()
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", text, re.S) if ".segment(" in c]
    scope = _run_docs_example(code, tmp_path, run, {"bin": run, "seg": segmenter_run})
    assert scope["tumour"].fraction == disc_segmenter.fraction(32)
    assert scope["tumour"].mask.shape == (48, 48)


def test_a_guided_models_reference_built_on_gated_features_is_rebuilt(tmp_path):
    """A reference file without ``features`` (built on a guided model's gated features) is
    read for a plain model and refused, so rebuilt, for a guided one."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from braincam.api.reference import Reference, load_reference, save_reference

    ref = Reference(np.zeros(3), np.eye(3), 2.5, np.array([7], np.uint64), ["a.png"],
                    {"head_fraction": 0.1}, {"head_fraction": 0.9})
    new = tmp_path / "new.safetensors"
    save_reference(ref, new)
    with safe_open(str(new), framework="numpy") as fh:
        meta = {k: v for k, v in (fh.metadata() or {}).items() if k != "features"}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=meta)
    assert load_reference(new, guided=True).threshold == 2.5
    assert load_reference(old).threshold == 2.5
    assert load_reference(old, guided=True) is None


def test_bench_predict_lists_a_folder_as_predict_does(run, tmp_path):
    """A dataset folder's ``masks/`` holds outlines, not scans: left out, as predict does."""
    import json
    import shutil

    from typer.testing import CliRunner

    from braincam.cli import app

    folder = tmp_path / "scans"
    (folder / "masks").mkdir(parents=True)
    for k, path in enumerate(_split_paths(run, "test")[:2]):
        shutil.copy(path, folder / f"scan{k}.png")
        shutil.copy(path, folder / "masks" / f"scan{k}.png")
    result = CliRunner().invoke(app, ["bench", "predict", str(run), str(folder), "--repeats",
                                      "1", "--folder-repeats", "1", "--no-ood", "--device",
                                      "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["images"] == 2


def test_a_shared_model_runs_one_call_at_a_time(model, run, monkeypatch):
    """Grad-CAM and the feature hook hook the network: a second thread's call waits until the
    first is done instead of running inside it."""
    import threading
    import time

    import braincam.api as api

    real = api.features_and_probs
    inside, release, most, count = threading.Event(), threading.Event(), [0], [0]

    def held(*args, **kwargs):
        count[0] += 1
        most[0] = max(most[0], count[0])
        inside.set()
        release.wait(5)
        try:
            return real(*args, **kwargs)
        finally:
            count[0] -= 1

    monkeypatch.setattr(api, "features_and_probs", held)
    path = _split_paths(run, "test")[0]
    model.predict([path])  # the OOD reference is built before the threads start
    inside.clear()
    threads = [threading.Thread(target=model.predict, args=([path],)) for _ in range(2)]
    threads[0].start()
    assert inside.wait(5)
    threads[1].start()
    time.sleep(0.3)
    release.set()
    for thread in threads:
        thread.join(10)
    assert most[0] == 1


def test_predict_answers_in_eval_mode_and_keeps_the_callers_mode(model, run):
    path = _split_paths(run, "test")[0]
    (expected,) = model.predict([path])
    model.net.train()
    try:
        (pred,) = model.predict([path])
        assert model.net.training
    finally:
        model.net.eval()
    assert pred.probabilities == pytest.approx(expected.probabilities, abs=1e-6)


def test_a_run_too_small_to_calibrate_predicts_without_the_ood_check(tmp_path, caplog):
    """Under MIN_IMAGES training images no reference can be built: the predictions come with
    a warning instead of an error, also when loaded by a relative path and the caller then
    changes directory."""
    from braincam.api.reference import MIN_IMAGES

    data = make_phantom_dataset(tmp_path / "phantoms", PhantomSpec(n_per_class=8, size=48))
    config = TrainConfig(arch="test_resnet", weights="none", head_epochs=1, finetune_epochs=0,
                         batch_size=8, preprocess=PreprocessConfig(size=32), device="cpu")
    train_run([data], config, tmp_path / "run", progress=False)
    assert len(_split_paths(tmp_path / "run", "train")) < MIN_IMAGES
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        small = braincam.load("run")
    finally:
        os.chdir(cwd)
    with caplog.at_level("WARNING", logger="braincam.api"):
        (pred,) = small.predict([_split_paths(tmp_path / "run", "test")[0]])
    assert pred.ood_score is None and pred.label in ("no_tumor", "tumor")
    assert any(f"need at least {MIN_IMAGES} training images" in m for m in caplog.messages)


def test_load_takes_run_folders_and_submodules_load_on_first_use(run, tmp_path):
    import subprocess
    import sys

    with pytest.raises(BraincamError, match="is a file; braincam.load takes a run folder"):
        braincam.load(run / "model.safetensors")
    with pytest.raises(BraincamError, match="run folder's path, got NoneType"):
        braincam.load(None)
    with pytest.raises(BraincamError, match="batch_size must be a whole number, got 2.5"):
        braincam.load(run).predict([np.zeros((8, 8), np.uint8)], batch_size=2.5)
    code = ("import braincam; braincam.allocator.keep_freed_memory; braincam.api.SliceChoice\n"
            "try:\n    braincam.nothing\nexcept AttributeError as exc:\n    print(exc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "module 'braincam' has no attribute 'nothing'"


def test_training_images_partly_gone_calibrate_this_process_only(tmp_path, run, caplog):
    """A reference built on part of the training images is not kept: it would outlive the
    images' return."""
    import shutil

    import yaml

    copy = RunDir(shutil.copytree(run, tmp_path / "run"))
    copy.ood_reference.unlink(missing_ok=True)
    config = copy.read_config()
    data = shutil.copytree(config["data"][0], tmp_path / "data")
    config["data"] = [str(data)]
    copy.config.write_text(yaml.safe_dump(config))
    split = pd.read_csv(copy.split)
    split["path"] = split["path"].str.replace(str(Path(run).parent / "phantoms"), str(data))
    split.to_csv(copy.split, index=False)
    train = split[split["split"] == "train"]["path"].tolist()
    for path in train[:3]:
        Path(path).unlink()
    with caplog.at_level("WARNING", logger="braincam.api.reference"):
        (pred,) = braincam.load(copy.root).predict([train[-1]])
    assert pred.ood_score is not None
    assert f"3 of the run's {len(train)} training images cannot be read" in caplog.text
    assert not copy.ood_reference.exists()


def test_a_checkpoint_without_its_preprocessing_is_refused_not_guessed(run, tmp_path):
    """Default preprocessing (224 px) would score a 32 px model's images silently wrong."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open)
        meta = {k: v for k, v in f.metadata().items() if k != "preprocess"}
    save_file(tensors, str(copy / "model.safetensors"), metadata=meta)
    with pytest.raises(BraincamError, match="no valid preprocess entry"):
        braincam.load(copy, ood=False)


def test_a_run_config_that_is_not_yaml_stops_the_ood_check_in_one_line(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "config.yaml").write_text("arch: [resnet\n: :\n")
    (copy / "ood.safetensors").unlink(missing_ok=True)  # calibrated by an earlier test
    with pytest.raises(BraincamError) as stop:
        braincam.load(copy).predict(_split_paths(run, "test")[:1])
    assert "\n" not in str(stop.value)
    assert str(stop.value).endswith("pass --no-ood (Python: ood=False) to skip it")
