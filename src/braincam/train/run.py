"""``train_run``: data -> split -> two training phases -> a run directory.

Files written (``braincam.runs.RunDir``): ``config.yaml`` (data roots, every option,
versions; written first, so a crashed run still says what it was), ``skipped.csv``,
``split.csv``, ``history.csv`` and ``model.safetensors`` (the best validation state; with
``--guide``, the frozen segmenter's weights too, :mod:`braincam.models.guided`), and with
``--guide`` dataset folders the segmenter trained on them, ``guide/`` (:mod:`braincam.train.guide`).
Evaluation (``braincam.evaluate.evaluate_run``) adds ``metrics.json`` afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from braincam.errors import BraincamError
from braincam.labels import NO_TUMOR, subtype_groups, task_classes, task_label, training_classes
from braincam.runs import (
    RunDir,
    atomic_write_csv,
    atomic_write_yaml,
    carried,
    check_outside_data,
    check_replaceable,
    prepare_output_dir,
    refuse_occupied,
    versions,
)
from braincam.train.config import TrainConfig
from braincam.train.loop import (
    BestTracker,
    EpochRecord,
    LossFn,
    TrainData,
    class_weights,
    finetune,
    fit_head,
    history_frame,
    pretrained,
    validation_logits,
)
from braincam.train.mitigation import loss_for
from braincam.train.reweight import task_errors, upsampled_pool

if TYPE_CHECKING:
    import numpy as np

    from braincam.data.preprocess import PreprocessCache
    from braincam.data.records import ImageRecord
    from braincam.distributed import DistContext

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    classes: list[str]
    counts: dict[str, int]  # images per split, duplicates across splits (Split.counts)
    history: list[EpochRecord]
    best_phase: str
    best_epoch: int
    best_val_balanced_accuracy: float | None
    seconds: float


def train_run(
    roots: Sequence[Path | str],
    config: TrainConfig,
    out_dir: Path | str,
    force: bool = False,
    progress: bool = True,
    loss_fn: LossFn | None = None,
    command: str | None = None,
    compile: bool = False,
) -> TrainResult:
    """Train a classifier on the images under ``roots`` into the run directory ``out_dir``.

    An existing non-empty ``out_dir`` is refused unless ``force`` (then it is replaced).
    ``loss_fn`` replaces the phase-2 loss; None: the one the config asks for
    (:func:`braincam.train.mitigation.loss_for`: cross-entropy, plus the attention penalty
    when ``attention_penalty > 0``); ``command`` is recorded in
    config.yaml; ``compile`` runs phase-2 training steps through ``torch.compile``.

    Under ``torchrun --nproc_per_node=N`` every process calls this (see
    :mod:`braincam.distributed`): rank 0 fills the preprocessing cache, then the others
    read it; rank 0 alone writes the run directory and shows progress; ``batch_size`` stays
    the global batch.
    """
    from braincam.data.preprocess import PreprocessCache
    from braincam.data.records import load_dataset, without_skipped, write_skipped_csv
    from braincam.data.splits import make_split, write_split_csv
    from braincam.distributed import main_first, setup
    from braincam.evaluate.run import split_learnt, write_guide_learnt
    from braincam.explain import find_layer
    from braincam.models import build_model, finetune_modules, save_checkpoint, subtype_outputs
    from braincam.models.build import check_input_size
    from braincam.models.guided import guide_meta
    from braincam.train.guide import (
        check_plan,
        check_training_options,
        guide_plan,
        resolved_guide,
        train_guide,
    )

    start = time.perf_counter()
    config.validate()
    if config.guide is not None:  # recorded resolved: read back from any directory
        config = replace(config, guide=resolved_guide(config.guide))
    if compile and config.explains_in_loss:
        raise BraincamError("--compile cannot be combined with --attention-penalty or "
                            "--mask-reward (torch.compile does not support their double "
                            "backward)")
    check_outside_data(out_dir, roots)
    loss_fn = loss_fn or loss_for(config)
    ctx, device = setup(config.device)
    progress = progress and ctx.is_main
    refuse_occupied(out_dir, force)
    roots = [Path(r).resolve() for r in roots]
    dataset = load_dataset(roots)
    try:
        classes = task_classes([r.label for r in dataset.records], config.task)
    except ValueError as exc:
        raise BraincamError(str(exc)) from None
    if len(classes) < 2:
        raise BraincamError(f"only one class ({classes[0]}) in the data; a classifier needs two")
    fitted = training_classes([r.label for r in dataset.records], config.task, config.subtypes)
    groups = subtype_groups(fitted, classes) if fitted != classes else None
    torch.manual_seed(config.seed)
    # bad weights, data or options fail before any file is written
    model = build_model(config.arch, len(classes), config.weights, dropout=config.dropout,
                        groups=groups)
    check_input_size(model, config.arch, config.preprocess.size)
    if config.attention_layer is not None:
        find_layer(model, config.attention_layer)  # an unknown name fails with suggestions
        model.cam_layer = config.attention_layer
    # the options that label tumour-free images fail before the slow steps
    for wanted, switch, what in ((config.counterfactual_pairs, "--counterfactual-pairs",
                                  "tumour-removed copies"),
                                 (config.view_pairs, "--view-pairs", "tumour-free views"),
                                 (config.guide_views, "--guide-views", "tumour-free views")):
        if wanted and NO_TUMOR not in fitted:
            raise BraincamError(f"{switch} needs a no_tumor class to label the {what}")
    plan = guide_plan(config.guide) if config.guide is not None else None
    members: list[Path] = []  # the segment runs that guide, once known
    if plan is not None:  # the segmenter is frozen and saved with the model
        check_training_options(plan, config)
        if plan.data:  # trained once the run directory exists; settings checked now
            check_plan(plan, config)
        else:
            members = plan.runs
            _guide(model, members, config, list(fitted))
    stages = finetune_modules(model, config.finetune_stages)
    if config.attention_layer is not None and config.explains_in_loss and config.finetune_epochs:
        _check_trained_before(model, config.attention_layer, stages)
    cache = PreprocessCache()
    with main_first(ctx):  # rank 0 fills the cache, the others then read it
        images, masks, unreadable = cache.load(
            dataset.records, config.preprocess, progress=progress
        )
    records = without_skipped(dataset.records, unreadable)
    if not records:
        raise BraincamError("no image could be decoded")
    split = make_split(  # stratified by the classes trained on: the subtypes, if any
        records, "multiclass" if groups else config.task, config.split, config.val_fraction,
        config.test_fraction, config.carve_seed, fold=config.fold, folds=config.folds,
    )

    def target_of(label: str) -> int | None:
        """The trained class of ``label``; None: one the classifier does not know (only a
        guide's images can hold one)."""
        name = label if groups else task_label(label, config.task)
        return fitted.index(name) if name in fitted else None

    labels = torch.tensor([target_of(r.label) for r in records])
    data = {
        name: TrainData(
            torch.from_numpy(images[idx]), torch.from_numpy(masks[idx]), labels[idx]
        )
        for name in ("train", "val")
        for idx in [split.indices(name)]
    }
    _check_classes(data["train"], data["val"], fitted)
    originals = len(data["train"])  # the counterfactual copies follow them
    if config.mask_reward > 0 or config.counterfactual_pairs or config.view_pairs:
        data["train"] = _grounded(data["train"], [records[i] for i in split.indices("train")],
                                  config, cache, fitted)

    run = RunDir(Path(out_dir))
    with main_first(ctx):
        if ctx.is_main:
            # a finished guide segmenter outlives --force; train_guide then reuses it or not
            kept = _set_aside(run.guide) if force and plan is not None and plan.data else None
            prepare_output_dir(run.root, force=force, reads=[
                *roots, *(plan.data + plan.runs if plan is not None else [])])
            if kept is not None:
                os.replace(kept, run.guide)
                carried(run.guide)  # back into the old run if this one fails
            atomic_write_yaml(run.config,
                              run_config(roots, config, device, command, ctx.world_size))
            write_skipped_csv(dataset.skipped + unreadable, run.skipped)
            write_split_csv(split, records, run.split)
    if plan is not None and plan.data:
        # the segmenter's training leaves torch's random state as it found it, as reading a
        # segmenter does: the head then equals the one `--guide RUN/guide` trains
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            members = train_guide(plan, config, run.root, progress,
                                  left_out=[records[i].path for i in split.indices("test")],
                                  command=command)
        _guide(model, members, config, list(fitted))
        stages = finetune_modules(model, config.finetune_stages)
    own = len(data["train"])  # the guide views follow the classifier's own images
    if config.guide_views:
        with main_first(ctx):  # rank 0 fills the cache, the others then read it
            held = {records[i].key for name in ("val", "test") for i in split.indices(name)}
            data["train"] = _guide_views(data["train"], members, config, cache, target_of,
                                         fitted, progress, held)

    trained = ["head"] + (stages if config.finetune_epochs else [])
    # with batch-statistics BatchNorm (random weights) phase 2 changes buffers everywhere
    prefixes = [name + "." for name in trained] if pretrained(config) else [""]
    tracker = BestTracker(model, prefixes)

    def balanced_loss(labels: torch.Tensor) -> torch.nn.CrossEntropyLoss:
        return torch.nn.CrossEntropyLoss(weight=class_weights(labels, len(fitted)).to(device))

    train, val = data["train"], data["val"]
    task_of = torch.tensor(groups if groups else range(len(fitted)))  # trained class -> class
    criterion = balanced_loss(train.labels[:own])  # validation images are the classifier's own
    weights = _loss_weights(train.labels, len(fitted), own, config)
    with subtype_outputs(model):  # training and validation see the subtypes, if any
        history, head_logits = fit_head(model, train, val, weights, criterion, config, device,
                                        tracker, progress=progress, ctx=ctx)
        pool = None
        if config.upweight_errors > 1 and head_logits is not None:
            errors = task_errors(head_logits, train.labels, task_of)
            pool = upsampled_pool(len(train), errors, config.upweight_errors)
            criterion = balanced_loss(train.labels[pool[pool < own]])  # own classes, upsampled
            weights = _loss_weights(train.labels, len(fitted), own, config, pool)
            log.info("phase 2 sees %d training images phase 1 got wrong %d times each",
                     int(errors.sum()), config.upweight_errors)
            if ctx.is_main:
                _write_upweighted(run, records, split.indices("train"), errors[:originals],
                                  head_logits[:originals], train.labels[:originals], fitted)
        history += finetune(model, train, val, weights, criterion, config, device, tracker,
                            loss_fn=loss_fn, progress=progress, ctx=ctx, compile=compile,
                            pool=pool)
        tracker.restore()
    threshold = (_tune_threshold(model, val, task_of[val.labels], classes.index(NO_TUMOR),
                                 config, device, ctx) if config.tune_threshold else None)
    best = tracker.record
    with main_first(ctx):  # the other ranks return once the run directory is complete
        if ctx.is_main:
            atomic_write_csv(run.history, history_frame(history))
            save_checkpoint(model.cpu().eval(), run.model, {
                "arch": config.arch,
                "classes": classes,
                "subtypes": fitted if groups else None,
                "task": config.task,
                "preprocess": asdict(config.preprocess),
                "dropout": config.dropout,
                "seed": config.seed,
                "best": {"phase": best.phase, "epoch": best.epoch,
                         "val_balanced_accuracy": best.val_balanced_accuracy},
                **({"guide": guide_meta(model, config.guide)} if config.guide else {}),
                **({"cam_layer": model.cam_layer} if model.cam_layer else {}),
                **({"threshold": threshold} if threshold is not None else {}),
            })
            if members:  # the run keeps what its guide learnt from, whatever befalls SEG
                write_guide_learnt(run, [p for m in members for p in split_learnt(RunDir(m))])
    return TrainResult(
        run.root, classes, dict(split.counts), history, best.phase, best.epoch,
        best.val_balanced_accuracy, time.perf_counter() - start,
    )


def _tune_threshold(
    model: torch.nn.Module, val: TrainData, val_classes: torch.Tensor, no_tumor: int,
    config: TrainConfig, device: torch.device, ctx: DistContext,
) -> float | None:
    """``--tune-threshold``: the tumour threshold with the best validation balanced accuracy
    (``val_classes``: the class of each validation image), folded into the head
    (:mod:`braincam.train.threshold`); None without validation images."""
    from braincam.train.threshold import (
        fold_threshold,
        tie_margin,
        tumour_logit,
        validation_threshold,
    )

    logits = validation_logits(model, val, config, device, ctx)
    if logits is None:
        log.warning("--tune-threshold: no validation images; the threshold stays 0.5")
        return None
    score = tumour_logit(logits, no_tumor).cpu().numpy()
    cut = validation_threshold((val_classes != no_tumor).numpy(), score)
    threshold = fold_threshold(model, no_tumor, cut, tie_margin(score, cut))
    log.info("tumour threshold %.3f (validation balanced accuracy), folded into the head",
             threshold)
    return threshold


def _set_aside(guide: Path) -> Path | None:
    """Move a finished segment run at ``guide`` (``RUN/guide``) out of ``RUN``, to come back
    once ``RUN`` is emptied; None when there is none."""
    if not (guide / "metrics.json").is_file():
        return None
    aside = guide.parent.parent / f".{guide.parent.name}.guide"
    if aside.exists():  # an earlier --force stopped before it came back: replaced if braincam's
        check_replaceable(aside)
        shutil.rmtree(aside)
    os.replace(guide, aside)
    return aside


def _guide(model: torch.nn.Module, members: Sequence[Path], config: TrainConfig,
           fitted: list[str]) -> None:
    """Wrap ``model`` in the gate of the segmenter runs ``members`` (their mean probability)."""
    from braincam.models.guided import absent_output, guide
    from braincam.models.segment import check_preprocess, load_segmenter

    segmenter = load_segmenter(members, "cpu")
    check_preprocess(segmenter.meta, config.preprocess, config.guide)
    guide(model, segmenter.model, segmenter.size, config.guide_floor, absent_output(fitted),
          config.guide_cut)


def _guide_views(
    train: TrainData, members: Sequence[Path], config: TrainConfig, cache: PreprocessCache,
    target: Callable[[str], int | None], fitted: list[str], progress: bool,
    held: Collection[str],
) -> TrainData:
    """``train`` followed by the lesion views of the masked images the guide's segmenter
    trained on (``--guide-views``, :func:`braincam.train.grounding.guide_originals`), of at
    most ``guide_views_max`` of them when that is set; none of the images whose record keys
    are ``held`` (the classifier's validation and test images)."""
    from braincam.train.grounding import guide_originals, sample, with_views

    originals = guide_originals(members, config.preprocess, cache, target, progress, held)
    if config.guide_views_max and len(originals) > config.guide_views_max:
        originals = sample(originals, config.guide_views_max, config.seed)
    if not len(originals):
        log.warning("--guide-views: the guide trained on no masked image of a class this "
                    "classifier knows; no views added")
        return train
    train, n_views = with_views(train, originals, fitted.index(NO_TUMOR), config.seed)
    log.info("guide views: %d tumour and %d tumour-free views of %d guide training images "
             "added", n_views, n_views, len(originals))
    return train


def _loss_weights(
    labels: torch.Tensor, num_classes: int, own: int, config: TrainConfig,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """The training loss weight of every row: when guide views follow the classifier's own
    rows (from row ``own`` on) and ``--guide-views-weight`` is not 0, the views as their own
    group (:func:`braincam.train.grounding.group_weights`); else the class-balanced weight of
    the row's class among the rows an epoch draws (``pool``; None: every row once). Upsampled
    rows (``pool``) count their own weight each time they are drawn."""
    from braincam.train.grounding import group_weights

    if config.views_weight and own < len(labels):
        return group_weights(labels, own, config.views_weight, num_classes, pool)
    drawn = labels if pool is None else labels[pool]
    return class_weights(drawn, num_classes)[labels]


def _grounded(
    train: TrainData, records: Sequence[ImageRecord], config: TrainConfig,
    cache: PreprocessCache, fitted: list[str],
) -> TrainData:
    """The training split with its tumour masks (for ``mask_reward``) and, with
    ``counterfactual_pairs`` or ``view_pairs``, its counterfactual copies or lesion views
    (:mod:`braincam.train.grounding`; both are made from the original images)."""
    from braincam.train.grounding import tumour_masks, with_pairs, with_views

    train.tumour = tumour_masks(records, config.preprocess, cache)
    masked = int(train.tumour.flatten(1).any(dim=1).sum())
    if not masked:
        log.warning("no training image has a tumour mask: --mask-reward, "
                    "--counterfactual-pairs and --view-pairs change nothing")
    originals = train
    if config.counterfactual_pairs:
        train, pairs = with_pairs(originals, fitted.index(NO_TUMOR), config.seed)
        log.info("counterfactual pairs: %d tumour-removed and %d control images added",
                 len(pairs.source), len(pairs.source))
    if config.view_pairs:
        train, n_views = with_views(train, originals, fitted.index(NO_TUMOR), config.seed)
        log.info("lesion views: %d tumour and %d tumour-free views added", n_views, n_views)
    if config.mask_reward == 0:
        train.tumour = None  # only the reward reads them in phase 2
    return train


def run_config(
    roots: Sequence[Path], config: TrainConfig, device: torch.device, command: str | None,
    world_size: int = 1,
) -> dict[str, Any]:
    """The content of ``config.yaml``: ``TrainConfig.from_dict(doc["train"])`` and
    ``doc["data"]`` reproduce the run (``world_size``: processes under torchrun)."""
    return {
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": [str(r) for r in roots],
        "train": config.to_dict(),
        "device": str(device),
        "world_size": world_size,
        "versions": versions(),
    }


def _write_upweighted(
    run: RunDir, records: Sequence[ImageRecord], train_idx: np.ndarray, errors: torch.Tensor,
    logits: torch.Tensor, labels: torch.Tensor, classes: list[str],
) -> None:
    """``upweighted.csv``: the training images phase 1 got wrong (``path``, ``label``, and
    ``prob_label``, the head's probability of the image's own label): the images that
    contradict the data's shortcuts, worth a look on their own."""
    import pandas as pd

    prob = logits.softmax(1).gather(1, labels[:, None]).squeeze(1)
    rows = [
        {"path": str(records[i].path), "label": classes[int(y)], "prob_label": round(float(p), 6)}
        for i, y, p, wrong in zip(train_idx, labels, prob, errors, strict=True) if wrong
    ]
    atomic_write_csv(run.upweighted, pd.DataFrame(rows, columns=["path", "label", "prob_label"]))


def _check_classes(train: TrainData, val: TrainData, classes: list[str]) -> None:
    """Every class needs training images (its loss weight would be infinite)."""
    counts = torch.bincount(train.labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts.tolist(), strict=True) if n == 0]
    if empty:
        raise BraincamError(f"no training images of class {', '.join(empty)} once the test "
                            "and validation images are held out (too few images or duplicate "
                            "groups of it for the split)")
    if len(val) == 0:
        log.warning("no validation images: the last epoch is kept, no early stopping")


def _check_trained_before(model: torch.nn.Module, layer: str, stages: list[str]) -> None:
    """Stop, before the slow steps, when no module phase 2 trains lies at or before ``layer``
    (modules in definition order, which is forward order for braincam's backbones): its
    Grad-CAM would then carry no gradient for the attention terms."""
    order = [name for name, _ in model.named_modules()]
    trained = [name for name in order
               if any(name == s or name.startswith(f"{s}.") for s in stages)]
    inside = any(layer == t or layer.startswith(f"{t}.") or t.startswith(f"{layer}.")
                 for t in trained)
    if not inside and all(order.index(t) > order.index(layer) for t in trained):
        raise BraincamError(
            f"--attention-layer {layer}: the layer and everything before it stay frozen in "
            "fine-tuning, so its Grad-CAM cannot be trained; choose a later layer or train "
            "more of the backbone (--finetune-stages)")
