"""``braincam bench ...``: throughput benchmarks that print one JSON line each.

Ratios are measured side by side in one process (see :mod:`braincam.explain.bench`), so they
hold on a shared machine where absolute numbers do not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Throughput benchmarks; each prints one JSON line.", no_args_is_help=True
)

Arch = Annotated[str, typer.Option(help="resnet50, efficientnet_lite0 or a timm name.")]
Batch = Annotated[int, typer.Option(help="Images per batch.")]
ImageSize = Annotated[int, typer.Option(help="Input side, px.")]
Repeats = Annotated[int, typer.Option(help="Repeats; medians are reported.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]


@app.command("cam")
def cam(
    arch: Arch = "resnet50",
    batch: Batch = 16,
    iters: Annotated[int, typer.Option(help="Timed batches per contender and repeat.")] = 1,
    repeats: Repeats = 5,
    image_size: ImageSize = 224,
    device: Device = "auto",
) -> None:
    """Grad-CAM throughput vs plain inference and vs pytorch-grad-cam's GradCAM."""
    from braincam.device import device_of
    from braincam.explain.bench import bench_cam

    _check_positive(batch=batch, iters=iters, repeats=repeats, image_size=image_size)
    result = bench_cam(arch, batch, iters, repeats, image_size, device_of(device))
    typer.echo(json.dumps(result))


@app.command("occlusion")
def occlusion(
    window: Annotated[int, typer.Option(help="Occlusion window side, px.")] = 32,
    stride: Annotated[int, typer.Option(help="Occlusion stride, px.")] = 16,
    image_size: ImageSize = 224,
    arch: Arch = "efficientnet_lite0",
    images: Annotated[
        int,
        typer.Option(help="Images explained by braincam in one call (braincam explain's "
                     "default batch: per-call set-up is shared by a batch)."),
    ] = 16,
    captum_images: Annotated[
        int, typer.Option(help="Images explained by captum (slow: one forward per window).")
    ] = 1,
    repeats: Repeats = 1,
    batch_size: Annotated[
        int | None,
        typer.Option(help="braincam's occluded copies per forward (default 16 CPU, 128 GPU)."),
    ] = None,
    device: Device = "auto",
) -> None:
    """braincam occlusion throughput vs captum's Occlusion (perturbations_per_eval=1)."""
    from braincam.device import device_of
    from braincam.explain.bench import bench_occlusion
    from braincam.explain.occlusion import check_window

    _check_positive(images=images, captum_images=captum_images, repeats=repeats,
                    batch_size=1 if batch_size is None else batch_size)
    check_window(image_size, image_size, window, stride)
    result = bench_occlusion(arch, window, stride, image_size, images, captum_images, repeats,
                             batch_size, device_of(device))
    typer.echo(json.dumps(result))


@app.command("train")
def train(
    arch: Arch = "resnet50",
    batch: Batch = 64,
    image_size: ImageSize = 224,
    iters: Annotated[int, typer.Option(help="Timed steps per contender and repeat.")] = 5,
    repeats: Repeats = 3,
    device: Device = "auto",
    channels_last: Annotated[
        bool | None,
        typer.Option("--channels-last/--no-channels-last",
                     help="Channels-last memory format (default: on for CUDA only)."),
    ] = None,
    compile: Annotated[
        bool, typer.Option("--compile/--no-compile", help="torch.compile the model.")
    ] = False,
) -> None:
    """Training-step and inference images/s side by side.

    Random weights and images, AdamW, every parameter trained, the device's autocast.
    """
    from braincam.device import device_of
    from braincam.train.bench import bench_train

    _check_positive(batch=batch, image_size=image_size, iters=iters, repeats=repeats)
    result = bench_train(arch, batch, image_size, iters, repeats, device_of(device),
                         channels_last, compile)
    typer.echo(json.dumps(result))


@app.command("segment")
def segment(
    batch: Batch = 16,
    image_size: ImageSize = 192,
    iters: Annotated[int, typer.Option(help="Timed steps per contender and repeat.")] = 3,
    repeats: Repeats = 3,
    decoder_channels: Annotated[
        str | None, typer.Option(help="Decoder widths to measure (default: the segmenter's, "
                                 "128,64,32,16,8).", show_default=False)
    ] = None,
    encoder: Annotated[str, typer.Option(help="Encoder to measure.")] = "efficientnet_lite0",
    reference_channels: Annotated[
        str, typer.Option(help="Decoder widths of the reference (smp's own default).")
    ] = "256,128,64,32,16",
    reference_encoder: Annotated[
        str, typer.Option(help="Encoder of the reference.")
    ] = "efficientnet_lite0",
    amp: Annotated[
        bool, typer.Option("--amp/--no-amp", help="Mixed precision as `braincam segment "
                           "--amp` (bf16 on CPUs that compute it natively).")
    ] = True,
    reference_amp: Annotated[
        bool, typer.Option("--reference-amp/--no-reference-amp",
                           help="Mixed precision for the reference.")
    ] = True,
    freeze_blocks: Annotated[
        int, typer.Option(help="Encoder blocks kept frozen, as `braincam segment "
                          "--freeze-blocks`.")
    ] = 0,
    reference_freeze_blocks: Annotated[
        int, typer.Option(help="Encoder blocks kept frozen in the reference.")
    ] = 0,
    device: Device = "auto",
) -> None:
    """Segmenter training images/s against a reference U-Net (by default the same encoder
    with smp's decoder widths).

    Random weights, images and masks, AdamW, the Dice + BCE loss, `braincam segment`'s
    autocast.
    """
    from braincam.commands.segment import widths
    from braincam.device import device_of
    from braincam.models.unet import DECODER_CHANNELS
    from braincam.train.bench import bench_segment
    from braincam.train.segment import SegmentConfig

    _check_positive(batch=batch, iters=iters, repeats=repeats)
    channels = widths(decoder_channels) if decoder_channels else DECODER_CHANNELS
    reference = widths(reference_channels)
    from braincam.errors import BraincamError

    reference_names = {"--decoder-channels": "--reference-channels",
                       "--encoder": "--reference-encoder",
                       "--freeze-blocks": "--reference-freeze-blocks"}
    for names, net in (({}, (channels, encoder, freeze_blocks)),
                       (reference_names, (reference, reference_encoder,
                                          reference_freeze_blocks))):
        try:  # the reference's errors name its own options
            SegmentConfig(size=image_size, decoder_channels=net[0], encoder=net[1],
                          freeze_blocks=net[2]).validate()
        except BraincamError as exc:
            message = str(exc)
            for option, renamed in names.items():
                message = message.replace(option, renamed)
            raise BraincamError(message) from None
    result = bench_segment(image_size, batch, iters, repeats, device_of(device), channels,
                           reference, encoder, reference_encoder, amp, reference_amp,
                           freeze_blocks, reference_freeze_blocks)
    typer.echo(json.dumps(result))


