"""``audit_model``: run every model-audit check on a trained run and write the results.

Images: every image under ``roots`` except those the run trained or validated on (its
``split.csv``), labels mapped to the run's task, images of classes the model does not know
left out with a warning; per dataset (records' ``source``), at most ``max_images`` chosen
at random (seeded). They go through the run's preprocessing and the on-disk cache.

Explanations: each method explains the predicted class; for localisation, annotated images
that the model gets wrong are explained again for their true class. Occlusion (for the
counterfactual summary) runs on a seeded subset, with tiling windows (``AuditSettings``).

``audit.json``: one block per dataset,

    {"dataset", "n_images", "accuracy", "classes", "methods",
     "attention": {brain, rim, background, uniform_*, regions, uniform_regions, by_class,
                   by_correctness, method, [by_method]},
     "localization": {pointing_game, energy_in_box, energy_in_box_ratio, iou, ...},
     "faithfulness": {deletion_auc, insertion_auc, random_deletion_auc,
                      random_insertion_auc, road, curves...},
     "sanity": {passed, similarity_after_randomization (mean Spearman with every layer
                randomised), ssim_after_randomization, layers, spearman, ssim},
     "counterfactual": {background_only_survival, background_only_baseline,
                        background_only_auc, head_only_change, intensity_swap_flip_rate,
                        tumor_removal_flip_rate, tumor_removal_prob_drop, ...},
     "findings": [{severity, check, value, threshold, message}, ...]}

Per-method checks hold the first method's numbers at their top level and, when several
methods ran, every method's under ``by_method``. With one dataset the block is the top
level of the file; with several it sits under ``"datasets": {name: block}`` and the top
level ``"findings"`` lists all of them, each message prefixed with ``[dataset]``. Both
layouts also carry ``"run"`` and ``"settings"``.

``audit_images.csv``: one row per image and method (dataset, path, label, pred, prob,
correct, has_box, method, then every per-image number of the checks) for the galleries.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
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
from braincam.errors import BraincamError
from braincam.runs import (
    AUDIT_IMAGES_CSV,
    AUDIT_JSON,
    RunDir,
    atomic_write_csv,
    atomic_write_json,
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
) -> dict[str, Any]:
    """Audit RUN's model on the images under ``roots``; write ``audit.json`` and
    ``audit_images.csv`` into ``out_dir`` (default ``RUN/audit``) and return the JSON.

    ``regions``: extra named (S, S) masks in model-input pixels whose CAM energy is
    reported (e.g. a corner suspected to hold a marker).
    """
    from braincam.device import device_of
    from braincam.explain import METHODS
    from braincam.models import load_checkpoint, read_meta, require_single_model

    settings = settings or AuditSettings()
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise BraincamError(f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from "
                            f"{', '.join(METHODS)}")
    if max_images is not None and max_images < 1:
        raise BraincamError("--max-images must be >= 1")
    run = RunDir(Path(run_dir))
    if not run.model.is_file():
        raise BraincamError(f"{run.root} holds no model.safetensors; train a model there first")
    require_single_model(read_meta(run.model), run.root)
    dev = device_of(device)
    model, meta = load_checkpoint(run.model, device=dev)
    classes = tuple(meta["classes"])
    datasets = _records_by_dataset(run, roots, classes, meta["task"], max_images, settings.seed)
    out = prepare_output_dir(Path(out_dir) if out_dir else run.audit, force, marker=AUDIT_JSON)
    handle = model_handle(model, dev, settings.batch_size)

    blocks, frames = {}, []
    for name, records in datasets.items():
        log.info("auditing %d images of %s", len(records), name)
        batch, paths = _load_batch(records, meta, classes, handle, methods, regions, settings,
                                   progress)
        results = run_checks(batch, settings)
        blocks[name] = block_json(name, batch, methods, results)
        frames.append(per_image_frame(name, paths, batch, methods, results))

    doc: dict[str, Any] = {"run": str(run.root), "settings": dataclasses.asdict(settings)}
    if len(blocks) == 1:
        doc |= next(iter(blocks.values()))
    else:
        doc["datasets"] = blocks
        doc["findings"] = [
            {**f, "message": f"[{name}] {f['message']}"}
            for name, block in blocks.items() for f in block["findings"]
        ]
    import pandas as pd

    doc = _finite(doc)
    atomic_write_json(out / AUDIT_JSON, doc)
    atomic_write_csv(out / AUDIT_IMAGES_CSV, pd.concat(frames, ignore_index=True))
    return doc


def model_handle(model, device, batch_size: int = 32) -> ModelHandle:
    """A :class:`ModelHandle` for a braincam model: :func:`braincam.models.to_model_input`
    on ``device``, batched prediction (AMP on GPU) and :func:`explain_maps`."""
    import torch

    from braincam.evaluate.predict import predict
    from braincam.models import to_model_input

    def to_input(images: np.ndarray) -> torch.Tensor:
        return to_model_input(torch.as_tensor(images).to(device))

    def predict_fn(images: np.ndarray) -> np.ndarray:
        return predict(model, images, device, batch_size)

    def explain_fn(m, images: np.ndarray, targets: np.ndarray, method: str) -> np.ndarray:
        return explain_maps(m, images, targets, method, batch_size)

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
    dataset: str, batch: AuditBatch, methods: Sequence[str], results: dict[str, CheckOutput]
) -> dict[str, Any]:
    """One dataset's block of ``audit.json`` (layout in the module docstring)."""
    block: dict[str, Any] = {
        "dataset": dataset,
        "n_images": len(batch),
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
        "prob": np.round(batch.probs[np.arange(len(batch)), preds], 6),
        "correct": batch.correct,
        "has_box": (batch.tumor_masks.any(axis=(1, 2)) if batch.tumor_masks is not None
                    else np.zeros(len(batch), bool)),
    }
    frames = []
    for method in methods:
        cols: dict[str, Any] = {**base, "method": method}
        for name, result in results.items():
            check = CHECKS[name]
            for column, values in result.per_image.get(method if check.per_method else "",
                                                       {}).items():
                if values.ndim == 2 and name == "sanity":
                    values = values[:, -1]
                if values.ndim == 1:
                    key = column if check.unprefixed_columns else f"{name}_{column}"
                    cols[key] = np.round(values.astype(float), 6)
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
    run: RunDir,
    roots: Sequence[Path | str],
    classes: tuple[str, ...],
    task: str,
    max_images: int | None,
    seed: int,
) -> dict[str, list]:
    """Audit records per dataset (see the module docstring)."""
    from braincam.data.records import load_dataset
    from braincam.labels import task_label

    if not roots:
        raise BraincamError("no dataset folder given; pass --data")
    seen = _trained_on(run)
    records = [r for r in load_dataset(roots).records if str(r.path.resolve()) not in seen]
    if not records:
        raise BraincamError("every image under --data was used to train or validate the run")
    known = [r for r in records if task_label(r.label, task) in classes]
    if len(known) < len(records):
        log.warning("%d images of classes the model does not know (%s) are left out",
                    len(records) - len(known), ", ".join(classes))
    if not known:
        raise BraincamError(f"no image of the model's classes ({', '.join(classes)}) in --data")
    by_source: dict[str, list] = {}
    for r in known:
        by_source.setdefault(r.source, []).append(r)
    return {name: [rs[i] for i in subsample(len(rs), max_images, seed)]
            for name, rs in by_source.items()}


