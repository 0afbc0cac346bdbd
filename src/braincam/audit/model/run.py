"""``audit_model``: run every model-audit check on a trained run, or on a model braincam did
not train (a model spec, :mod:`braincam.models.foreign`), and write the results.

Images: every image under ``roots`` except those the run, or the segmenter guiding it,
trained or validated on (their ``split.csv``; a spec has none); with ``validation``, only
those the run validated on, so that settings (a reward strength, a guide) can be chosen on
the audit without a test image (top-level ``"rows"``: ``"validation"``, else ``"unseen"``).
Labels mapped to the model's task, images of classes the model does not know left out with
a warning; per dataset (records' ``source``), at most ``max_images`` chosen at random
(seeded). Copies of the images a run or its guide learnt from under other paths (another
dataset that copies the training data, :func:`braincam.evaluate.run.learnt_from`) are audited
but counted (``n_seen``, a warning) and flagged (``seen`` in ``audit_images.csv``). They go
through the run's preprocessing (a spec's: its size, head crop and resize filter, grey) and
the on-disk cache.

Explanations: each method explains the predicted class; for localisation, annotated images
that the model gets wrong are explained again for their true class. Occlusion (for the
counterfactual summary) runs on a seeded subset, with tiling windows (``AuditSettings``).
A spec's model without gradients (an ONNX model onnx2torch cannot convert faithfully) runs
the black-box checks with occlusion maps; one without CAM hooks runs ``ig``; the methods
left out are listed under ``"skipped"`` with the reason.

``audit.json`` has one shape whatever the number of datasets::

    {"run": "<run dir>" | null, "rows": "unseen" | "validation",
     "model": {spec, format, ..., gradients, cams, conversion_max_diff} | null,
     "settings": {...}, "skipped": [{"methods", "checks", "reason"}],
     "datasets": {"<name>": BLOCK, ...},
     "findings": [{severity, check, value, threshold, message}, ...]}

``findings`` lists every dataset's findings, each message prefixed with ``[dataset]``.
``BLOCK``::

    {"dataset", "n_images", "n_seen", "accuracy", "classes", "methods",
     "attention": {brain, rim, background, uniform_*, regions, uniform_regions, by_class,
                   by_correctness, method, [by_method]},
     "localization": {pointing_game, energy_in_box, energy_in_box_ratio, iou, ...,
                      mask: {pointing_game, energy_in_mask, energy_in_mask_ratio, iou, dice,
                             by_class, by_size, ...} | null,
                      occlusion: {the same numbers for the occlusion maps}},
     "faithfulness": {deletion_auc, insertion_auc, random_deletion_auc,
                      random_insertion_auc, road, curves...},
     "sanity": {passed, similarity_after_randomization (mean Spearman with every layer
                randomised), ssim_after_randomization, layers, spearman, ssim},
     "counterfactual": {background_only_survival, background_only_baseline,
                        background_only_auc, head_only_change, intensity_swap_flip_rate,
                        tumor_removal_flip_rate, tumor_removal_prob_drop,
                        mask_removal_*, control_removal_*, tumor_effect_*,
                        lesion_view_*, ...},
     "findings": [{severity, check, value, threshold, message}, ...]}

Per-method checks hold the first method's numbers at their top level and, when several
methods ran, every method's under ``by_method``.

``audit_images.csv``: one row per image and method (dataset, path, label, pred, prob,
correct, has_box, has_mask, group, method, then every per-image number of the checks) for the
galleries. ``tumour_examples.npz``: a few images per class with expert mask and map, for the
report (:mod:`braincam.audit.model.examples`; absent when no image has a mask).

Annotations: ``AuditBatch.tumor_masks`` holds the box rectangles (an image with a mask and
no box: its mask), so today's box-based keys keep their meaning; ``expert_masks`` holds the
expert masks, behind every ``mask`` key (mask localisation, mask removal and its control).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from braincam.audit.findings import sort_findings
from braincam.audit.model.base import (
    CHECKS,
    AuditBatch,
    AuditSettings,
    CheckOutput,
    ModelHandle,
    batches,
    subsample,
)
from braincam.audit.model.examples import (
    EXAMPLES_FILE,
    TumourExamples,
    select_examples,
    tumour_examples,
)
from braincam.data.hashing import ImageRef, duplicates_of
from braincam.data.records import key_file, record_key, resolved_key
from braincam.errors import BraincamError
from braincam.evaluate.run import learnt_from, significant
from braincam.runs import (
    AUDIT_IMAGES_CSV,
    AUDIT_JSON,
    RunDir,
    atomic_write_csv,
    atomic_write_json,
    check_outside_data,
    prepare_output_dir,
)

log = logging.getLogger(__name__)


def audit_model(
    run_dir: Path | str,
    roots: Sequence[Path | str],
    methods: Sequence[str] = ("gradcam",),
    out_dir: Path | str | None = None,
    max_images: int | None = None,
    *,
    regions: dict[str, np.ndarray] | None = None,
    settings: AuditSettings | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = False,
    segmenter: Path | str | None = None,
    task: str | None = None,
    split: str | None = None,
    validation: bool = False,
) -> dict[str, Any]:
    """Audit RUN's model on the images under ``roots`` (with ``split``, only that official
    split of folders that have one; with ``validation``, only the run's validation images);
    write ``audit.json`` and ``audit_images.csv`` into
    ``out_dir`` (default ``RUN/audit``) and return the JSON. For a model spec ``out_dir`` is
    required and plays the run directory (the files go to ``out_dir/audit``); ``task`` may
    view its tumour-type model as binary.

    ``regions``: extra named (S, S) masks in model-input pixels whose CAM energy is
    reported (e.g. a corner suspected to hold a marker). ``segmenter``: a ``braincam
    segment`` run whose predicted masks (``P(tumour) >= 0.5``) join the tumour examples.
    """
    from braincam.device import device_of
    from braincam.explain import METHODS
    from braincam.models.foreign import is_spec

    settings = settings or AuditSettings()
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise BraincamError(f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from "
                            f"{', '.join(METHODS)}")
    if max_images is not None and max_images < 1:
        raise BraincamError("--max-images must be >= 1")
    dev = device_of(device)
    if is_spec(run_dir):
        if validation:
            raise BraincamError("--validation audits a run's validation images; a model spec "
                                "has none")
        if out_dir is None:
            raise BraincamError(f"{run_dir} is a model spec: pass --out DIR")
        audited = _spec_model(Path(run_dir), task, methods, dev, settings.batch_size)
        out_dir = RunDir(Path(out_dir)).audit  # DIR plays the run directory
    else:
        if task is not None:
            raise BraincamError("--task applies to a model spec only")
        audited = _run_model(RunDir(Path(run_dir)), dev, settings.batch_size)
    methods = audited.methods or methods
    seg = None
    if segmenter is not None:
        from braincam.models.segment import check_preprocess, load_segmenter

        seg = load_segmenter(segmenter, dev)
        check_preprocess(seg.meta, audited.preprocess, segmenter)  # its masks must line up
    check_outside_data(Path(out_dir) if out_dir else audited.default_out, roots)
    classes = audited.classes
    if validation and not audited.validated_on:
        raise BraincamError(f"{run_dir} lists no validation images in its split.csv")
    datasets = _records_by_dataset(set() if validation else audited.trained_on, roots,
                                   classes, audited.task, max_images, settings.seed, split,
                                   audited.validated_on if validation else None,
                                   audited.own_roots)
    out = prepare_output_dir(Path(out_dir) if out_dir else audited.default_out, force,
                             marker=AUDIT_JSON, reads=roots,
                             owned=(AUDIT_JSON, AUDIT_IMAGES_CSV, EXAMPLES_FILE))

    blocks, frames, examples = {}, [], []
    for name, records in datasets.items():
        log.info("auditing %d images of %s", len(records), name)
        batch, paths = _load_batch(records, audited, methods, regions, settings, progress)
        results = run_checks(batch, settings)
        seen = duplicates_of([key_file(p) for p in paths], audited.learnt,
                             apart=validation)  # a validation image learnt is not its own copy
        if seen.any() and not validation:
            log.warning("%s: %d of %d audited images are copies of images the model or its "
                        "guide learnt from", name, seen.sum(), len(seen))
        blocks[name] = block_json(name, batch, methods, results, int(seen.sum()))
        frame = per_image_frame(name, paths, batch, methods, results)
        frame["seen"] = frame["path"].isin({str(p) for p, s in zip(paths, seen, strict=True)
                                            if s})
        frames.append(frame)
        chosen = select_examples(batch, seed=settings.seed)
        if chosen.size:
            predicted = None
            if seg is not None:
                from braincam.models.segment import THRESHOLD

                predicted = seg.predict(batch.images[chosen]) >= THRESHOLD
            examples.append(tumour_examples(name, paths, batch, methods[0], chosen, predicted))

    doc: dict[str, Any] = {
        "run": audited.run, "rows": "validation" if validation else "unseen",
        "model": audited.model_json,
        "settings": dataclasses.asdict(settings), "skipped": audited.skipped,
        "datasets": blocks,
        "findings": [{**f, "message": f"[{name}] {f['message']}"}
                     for name, block in blocks.items() for f in block["findings"]],
    }
    import pandas as pd

    doc = _finite(doc)
    atomic_write_json(out / AUDIT_JSON, doc)
    atomic_write_csv(out / AUDIT_IMAGES_CSV, pd.concat(frames, ignore_index=True))
    if examples:
        TumourExamples.concat(examples).save(out / EXAMPLES_FILE)
    else:  # an earlier audit's examples (replaced with --force) no longer apply
        (out / EXAMPLES_FILE).unlink(missing_ok=True)
    return doc


@dataclass
class AuditedModel:
    """What the audit needs of a run's model or a spec's: its handle, classes and task, the
    images it must not be audited on, the preprocessing, where output goes by default, and
    for a spec the methods it can run (with ``skipped``: those left out and why)."""

    handle: ModelHandle
    classes: tuple[str, ...]
    task: str
    preprocess: Any  # braincam.data.preprocess.PreprocessConfig
    trained_on: set[str] = field(default_factory=set)  # train and val rows
    validated_on: set[str] = field(default_factory=set)  # val rows
    learnt: list[ImageRef] = field(default_factory=list)  # the run's and its guide's: n_seen
    default_out: Path | None = None
    run: str | None = None
    model_json: dict[str, Any] | None = None
    methods: list[str] | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    own_roots: list[Path] = field(default_factory=list)  # a run's data folders (config.yaml)


def _run_model(run: RunDir, device, batch_size: int) -> AuditedModel:
    from braincam.data.preprocess import preprocess_config
    from braincam.models import load_checkpoint, read_meta, require_single_model
    from braincam.models.checkpoint import meta_task

    if not run.model.is_file():
        raise BraincamError(f"{run.root} holds no model.safetensors; train a model there first")
    require_single_model(read_meta(run.model), run.root)
    model, meta = load_checkpoint(run.model, device=device)
    trained_on, validated_on = _split_rows(run)
    learnt = learnt_from(run, meta)  # the run's rows and its guide's: none of them is unseen
    trained_on |= {record_key(file.resolve(), k) for file, k in learnt}
    try:
        own = run.data_roots()
    except BraincamError:  # an ensemble's or a hand-made run's config may name none
        own = []
    return AuditedModel(
        model_handle(model, device, batch_size), tuple(meta["classes"]), meta_task(meta, run.model),
        preprocess_config(meta), trained_on, validated_on, learnt, run.audit,
        str(run.root), own_roots=own,
    )


def _spec_model(spec_file: Path, task: str | None, methods: Sequence[str], device,
                batch_size: int) -> AuditedModel:
    """A model spec's model; methods it cannot run are left out (module docstring)."""
    from braincam.explain import GRADIENT_CAMS
    from braincam.explain.wrapped import WRAPPED
    from braincam.models.foreign import load_foreign, load_spec

    model = load_foreign(load_spec(spec_file), task)
    prep = model.preprocess_config()
    caps = model.capabilities
    if not caps.gradients:
        dropped = [m for m in methods if m != "occlusion"]
        kept = [m for m in methods if m == "occlusion"] or ["occlusion"]
        checks = ["sanity"]
    elif not caps.cams:
        dropped = [m for m in methods if m in GRADIENT_CAMS or m in WRAPPED]
        kept = [m for m in methods if m not in dropped] or ["ig"]
        checks = []
    else:
        dropped, kept, checks = [], list(methods), []
    skipped = [{"methods": dropped, "checks": checks, "reason": caps.reason}] \
        if dropped or checks else []
    for entry in skipped:
        log.warning("skipped %s: %s", ", ".join(entry["methods"] + entry["checks"]),
                    entry["reason"])
    return AuditedModel(
        foreign_handle(model, device, batch_size), model.classes, model.task, prep,
        model_json=model.to_json(), methods=kept, skipped=skipped,
    )


