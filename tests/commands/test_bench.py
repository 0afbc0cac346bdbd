"""``braincam bench cam|occlusion|train|segment``: one JSON line with consistent numbers
(tiny settings; the speed ratios themselves are benchmark results, not test assertions)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from braincam.commands.bench import app
from braincam.errors import BraincamError
from braincam.models.unet import freeze_encoder


def run_json(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_bench_cam_reports_side_by_side_rates():
    out = run_json("cam", "--arch", "efficientnet_lite0", "--batch", "2", "--iters", "1",
                   "--repeats", "1", "--image-size", "32")
    assert {"arch", "batch", "device", "inference_img_s", "gradcam_img_s",
            "pytorch_grad_cam_img_s", "gradcam_vs_inference",
            "gradcam_vs_pytorch_grad_cam"} <= set(out)
    assert out["arch"] == "efficientnet_lite0" and out["batch"] == 2 and out["device"] == "cpu"
    assert out["layer"] == "backbone.bn2"
    assert min(out["inference_img_s"], out["gradcam_img_s"], out["pytorch_grad_cam_img_s"]) > 0
    ratio = out["gradcam_img_s"] / out["pytorch_grad_cam_img_s"]  # one repeat: plain ratio
    assert out["gradcam_vs_pytorch_grad_cam"] == pytest.approx(ratio, rel=0.02)


def test_bench_occlusion_matches_captum():
    out = run_json("occlusion", "--image-size", "32", "--window", "16", "--stride", "8",
                   "--images", "2", "--captum-images", "1")
    assert out["window"] == 16 and out["stride"] == 8 and out["captum_images"] == 1
    assert out["braincam_img_s"] > 0 and out["captum_img_s"] > 0
    assert out["ratio"] == pytest.approx(out["braincam_img_s"] / out["captum_img_s"], rel=0.02)
    assert out["max_abs_diff"] <= 1e-4  # same maps as captum's Occlusion


@pytest.mark.parametrize(
    "args", [["cam", "--batch", "0"], ["occlusion", "--stride", "40"],
             ["occlusion", "--batch-size", "0"]]
)
def test_bad_settings(args):
    result = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert isinstance(result.exception, BraincamError)


def test_bench_train_reports_training_and_inference_rates():
    out = run_json("train", "--arch", "resnet10t", "--batch", "2", "--image-size", "32",
                   "--iters", "1", "--repeats", "1", "--no-channels-last")
    assert out["arch"] == "resnet10t" and out["batch"] == 2 and out["image_size"] == 32
    assert out["device"] == "cpu" and out["device_name"] == "cpu" and out["amp"] is None
    assert (out["channels_last"], out["compile"], out["iters"], out["repeats"]) == (
        False, False, 1, 1
    )
    assert out["train_img_s"] > 0 and out["inference_img_s"] > 0


def test_bench_train_refuses_an_empty_batch():
    result = CliRunner().invoke(app, ["train", "--batch", "0", "--device", "cpu"])
    assert isinstance(result.exception, BraincamError)
    assert "--batch must be >= 1" in str(result.exception)


def test_bench_segment_measures_two_decoder_widths_side_by_side():
    out = run_json("segment", "--batch", "2", "--image-size", "32", "--iters", "1",
                   "--repeats", "1", "--decoder-channels", "16,8,8,8,8")
    assert out["decoder_channels"] == [16, 8, 8, 8, 8]
    assert out["reference_channels"] == [256, 128, 64, 32, 16]
    assert out["encoder"] == out["reference_encoder"] == "efficientnet_lite0"
    assert (out["image_size"], out["batch"], out["device"]) == (32, 2, "cpu")
    assert out["train_img_s"] > 0 and out["reference_train_img_s"] > 0
    ratio = out["train_img_s"] / out["reference_train_img_s"]
    assert out["ratio"] == pytest.approx(ratio, rel=0.02)


def test_bench_segment_measures_two_encoders_side_by_side():
    out = run_json("segment", "--batch", "2", "--image-size", "32", "--iters", "1",
                   "--repeats", "1", "--encoder", "efficientnet_lite2",
                   "--reference-channels", "128,64,32,16,8")
    assert (out["encoder"], out["reference_encoder"]) == ("efficientnet_lite2",
                                                          "efficientnet_lite0")
    assert out["decoder_channels"] == out["reference_channels"] == [128, 64, 32, 16, 8]
    assert out["train_img_s"] > 0 and out["reference_train_img_s"] > 0


def test_bench_segment_compares_mixed_precision_with_fp32(monkeypatch):
    monkeypatch.setattr("braincam.device.cpu_bf16", lambda: True)
    out = run_json("segment", "--batch", "2", "--image-size", "32", "--iters", "1",
                   "--repeats", "1", "--reference-channels", "128,64,32,16,8",
                   "--no-reference-amp")
    assert (out["amp"], out["reference_amp"]) == ("torch.bfloat16", None)
    assert out["train_img_s"] > 0 and out["reference_train_img_s"] > 0


def test_bench_segment_trains_the_contender_with_frozen_encoder_blocks(monkeypatch):
    """--freeze-blocks 2: the contender's stem and first two blocks take no gradient, the
    reference (0) trains them."""
    from braincam.train import bench

    frozen = {}

    def spy(model, blocks):
        freeze_encoder(model, blocks)
        frozen[blocks] = model

    monkeypatch.setattr(bench, "freeze_encoder", spy)
    out = run_json("segment", "--batch", "2", "--image-size", "32", "--iters", "1",
                   "--repeats", "1", "--reference-channels", "128,64,32,16,8",
                   "--freeze-blocks", "2")
    assert (out["freeze_blocks"], out["reference_freeze_blocks"]) == (2, 0)
    assert sorted(frozen) == [0, 2]
    for blocks, model in frozen.items():
        encoder = model.encoder.model
        assert encoder.conv_stem.weight.requires_grad is (blocks == 0)
        assert encoder.blocks[1][0].conv_dw.weight.requires_grad is (blocks == 0)
        assert encoder.blocks[2][0].conv_pw.weight.requires_grad
    assert out["train_img_s"] > 0 and out["reference_train_img_s"] > 0


@pytest.mark.parametrize("args, message", [
    (["--image-size", "40"], "--image-size must be a multiple of 32"),
    (["--freeze-blocks", "8"], "--freeze-blocks must be in [0, 7]"),
    (["--decoder-channels", "8,8"], "--decoder-channels takes 5 positive widths"),
    (["--reference-channels", "8,8"], "--reference-channels takes 5 positive widths"),
    (["--reference-encoder", "resnet50"], "--reference-encoder must be one of"),
    (["--reference-freeze-blocks", "8"], "--reference-freeze-blocks must be in [0, 7]"),
])
def test_bench_segment_refuses_bad_settings(args, message):
    result = CliRunner().invoke(app, ["segment", *args, "--device", "cpu"])
    assert isinstance(result.exception, BraincamError)
    assert message in str(result.exception)


def test_bench_segment_ratio_is_the_median_of_per_repeat_ratios(monkeypatch):
    """Load that drifts between repeats cancels in each repeat's ratio, not in a ratio of
    medians (here 2.0 against 1.5)."""
    import braincam.train.bench as bench

    seconds = {"decoder": [1.0, 2.0, 3.0], "reference": [3.0, 1.0, 6.0]}
    monkeypatch.setattr(bench, "interleaved", lambda contenders, repeats, device: seconds)
    out = bench.bench_segment(image_size=32, batch=2, iters=1, repeats=3,
                              decoder_channels=(16, 8, 8, 8, 8))
    assert out["ratio"] == 2.0
    assert (out["train_img_s"], out["reference_train_img_s"]) == (1.0, 0.67)  # 2 / 2, 2 / 3
