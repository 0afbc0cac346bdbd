"""The segmenter: loss, weights, prediction in any size, and ``braincam segment`` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import typer
import yaml
from PIL import Image
from typer.testing import CliRunner

from braincam.commands import segment
from braincam.data.records import load_dataset
from braincam.data.segmentation import copies_of_outlined, load_segmentation_data
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.evaluate.segmentation import counterfactual_metrics
from braincam.models.segment import build_segmenter, load_segmenter
from braincam.models.unet import (
    DECODER_CHANNELS,
    ENCODERS,
    decoder_channels_of,
    encoder_of,
    unet,
)
from braincam.report.overview import collect_overview
from braincam.runs import RunDir
from braincam.train.segment import (
    CounterfactualSwap,
    SegmentConfig,
    augment_pair,
    dice_bce_loss,
    weight_average,
)

SEG_FILES = {"config.yaml", "model.safetensors", "history.csv", "split.csv", "skipped.csv",
             "metrics.json", "per_image.csv", "overlays"}


def invoke(*args: str):
    app = typer.Typer()
    app.command("segment")(segment.command)
    app.command("unused")(lambda: None)  # keeps "segment" a subcommand, as in braincam.cli
    return CliRunner().invoke(app, ["segment", *args])


def test_dice_bce_loss_by_hand():
    truth = torch.zeros(1, 4, 4, dtype=torch.bool)
    truth[0, :2] = True  # 8 tumour pixels
    sure = torch.where(truth, 30.0, -30.0)
    assert dice_bce_loss(sure, truth).item() == pytest.approx(0.0, abs=1e-6)
    # p = 0.5 everywhere: BCE ln 2; soft Dice (2 * 4 + 1) / (8 + 8 + 1)
    half = torch.zeros(1, 4, 4)
    assert dice_bce_loss(half, truth).item() == pytest.approx(math.log(2) + 1 - 9 / 17)
    # a tumour-free image pays for predicted pixels: 1 - 1 / (sum p + 1)
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert dice_bce_loss(half, empty).item() == pytest.approx(math.log(2) + 1 - 1 / 9)


def test_a_weak_image_pays_bce_of_its_top_logits_and_no_pixel_term():
    truth = torch.zeros(2, 20, 20, dtype=torch.bool)
    truth[0, :2] = True  # 40 tumour pixels on the masked image
    logits = torch.full((2, 20, 20), -30.0)
    logits[1, 0, :2] = 0.0  # the weak image's two highest logits (k = ceil(0.005 * 400) = 2)
    logits[1, 5, 5] = -2.0  # third highest: outside the mean
    weak = torch.tensor([False, True])
    masked = dice_bce_loss(logits[:1], truth[:1]).item()
    both = dice_bce_loss(logits, truth, weak).item()
    assert both == pytest.approx((masked + math.log(2)) / 2)  # BCE(mean(0, 0), 1) = ln 2
    truth[1, 10:] = True  # a weak image's mask plays no part
    assert dice_bce_loss(logits, truth, weak).item() == pytest.approx(both)
    sure = logits.clone()
    sure[1, 0, :2] = 30.0  # its top logits say tumour: it costs nothing
    assert dice_bce_loss(sure, truth, weak).item() == pytest.approx(masked / 2, abs=1e-6)


def test_contrast_remap_acts_inside_the_head_and_leaves_the_tumour_mask():
    rng = torch.Generator().manual_seed(0)
    images = torch.rand(6, 1, 32, 32, generator=rng)
    tumours = torch.zeros(6, 32, 32, dtype=torch.bool)
    tumours[:, 10:18, 12:20] = True
    heads = torch.zeros(6, 32, 32, dtype=torch.bool)
    heads[:, 4:28, 4:28] = True

    def run(remap: float, head: torch.Tensor):
        return augment_pair(images, tumours, head, torch.Generator().manual_seed(1), remap)

    plain_x, plain_y = run(0.0, heads)
    remap_x, remap_y = run(1.0, heads)
    assert torch.equal(remap_y, plain_y) and remap_y.sum() > 0  # same geometry, same mask
    changed = (remap_x - plain_x).abs().amax(dim=(1, 2, 3))
    assert (changed > 0.05).all()  # every image remapped
    # no head, nothing to remap: the rest of the augmentation is drawn identically
    no_head_x, _ = run(1.0, torch.zeros_like(heads))
    assert torch.equal(no_head_x, plain_x)
    with pytest.raises(BraincamError, match="--contrast-remap"):
        SegmentConfig(contrast_remap=1.5).validate()
    with pytest.raises(BraincamError, match="--zoom-views"):
        SegmentConfig(zoom_views=-0.1).validate()
    for option in ("contrast_remap", "zoom_views"):  # parts of the augmentation: not ignored
        with pytest.raises(BraincamError, match=f"--{option.replace('_', '-')} is part of the "
                                                "augmentation; --no-augment turns it off"):
            SegmentConfig(**{option: 0.5}, augment=False).validate()
    for option, value in (("seed", -1), ("split_seed", 2**32)):
        with pytest.raises(BraincamError, match=rf"--{option.replace('_', '-')} must be in "
                                                rf"\[0, 2\*\*32\), got {value}"):
            SegmentConfig(**{option: value}).validate()


def test_the_run_rate_is_its_images_over_its_seconds():
    from braincam.train.segment import _overall_rate

    history = [{"seconds": 10.0, "train_images_per_second": 5.0},  # a slow first epoch
               {"seconds": 2.0, "train_images_per_second": 25.0}]
    assert _overall_rate(history) == pytest.approx(100 / 12, abs=0.01)  # not the mean, 15


@pytest.mark.parametrize("remap", [0.0, 0.5])
def test_zoomed_views_empty_the_masks_of_views_without_the_tumour(remap):
    images = torch.rand(200, 1, 32, 32)
    tumours = torch.zeros(200, 32, 32, dtype=torch.bool)
    tumours[:, 2:8, 3:9] = True
    heads = torch.ones_like(tumours)

    def empty_share(zoom_views: float) -> float:
        _, masks = augment_pair(images, tumours, heads, torch.Generator().manual_seed(0),
                                remap, zoom_views)
        return (~masks.flatten(1).any(1)).float().mean().item()

    assert empty_share(0.0) == 0.0
    assert 0.5 < empty_share(1.0) < 0.95


def test_counterfactual_swap_draws_removed_control_and_original_copies():
    images = torch.full((3, 32, 32), 90, dtype=torch.uint8)
    heads = torch.zeros(3, 32, 32, dtype=torch.bool)
    heads[:, 2:30, 2:30] = True
    tumours = torch.zeros(3, 32, 32, dtype=torch.bool)
    tumours[0, 6:10, 6:10] = True  # image 0 has a pair; 1 (tumour-free) and 2 none
    tumours[2, 2:30, 2:30] = True  # no room for a control: no pair
    images[0][tumours[0]] = 250
    swap = CounterfactualSwap.of(images, heads, tumours, share=0.6, seed=0)
    assert swap.pair_of.tolist() == [0, -1, -1]
    removed, control = swap.removed[0], swap.control[0]
    assert (removed[tumours[0]] < 200).all()  # the bright tumour inpainted away
    assert (control[tumours[0]] == 250).all() and not torch.equal(control, images[0])
    generator, kinds = torch.Generator().manual_seed(0), []
    for _ in range(2000):
        batch = [0, 1, 2]
        x, y = swap(batch, images[batch], tumours[batch], generator)
        assert torch.equal(x[1:], images[1:]) and torch.equal(y[1:], tumours[1:])
        if torch.equal(x[0], removed):
            assert not y[0].any()
            kinds.append("removed")
        else:
            assert torch.equal(y[0], tumours[0])
            kinds.append("control" if torch.equal(x[0], control) else "original")
            assert kinds[-1] == "control" or torch.equal(x[0], images[0])
    shares = {k: kinds.count(k) / len(kinds) for k in ("removed", "control", "original")}
    assert shares == pytest.approx({"removed": 0.3, "control": 0.3, "original": 0.4}, abs=0.04)
    with pytest.raises(BraincamError, match="--counterfactual-share must be in"):
        SegmentConfig(counterfactual_share=-0.1).validate()


def test_counterfactual_metrics_by_hand():
    truth = np.zeros((2, 4, 4), bool)
    truth[:, :2, :2] = True  # 4 tumour pixels each
    original = truth.copy()
    removed = np.zeros_like(truth)
    removed[1, 3, 3] = True  # something still predicted on the second
    control = truth.copy()
    control[0, 0, 0] = False  # Dice 2 * 3 / (3 + 4) on the first, 1 on the second
    m = counterfactual_metrics(removed, control, original, truth)
    assert m == {"n_pairs": 2, "removed_any_rate": 0.5, "original_any_rate": 1.0,
                 "control_dice": pytest.approx((6 / 7 + 1) / 2), "original_dice": 1.0}
    empty = np.zeros((0, 4, 4), bool)
    assert counterfactual_metrics(empty, empty, empty, empty)["removed_any_rate"] is None


def test_decoder_widths_are_checked():
    SegmentConfig().validate()
    for widths in [(8, 8, 8, 8), (16, 8, 8, 8, 0)]:
        with pytest.raises(BraincamError, match="--decoder-channels takes 5 positive"):
            SegmentConfig(decoder_channels=widths).validate()
    result = invoke("data", "--out", "seg", "--decoder-channels", "16,8,x")
    assert result.exit_code != 0
    assert "--decoder-channels takes comma-separated integers" in str(result.exception)


@pytest.mark.parametrize("name", ENCODERS)
def test_imagenet_weights_fill_the_encoder(name):
    from braincam.models.weights import efficientnet_lite_imagenet

    reference = efficientnet_lite_imagenet(name).state_dict()
    model = build_segmenter("imagenet", encoder=name)
    encoder = model.encoder.model.state_dict()
    assert len(encoder) > 200
    assert all(torch.equal(encoder[k], reference[k]) for k in encoder)
    assert encoder_of(model.state_dict()) == name


def test_an_unknown_encoder_is_one_line():
    with pytest.raises(BraincamError, match="--encoder must be one of efficientnet_lite0, "):
        SegmentConfig(encoder="resnet50").validate()


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_a_segmenter_file_keeps_its_encoder(tmp_path, caplog, name):
    """The encoder is read off the tensors: a file loads as a segmenter, as starting weights
    and inside a mean of segmenters, with ``arch`` ``unet-<encoder>`` in its meta."""
    from braincam.models.checkpoint import read_meta
    from braincam.models.segment import save_segmenter
    from braincam.models.unet import segmenter_like

    torch.manual_seed(0)
    model = unet(encoder=name).eval()
    save_segmenter(model, tmp_path / "model.safetensors", {"size": 64})
    assert read_meta(tmp_path / "model.safetensors")["arch"] == f"unet-{name}"
    saved = model.state_dict()
    for loaded in (load_segmenter(tmp_path, device="cpu").model,
                   build_segmenter(str(tmp_path / "model.safetensors"))):
        assert encoder_of(loaded.state_dict()) == name
        assert all(torch.equal(v, saved[k]) for k, v in loaded.state_dict().items())
    with caplog.at_level("WARNING", logger="braincam.models.segment"):
        build_segmenter(str(tmp_path / "model.safetensors"), encoder="efficientnet_lite0")
    assert "it keeps that encoder, not efficientnet_lite0" in caplog.text
    pair = {f"members.{i}.{k}": v for i, m in enumerate([unet(), model])
            for k, v in m.state_dict().items()}
    assert [encoder_of(m.state_dict()) for m in segmenter_like(pair).members] == \
        ["efficientnet_lite0", name]


def test_a_file_that_does_not_fit_is_one_line(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"conv_stem.weight": torch.zeros(1)}, str(path))
    with pytest.raises(BraincamError, match="do not fit the efficientnet_lite0 encoder"):
        build_segmenter(str(path))


def test_a_segmenter_file_keeps_its_decoder_widths(tmp_path):
    """Files made with smp's default widths load as a segmenter and as starting weights."""
    from braincam.models.segment import save_segmenter

    wide = (256, 128, 64, 32, 16)
    assert decoder_channels_of(unet().state_dict()) == DECODER_CHANNELS
    assert decoder_channels_of(unet(wide).state_dict()) == wide
    assert decoder_channels_of({}) == DECODER_CHANNELS  # a bare encoder file
    torch.manual_seed(0)
    model = unet(wide).eval()
    save_segmenter(model, tmp_path / "model.safetensors", {"size": 64})
    loaded = load_segmenter(tmp_path, device="cpu")
    assert decoder_channels_of(loaded.model.state_dict()) == wide
    saved = model.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in loaded.model.state_dict().items())
    started = build_segmenter(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in started.state_dict().items())


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("data") / "phantoms",
                                PhantomSpec(n_per_class=8, size=48), splits=("train",))


