"""``braincam segment``: train the tumour segmenter (:mod:`braincam.models.segment`).

Data: every image with an expert mask, and every no-tumour image as an empty mask; tumour
images without a mask are left out (a box is not an outline) unless ``weak_labels`` (below).
Images are preprocessed like the classifier's (crop to the head, ``size`` px) and their
masks follow by :func:`braincam.data.preprocess.tumour_mask`. Split: ``dedup`` by
:func:`braincam.data.splits.make_split`, stratified by label, whole patient-proxy and
duplicate groups on one side (train / val / held-out test).

Loss per image ``i`` with ``p = sigmoid(logit)`` and truth ``t``:
``BCE_i + 1 - (2 sum p t + 1) / (sum p + sum t + 1)`` (soft Dice with add-one smoothing),
averaged over the batch (weak images: the weak term below). Per-image Dice (not one Dice
over the batch) makes every tumour-free image pay for its false-positive pixels (its loss is
``sum p / (sum p + 1)``), and a mean of per-image terms splits exactly over torchrun ranks
(:func:`braincam.distributed.shard_loss_scale`). AdamW with a per-step cosine schedule;
augmentation moves image and mask together (:func:`braincam.train.augment.augment`, mask
warped by nearest neighbour). ``contrast_remap`` passes that share of training images through a
random monotone in-head contrast curve (half of them inverted;
:func:`braincam.train.augment.remap_contrast`), so that tumours are learnt by shape and
contrast against their surroundings rather than by one sequence's intensities. ``zoom_views``
shows that share of training images as zoomed views at random places
(:func:`braincam.train.augment.zoomed_views`), some of which leave the tumour out, so a source
whose slices all show a tumour also shows slices without one.

``weak_labels`` (``--weak-labels``): tumour images without a mask, such as a classification
dataset's, train by their image label alone (multiple-instance learning): the image holds a
tumour somewhere, so its loss is ``BCE(mean of the k largest logits, 1)`` with
``k = ceil(WEAK_TOP_SHARE * S^2)`` (0.5% of the image, about the smallest tumours' share), and
no pixel term. A segmenter that learnt tumours from one source's masks (Figshare: T1
post-contrast) then also meets tumours in the looks of the user's own data, whose tumour-free
images it already sees as empty masks. Weak images take no part in the choices made on
validation images (kept epoch, decision rule) or in the held-out Dice; ``metrics.json``
``weak`` reports the share of held-out weak images with a predicted tumour pixel. A weak image
that is a copy of an image with a mask
(:func:`braincam.data.segmentation.copies_of_outlined`; Sartaj's ``Training/`` folder holds
2317 copies of Figshare slices) is left out of every part of the run: its
original already trains with its outline, and the copies would more than double the epoch.

``counterfactual_share`` ``q`` (``--counterfactual-share``): every training tumour image with a
counterfactual pair (:func:`braincam.data.regions.make_pairs`, made once before training) is
drawn, each time it comes up, as its removed copy (tumour inpainted; empty mask) with
probability ``q / 2``, as its control copy (the tumour's shape inpainted in tumour-free brain;
its own mask) with probability ``q / 2``, and as itself otherwise (:class:`CounterfactualSwap`).
Without it every slice of a tumour source shows a tumour, and the segmenter may learn to mark
something on every such slice (the smooth inpainted patch, a displaced ventricle) rather than
the tumour only; the removed copies are tumour-free slices of the same source, and the control
copies keep the inpainting itself from meaning "no tumour". The epoch keeps its size, so
training time is unchanged.

Held-out metrics include the same edit on the held-out tumour images (``counterfactual`` in
``metrics.json``, :func:`braincam.evaluate.segmentation.counterfactual_metrics`): how often a
tumour pixel is still predicted once the tumour is inpainted, and whether inpainting elsewhere
moves the outline. A model trained with ``q > 0`` has seen this edit, so for it the figure is
no longer independent evidence.
Kept weights: the epoch with the best validation ``all_image_dice`` (Dice over every image,
a tumour-free image scoring 1 without and 0 with a predicted pixel), so an epoch that outlines
tumours well but marks something on tumour-free slices is not kept; the last epoch without
validation. With ``ema`` (``--ema``) the weights validated and kept at each epoch are an
exponential moving average of the trained ones (:func:`weight_average`); measured on the README
recipe's guide it changed held-out Dice by +0.002 and -0.001 (docs/results.md), so it is off by
default.

``train_crop`` ``c`` (``--train-crop``): training batches are ``c`` px windows at random places
of the ``size`` px images (:func:`braincam.train.augment.augment`, mask cut alike), while
validation, the decision rule, the held-out scores and prediction use whole ``size`` px images;
a step costs what a ``c`` px step costs. Weak images are shrunk whole to ``c`` px instead, since
their label says only that the whole image holds a tumour.

``freeze_blocks`` ``N`` (``--freeze-blocks``): the encoder's stem and its first ``N`` blocks keep
their pretrained weights (:func:`braincam.models.unet.freeze_encoder`; their batch-norm
statistics still follow the data), so backward skips the layers at the input's full and half
resolution; the U-Net's skip connections still carry their features to the decoder. On a
2-core AVX2 CPU two frozen blocks make a training step 1.10x faster, on a 2-core CPU with
native bf16 1.18-1.22x (``braincam bench segment --freeze-blocks 2``, docs/results.md).

Decision rule (``tune_threshold``, ``--tune-threshold``, on by default): once the epoch is
kept, the rule that turns probabilities into a mask is chosen on the same validation images
by the same score, among plain or flip-averaged probabilities (the mean of the image's and its
mirror image's) at thresholds :data:`DECISION_THRESHOLDS`; plain at 0.5 wins ties. The rule is
saved in the model's meta and applies wherever the segmenter predicts a mask
(:class:`braincam.models.segment.Segmenter`); ``metrics.json`` ``decision`` lists every
candidate's validation score. Held-out images play no part in the choice.

Under ``torchrun --nproc_per_node=N`` every rank draws the same global batches and augments
them identically, trains on its slice (DDP; SyncBatchNorm on CUDA), and validation and test
predictions are sharded and gathered; rank 0 alone writes the run directory.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from braincam.data.preprocess import PreprocessConfig
from braincam.data.records import (
    ImageRecord,
    listing_digest,
    load_dataset,
    write_skipped_csv,
)
from braincam.data.regions import make_pairs
from braincam.data.segmentation import (
    SegmentData,
    copies_of_outlined,
    load_segmentation_data,
)
from braincam.data.splits import check_fractions, make_split, write_split_csv
from braincam.device import autocast, grad_scaler, pin_memory
from braincam.distributed import (
    DistContext,
    GlobalBatches,
    main_first,
    rank_slice,
    setup,
    shard_loss_scale,
    sharded_rows,
    sync_buffers,
    wrap_ddp,
)
from braincam.errors import BraincamError, check_seed
from braincam.evaluate.segmentation import (
    OVERLAYS_PER_GROUP,
    counterfactual_metrics,
    dice,
    overlay_png,
    overlay_rows,
    per_image_table,
    segmentation_metrics,
    weak_metrics,
)
from braincam.labels import NO_TUMOR
from braincam.models.normalize import normalize
from braincam.models.segment import THRESHOLD, Segmenter, build_segmenter, save_segmenter
from braincam.models.unet import (
    DECODER_CHANNELS,
    ENCODER,
    ENCODER_BLOCKS,
    ENCODERS,
    decoder_channels_of,
    encoder_of,
    freeze_encoder,
)
from braincam.runs import (
    RunDir,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_yaml,
    check_outside_data,
    check_spares,
    discard,
    prepare_output_dir,
    refuse_occupied,
    scratch,
    versions,
)
from braincam.train.augment import AugmentConfig, augment

log = logging.getLogger(__name__)

DECISION_THRESHOLDS = (0.5, 0.3, 0.4, 0.6)  # 0.5 first: the plain rule wins ties
WEAK_TOP_SHARE = 0.005  # a weak image's k largest logits: this share of its pixels


@dataclass(frozen=True)
class SegmentConfig:
    """Settings of a segmentation run. Default schedule: 10 epochs of about 2500 training
    images at 192 px, sized so that the recommended recipe (this segmenter, then the guided
    classifier) finishes within 30 min on a 2-core CPU that computes bf16 natively; in fp32 on
    a 2-core AVX2 CPU it takes about 31 min (docs/results.md)."""

    size: int = 192  # input side, a multiple of 32 (the encoder's stride)
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    weights: str = "imagenet"  # encoder: imagenet | none | a file
    encoder: str = ENCODER  # one of ENCODERS (a whole U-Net file brings its own)
    decoder_channels: tuple[int, ...] = DECODER_CHANNELS  # U-Net decoder widths, deepest first
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    split_seed: int | None = None  # the carves' seed; None: seed
    augment: bool = True
    contrast_remap: float = 0.0  # probability of a random in-head contrast curve
    counterfactual_share: float = 0.0  # share of paired tumour draws swapped for a copy
    zoom_views: float = 0.0  # share of training images seen as a zoomed view
    weak_labels: bool = False  # tumour images without a mask train by their label
    freeze_blocks: int = 0  # the encoder's stem and first N blocks keep their weights
    ema: float = 0.0  # decay of the exponential moving average of the weights; 0: none
    train_crop: int = 0  # training windows of this side cut from the size px images; 0: whole
    device: str = "auto"
    overlays: int = OVERLAYS_PER_GROUP  # overlay PNGs per class of the held-out images
    tune_threshold: bool = True  # the decision rule chosen on validation (module docstring)
    amp: bool = True  # mixed precision: CUDA, and bf16 on CPUs that compute it natively

    def validate(self) -> None:
        if self.size < 32 or self.size % 32:
            raise BraincamError(f"--image-size must be a multiple of 32 (>= 32), got {self.size}")
        if self.epochs < 1 or self.batch_size < 2:
            raise BraincamError("--epochs must be >= 1 and --batch-size >= 2")
        if not self.lr > 0:
            raise BraincamError("--lr must be positive")
        for name in ("contrast_remap", "counterfactual_share", "zoom_views"):
            if not 0 <= getattr(self, name) <= 1:
                raise BraincamError(f"--{name.replace('_', '-')} must be in [0, 1]")
        if not 0 <= self.ema < 1:
            raise BraincamError(f"--ema must be in [0, 1), got {self.ema}")
        for name in ("contrast_remap", "zoom_views"):  # parts of the augmentation
            if getattr(self, name) and not self.augment:
                raise BraincamError(f"--{name.replace('_', '-')} is part of the augmentation; "
                                    "--no-augment turns it off")
        check_seed(self.seed)
        check_seed(self.split_seed, "--split-seed")
        if self.train_crop and not (32 <= self.train_crop <= self.size
                                    and self.train_crop % 32 == 0 and self.augment):
            raise BraincamError("--train-crop must be a multiple of 32 (>= 32) no larger than "
                                f"--image-size, with --augment; got {self.train_crop}")
        if self.encoder not in ENCODERS:
            raise BraincamError(f"--encoder must be one of {', '.join(ENCODERS)}, "
                                f"got {self.encoder}")
        if not 0 <= self.freeze_blocks <= ENCODER_BLOCKS:
            raise BraincamError(f"--freeze-blocks must be in [0, {ENCODER_BLOCKS}]")
        if self.freeze_blocks and self.weights == "none":
            raise BraincamError("--freeze-blocks keeps pretrained encoder weights, and "
                                "--weights none has none")
        if len(self.decoder_channels) != 5 or min(self.decoder_channels) < 1:
            raise BraincamError("--decoder-channels takes 5 positive widths, e.g. "
                                f"{','.join(map(str, DECODER_CHANNELS))}")
        check_fractions(self.val_fraction, self.test_fraction, "dedup")

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(size=self.size)

    @property
    def carve_seed(self) -> int:
        """The seed of the split and of the held-out counterfactual copies: ``split_seed``,
        else ``seed``. Runs that share it are scored on the same rows and copies, while
        ``seed`` still varies initialisation, batches and augmentation."""
        return self.seed if self.split_seed is None else self.split_seed


@dataclass
class SegmentResult:
    root: Path
    counts: dict[str, int]
    metrics: dict[str, Any]
    best_epoch: int
    seconds: float


@dataclass
class CounterfactualSwap:
    """Training images swapped for their counterfactual copies (module docstring):
    ``pair_of[i]`` indexes image ``i``'s copies in ``removed``/``control`` (uint8 (M, S, S)),
    -1 for an image without a pair."""

    pair_of: torch.Tensor
    removed: torch.Tensor
    control: torch.Tensor
    share: float

    @classmethod
    def of(cls, images: torch.Tensor, heads: torch.Tensor, tumours: torch.Tensor, share: float,
           seed: int) -> CounterfactualSwap:
        """The pairs of ``images`` (uint8 (N, S, S)) with head and tumour masks."""
        pairs = make_pairs(images.numpy(), heads.numpy(), tumours.numpy(), seed)
        pair_of = torch.full((len(images),), -1, dtype=torch.long)
        pair_of[torch.from_numpy(pairs.source)] = torch.arange(len(pairs.source))
        return cls(pair_of, torch.from_numpy(pairs.removed), torch.from_numpy(pairs.control),
                   share)

    def __call__(self, batch: list[int], images: torch.Tensor, tumours: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's ``images`` and ``tumours`` (copies, indexed by ``batch``) with each
        paired image drawn as removed (``share / 2``), control (``share / 2``) or itself."""
        draw = torch.rand(len(batch), generator=generator)
        pair = self.pair_of[torch.as_tensor(batch)]
        removed = (pair >= 0) & (draw < self.share / 2)
        control = (pair >= 0) & (draw >= self.share / 2) & (draw < self.share)
        images[removed] = self.removed[pair[removed]]
        tumours[removed] = False
        images[control] = self.control[pair[control]]
        return images, tumours