def foreign_handle(model, device, batch_size: int = 32) -> ModelHandle:
    """A :class:`ModelHandle` for a spec's model: predictions by ``model.black_box``
    (onnxruntime for ONNX), explanations and randomisation on ``model.net``."""
    from braincam.evaluate.predict import predict

    handle = model_handle(model.net.to(device), device, batch_size)
    handle.predict_fn = lambda images: predict(model.black_box, images, device, batch_size)
    return handle


def model_handle(model, device, batch_size: int = 32) -> ModelHandle:
    """A :class:`ModelHandle` for a braincam model: :func:`braincam.models.to_model_input`
    on ``device``, batched prediction (AMP on GPU) and :func:`explain_maps` (occlusion maps
    with the default window and stride, cut to the image side for small inputs)."""
    import torch

    from braincam.evaluate.predict import predict
    from braincam.explain import ExplainOptions
    from braincam.models import to_model_input

    def to_input(images: np.ndarray) -> torch.Tensor:
        return to_model_input(torch.as_tensor(images).to(device))

    def predict_fn(images: np.ndarray) -> np.ndarray:
        return predict(model, images, device, batch_size)

    def explain_fn(m, images: np.ndarray, targets: np.ndarray, method: str) -> np.ndarray:
        default = ExplainOptions()
        window = min(default.window, images.shape[-1])
        options = ExplainOptions(window=window, stride=min(default.stride, window))
        return explain_maps(m, images, targets, method, batch_size, options=options)

    return ModelHandle(model, to_input, explain_fn, batch_size, predict_fn)