def test_data_without_a_tumour_mask_is_refused_before_any_work(phantoms, tmp_path):
    """Tumour-free images alone, or tumour images without their masks, teach a segmenter
    nothing: one line, and no run folder. Fractions no split can honour: the same."""
    import shutil

    images, free = tmp_path / "no-masks", tmp_path / "tumour-free"
    shutil.copytree(phantoms / "Training", images / "Training")  # the images without masks/
    shutil.copytree(phantoms / "Training" / "no_tumor", free / "no_tumor")
    for data in (free, images):
        out = tmp_path / f"seg-{data.name}"
        result = invoke(str(data), "--out", str(out), "--weights", "none", "--no-progress")
        assert result.exit_code != 0
        message = str(result.exception)
        assert message.startswith("no tumour image with an expert mask in ") and "\n" not in message
        assert not out.exists()
    out = tmp_path / "seg-fractions"
    result = invoke(str(phantoms), "--out", str(out), "--val-fraction", "0.5",
                    "--test-fraction", "0.5", "--weights", "none", "--no-progress")
    assert str(result.exception) == "val and test fractions must add up to less than 1"
    assert not out.exists()


def test_segment_trains_end_to_end_and_predicts(phantoms, tmp_path):
    seg = tmp_path / "seg"
    result = invoke(str(phantoms), "--out", str(seg), "--epochs", "1", "--image-size", "32",
                    "--weights", "none", "--batch-size", "4", "--device", "cpu",
                    "--val-fraction", "0.2", "--test-fraction", "0.25", "--contrast-remap",
                    "0.5", "--decoder-channels", "32,16,16,8,8", "--counterfactual-share",
                    "0.5", "--zoom-views", "0.5", "--no-progress")
    assert result.exit_code == 0, result.output
    assert SEG_FILES <= {p.name for p in seg.iterdir()}
    config = yaml.safe_load((seg / "config.yaml").read_text())["segment"]
    assert config["contrast_remap"] == 0.5 and config["decoder_channels"] == [32, 16, 16, 8, 8]
    assert config["counterfactual_share"] == 0.5 and config["zoom_views"] == 0.5
    assert "held-out mean Dice" in result.output and "per-class Dice: tumor" in result.output
    metrics = json.loads((seg / "metrics.json").read_text())
    split = pd.read_csv(seg / "split.csv")
    test = split[split["split"] == "test"]
    assert metrics["n_tumour_images"] == (test["label"] == "tumor").sum()
    assert metrics["n_tumour_free_images"] == (test["label"] == "no_tumor").sum()
    assert 0.0 <= metrics["mean_dice"] <= 1.0 and set(metrics["per_class_dice"]) == {"tumor"}
    assert metrics["epochs"] == 1 and metrics["best_epoch"] == 1
    cf = metrics["counterfactual"]  # every held-out phantom tumour has room for a control
    assert cf["n_pairs"] == metrics["n_tumour_images"] > 0
    assert cf["original_dice"] == pytest.approx(metrics["mean_dice"])
    assert "tumour inpainted: some tumour still predicted on" in result.output
    history = pd.read_csv(seg / "history.csv")
    assert list(history["epoch"]) == [1] and history["train_loss"].notna().all()
    val = split[split["split"] == "val"]
    n_tumour, n_free = (val["label"] == "tumor").sum(), (val["label"] == "no_tumor").sum()
    row = history.iloc[0]  # the selection score: Dice over every validation image
    assert row["val_score"] == pytest.approx(
        (n_tumour * row["val_dice"] + n_free * (1 - row["val_false_positive_rate"]))
        / (n_tumour + n_free))
    decision = metrics["decision"]  # the mask rule: the best of 8 on validation
    assert [(c["flip_average"], c["threshold"]) for c in decision["candidates"]] == [
        (flip, t) for flip in (False, True) for t in (0.5, 0.3, 0.4, 0.6)]
    assert decision["candidates"][0]["val_score"] == pytest.approx(row["val_score"])
    best = max(decision["candidates"], key=lambda c: c["val_score"])  # the first of equals
    rule = (best["flip_average"], best["threshold"])
    assert (decision["flip_average"], decision["threshold"]) == rule
    assert (metrics["flip_average"], metrics["threshold"]) == rule
    assert "mask rule: " in result.output and "(chosen on validation)" in result.output
    overlays = sorted(p.name for p in (seg / "overlays").iterdir())
    assert overlays and all(p.startswith(("tumor_", "no_tumor_")) for p in overlays)

    segmenter = load_segmenter(seg, "cpu")
    assert segmenter.size == 32 and (segmenter.flip_average, segmenter.threshold) == rule
    assert decoder_channels_of(segmenter.model.state_dict()) == (32, 16, 16, 8, 8)
    images = np.random.default_rng(0).integers(0, 255, (3, 40, 40), dtype=np.uint8)
    prob = segmenter.predict(images)  # 40 px in, resized to 32 and back
    assert prob.shape == (3, 40, 40) and prob.dtype == np.float32
    assert ((prob >= 0) & (prob <= 1)).all()

    image = next((phantoms / "Training" / "tumor").iterdir())
    out = tmp_path / "pred"
    result = invoke(str(seg), str(image), "--predict", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote 1 masks and outlines" in result.output
    mask = np.asarray(Image.open(out / f"{image.stem}_mask.png"))
    assert mask.shape == (48, 48) and set(np.unique(mask)) <= {0, 255}
    assert np.asarray(Image.open(out / f"{image.stem}_outline.png")).shape == (48, 48, 3)

    result = invoke(str(seg), str(tmp_path / "missing.png"), "--predict", "--out",
                    str(tmp_path / "pred2"))
    assert result.exit_code != 0 and "missing.png: no such file" in str(result.exception)
    assert not (tmp_path / "pred2").exists()

    result = invoke(str(phantoms), "--out", str(seg), "--epochs", "1")
    assert result.exit_code != 0 and "--force" in str(result.exception or result.output)


def tiny_segment(phantoms: Path, out: Path, *extra: str) -> Path:
    """A tiny ``braincam segment`` run of the phantoms into ``out`` (random weights, 32 px,
    decoder widths 8), with ``extra`` options."""
    result = invoke(str(phantoms), "--out", str(out), "--image-size", "32", "--weights", "none",
                    "--batch-size", "4", "--device", "cpu", "--decoder-channels", "8,8,8,8,8",
                    "--val-fraction", "0.2", "--test-fraction", "0.25", "--no-progress", *extra)
    assert result.exit_code == 0, result.output
    return out


def test_force_replaces_a_segment_run_only_once_the_new_one_is_complete(phantoms, tmp_path,
                                                                        monkeypatch):
    import braincam.train.segment as training

    seg = tiny_segment(phantoms, tmp_path / "seg", "--epochs", "1")
    before = {p.name: p.stat().st_mtime_ns for p in seg.iterdir()}

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C during the new training

    with monkeypatch.context() as patched:
        patched.setattr(training, "_fit", stopped)
        with pytest.raises(KeyboardInterrupt):
            training.train_segmenter([phantoms], training.SegmentConfig(
                size=32, weights="none", epochs=1, device="cpu", val_fraction=0.2,
                test_fraction=0.25), seg, force=True,
                progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in seg.iterdir()} == before  # kept whole
    tiny_segment(phantoms, seg, "--epochs", "1", "--seed", "3", "--force")
    assert yaml.safe_load((seg / "config.yaml").read_text())["segment"]["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]  # nothing left beside it


def test_split_seed_keeps_the_split_while_seed_varies_the_training(phantoms, tmp_path):
    def run(name: str, *seeds: str) -> pd.DataFrame:
        return pd.read_csv(tiny_segment(phantoms, tmp_path / name, "--epochs", "1", *seeds)
                           / "split.csv")

    base = run("a", "--seed", "0")
    shared = run("b", "--seed", "1", "--split-seed", "0", "--no-tune-threshold")
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["decision"] is None  # plain probabilities at 0.5
    assert (metrics["flip_average"], metrics["threshold"]) == (False, 0.5)
    own = run("c", "--seed", "1", "--encoder", "efficientnet_lite1", "--no-amp")
    assert base.equals(shared)
    assert not base["split"].equals(own["split"])
    config = yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())["segment"]
    assert config["encoder"] == "efficientnet_lite1" and config["amp"] is False
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["segment"]["amp"]
    assert encoder_of(load_segmenter(str(tmp_path / "c"), "cpu").model.state_dict()) == \
        "efficientnet_lite1"
    weights = [load_segmenter(str(tmp_path / n), "cpu").model.state_dict() for n in "ab"]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_weight_average_by_hand():
    """The first update copies; update n >= 1 moves each float tensor by 1 - d toward the
    model's, d = min(decay, (1 + n) / (10 + n)); the batch count is copied."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    average = weight_average(model, decay=0.3)
    with torch.no_grad():
        model[0].weight.fill_(2.0)
    average.update_parameters(model)
    assert torch.equal(average.module[0].weight, torch.full((1, 2), 2.0))
    expected = 2.0
    for n, value in enumerate((4.0, 8.0, 8.0, 8.0, 8.0), start=1):
        with torch.no_grad():
            model[0].weight.fill_(value)
            model[1].running_mean.fill_(value)
            model[1].num_batches_tracked.fill_(10 * n)
        average.update_parameters(model)
        d = min(0.3, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * value
        assert average.module[0].weight[0, 0].item() == pytest.approx(expected)
        assert average.module[1].num_batches_tracked.item() == 10 * n
    assert expected == pytest.approx(7.9706, abs=1e-4)  # d: 2/11, 3/12, then 0.3
    assert model[0].weight[0, 0].item() == 8.0  # the model itself is untouched
    with pytest.raises(BraincamError, match="--ema must be in"):
        SegmentConfig(ema=1.0).validate()


def test_ema_keeps_the_averaged_weights_it_validated(phantoms, tmp_path):
    """--ema: the saved weights are the average that validation scored (the kept epoch's
    validation score comes back from the saved model), and they differ from the plain run's."""
    from braincam.data.splits import read_split_csv
    from braincam.evaluate.segmentation import segmentation_metrics

    def run(name: str, *extra: str) -> Path:
        return tiny_segment(phantoms, tmp_path / name, "--epochs", "2", "--no-tune-threshold",
                            *extra)

    plain, averaged = run("plain"), run("ema", "--ema", "0.9")
    assert yaml.safe_load((averaged / "config.yaml").read_text())["segment"]["ema"] == 0.9
    weights = [load_segmenter(str(r), "cpu").model.state_dict() for r in (plain, averaged)]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0]
               if weights[0][k].is_floating_point())
    data = load_segmentation_data(load_dataset([phantoms]).records,
                                  SegmentConfig(size=32).preprocess)
    val = read_split_csv(averaged / "split.csv", data.records).indices("val")
    pred = load_segmenter(str(averaged), "cpu").predict(data.images[val].numpy()) >= 0.5
    score = segmentation_metrics(pred, data.masks[val].numpy(), ["x"] * len(val),
                                 ["x"] * len(val))["all_image_dice"]
    history = pd.read_csv(averaged / "history.csv")
    best = json.loads((averaged / "metrics.json").read_text())["best_epoch"]
    assert score == pytest.approx(history.loc[history["epoch"] == best, "val_score"].item())