def _overall_rate(history: Sequence[dict[str, Any]]) -> float:
    """Training images per second over all epochs: their images over their seconds (not the
    mean of the epochs' rates, which a slow first epoch would not weigh by its length)."""
    seconds = sum(h["seconds"] for h in history)
    images = sum(h["train_images_per_second"] * h["seconds"] for h in history)
    return round(images / seconds, 2) if seconds > 0 else 0.0


def dice_bce_loss(
    logits: torch.Tensor, truth: torch.Tensor, weak: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over images of BCE + soft Dice loss (module docstring); ``(B, S, S)`` each.
    ``weak`` (bool ``(B,)``): images whose loss is the weak term instead, whatever ``truth``."""
    truth = truth.float()
    bce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none").mean(dim=(1, 2))
    p = torch.sigmoid(logits)
    overlap = (p * truth).sum(dim=(1, 2))
    soft_dice = (2 * overlap + 1) / (p.sum(dim=(1, 2)) + truth.sum(dim=(1, 2)) + 1)
    loss = bce + 1 - soft_dice
    if weak is not None and bool(weak.any()):
        loss = torch.where(weak.to(loss.device), weak_loss(logits), loss)
    return loss.mean()


def weak_loss(logits: torch.Tensor) -> torch.Tensor:
    """Per image ``BCE(mean of the k largest logits, 1)``, ``k = ceil(WEAK_TOP_SHARE *
    pixels)``: ``(B, S, S)`` -> ``(B,)`` (module docstring)."""
    flat = logits.flatten(1)
    k = max(1, math.ceil(WEAK_TOP_SHARE * flat.shape[1]))
    top = flat.topk(k, dim=1).values.mean(dim=1)
    return F.binary_cross_entropy_with_logits(top, torch.ones_like(top), reduction="none")


def augment_pair(
    images: torch.Tensor, tumours: torch.Tensor, heads: torch.Tensor | None,
    generator: torch.Generator, remap: float = 0.0, zoom_views: float = 0.0,
    crop: int = 0, whole: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented ``images`` (B, 1, S, S) in [0, 1] and their tumour masks (B, S, S); with
    ``remap`` > 0, that share of images gets a random contrast curve inside its head mask
    (``heads``, read only then); with ``zoom_views`` > 0, that share becomes zoomed views;
    with ``crop`` > 0, ``crop`` px windows at random places (``whole``: images shrunk whole)."""
    config = AugmentConfig(remap=remap, zoom_views=zoom_views, crop=crop)
    if not remap:
        return augment(images, tumours, generator, config, whole)
    if heads is None:
        raise ValueError("contrast remapping needs the head masks")
    stacked = torch.stack([heads.to(tumours.device, non_blocking=True), tumours], dim=1)
    images, masks = augment(images, stacked, generator, config, whole)
    return images, masks[:, 1]


def train_segmenter(
    roots: Sequence[Path | str],
    config: SegmentConfig,
    out_dir: Path | str,
    force: bool = False,
    progress: bool = False,
    command: str | None = None,
    left_out: Collection[Path | str] = (),
) -> SegmentResult:
    """Train on ``roots`` and write the run directory (files listed in docs/segment.md).
    Images of ``left_out`` (a guided classifier's test images, :mod:`braincam.train.guide`)
    play no part: they are dropped before the split, and ``config.yaml`` records their number
    and :func:`left_out_digest`."""
    start = time.perf_counter()
    config.validate()
    check_outside_data(out_dir, roots)
    ctx, device = setup(config.device)
    progress = progress and ctx.is_main
    final = RunDir(Path(out_dir))
    refuse_occupied(final.root, force)
    roots = [Path(r).resolve() for r in roots]
    # a run replaced with --force stays until the new one is complete: that trains beside it
    replacing = final.root.is_dir() and any(final.root.iterdir())
    if replacing:
        check_spares(final.root, roots)
    run = RunDir(final.root.parent / f".{final.root.name}.new") if replacing else final
    dataset = load_dataset(roots)
    dropped = {Path(p).resolve() for p in left_out}
    records = [r for r in dataset.records if Path(r.path).resolve() not in dropped]
    if not any(r.mask is not None and r.label != NO_TUMOR for r in records):
        raise BraincamError(
            f"no tumour image with an expert mask in {', '.join(map(str, roots))}: a segmenter "
            "learns from masks (ROOT/masks/<image path>.png, docs/masks.md), e.g. "
            "figshare-cheng-t1ce's")
    torch.manual_seed(config.seed)
    model = build_segmenter(config.weights, config.decoder_channels, config.encoder)
    state = model.state_dict()  # a whole U-Net file keeps its own: config.yaml says which
    config = replace(config, encoder=encoder_of(state),
                     decoder_channels=decoder_channels_of(state))
    with main_first(ctx):  # rank 0 fills the cache, the others then read it
        data = load_segmentation_data(records, config.preprocess, progress,
                                      config.weak_labels)
    split = make_split(data.records, "multiclass", "dedup", config.val_fraction,
                       config.test_fraction, config.carve_seed)
    copies = copies_of_outlined(data.records, data.weak.numpy())
    with main_first(ctx):
        if ctx.is_main:
            if replacing:  # the scratch run goes if this one fails or is interrupted
                scratch(run.root)
            prepare_output_dir(run.root, force=force or replacing, reads=roots)
            atomic_write_yaml(run.config, {
                "command": command,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "data": [str(r) for r in roots],
                "data_listing_sha256": listing_digest(roots),  # what a guide is reused for
                "segment": asdict(config),
                "left_out": len(dataset.records) - len(records),
                "left_out_sha256": left_out_digest(dropped),
                "device": str(device),
                "world_size": ctx.world_size,
                "versions": versions(),
            })
            write_skipped_csv(dataset.skipped + data.skipped, run.skipped)
            write_split_csv(split, data.records, run.split,
                            copies if config.weak_labels else None)
    idx = {name: torch.from_numpy(split.indices(name)) for name in ("train", "val", "test")}
    copies = torch.from_numpy(copies)
    idx = {name: rows[~copies[rows]] for name, rows in idx.items()}
    if not len(idx["train"]):
        raise BraincamError("no training images after the split")
    weak_test = idx["test"][data.weak[idx["test"]]]
    for name in ("val", "test"):  # weak images have no outline to score
        idx[name] = idx[name][~data.weak[idx[name]]]
    meta = {"size": config.size, "preprocess": asdict(config.preprocess),
            "threshold": THRESHOLD, "flip_average": False, "seed": config.seed}
    def save_history(rows: list[dict[str, Any]]) -> None:  # after every epoch: a long run
        if ctx.is_main:  # stopped early still shows what it learnt
            import pandas as pd

            atomic_write_csv(run.history, pd.DataFrame(rows))

    train_start = time.perf_counter()
    history, best_epoch = _fit(model, data, idx, config, device, ctx, meta, progress,
                               save_history)
    train_seconds = time.perf_counter() - train_start
    segmenter = Segmenter(model.eval(), config.size, meta, device)
    decision = None
    if config.tune_threshold and len(idx["val"]):
        decision = _decision_rule(segmenter, data.images[idx["val"]],
                                  data.masks[idx["val"]].numpy(), ctx)
        meta |= {"flip_average": decision["flip_average"], "threshold": decision["threshold"]}
    test = idx["test"]
    prob = _predict(segmenter, data.images[test], ctx)
    pred = prob >= THRESHOLD
    truth = data.masks[test].numpy()
    test_records = [data.records[i] for i in test.tolist()]
    weak_records = [data.records[i] for i in weak_test.tolist()]
    weak_pred = (_predict(segmenter, data.images[weak_test], ctx) >= THRESHOLD
                 if len(weak_test) else np.zeros((0, *truth.shape[1:]), bool))
    metrics = segmentation_metrics(pred, truth, [r.label for r in test_records],
                                   [r.source for r in test_records], segmenter.threshold)
    metrics |= {
        "flip_average": segmenter.flip_average,
        "decision": decision,
        "weak": (weak_metrics(weak_pred.any(axis=(1, 2)), [r.label for r in weak_records])
                 | {"n_copies_left_out": int(copies.sum())} if config.weak_labels else None),
        "counterfactual": _counterfactual(segmenter, data.images[test], data.heads[test],
                                          pred, truth, config.carve_seed, ctx),
        "split": "dedup (patient-proxy and duplicate groups held out whole)",
        "counts": {k: int(v) for k, v in split.counts.items()},
        "test_groups": int(len(np.unique(split.group[test.numpy()]))),
        "best_epoch": best_epoch,
        "epochs": config.epochs,
        "train_seconds": round(train_seconds, 1),
        "train_images_per_second": _overall_rate(history),
        "device": str(device),
        "world_size": ctx.world_size,
    }
    with main_first(ctx):
        if ctx.is_main:
            save_segmenter(model.cpu(), run.model, {**meta, "best_epoch": best_epoch})
            atomic_write_json(run.metrics, metrics)
            atomic_write_csv(run.per_image, per_image_table(
                test_records + weak_records, np.concatenate([pred, weak_pred]),
                np.concatenate([truth, np.zeros_like(weak_pred)]),
                np.arange(len(test) + len(weak_test)) < len(test)))
            _write_overlays(run, test_records, data.images[test].numpy(), truth, pred,
                            config.overlays)
            if replacing:  # the new run is complete: now it replaces the old one (set aside
                discard(final.root)  # under the CLI until the whole command succeeds)
                os.replace(run.root, final.root)
    return SegmentResult(final.root, dict(split.counts), metrics, best_epoch,
                         time.perf_counter() - start)


def left_out_digest(paths: Collection[Path | str]) -> str | None:
    """SHA-256 of the sorted resolved paths left out of a segment run (None when none is):
    a guide in ``RUN/guide`` is reused only for the same left-out images."""
    if not paths:
        return None
    names = sorted(str(Path(p).resolve()) for p in paths)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _fit(
    model: torch.nn.Module, data: SegmentData, idx: dict[str, torch.Tensor],
    config: SegmentConfig, device: torch.device, ctx: DistContext, meta: dict[str, Any],
    progress: bool, on_epoch: Callable[[list[dict[str, Any]]], None],
) -> tuple[list[dict[str, Any]], int]:
    """Train for ``config.epochs``; returns the history rows (also passed to ``on_epoch``
    after every epoch) and the kept (best) epoch, whose weights are left in ``model``."""
    images, masks = data.images[idx["train"]], data.masks[idx["train"]]
    heads, weak = data.heads[idx["train"]], data.weak[idx["train"]]
    swap = CounterfactualSwap.of(images, heads, masks, config.counterfactual_share,
                                 config.seed) if config.counterfactual_share else None
    n = len(images)
    batches = GlobalBatches(n, config.batch_size, config.seed, drop_last=n > config.batch_size)
    steps = config.epochs * len(batches)
    freeze_encoder(model, config.freeze_blocks)
    model.to(device, memory_format=torch.channels_last)
    net = wrap_ddp(model, device, ctx, batch_statistics=True)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.lr,
                                  weight_decay=config.weight_decay, foreach=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
    scaler = grad_scaler(device, config.amp)
    average = weight_average(model, config.ema) if config.ema else None
    kept = model if average is None else average.module  # the weights validated and kept
    generator = torch.Generator().manual_seed(config.seed + 1)
    history: list[dict[str, Any]] = []
    best_score, best_epoch, best_state = -math.inf, 0, {}
    for epoch in range(1, config.epochs + 1):
        net.train()
        started, total, seen = time.perf_counter(), torch.zeros((), device=device), 0
        lr = optimizer.param_groups[0]["lr"]
        order = batches
        if progress:
            from tqdm import tqdm

            order = tqdm(batches, desc=f"segment {epoch}", unit="batch", leave=False)
        for batch in order:
            x, y = images[batch], masks[batch]
            if swap is not None:  # the same draws on every rank
                x, y = swap(batch, x, y, generator)
            head = heads[batch] if config.augment and config.contrast_remap else None
            if pin_memory(device):
                x, y = x.pin_memory(), y.pin_memory()
            x = x.to(device, non_blocking=True).unsqueeze(1).float() / 255
            y = y.to(device, non_blocking=True)
            if config.augment:  # the global batch on every rank, the same parameters
                x, y = augment_pair(x, y, head, generator, config.contrast_remap,
                                    config.zoom_views, config.train_crop, weak[batch])
            part = rank_slice(len(batch), ctx)
            n_local = part.stop - part.start
            part = part if n_local else slice(0, 1)  # one image at weight 0 joins DDP
            with autocast(device, enabled=config.amp, cpu=True):
                logits = net(normalize(x[part]).contiguous(memory_format=torch.channels_last))
            loss = dice_bce_loss(logits[:, 0].float(), y[part], weak[batch][part])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss * shard_loss_scale(len(batch), n_local, ctx)).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            if average is not None:
                average.update_parameters(model)
            total += loss.detach().float() * n_local
            seen += len(batch)
        if ctx.enabled:
            torch.distributed.all_reduce(total)
        seconds = time.perf_counter() - started
        row = {"epoch": epoch, "lr": lr, "train_loss": total.item() / seen,
               **_validate(kept, data, idx["val"], config, device, ctx, meta),
               "seconds": round(seconds, 1),
               "train_images_per_second": round(seen / seconds, 2)}
        history.append(row)
        on_epoch(history)
        if progress:
            from tqdm import tqdm

            val_dice = "-" if row["val_dice"] is None else f"{row['val_dice']:.3f}"
            tqdm.write(f"segment epoch {epoch}: loss {row['train_loss']:.4f}, val Dice "
                       f"{val_dice}, {row['train_images_per_second']} img/s")
        score = row["val_score"] if row["val_score"] is not None else float(epoch)
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in kept.state_dict().items()}
    model.load_state_dict(best_state)
    return history, best_epoch


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s parameters and batch-norm statistics
    (``update_parameters(model)`` after every optimiser step): the first update copies the
    weights, update ``n >= 1`` sets ``w_avg <- d w_avg + (1 - d) w`` with
    ``d = min(decay, (1 + n) / (10 + n))``, the warm-up of TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)``, so that early averages are not dominated by
    the initial weights. Integer buffers (batch counts) are copied. ``n`` is read from the
    average's own count, which stays on the host: the copy passed to the update function sits
    on the weights' device, and reading it there would wait for a GPU at every step."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor],
               _steps: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)
            return
        n = int(average.n_averaged)
        torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + n) / (10 + n)))

    average = AveragedModel(model, multi_avg_fn=update, use_buffers=True)
    return average