def explain_maps(
    model, images: np.ndarray, targets: np.ndarray, method: str, batch_size: int = 32,
    raw: bool = False, options=None,
) -> np.ndarray:
    """:func:`braincam.explain.explain` in batches: normalised maps (N, S, S), or with
    ``raw`` the unnormalised ones (occlusion: the signed probability drop at input size).
    ``options``: :class:`braincam.explain.ExplainOptions` (occlusion window and stride)."""
    from braincam.explain import explain

    out = []
    for sl in batches(len(images), batch_size):
        result = explain(model, images[sl], targets[sl], method, options=options).numpy()
        out.append(result["raw" if raw else "maps"])
    size = images.shape[-1]
    return np.concatenate(out) if out else np.zeros((0, size, size), np.float32)


def run_checks(batch: AuditBatch, settings: AuditSettings | None = None) -> dict[str, CheckOutput]:
    """Every registered check on one batch, in registry order (durations logged at INFO)."""
    results = {}
    for name, cls in CHECKS.items():
        start = time.perf_counter()
        results[name] = cls(settings)(batch)
        log.info("%s check: %.1f s", name, time.perf_counter() - start)
    return results


def block_json(
    dataset: str, batch: AuditBatch, methods: Sequence[str], results: dict[str, CheckOutput],
    n_seen: int = 0,
) -> dict[str, Any]:
    """One dataset's block of ``audit.json`` (layout in the module docstring); ``n_seen``:
    its images that copy images the model learnt from."""
    block: dict[str, Any] = {
        "dataset": dataset,
        "n_images": len(batch),
        "n_seen": n_seen,
        "accuracy": float(batch.correct.mean()) if len(batch) else None,
        "classes": list(batch.classes),
        "methods": list(methods),
    }
    for name, result in results.items():
        if CHECKS[name].per_method:
            per = {m: _summary_json(name, result.summary[m]) for m in methods}
            block[name] = {"method": methods[0], **per[methods[0]]}
            if len(methods) > 1:
                block[name]["by_method"] = per
            for extra in result.summary.keys() - set(methods):  # localization: occlusion
                block[name][extra] = _summary_json(name, result.summary[extra])
        else:
            block[name] = _summary_json(name, result.summary)
    findings = sort_findings(f for r in results.values() for f in r.findings)
    block["findings"] = [f.to_dict() for f in findings]
    return block