def _trained_on(run: RunDir) -> set[str]:
    """Resolved paths of the run's train and val images (empty without ``split.csv``)."""
    if not run.split.is_file():
        return set()
    table = run.read_split()
    used = table[table["split"].isin(["train", "val"])]["path"]
    return {str(Path(p).resolve()) for p in used}


def _load_batch(
    records: list,
    meta: dict[str, Any],
    classes: tuple[str, ...],
    handle: ModelHandle,
    methods: Sequence[str],
    regions: dict[str, np.ndarray] | None,
    settings: AuditSettings,
    progress: bool,
) -> tuple[AuditBatch, list[str]]:
    """Preprocess, predict and explain one dataset's records."""
    from braincam.data.preprocess import PreprocessCache, box_mask, preprocess_config
    from braincam.data.records import without_skipped
    from braincam.explain import ExplainOptions
    from braincam.labels import task_label

    config = preprocess_config(meta)
    cache = PreprocessCache()
    source = records[0].source
    images, heads, skipped = cache.load(records, config, progress=progress)
    if skipped:
        log.warning("%d images cannot be read and are left out (first: %s)", len(skipped),
                    skipped[0].path)
    records = without_skipped(records, skipped)
    if not records:
        raise BraincamError(f"no image of {source} could be read")
    labels = np.array([classes.index(task_label(r.label, meta["task"])) for r in records])
    boxes = np.zeros(images.shape, dtype=bool)
    for i, r in enumerate(records):
        if r.box is not None:
            boxes[i] = box_mask(r.box, cache.get(r, config))
    for name, region in (regions or {}).items():
        if np.shape(region) != images.shape[1:]:
            raise BraincamError(f"region {name!r} must be {images.shape[1]} x {images.shape[2]} "
                                "px (the model's input size)")
    start = time.perf_counter()
    probs = handle.predict(images)
    preds = probs.argmax(1)
    maps, label_maps = {}, {}
    wrong = np.flatnonzero(boxes.any(axis=(1, 2)) & (preds != labels))
    for method in methods:
        maps[method] = handle.explain(handle.model, images, preds, method)
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
    )
    return batch, [str(r.path) for r in records]


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