@app.command("allocator")
def allocator(
    arch: Arch = "efficientnet_lite0",
    batch: Batch = 64,
    image_size: ImageSize = 224,
    batches: Annotated[int, typer.Option(help="Timed batches per process.")] = 3,
    repeats: Repeats = 3,
) -> None:
    """CPU inference images/s with glibc's allocator defaults against braincam's setting,
    freed memory kept for reuse (every braincam command applies it).

    Each contender runs in a fresh process, the two in turn; random weights and images.
    """
    from braincam.allocator import tunable
    from braincam.errors import BraincamError

    _check_positive(batch=batch, image_size=image_size, batches=batches, repeats=repeats)
    if not tunable():
        raise BraincamError("braincam keeps the allocator's defaults here (not Linux's glibc, "
                            "LD_PRELOAD or MALLOC_* tunables set): nothing to compare")
    from braincam.evaluate.bench import bench_allocator  # resource, sched_getaffinity: Linux

    typer.echo(json.dumps(bench_allocator(arch, batch, image_size, batches, repeats)))


@app.command("predict")
def predict(
    run: Annotated[Path, typer.Argument(help="Run directory written by `braincam train`.")],
    images: Annotated[Path, typer.Argument(help="Folder of image files (searched recursively).")],
    max_images: Annotated[int, typer.Option(help="At most this many files (sorted).")] = 200,
    repeats: Annotated[int, typer.Option(help="Timed single-image calls.")] = 20,
    folder_repeats: Annotated[int, typer.Option(help="Timed folder passes per path.")] = 3,
    batch: Batch = 32,
    ood: Annotated[bool, typer.Option("--ood/--no-ood", help="Warnings on (as predict).")] = True,
    device: Device = "auto",
) -> None:
    """Latency of one image with Grad-CAM through the Python API, and folder throughput of
    `predict` vs `evaluate`'s path, side by side."""
    from braincam.api import load
    from braincam.api.bench import bench_predict
    from braincam.data.records import IGNORED_DIRS, IMAGE_SUFFIXES, files_under
    from braincam.errors import BraincamError

    _check_positive(max_images=max_images, repeats=repeats, folder_repeats=folder_repeats,
                    batch=batch)
    if not images.is_dir():
        raise BraincamError(f"{images}: not a folder")
    files = sorted(p for p in files_under(images) if p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.lower() in IGNORED_DIRS  # masks/: outlines, as predict
                               for part in p.relative_to(images).parts[:-1]))
    model = load(run, device=device, ood=ood)
    result = bench_predict(model, files[:max_images], repeats, folder_repeats, batch)
    typer.echo(json.dumps(result))


@app.command("serve")
def serve(
    run: Annotated[Path, typer.Argument(help="Run directory written by `braincam train`.")],
    image: Annotated[Path, typer.Argument(help="One image, DICOM or NIfTI file to upload.")],
    repeats: Annotated[int, typer.Option(help="Timed calls per path.")] = 20,
    method: Annotated[str, typer.Option(help="Explanation method of the overlays.")] = "gradcam",
    ood: Annotated[bool, typer.Option("--ood/--no-ood", help="Warnings on (as serve).")] = True,
    device: Device = "auto",
) -> None:
    """Latency of one upload through `braincam serve`'s POST /api/predict (loopback HTTP)
    vs the Python API's explain on the same file decoded in memory, side by side."""
    from braincam.api import load
    from braincam.errors import BraincamError
    from braincam.explain import METHODS
    from braincam.serve.bench import bench_serve

    _check_positive(repeats=repeats)
    if method not in METHODS:
        raise BraincamError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not image.is_file():
        raise BraincamError(f"{image}: not a file")
    result = bench_serve(load(run, device=device, ood=ood), image, repeats, method)
    typer.echo(json.dumps(result))


def _check_positive(**values: int) -> None:
    from braincam.errors import BraincamError

    for name, value in values.items():
        if value < 1:
            raise BraincamError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