def per_image_frame(
    dataset: str,
    paths: Sequence[str],
    batch: AuditBatch,
    methods: Sequence[str],
    results: dict[str, CheckOutput],
):  # -> pandas.DataFrame
    """One row per image and method with every 1-D per-image number (NaN where a test did
    not run); sanity columns are the similarities with every layer randomised."""
    import pandas as pd

    preds = batch.preds
    base = {
        "dataset": dataset,
        "path": list(paths),
        "label": [batch.classes[i] for i in batch.labels],
        "pred": [batch.classes[i] for i in preds],
        "prob": significant(batch.probs[np.arange(len(batch)), preds]),
        "correct": batch.correct,
        "has_box": (batch.tumor_masks.any(axis=(1, 2)) if batch.tumor_masks is not None
                    else np.zeros(len(batch), bool)),
        "has_mask": (batch.expert_masks.any(axis=(1, 2)) if batch.expert_masks is not None
                     else np.zeros(len(batch), bool)),
        "group": batch.group_names,
    }
    frames = []
    for method in methods:
        cols: dict[str, Any] = {**base, "method": method}
        for name, result in results.items():
            check = CHECKS[name]
            for column, values in result.per_image.get(method if check.per_method else "",
                                                       {}).items():
                if values.ndim == 2 and name == "sanity":  # no layer to randomise: NaN
                    values = values[:, -1] if values.shape[1] else np.full(len(values), np.nan)
                if values.ndim == 1:
                    key = column if check.unprefixed_columns else f"{name}_{column}"
                    cols[key] = significant(values)  # a probability of 1e-7 is not 0
        frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)