def _validate(
    model: torch.nn.Module, data: SegmentData, val: torch.Tensor, config: SegmentConfig,
    device: torch.device, ctx: DistContext, meta: dict[str, Any],
) -> dict[str, float | None]:
    """Validation mean Dice, tumour-free false-positive rate and the selection score
    ``all_image_dice`` (all None without validation)."""
    if not len(val):
        return {"val_dice": None, "val_false_positive_rate": None, "val_score": None}
    pred = _predict(Segmenter(model.eval(), config.size, meta, device),
                    data.images[val], ctx) >= THRESHOLD
    truth = data.masks[val].numpy()
    m = segmentation_metrics(pred, truth, ["x"] * len(val), ["x"] * len(val))
    return {"val_dice": m["mean_dice"], "val_false_positive_rate": m["false_positive_rate"],
            "val_score": m["all_image_dice"]}


def _decision_rule(
    segmenter: Segmenter, images: torch.Tensor, truth: np.ndarray, ctx: DistContext
) -> dict[str, Any]:
    """``metrics.json`` ``decision``: the rule (``flip_average``, ``threshold``) with the best
    validation ``all_image_dice`` and ``candidates``, every rule's validation scores."""
    plain = _predict(segmenter, images, ctx, rule=False)
    mirrored = _predict(segmenter, images.flip(-1), ctx, rule=False)[:, :, ::-1]
    candidates = []
    for flip in (False, True):
        prob = (plain + mirrored) / 2 if flip else plain
        for threshold in DECISION_THRESHOLDS:
            m = segmentation_metrics(prob >= threshold, truth, ["x"] * len(truth),
                                     ["x"] * len(truth))
            candidates.append({"flip_average": flip, "threshold": threshold,
                               "val_score": m["all_image_dice"], "val_dice": m["mean_dice"]})
    best = max(candidates, key=lambda c: c["val_score"] or 0.0)  # the first of equals
    return {"flip_average": best["flip_average"], "threshold": best["threshold"],
            "chosen_by": "validation all_image_dice", "candidates": candidates}


