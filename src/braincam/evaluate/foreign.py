"""``evaluate_spec``: score a model spec's model (:mod:`braincam.models.foreign`) on dataset
folders, through the model's own input pipeline (PIL decoding and resizing,
:mod:`braincam.models.foreign.images`), so its accuracy is the one its authors would measure.

Each ``--data`` folder is one set, or one set per official split it has
(``<folder>_test``, ``<folder>_train``...; ``split`` keeps one, and folders without
official splits whole). ``metrics.json`` has the
layout of :mod:`braincam.evaluate.run` with every set under ``extra``, ``test`` null, and a
``model`` block (:meth:`braincam.models.foreign.ForeignModel.to_json`) instead of
``checkpoint``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from braincam.data.records import ImageRecord, distinct_name
from braincam.errors import BraincamError
from braincam.evaluate.run import (
    TEST_SETS,
    ScoredSet,
    pool,
    predictions_frame,
    with_groups,
    write_figures,
)
from braincam.labels import task_label
from braincam.runs import (
    atomic_write_csv,
    atomic_write_json,
    check_outside_data,
    prepare_output_dir,
)

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def evaluate_spec(
    spec_file: Path | str,
    roots: Sequence[Path | str],
    out_dir: Path | str,
    *,
    task: str | None = None,
    split: str | None = None,
    force: bool = False,
    device: str = "auto",
    batch_size: int = 64,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``metrics.json``, ``predictions.csv`` and figures into ``out_dir``; return the
    metrics (module docstring)."""
    from braincam.device import device_of
    from braincam.models.foreign import load_foreign, load_spec

    model = load_foreign(load_spec(spec_file), task)
    if not roots:
        raise BraincamError("a model spec has no test split of its own; pass --data")
    check_outside_data(out_dir, roots)
    out = prepare_output_dir(Path(out_dir), force, marker=METRICS_FILE, reads=roots,
                             owned=(METRICS_FILE, "predictions.csv", "confusion_*.png",
                                    "roc_*.png"))  # the earlier evaluation's, all of them
    classes = list(model.classes)
    dev = device_of(device)
    sets, scored = [], {}
    for name, records in spec_sets(roots, classes, model.task, split):
        records, prob = predict_records(model, records, dev, batch_size, progress)
        y = np.array([classes.index(task_label(r.label, model.task)) for r in records])
        sets.append(ScoredSet(name, "extra", [r.key for r in records],
                              [name] * len(records), y, prob, None))
        scored[name] = records
    sets = with_groups(sets, scored)
    metrics: dict[str, Any] = {
        "task": model.task, "classes": classes, "test": None, "test_leak_free": None,
        "extra": {}, "extra_combined": None, "figures": {}, "n_boot": n_boot,
        "model": model.to_json(),
    }
    for scored in sets:
        m = scored.metrics(classes, n_boot, seed)
        metrics["extra"][scored.name] = m
        metrics["figures"][scored.name] = write_figures(out, scored, m, classes)
    if len(sets) >= 2:
        metrics["extra_combined"] = pool(sets).metrics(classes, n_boot, seed)
    atomic_write_csv(out / "predictions.csv", predictions_frame(sets, classes))
    atomic_write_json(out / METRICS_FILE, metrics)
    return metrics


def spec_sets(roots: Sequence[Path | str], classes: list[str], task: str,
              split: str | None = None):
    """``(set name, records)`` per folder and official split (module docstring); images of
    classes the model does not know are left out with a warning."""
    from braincam.data.records import load_dataset

    found, names = False, set()
    for root in roots:
        records = load_dataset([root]).records
        known = [r for r in records if task_label(r.label, task) in classes]
        if len(known) < len(records):
            log.warning("%s: %d images of classes the model does not know are left out",
                        root, len(records) - len(known))
        splits = sorted({r.split for r in known}, key=str)
        for part in splits:
            if split is not None and part not in (None, split):
                continue
            chosen = [r for r in known if r.split == part]
            name = distinct_name(
                Path(root).resolve().name + ("" if len(splits) == 1 else f"_{part}"), names,
                reserved=TEST_SETS)
            found = True
            yield name, chosen
    if not found:
        raise BraincamError(f"no image of the model's classes ({', '.join(classes)})"
                            + (f" in split {split!r}" if split else "") + " under --data")


def predict_records(model, records: Sequence[ImageRecord], device, batch_size: int = 64,
                    progress: bool = False) -> tuple[list[ImageRecord], np.ndarray]:
    """Probabilities (N, K) of ``model.black_box`` on the readable ``records`` (the others are
    left out with a warning), returned with those records; AMP on GPUs."""
    import torch

    from braincam.data.imageio import ImageReadError
    from braincam.device import autocast
    from braincam.models.foreign.images import read_native

    net = model.black_box.to(device)
    kept, probs = [], []
    starts = range(0, len(records), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="predict", unit="batch", leave=False)
    for start in starts:
        arrays = []
        for record in records[start:start + batch_size]:
            try:
                arrays.append(read_native(model.spec.input, record.path, record.slice))
                kept.append(record)
            except (ImageReadError, OSError, ValueError) as exc:
                log.warning("%s is left out: %s", record.key, exc)
        if arrays:
            with torch.inference_mode(), autocast(device):
                logits = net.from_native(torch.from_numpy(np.stack(arrays)).to(device))
                probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    if not kept:
        raise BraincamError("no image under --data could be read")
    return kept, np.concatenate(probs)