def _summary_json(check: str, summary: Any) -> dict[str, Any]:
    values = dataclasses.asdict(summary)
    values.pop("method", None)
    if check == "sanity":
        values["similarity_after_randomization"] = summary.similarity_after_randomization[
            "spearman"]
        values["ssim_after_randomization"] = summary.similarity_after_randomization["ssim"]
    return values


def _records_by_dataset(
    seen: set[str],
    roots: Sequence[Path | str],
    classes: tuple[str, ...],
    task: str,
    max_images: int | None,
    seed: int,
    split: str | None = None,
    only: set[str] | None = None,
    own_roots: Sequence[Path | str] = (),
) -> dict[str, list]:
    """Audit records per dataset (see the module docstring); ``split`` keeps that official
    split of a folder that has splits, ``only`` (resolved paths) those images alone. A
    dataset is named as ``braincam evaluate`` names it: one of ``own_roots`` (the run's data)
    by its source name, another folder by its name with ``_`` appended while an earlier
    folder or a run's set (``test``) has that name."""
    from braincam.data.records import distinct_name, load_dataset, source_names
    from braincam.evaluate.run import TEST_SETS
    from braincam.labels import task_label

    if not roots:
        raise BraincamError("no dataset folder given; pass --data")
    unique = list(dict.fromkeys(Path(r).resolve() for r in roots))
    own = list(dict.fromkeys(Path(r).resolve() for r in own_roots))
    own_names = dict(zip(own, source_names(own), strict=True))
    taken = set(own_names.values())
    names, records = {}, []  # names: record key -> its folder's set name, made distinct
    for root in unique:
        name = own_names.get(root) or distinct_name(root.name, taken, reserved=TEST_SETS)
        for r in load_dataset([root]).records:
            names[r.key] = name
            if resolved_key(r.key) not in seen:
                records.append(r)
    if split is not None:
        records = [r for r in records if r.split in (None, split)]
    if only is not None:
        records = [r for r in records if resolved_key(r.key) in only]
        if not records:
            raise BraincamError("no image under --data is one the run validated on")
    if not records:
        raise BraincamError("every image under --data was used to train or validate the run")
    known = [r for r in records if task_label(r.label, task) in classes]
    if len(known) < len(records):
        unknown = sorted({task_label(r.label, task) for r in records} - set(classes))
        log.warning("%d images of classes the model does not know (%s; it knows %s) are left "
                    "out", len(records) - len(known), ", ".join(unknown), ", ".join(classes))
    if not known:
        raise BraincamError(f"no image of the model's classes ({', '.join(classes)}) in --data")
    by_source: dict[str, list] = {}
    for r in known:
        by_source.setdefault(names.get(r.key, r.source), []).append(r)
    return {name: [rs[i] for i in subsample(len(rs), max_images, seed)]
            for name, rs in by_source.items()}