def test_weak_labels_train_on_tumour_images_without_a_mask(tmp_path):
    root = make_phantom_dataset(tmp_path / "phantoms", PhantomSpec(n_per_class=8, size=48),
                                splits=("train",))
    unmasked = sorted((root / "masks" / "Training" / "tumor").iterdir())[:4]
    for mask in unmasked:
        mask.unlink()
    tumours = root / "Training" / "tumor"
    outlined = tumours / "tumor_train_0007.png"  # keeps its mask
    copy = tumours / "copy_of_0007.png"  # a weak image that only repeats an outlined one
    copy.write_bytes(outlined.read_bytes())
    records = load_dataset([root]).records
    plain = load_segmentation_data(records, SegmentConfig(size=32).preprocess)
    weak = load_segmentation_data(records, SegmentConfig(size=32).preprocess, weak_labels=True)
    assert len(plain.records) == len(records) - 5 and not plain.weak.any()
    assert len(weak.records) == len(records)
    assert {r.path.stem for r, w in zip(weak.records, weak.weak, strict=True) if w} == \
        {m.stem for m in unmasked} | {copy.stem}
    assert not weak.masks[weak.weak].any()  # no outline: an empty mask, never trained on
    copies = copies_of_outlined(weak.records, weak.weak.numpy())
    assert [r.path.name for r, c in zip(weak.records, copies, strict=True) if c] == [copy.name]

    seg = tmp_path / "seg"
    result = invoke(str(root), "--out", str(seg), "--epochs", "1", "--image-size", "32",
                    "--weights", "none", "--batch-size", "4", "--device", "cpu",
                    "--decoder-channels", "8,8,8,8,8", "--val-fraction", "0.2",
                    "--test-fraction", "0.4", "--weak-labels", "--no-progress")
    assert result.exit_code == 0, result.output
    split = pd.read_csv(seg / "split.csv")
    assert len(split) == len(records)
    test = split[split["split"] == "test"]
    is_weak = test["path"].map(lambda p: Path(p).stem in {m.stem for m in unmasked})
    assert split.loc[split["path"].str.endswith(copy.name), "group"].item() == \
        split.loc[split["path"].str.endswith(f"/tumor/{outlined.name}"), "group"].item()
    assert split.loc[split["copy_left_out"], "path"].tolist() == [str(copy.resolve())]
    overview = collect_overview(RunDir(seg))  # the report's Data table leaves the copy out
    assert overview.counts.rows[-1][1][-1] == len(records) - 1
    assert ("Not counted: 1 images without a mask that copy an outlined image, left out of "
            "training and scoring (their originals train with the outline).") in overview.sentences
    metrics = json.loads((seg / "metrics.json").read_text())
    assert metrics["n_tumour_images"] == ((test["label"] == "tumor") & ~is_weak).sum()
    assert metrics["n_tumour_free_images"] == (test["label"] == "no_tumor").sum()
    assert metrics["weak"]["n_images"] == is_weak.sum() > 0
    assert metrics["weak"]["n_copies_left_out"] == 1
    assert set(metrics["weak"]["detection_rate_by_class"]) == {"tumor"}
    assert 0 <= metrics["weak"]["detection_rate"] <= 1
    # per_image.csv: every held-out image but the left-out copy, the weak ones without a Dice
    rows = pd.read_csv(seg / "per_image.csv")
    assert sorted(rows["path"]) == sorted(p for p in test["path"] if not p.endswith(copy.name))
    weak_rows = rows[~rows["mask"]]
    assert len(weak_rows) == metrics["weak"]["n_images"] and weak_rows["dice"].isna().all()
    assert (weak_rows["predicted_share"] > 0).mean() == pytest.approx(
        metrics["weak"]["detection_rate"])
    scored = rows[rows["mask"] & (rows["label"] == "tumor")]
    assert scored["dice"].mean() == pytest.approx(metrics["mean_dice"], abs=1e-4)
    assert scored["iou"].mean() == pytest.approx(metrics["mean_iou"], abs=1e-4)
    assert (f"tumour images without a mask: some tumour predicted on "
            f"{metrics['weak']['detection_rate']:.3f} of {is_weak.sum()} held out") in result.output
    assert yaml.safe_load((seg / "config.yaml").read_text())["segment"]["weak_labels"]