def _predict(
    segmenter: Segmenter, images: torch.Tensor, ctx: DistContext, rule: bool = True
) -> np.ndarray:
    """Probabilities for ``images`` under the segmenter's mask rule (``rule`` False: the
    network's own); under torchrun each rank predicts a share."""
    predict = segmenter.predict if rule else segmenter.probabilities
    sync_buffers(segmenter.model, ctx)  # every share scored by the model rank 0 keeps
    return sharded_rows(
        lambda i: torch.from_numpy(predict(images[i].numpy())), len(images), ctx
    ).numpy()


def _counterfactual(
    segmenter: Segmenter, images: torch.Tensor, heads: torch.Tensor, pred: np.ndarray,
    truth: np.ndarray, seed: int, ctx: DistContext,
) -> dict[str, Any]:
    """``metrics.json`` ``counterfactual``: the held-out tumour images' removed and control
    copies (:func:`braincam.data.regions.make_pairs`) predicted and scored by
    :func:`braincam.evaluate.segmentation.counterfactual_metrics`; ``pred`` the predictions on
    the images themselves."""
    pairs = make_pairs(images.numpy(), heads.numpy(), truth, seed)
    src = pairs.source
    if not len(src):
        return counterfactual_metrics(pred[src], pred[src], pred[src], truth[src])
    removed, control = (_predict(segmenter, torch.from_numpy(copies), ctx) >= THRESHOLD
                        for copies in (pairs.removed, pairs.control))
    return counterfactual_metrics(removed, control, pred[src], truth[src])


def _write_overlays(
    run: RunDir, records: Sequence[ImageRecord], images: np.ndarray, truth: np.ndarray,
    pred: np.ndarray, per_class: int,
) -> None:
    """``overlays/<label>_<stem>_dice<D>.png`` (``ImageRecord.stem``): ``per_class`` held-out
    images of each label, spread from the worst Dice to the best (:func:`overlay_rows`), 2x
    enlarged, with the expert outline in green and the predicted one in red; ``_<row>`` is
    added to a name that two images would share (one file name in two folders)."""
    dices = [dice(p, t) for p, t in zip(pred, truth, strict=True)]
    written: set[str] = set()
    for i in overlay_rows([r.label for r in records], dices, per_class):
        name = f"{records[i].label}_{records[i].stem}_dice{dices[i]:.2f}.png"
        if name in written:
            name = f"{name.removesuffix('.png')}_{i}.png"
        written.add(name)
        atomic_write_bytes(run.overlays / name, overlay_png(images[i], truth[i], pred[i]))