def _split_rows(run: RunDir) -> tuple[set[str], set[str]]:
    """Resolved paths of the run's train and val images, and of its val images alone (both
    empty without ``split.csv``)."""
    if not run.split.is_file():
        return set(), set()
    table = run.read_split()
    rows = {split: {resolved_key(p) for p in table.loc[table["split"] == split, "path"]}
            for split in ("train", "val")}
    return rows["train"] | rows["val"], rows["val"]


def _load_batch(
    records: list,
    audited: AuditedModel,
    methods: Sequence[str],
    regions: dict[str, np.ndarray] | None,
    settings: AuditSettings,
    progress: bool,
) -> tuple[AuditBatch, list[str]]:
    """Preprocess, predict and explain one dataset's records."""
    from braincam.data.preprocess import PreprocessCache
    from braincam.data.records import without_skipped
    from braincam.explain import ExplainOptions
    from braincam.explain.grid import map_grid
    from braincam.labels import task_label

    config, classes, handle = audited.preprocess, audited.classes, audited.handle
    cache = PreprocessCache()
    source = records[0].source
    images, heads, skipped = cache.load(records, config, progress=progress)
    if skipped:
        log.warning("%d images cannot be read and are left out (first: %s)", len(skipped),
                    skipped[0].path)
    records = without_skipped(records, skipped)
    if not records:
        raise BraincamError(f"no image of {source} could be read")
    labels = np.array([classes.index(task_label(r.label, audited.task)) for r in records])
    boxes, experts = _annotations(records, cache, config)
    for name, region in (regions or {}).items():
        if np.shape(region) != images.shape[1:]:
            raise BraincamError(f"region {name!r} must be {images.shape[1]} x {images.shape[2]} "
                                "px (the model's input size)")
    start = time.perf_counter()
    probs = handle.predict(images)
    preds = probs.argmax(1)
    maps, label_maps, grids = {}, {}, {}
    wrong = np.flatnonzero((boxes | experts).any(axis=(1, 2)) & (preds != labels))
    for method in methods:
        maps[method] = handle.explain(handle.model, images, preds, method)
        grid = map_grid(handle.model, images, method)
        if grid is not None:
            grids[method] = grid
        if wrong.size:
            label_maps[method] = maps[method].copy()
            label_maps[method][wrong] = handle.explain(handle.model, images[wrong],
                                                       labels[wrong], method)
    occlusion = np.full(images.shape, np.nan, dtype=np.float32)
    idx = subsample(len(images), settings.occlusion_images, settings.seed)
    if idx.size:
        window = min(settings.occlusion_window, images.shape[-1])
        options = ExplainOptions(window=window, stride=min(settings.occlusion_stride, window),
                                 batch_size=settings.batch_size)
        occlusion[idx] = explain_maps(handle.model, images[idx], preds[idx], "occlusion",
                                      settings.batch_size, raw=True, options=options)
    log.info("predict, explain (%s) and occlusion of %d images: %.1f s", ", ".join(methods),
             len(images), time.perf_counter() - start)
    batch = AuditBatch(
        images=images, head_masks=heads, labels=labels, classes=classes, probs=probs,
        maps=maps, targets=preds, tumor_masks=boxes, regions=dict(regions or {}),
        handle=handle, label_maps=label_maps, occlusion=occlusion,
        expert_masks=experts if experts.any() else None,
        group_labels=np.array([r.label for r in records], dtype=object), map_grids=grids,
    )
    return batch, [r.key for r in records]


def _annotations(records: list, cache, config) -> tuple[np.ndarray, np.ndarray]:
    """Box rectangles (the expert mask where an image has no box) and expert masks, bool
    (N, S, S) in model-input pixels; a mask file that has become unreadable is a warning and
    the image keeps its box."""
    from braincam.data.imageio import ImageReadError
    from braincam.data.preprocess import box_mask, tumour_mask

    size = config.size
    boxes = np.zeros((len(records), size, size), dtype=bool)
    experts = np.zeros_like(boxes)
    for i, r in enumerate(records):
        if r.box is None and r.mask is None:
            continue
        prep = cache.get(r, config)
        if r.box is not None:
            boxes[i] = box_mask(r.box, prep)
        if r.mask is not None:
            try:
                experts[i] = tumour_mask(r, prep)
            except ImageReadError as exc:
                log.warning("%s: tumour mask left out (%s)", r.path, exc)
            if r.box is None:
                boxes[i] = experts[i]
    return boxes, experts


def _finite(value: Any) -> Any:
    """NaN and infinities become None (JSON null), recursively."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