def test_a_tumour_mask_that_vanishes_at_the_model_input_leaves_its_image_out(tmp_path):
    """A 1-pixel mask outside the head is cropped away: its tumour image is a skip entry, not a
    tumour-free image in training or in --evaluate's false-positive rate."""
    import numpy as np
    from PIL import Image

    root = make_phantom_dataset(tmp_path / "ph", PhantomSpec(n_per_class=4, size=64, seed=1))
    masks = sorted((root / "masks").rglob("tumor_*.png"))
    tiny = np.zeros((64, 64), np.uint8)
    tiny[0, 0] = 255  # outside the head: cropped away
    Image.fromarray(tiny).save(masks[0])
    records = load_dataset([root]).records
    data = load_segmentation_data(records, SegmentConfig(size=32).preprocess)
    assert len(data.records) == len(records) - 1
    assert [s.path for s in data.skipped] == [masks[0]]
    assert "mask covers no pixel of the 32 px model input" in data.skipped[0].reason


def test_freeze_blocks_keep_the_stem_and_first_blocks_pretrained(phantoms, tmp_path):
    """--freeze-blocks 2: the stem's and first two blocks' parameters are ImageNet's after
    training, the later blocks' and the decoder's are not; it needs pretrained weights."""
    from safetensors.torch import load_file

    from braincam.models.weights import efficientnet_lite_imagenet

    with pytest.raises(BraincamError, match="--freeze-blocks must be in"):
        SegmentConfig(freeze_blocks=8).validate()
    with pytest.raises(BraincamError, match="--weights none has none"):
        SegmentConfig(freeze_blocks=1, weights="none").validate()
    seg = tmp_path / "seg"
    result = invoke(str(phantoms), "--out", str(seg), "--epochs", "1", "--image-size", "32",
                    "--weights", "imagenet", "--freeze-blocks", "2", "--batch-size", "4",
                    "--device", "cpu", "--decoder-channels", "8,8,8,8,8", "--val-fraction",
                    "0.2", "--test-fraction", "0.25", "--no-progress")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((seg / "config.yaml").read_text())["segment"]["freeze_blocks"] == 2
    trained = load_file(str(seg / "model.safetensors"))
    reference = dict(efficientnet_lite_imagenet("efficientnet_lite0").named_parameters())
    kept = {k for k in reference if k.startswith(("conv_stem.", "bn1.", "blocks.0.", "blocks.1."))}
    assert kept and all(torch.equal(trained[f"encoder.model.{k}"], reference[k]) for k in kept)
    moved = [k for k in reference if k.startswith("blocks.2.")]
    assert moved and all(not torch.equal(trained[f"encoder.model.{k}"], reference[k])
                         for k in moved)


