"""``braincam radiomics``: features inside every tumour mask, then a grouped-CV baseline.

Files in the output folder (public contracts, see docs/radiomics.md):

- ``features.csv``: one row per image: ``path, label, group`` then one column per feature
  (tumour, ``ring_*``, ``location_*``);
- ``radiomics.json``: settings, counts, the cross-validated baselines (metrics and top
  features), and with ``--cnn RUN`` the comparison with that classifier on its test images;
- ``skipped.csv``: ``path, reason`` for unreadable files and images without a usable mask
  (``radiomics.json``'s ``n_skipped`` counts its rows);
- ``top_features.png``: per-class distributions of the baseline's top features.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from braincam.data.records import ImageRecord, SkippedFile, resolved_key
from braincam.errors import BraincamError, check_seed, first_line
from braincam.labels import GLIOMA, MENINGIOMA, PITUITARY
from braincam.radiomics.features import RadiomicsConfig
from braincam.runs import RunDir

TUMOUR_TYPES = (GLIOMA, MENINGIOMA, PITUITARY)
FEATURES_CSV = "features.csv"
SUMMARY_JSON = "radiomics.json"
TOP_FEATURES_PNG = "top_features.png"
META_COLUMNS = ("path", "label", "group")


def _features_of(record: ImageRecord, config: RadiomicsConfig, seg_mask: np.ndarray | None):
    """Features of one record, or the one-line reason it has none."""
    from braincam.data.imageio import ImageReadError, read_grey
    from braincam.data.preprocess import read_tumour_mask
    from braincam.radiomics.features import extract

    try:
        grey = read_grey(record.path, index=record.slice)
        if seg_mask is not None:
            tumour = seg_mask
            if not tumour.any():
                return "the segmenter found no tumour"
        elif record.mask is not None:
            tumour = read_tumour_mask(record.mask, (record.width, record.height), record.slice)
        else:
            return "no tumour mask"
        return extract(grey, tumour, config)
    except (ImageReadError, BraincamError) as exc:
        return str(exc)


def extract_all(
    records: Sequence[ImageRecord], config: RadiomicsConfig, workers: int | None = None,
    seg_masks: Sequence[np.ndarray | None] | None = None, progress: bool = True,
) -> tuple[list[dict[str, float] | None], list[SkippedFile]]:
    """Features of every record in parallel processes (joblib), with a progress bar; records
    that fail get ``None`` and a skip entry."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    masks = seg_masks if seg_masks is not None else [None] * len(records)
    jobs = (delayed(_features_of)(r, config, m) for r, m in zip(records, masks, strict=True))
    workers = _workers(workers)
    parallel = Parallel(n_jobs=workers, batch_size=4, return_as="generator")
    results = list(tqdm(
        parallel(jobs), total=len(records), desc="radiomics", unit="img",
        disable=not progress, leave=False,
    ))
    skipped = [SkippedFile(r.path, res) for r, res in zip(records, results, strict=True)
               if isinstance(res, str)]
    return [None if isinstance(res, str) else res for res in results], skipped


def feature_table(records, features, groups):  # -> DataFrame
    """``features.csv``'s rows for the records that have features."""
    import pandas as pd

    rows = [
        {"path": r.key, "label": r.label, "group": str(g), **f}
        for r, f, g in zip(records, features, groups, strict=True) if f is not None
    ]
    if not rows:
        raise BraincamError("no image had a usable tumour mask; nothing to compute")
    return pd.DataFrame(rows)


