"""``braincam segment DATA... --out SEG``: train the tumour segmenter; ``braincam segment SEG
--predict IMAGES... --out DIR``: masks and outlines for new images; ``braincam segment SEG
--evaluate DATA... --out DIR``: its scores on dataset folders with masks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from braincam.commands.evaluate import score_text
from braincam.commands.train import command_line
from braincam.commands.training_options import Device, given

BatchSize = Annotated[
    int, typer.Option(help="Images per step (under torchrun: all processes together).")
]


def command(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(help="Training: dataset folder(s) with ROOT/masks/. With --predict: "
                       "the segment run directory, then image, DICOM and NIfTI files or "
                       "folders. With --evaluate: the segment run directory (or RUN1,RUN2 "
                       "for their mean), then dataset folders."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o",
                                      help="Run directory to create (or, with --predict, "
                                      "the folder for the masks; with --evaluate, for "
                                      "metrics.json).")],
    predict: Annotated[
        bool, typer.Option("--predict", help="Predict with the run named first in PATHS.")
    ] = False,
    evaluate: Annotated[
        bool, typer.Option("--evaluate", help="Score the run named first in PATHS (RUN1,RUN2: "
                           "their mean) on the dataset folders after it, against their "
                           "masks; figures without the images it learnt from as well.")
    ] = False,
    held_out: Annotated[
        bool, typer.Option("--held-out", help="Link the run's held-out test images (with "
                           "their masks and boxes) into OUT, one folder a dataset (named as "
                           "it), for audits on images the segmenter never learnt from.")
    ] = False,
    unseen_by: Annotated[
        Path | None,
        typer.Option("--unseen-by", help="With --held-out: also leave out the images that "
                     "duplicate one this classifier run (or its guide) trained or validated "
                     "on.")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs (cosine schedule).")] = 10,
    image_size: Annotated[
        int, typer.Option(help="Input side in pixels (a multiple of 32).")
    ] = 192,
    batch_size: BatchSize = 16,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (whole network).")] = 1e-3,
    weights: Annotated[
        str, typer.Option(help="Encoder weights: imagenet (offline, from the encoder's "
                          "package), none, or PATH (a segmenter, or a classifier/backbone of "
                          "the same encoder).")
    ] = "imagenet",
    encoder: Annotated[
        str, typer.Option(help="The U-Net's encoder: efficientnet_lite0, efficientnet_lite1 "
                          "or efficientnet_lite2.")
    ] = "efficientnet_lite0",
    decoder_channels: Annotated[
        str | None, typer.Option(help="The U-Net decoder's 5 widths, deepest block first, "
                                 "e.g. 256,128,64,32,16 (smp's own default).  "
                                 "[default: 128,64,32,16,8]", show_default=False)
    ] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of images for validation.")] = 0.1,
    test_fraction: Annotated[
        float, typer.Option(help="Share of images held out for metrics.json.")
    ] = 0.2,
    augment: Annotated[
        bool, typer.Option("--augment/--no-augment",
                           help="Augment image and mask together (similarity + intensity).")
    ] = True,
    contrast_remap: Annotated[
        float, typer.Option(help="Probability of passing a training image's in-head "
                            "intensities through a random contrast curve (half inverted), "
                            "for tumours in sequences the masks do not come from.")
    ] = 0.0,
    counterfactual_share: Annotated[
        float, typer.Option(help="Share of the draws of a masked tumour image that use a "
                            "counterfactual copy instead: half the tumour inpainted (empty "
                            "mask), half a same-shaped region of tumour-free brain inpainted "
                            "(own mask).")
    ] = 0.0,
    zoom_views: Annotated[
        float, typer.Option(help="Share of training images seen as a view zoomed in 1.5-2.5 "
                            "times at a random place, which often leaves the tumour out "
                            "(empty mask).")
    ] = 0.0,
    weak_labels: Annotated[
        bool, typer.Option("--weak-labels/--no-weak-labels",
                           help="Train on tumour images without a mask too, by their label "
                           "alone: the mean of each one's 0.5% highest logits should say "
                           "tumour.")
    ] = False,
    freeze_blocks: Annotated[
        int, typer.Option(help="Keep the pretrained weights of the encoder's stem and first N "
                          "of its 7 blocks (faster steps on a CPU).")
    ] = 0,
    ema: Annotated[
        float, typer.Option(help="Validate and keep an exponential moving average of the "
                            "weights with this decay per step (e.g. 0.995); 0: the weights "
                            "themselves.")
    ] = 0.0,
    train_crop: Annotated[
        int, typer.Option(help="Train on windows of this side (px) cut at random places from "
                          "the --image-size images, and predict on whole images: the detail "
                          "of the larger side at the cost of the smaller; 0: whole images "
                          "(weak-label images are always shrunk whole).")
    ] = 0,
    tune_threshold: Annotated[
        bool, typer.Option("--tune-threshold/--no-tune-threshold",
                           help="Choose the mask rule on the validation images: plain or "
                           "flip-averaged probabilities, threshold 0.3-0.6 (off: plain at "
                           "0.5).")
    ] = True,
    amp: Annotated[
        bool, typer.Option("--amp/--no-amp",
                           help="Mixed-precision training: fp16/bf16 on CUDA, bf16 on CPUs "
                           "that compute it natively (AVX512-BF16, AMX); elsewhere fp32.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the split, initialisation and batches.")] = 0,
    split_seed: Annotated[
        int | None, typer.Option(help="Seed of the split (and the held-out counterfactual "
                                 "copies) instead of --seed: runs that share it are scored on "
                                 "the same rows.  [default: --seed]", show_default=False)
    ] = None,
    device: Device = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing output directory.")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = True,
) -> None:
    """Train a tumour segmentation U-Net, or with --predict write masks for new images.

    Trains on images with masks (no-tumour images count as empty masks), holding out whole
    patient groups. Training runs under torchrun --nproc_per_node=N too.
    """
    if unseen_by is not None and not held_out:
        from braincam.errors import BraincamError

        raise BraincamError("--unseen-by goes with --held-out")
    if predict + evaluate + held_out > 1:
        from braincam.errors import BraincamError

        raise BraincamError("--predict, --evaluate and --held-out exclude each other")
    if predict or evaluate or held_out:
        mode = "--predict" if predict else "--evaluate" if evaluate else "--held-out"
        _check_no_training_options(ctx, mode)
        from braincam.distributed import env_world

        if env_world()[1] > 1:
            from braincam.errors import BraincamError

            raise BraincamError(f"braincam segment {mode} runs in one process; start it "
                                "without torchrun (training runs under torchrun)")
    if predict:
        _predict(paths, out, device, force)
        return
    if evaluate:
        _evaluate(paths, out, device, force, progress)
        return
    if held_out:
        _held_out(paths, out, force, unseen_by)
        return
    from braincam import distributed
    from braincam.train.segment import SegmentConfig, train_segmenter

    config = SegmentConfig(
        size=image_size, epochs=epochs, batch_size=batch_size, lr=lr, weights=weights,
        encoder=encoder,
        val_fraction=val_fraction, test_fraction=test_fraction,
        seed=seed, split_seed=split_seed, augment=augment, contrast_remap=contrast_remap,
        counterfactual_share=counterfactual_share, zoom_views=zoom_views,
        weak_labels=weak_labels, freeze_blocks=freeze_blocks, ema=ema,
        train_crop=train_crop, device=device,
        tune_threshold=tune_threshold, amp=amp,
    )
    if decoder_channels is not None:
        config = replace(config, decoder_channels=widths(decoder_channels))
    result = train_segmenter(paths, config, out, force=force, progress=progress,
                             command=command_line(ctx))
    distributed.shutdown()
    m, counts = result.metrics, result.counts
    typer.echo(f"images train {counts['train']}, val {counts['val']}, test {counts['test']} "
               f"({m['test_groups']} held-out groups); best epoch {result.best_epoch}; "
               f"trained in {m['train_seconds'] / 60:.1f} min")
    rule = "flip-averaged" if m["flip_average"] else "plain"
    typer.echo(f"mask rule: {rule} probabilities >= {m['threshold']:g}"
               + (" (chosen on validation)" if m["decision"] else ""))
    typer.echo(f"held-out mean Dice {score_text(m['mean_dice'])}, "
               f"IoU {score_text(m['mean_iou'])}, "
               f"detection rate {score_text(m['detection_rate'])}, "
               f"false-positive rate {score_text(m['false_positive_rate'])}")
    typer.echo("per-class Dice: " + ", ".join(
        f"{c} {score_text(v)}" for c, v in m["per_class_dice"].items()))
    cf = m["counterfactual"]
    typer.echo("tumour inpainted: some tumour still predicted on "
               f"{score_text(cf['removed_any_rate'])} of {cf['n_pairs']} held-out tumour images "
               f"(before: {score_text(cf['original_any_rate'])})")
    if weak := m.get("weak"):
        typer.echo(f"tumour images without a mask: some tumour predicted on "
                   f"{score_text(weak['detection_rate'])} of {weak['n_images']} held out")
    typer.echo(f"wrote {out}")


def _predict(paths: list[Path], out: Path, device: str, force: bool) -> None:
    from braincam.commands.predict import once
    from braincam.data.inputs import expand_inputs
    from braincam.data.records import SkippedFile, write_skipped_csv
    from braincam.errors import BraincamError
    from braincam.evaluate.segmentation import MASKS_CSV, predict_files
    from braincam.models.segment import load_segmenter
    from braincam.runs import SKIPPED_CSV, check_outside_data

    if len(paths) < 2:
        raise BraincamError("--predict needs the segment run directory and then images")
    missing = [p for p in paths[1:] if not p.exists()]
    if missing:
        raise BraincamError(f"{missing[0]}: no such file or folder")
    check_outside_data(out, [p for p in paths[1:] if p.is_dir()])  # else read back next time
    segmenter = load_segmenter(paths[0], device)
    unread: list[SkippedFile] = []
    # no image at all: fails before DIR is made
    items = expand_inputs(once(paths[1:]), skipped=unread)
    _prepare(out, force, _read_paths(paths), MASKS_CSV,
             (MASKS_CSV, SKIPPED_CSV, "*_mask.png", "*_outline.png", "*_mask.nii.gz"))
    rows, skipped = predict_files(segmenter, items, out)
    skipped = unread + skipped
    if skipped:
        write_skipped_csv(skipped, out / "skipped.csv")
    n_volumes = sum(r["kind"] == "volume" for r in rows)
    typer.echo(f"wrote {len(rows) - n_volumes} masks and outlines"
               + (f" and {n_volumes} NIfTI mask volume{'s' * (n_volumes > 1)}"
                  if n_volumes else "") + f" to {out}"
               + (f"; {len(skipped)} images skipped (skipped.csv)" if skipped else ""))
    if not rows:  # a script must not carry on as if it worked
        raise BraincamError(f"none of the {len(skipped)} inputs could be read "
                            f"({out / SKIPPED_CSV})")


def _evaluate(paths: list[Path], out: Path, device: str, force: bool, progress: bool) -> None:
    from braincam.data.records import write_skipped_csv
    from braincam.errors import BraincamError
    from braincam.evaluate.segmenter import evaluate_segmenter
    from braincam.runs import (
        SKIPPED_CSV,
        atomic_write_bytes,
        atomic_write_csv,
        atomic_write_json,
        check_outside_data,
        check_writable,
    )

    if len(paths) < 2:
        raise BraincamError("--evaluate needs the segment run directory and then dataset "
                            "folders")
    check_outside_data(out, paths[1:])
    check_writable(out)  # a file in the way, a folder it may not write: before the scoring
    owned = ("metrics.json", "per_image.csv", SKIPPED_CSV, "overlays")
    if not force:  # refuses an occupied folder before the slow part
        _prepare(out, force, _read_paths(paths), "metrics.json", owned, make=False)
    score = evaluate_segmenter(str(paths[0]), paths[1:], device, progress)
    _prepare(out, force, _read_paths(paths), "metrics.json", owned)
    atomic_write_json(out / "metrics.json", score.metrics)
    atomic_write_csv(out / "per_image.csv", score.per_image)
    for name, png in score.overlays.items():
        atomic_write_bytes(out / "overlays" / name, png)
    if score.skipped:
        write_skipped_csv(score.skipped, out / "skipped.csv")
    m = score.metrics
    for name, part in (("all", m), ("unseen", m["unseen"])):
        typer.echo(f"{name}: " + "; ".join(_score_parts(part)))
    if m["n_seen"]:
        typer.echo(f"{m['n_seen']} images are ones the segmenter learnt from, or copies: "
                   "'unseen' leaves them out")
    typer.echo(f"wrote metrics.json, per_image.csv and {len(score.overlays)} overlays to {out}"
               + (f"; {len(score.skipped)} files skipped (skipped.csv)" if score.skipped else ""))


def _score_parts(part: dict) -> list[str]:
    """The figures of one part of ``--evaluate``'s metrics.json, as phrases; a kind of image
    that is absent is left out."""
    parts = []
    if part["n_tumour_images"]:
        parts.append(f"{part['n_tumour_images']} tumour images, mean Dice "
                     f"{score_text(part['mean_dice'])} (" + ", ".join(
                         f"{c} {score_text(v)}" for c, v in part["per_class_dice"].items())
                     + f"), detection rate {score_text(part['detection_rate'])}")
    if part["n_tumour_free_images"]:
        parts.append(f"{part['n_tumour_free_images']} tumour-free, false-positive rate "
                     f"{score_text(part['false_positive_rate'])}")
    weak = part["weak"]
    if weak["n_images"]:
        parts.append(f"{weak['n_images']} tumour images without a mask, some tumour found on "
                     f"{score_text(weak['detection_rate'])}")
    return parts or ["no images"]


def _held_out(paths: list[Path], out: Path, force: bool, unseen_by: Path | None) -> None:
    from braincam.data.records import source_names
    from braincam.data.subset import link_split
    from braincam.errors import BraincamError
    from braincam.evaluate.run import learnt_from
    from braincam.models.segment import is_segment_run
    from braincam.runs import RunDir, check_outside_data

    if len(paths) != 1:
        raise BraincamError("--held-out takes one segment run directory")
    run = RunDir(paths[0])
    if not run.split.is_file():
        raise BraincamError(f"{run.root} holds no split.csv; is it a braincam segment run?")
    if not is_segment_run(run.root):
        guide = RunDir(run.guide)
        hint = f"; its guide is one: --held-out {guide.root}" if is_segment_run(guide.root) else ""
        raise BraincamError(f"{run.root} is a classifier run, not a segment run (braincam "
                            f"segment){hint}")
    gone = [r for r in run.data_roots() if not Path(r).is_dir()]  # before OUT is made
    if gone:
        raise BraincamError(f"{run.root} was trained on {gone[0]}, which is no longer there")
    seen = []
    if unseen_by is not None:
        other = RunDir(unseen_by)
        if not (other.model.is_file() and other.split.is_file()):
            raise BraincamError(f"--unseen-by {unseen_by}: not a braincam train run (needs "
                                "model.safetensors and split.csv)")
        seen = learnt_from(other)
    check_outside_data(out, run.data_roots())
    names = source_names(list(dict.fromkeys(Path(r).resolve() for r in run.data_roots())))
    _prepare(out, force, [run.root, *run.data_roots()], names[0], names)
    counts = link_split(run, out, unseen_by=seen)
    typer.echo("linked the held-out images: " + ", ".join(
        f"{out / name} ({n})" for name, n in counts.items()))


MODE_OPTIONS = frozenset({"paths", "out", "device", "force", "progress", "predict",
                          "evaluate", "held_out", "unseen_by"})  # what the other modes read


def _check_no_training_options(ctx: typer.Context, mode: str) -> None:
    """A training option given with ``--predict``, ``--evaluate`` or ``--held-out`` is an
    error: it would change nothing, silently."""
    from braincam.errors import BraincamError

    for name in ctx.params:
        if name not in MODE_OPTIONS and given(ctx, name):
            raise BraincamError(f"--{name.replace('_', '-')} is a training option; {mode} "
                                "takes none")


def widths(text: str) -> tuple[int, ...]:
    """``--decoder-channels`` text ``"128,64,32,16,8"`` as a tuple."""
    from braincam.errors import BraincamError

    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BraincamError(f"--decoder-channels takes comma-separated integers, got {text!r}"
                            ) from None


def _prepare(out: Path, force: bool, reads: list[Path], marker: str, owned: Sequence[str],
             make: bool = True) -> None:
    """``out`` ready for ``--predict``, ``--evaluate`` or ``--held-out``: never a run or
    segmenter folder; an earlier call's files (``marker`` and ``owned``) replaced only with
    ``force``, the folder's other files kept (:func:`braincam.runs.prepare_output_dir`).
    ``make=False`` only checks, before a slow step."""
    from braincam.runs import prepare_output_dir, refuse_run_folder

    refuse_run_folder(out)
    if make or out.exists():
        prepare_output_dir(out, force=force, marker=marker, reads=reads, owned=owned)


def _read_paths(paths: list[Path]) -> list[Path]:
    """What ``--predict`` or ``--evaluate`` reads: each run of ``RUN1,RUN2`` and the inputs."""
    return [*(Path(p) for p in str(paths[0]).split(",") if p), *paths[1:]]