def test_train_crop_trains_on_windows_and_predicts_whole_images(phantoms, tmp_path,
                                                               monkeypatch):
    """--train-crop 32 at --image-size 64: every training loss sees 32 px logits, while
    validation, the held-out scores and the saved segmenter work on whole 64 px images."""
    import braincam.train.segment as train_segment

    sides: list[tuple[int, int]] = []
    loss = train_segment.dice_bce_loss

    def spy(logits: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        sides.append(tuple(logits.shape[-2:]))
        return loss(logits, *args)

    monkeypatch.setattr(train_segment, "dice_bce_loss", spy)
    out = tiny_segment(phantoms, tmp_path / "crop", "--epochs", "1", "--image-size", "64",
                       "--train-crop", "32")
    assert sides and set(sides) == {(32, 32)}
    assert yaml.safe_load((out / "config.yaml").read_text())["segment"]["train_crop"] == 32
    segmenter = load_segmenter(out, "cpu")
    assert segmenter.size == 64
    assert segmenter.predict(np.zeros((2, 64, 64), np.uint8)).shape == (2, 64, 64)
    for bad in (["--train-crop", "48"], ["--train-crop", "96"],
                ["--train-crop", "32", "--no-augment"]):
        result = invoke(str(phantoms), "--out", str(tmp_path / "bad"), "--image-size", "64",
                        *bad)
        assert result.exit_code != 0 and "--train-crop must be a multiple of 32" in str(
            result.exception) + result.output


def test_segment_trains_on_nifti_volumes_with_label_volumes(tmp_path, write_nifti):
    """BraTS-style data: each patient a volume, its tumour a label volume under masks/; the
    slices without tumour voxels are tumour-free images of the same patient."""
    rng = np.random.default_rng(0)
    root = tmp_path / "volumes"
    yy, xx = np.mgrid[:48, :48]
    head = ((xx - 24) / 20) ** 2 + ((yy - 24) / 18) ** 2 <= 1
    for p in range(10):
        cx, cy = rng.integers(16, 32, 2)
        tumour = (xx - cx) ** 2 + (yy - cy) ** 2 <= 25
        image = np.stack([np.where(head, 120, 0) + rng.integers(0, 30, (48, 48))
                          for _ in range(4)]).astype(np.uint8)
        labels = np.zeros_like(image)
        image[1:3][:, tumour], labels[1:3][:, tumour] = 240, 1
        for folder, volume in (("glioma", image), ("masks/glioma", labels)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            write_nifti(root / folder / f"p{p}.nii.gz", volume)
    seg = tmp_path / "seg"
    result = invoke(str(root), "--out", str(seg), "--epochs", "1", "--image-size", "32",
                    "--weights", "none", "--batch-size", "4", "--device", "cpu",
                    "--decoder-channels", "8,8,8,8,8", "--val-fraction", "0.2",
                    "--test-fraction", "0.3", "--no-progress")
    assert result.exit_code == 0, result.output
    split = pd.read_csv(seg / "split.csv")
    assert len(split) == 40 and split["path"].str.contains(r"\.nii\.gz#[0-3]$").all()
    assert (split["label"] == "glioma").sum() == (split["label"] == "no_tumor").sum() == 20
    patients = split.assign(file=split["path"].str.split("#").str[0])
    assert (patients.groupby("file")["split"].nunique() == 1).all()  # a patient on one side
    test = split[split["split"] == "test"]
    metrics = json.loads((seg / "metrics.json").read_text())
    assert metrics["n_tumour_images"] == (test["label"] == "glioma").sum() > 0
    assert metrics["n_tumour_free_images"] == (test["label"] == "no_tumor").sum() > 0
    per_image = pd.read_csv(seg / "per_image.csv")
    assert set(per_image["path"]) == set(test["path"])


def test_overlays_of_two_images_of_one_name_are_two_files(tmp_path):
    """``Training/x/a.png`` and ``Testing/x/a.png`` with the same Dice: two overlays."""
    import numpy as np

    from braincam.data.records import ImageRecord
    from braincam.runs import RunDir
    from braincam.train.segment import _write_overlays

    records = [ImageRecord(tmp_path / split / "no_tumor" / "a.png", "src", split, "no_tumor",
                           8, 8, None) for split in ("train", "test")]
    images = np.zeros((2, 8, 8), np.uint8)
    empty = np.zeros((2, 8, 8), bool)
    run = RunDir(tmp_path / "run")
    _write_overlays(run, records, images, empty, empty, per_class=4)
    assert len(list(run.overlays.iterdir())) == 2


def test_a_whole_unet_file_as_weights_is_recorded_as_the_network_it_is(phantoms, tmp_path,
                                                                       caplog):
    """``--weights SEG/model.safetensors`` with other ``--encoder``/``--decoder-channels``: the
    file's network trains, both are warned about, and config.yaml records the file's."""
    first = tiny_segment(phantoms, tmp_path / "first", "--epochs", "1")
    with caplog.at_level("WARNING", logger="braincam.models.segment"):
        result = invoke(str(phantoms), "--out", str(tmp_path / "second"), "--image-size", "32",
                        "--weights", str(first / "model.safetensors"), "--epochs", "1",
                        "--encoder", "efficientnet_lite1", "--decoder-channels",
                        "16,16,16,16,16", "--batch-size", "4", "--device", "cpu",
                        "--val-fraction", "0.2", "--test-fraction", "0.25", "--no-progress")
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "second" / "config.yaml").read_text())["segment"]
    assert config["encoder"] == "efficientnet_lite0" and config["decoder_channels"] == [8] * 5
    assert sum("it keeps" in m for m in caplog.messages) == 2