def radiomics_run(
    data: Sequence[Path | str], out: Path | str, config: RadiomicsConfig | None = None,
    segment: Path | str | None = None, cnn: Path | str | None = None, folds: int = 5,
    seed: int = 0, workers: int | None = None, n_boot: int = 1000, force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Features for the tumour images of ``data`` (expert masks, or those a ``braincam
    segment`` run predicts), the grouped-CV baselines, and the files listed in the module
    docstring; returns the ``radiomics.json`` content."""
    import time

    from braincam.data.records import load_dataset, write_skipped_csv
    from braincam.data.splits import record_groups
    from braincam.radiomics.baseline import MODELS, cross_validate
    from braincam.runs import (
        atomic_write_csv,
        atomic_write_json,
        check_outside_data,
        prepare_output_dir,
        refuse_occupied,
        versions,
    )

    config = config or RadiomicsConfig()
    if folds < 2:
        raise BraincamError(f"--folds must be >= 2, got {folds}")
    check_seed(seed)
    check_outside_data(out, data)
    refuse_occupied(out, force)
    dataset = load_dataset([Path(d) for d in data])
    records = [r for r in dataset.records if r.label in TUMOUR_TYPES]
    if not records:
        raise BraincamError(f"no images of the tumour types {TUMOUR_TYPES} in {list(data)}")
    # before the features: a wrong --cnn must not cost their extraction
    predictions = cnn_test_predictions(Path(cnn), records) if cnn else None
    out_dir = RunDir(prepare_output_dir(Path(out), force=force, reads=[
        *map(Path, data), *(Path(x) for x in (segment, cnn) if x is not None)]))
    start = time.perf_counter()
    seg_masks = _segment_masks(records, segment) if segment else None
    features, skipped = extract_all(records, config, workers, seg_masks, progress)
    seconds = time.perf_counter() - start
    groups = record_groups(records)
    table = feature_table(records, features, groups)
    atomic_write_csv(out_dir.root / FEATURES_CSV, table)
    skipped = [*dataset.skipped, *skipped]  # unreadable files, then images without features
    write_skipped_csv(skipped, out_dir.skipped)

    names = [c for c in table.columns if c not in META_COLUMNS]
    classes = [c for c in TUMOUR_TYPES if c in set(table["label"])]
    if len(classes) < 2:
        raise BraincamError("the baseline needs at least two tumour types with masks")
    x = table[names].to_numpy(dtype=np.float64)
    y = table["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    group = table["group"].to_numpy()
    if len(set(group)) < folds:
        raise BraincamError(
            f"only {len(set(group))} patient/duplicate groups: fewer than --folds {folds}"
        )
    few = {c: n for c in classes
           if (n := table.loc[table["label"] == c, "group"].nunique()) < folds}
    if few:
        c, n = next(iter(few.items()))
        raise BraincamError(
            f"{c} has masked images in {n} patient/duplicate group(s): the grouped "
            f"{folds}-fold cross-validation needs each tumour type in at least {folds} "
            f"(--folds); {FEATURES_CSV} is kept in {out}")
    n_jobs = _workers(workers)
    try:
        results = {m: cross_validate(x, y, group, classes, names, m, folds, seed, n_boot,
                                     n_jobs) for m in MODELS}
    except ValueError as exc:
        if "n_splits" not in str(exc):  # scikit-learn's folds: too few images of a class
            raise
        raise BraincamError(
            f"the grouped {folds}-fold cross-validation cannot split these images "
            f"({first_line(exc)}): each tumour type needs images with masks in at least "
            f"{folds} groups and 3 in every training fold; {FEATURES_CSV} is kept in {out}"
        ) from None
    import radiomics

    summary: dict[str, Any] = {
        "n_images": len(table), "n_skipped": len(skipped), "classes": classes,
        "n_features": len(names), "n_groups": int(len(set(group))),
        "masks": str(segment) if segment else "expert",
        "config": {**asdict(config), "library": f"pyradiomics {radiomics.__version__}"},
        "seconds_features": round(seconds, 1),
        "cv": {"folds": folds, "grouping": "patient-proxy + duplicate groups", "seed": seed,
               "models": {m: {"metrics": r.metrics, "top_features": r.top_features,
                              **({"chosen_c": r.chosen_c} if r.chosen_c else {})}
                          for m, r in results.items()}},
        "versions": versions(),
    }
    if cnn:
        summary["cnn"] = compare_cnn(table, results["logistic-l1"], classes, Path(cnn),
                                     predictions)
    atomic_write_json(out_dir.root / SUMMARY_JSON, summary)
    from braincam.radiomics.plots import top_feature_figure

    top = [name for name, _ in results["logistic-l1"].top_features[:6]]
    if top:
        top_feature_figure(table, top, classes, out_dir.root / TOP_FEATURES_PNG)
    return summary


def _segment_masks(
    records: Sequence[ImageRecord], segment: Path | str
) -> list[np.ndarray | None]:
    """Each record's tumour as a ``braincam segment`` run predicts it, in original pixels:
    ``P(tumour) >= THRESHOLD`` over the segmenter's preprocessed input, mapped back onto the
    crop box (:func:`braincam.data.preprocess.uncrop`). Unreadable images get None."""
    from braincam.data.imageio import ImageReadError
    from braincam.data.preprocess import PreprocessCache, preprocess_config, uncrop
    from braincam.models.segment import THRESHOLD, load_segmenter

    segmenter = load_segmenter(segment)
    config = preprocess_config(segmenter.meta)
    cache = PreprocessCache()
    masks: list[np.ndarray | None] = []
    for record in records:
        try:
            prep = cache.get(record, config)
        except ImageReadError:
            masks.append(None)
            continue
        prob = segmenter.predict(prep.image[None])[0]
        masks.append(uncrop(prob, prep) >= THRESHOLD)
    return masks


def compare_cnn(table, baseline, classes: Sequence[str], run: Path,
                predictions) -> dict[str, Any]:
    """The radiomics baseline's out-of-fold predictions next to a classifier run's test
    predictions on the images both have: accuracy of each, and on the classifier's errors how
    often radiomics is right (images matched by resolved path). The classifier is scored over
    all its own classes, so a four-class run that calls a tumour ``no_tumor`` is wrong there,
    as in its metrics.json. ``predictions``: the run's test rows, as
    :func:`cnn_test_predictions` read them before the features were computed."""
    import pandas as pd

    from braincam.evaluate.metrics import compute_metrics

    cnn = predictions[predictions["label"].isin(classes)]
    cnn = cnn.assign(path=cnn["path"].map(resolved_key))
    rad = pd.DataFrame({"path": table["path"].map(resolved_key),
                        "rad_pred": baseline.prob.argmax(1)})
    both = cnn.merge(rad, on="path")
    if both.empty:
        raise BraincamError(f"{run}'s test images have no radiomic features here")
    own = [c.removeprefix("prob_") for c in cnn.columns if c.startswith("prob_")]
    prob = both[[f"prob_{c}" for c in own]].to_numpy()
    truth = both["label"].to_numpy()
    wrong = np.array(own)[prob.argmax(1)] != truth
    rad_pred = both["rad_pred"].to_numpy()
    rad_right = np.array(classes)[rad_pred] == truth
    return {
        "run": str(run), "n": int(len(both)),
        "cnn": compute_metrics([own.index(t) for t in truth], prob, own, n_boot=0),
        "radiomics": compute_metrics([list(classes).index(t) for t in truth],
                                     np.eye(len(classes))[rad_pred], list(classes), n_boot=0),
        "cnn_errors": int(wrong.sum()),
        "radiomics_right_on_cnn_errors": int(rad_right[wrong].sum()),
    }


def cnn_test_predictions(run: Path, records: Sequence[ImageRecord] = ()):  # -> DataFrame
    """``--cnn RUN``'s ``predictions.csv`` test rows, refused with one line unless ``RUN`` is
    an evaluated tumour-type classifier whose test images include some of ``records``
    (checked before any feature is computed)."""
    import pandas as pd

    from braincam.models.segment import is_segment_run

    if is_segment_run(run):
        raise BraincamError(f"--cnn {run} is a segment run; it takes a tumour-type classifier run")
    predictions = RunDir(run).root / "predictions.csv"
    try:
        table = pd.read_csv(predictions)
        table = table[table["split"] == "test"]
    except FileNotFoundError:
        raise BraincamError(f"{run} has no predictions.csv; evaluate it first") from None
    except (OSError, ValueError, KeyError) as exc:
        raise BraincamError(f"{predictions}: cannot read it ({first_line(exc)})") from None
    missing = [c for c in TUMOUR_TYPES if f"prob_{c}" not in table.columns]
    if missing:
        raise BraincamError(f"{run} does not predict {missing}: a tumour-type classifier is needed")
    if records and not set(table["path"].astype(str).map(resolved_key)) & {
            resolved_key(r.key) for r in records}:
        raise BraincamError(f"{run}'s test images are none of the images given here")
    return table


def _workers(workers: int | None) -> int:
    """Worker processes: ``workers``, else one per CPU."""
    return workers or os.cpu_count() or 1