def test_training_options_with_evaluate_predict_or_held_out_are_one_line_errors(tmp_path):
    """``--epochs 3`` beside ``--evaluate`` would change nothing: refused before any work."""
    for mode in ("--evaluate", "--predict", "--held-out"):
        result = invoke(str(tmp_path), str(tmp_path), mode, "--out", str(tmp_path / "o"),
                        "--epochs", "3")
        assert f"--epochs is a training option; {mode} takes none" in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_a_guided_classifier_of_the_encoder_starts_a_segmenter(tmp_path):
    """docs/segment.md: a classifier of the same encoder gives its network, plain or under a
    guide's gate (``backbone.net.``), whose own U-Net is not taken."""
    from braincam.models import build_model, save_checkpoint
    from braincam.models.guided import guide

    torch.manual_seed(0)
    for gated in (False, True):
        classifier = build_model("efficientnet_lite0", 2, "none").eval()
        network = {k: v.clone() for k, v in classifier.backbone.state_dict().items()}
        if gated:
            guide(classifier, unet().eval(), 64, 0.0)
        path = tmp_path / f"classifier-{gated}.safetensors"
        save_checkpoint(classifier, path, {"arch": "efficientnet_lite0",
                                           "classes": ["no_tumor", "tumor"]})
        encoder = build_segmenter(str(path)).encoder.model.state_dict()
        assert all(torch.equal(v, network[k]) for k, v in encoder.items()), gated
