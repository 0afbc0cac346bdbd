"""Grouped cross-validation of a training recipe on training data (``braincam cv``).

Fold ``k`` of ``K`` is a whole training run (:func:`braincam.train.run.train_run` with the
split ``fold``, :mod:`braincam.data.splits`): its test part is fold ``k`` of a
``StratifiedGroupKFold(K)`` over the images (duplicate and patient-proxy groups never
straddle folds), and validation is carved from the other folds. Each fold is evaluated
(``metrics.json``: its test fold and the extra ``--data`` folders), and ``cv.json``
summarises the folds: for each scored set, the mean and the sample standard deviation over
folds of ``balanced_accuracy``, ``auc`` and ``accuracy``. Recipes are compared on these
figures, never on a published test set: data with an official test split is refused.

Layout: ``CV/fold-<k>/`` (a run directory) and ``CV/cv.json``. ``--guide`` dataset folders
(:mod:`braincam.train.guide`) that hold none of the cross-validated images train one segmenter,
``CV/guide/``, that guides every fold (the folds' ``train.guide`` names it). Folders that hold
some of them (``braincam cv SARTAJ/Training --guide FIGSHARE,SARTAJ/Training
--guide-weak-labels``) train one segmenter per fold instead, ``CV/fold-<k>/guide/``, without
that fold's test images, as ``braincam train`` does for its own test split: a segmenter that
learnt a fold's test images (with ``--guide-weak-labels``, their very labels) would score the
fold on images its guide was taught. That costs one segmenter training per fold.

A fold whose ``metrics.json`` exists, whose ``config.yaml`` holds the same training settings
and whose images are the data's now (no file changed after its model was written) is kept, so
an interrupted cross-validation resumes, and is scored again on the ``--data`` folders given
now, if any (or were before). A fold of the same settings stopped before its metrics were
written is trained again; a fold with other settings or other data is replaced only with
``force``, which also removes the folders of folds beyond K.
The folds compute each image's backbone features once (:mod:`braincam.train.features`).
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from braincam.data.splits import FOLD
from braincam.errors import BraincamError
from braincam.evaluate.run import extra_sets
from braincam.runs import (
    RunDir,
    as_written,
    atomic_write_json,
    braincam_wrote,
    check_dataset_folders,
    read_json,
)
from braincam.train.config import TrainConfig
from braincam.train.features import remembered_features

log = logging.getLogger(__name__)

SUMMARY = ("balanced_accuracy", "auc", "accuracy")


@dataclass
class CVResult:
    out_dir: Path
    folds: list[dict[str, Any]]  # per fold: fold, run, kept, and the scored sets' SUMMARY
    summary: dict[str, dict[str, dict[str, float | None]]]  # set -> figure -> mean, sd, n


def cross_validate(
    roots: Sequence[Path | str],
    config: TrainConfig,
    out_dir: Path | str,
    folds: int = 5,
    extra: Sequence[Path | str] = (),
    force: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> CVResult:
    """Train and evaluate ``config`` on each of ``folds`` grouped folds of ``roots``; write
    ``cv.json`` (module docstring) and return it."""
    from braincam.evaluate import evaluate_run
    from braincam.train.guide import (
        check_plan,
        check_training_options,
        guide_plan,
        holds_any,
        train_guide,
    )
    from braincam.train.run import train_run

    if folds < 2:
        raise BraincamError(f"--folds must be >= 2, got {folds}")
    out = Path(out_dir)
    check_dataset_folders(out, [*roots, *extra])  # a wrong --data before fold 0 trains
    if (out / "cv.json").exists() and not force:
        raise BraincamError(f"{out} already holds a cross-validation; pass --force to redo it")
    plan = guide_plan(config.guide) if config.guide else None
    if plan is not None:
        check_training_options(plan, config)
    recipe_config = config  # what cv.json's recipe records
    if plan is not None and plan.data:
        check_plan(plan, config)
        if holds_any(plan.data, roots):
            log.warning("--guide's dataset folders hold images of the folds: each fold trains "
                        "its own segmenter without its test images (%d segmenter trainings)",
                        folds)
        else:  # one segmenter for every fold: CV/guide
            members = train_guide(plan, config, out, progress, command=command)
            recipe_config = replace(config, guide=",".join(str(m) for m in members))
            config = replace(recipe_config, guide_weak_labels=False, guide_epochs=None,
                             guide_freeze_blocks=0)  # the folds load CV/guide as it is
    rows = []
    data = _DataCheck(roots)
    with remembered_features():  # the folds share the backbone and most images
        for k in range(folds):
            fold_config = replace(config, split=FOLD, fold=k, folds=folds)
            run = RunDir(out / f"fold-{k}")
            kept = _finished(run, fold_config) and data.same(run)
            if not kept:
                try:
                    train_run(roots, fold_config, run.root, progress=progress, command=command,
                              force=force or _interrupted(run, fold_config))
                except BraincamError as exc:
                    raise BraincamError(f"fold {k} of {folds}: {exc}") from None
            if not kept or extra or read_json(run.metrics).get("extra"):  # --data as now
                evaluate_run(run.root, extra, force=True, device=config.device, progress=progress)
            rows.append({"fold": k, "run": run.root.name, "kept": kept,
                         **_scores(read_json(run.metrics))})
    _remove_other_folds(out, folds)
    summary = summarise(rows)
    recipe = _recipe(replace(recipe_config, split=FOLD, folds=folds))
    atomic_write_json(out / "cv.json", {"folds": folds, "recipe": recipe, "runs": rows,
                                        "summary": summary})
    return CVResult(out, rows, summary)


def _remove_other_folds(out: Path, folds: int) -> None:
    """Fold folders ``fold-<k>`` with ``k >= folds``, of an earlier cross-validation with more
    folds (reached with ``--force``): cv.json no longer counts them. A folder of that name
    braincam did not write is kept."""
    import shutil

    for folder in out.glob("fold-*"):
        index = folder.name.removeprefix("fold-")
        if (folder.is_dir() and not folder.is_symlink() and index.isdigit()
                and int(index) >= folds and braincam_wrote(folder)):
            shutil.rmtree(folder)


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per scored set and figure: ``mean`` and ``sd`` (sample standard deviation, None for one
    value) over the folds that have the figure, and their count ``n``."""
    sets = dict.fromkeys(name for row in rows for name in row["scores"])
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for name in sets:
        out[name] = {}
        for figure in SUMMARY:
            values = [row["scores"][name][figure] for row in rows
                      if row["scores"].get(name, {}).get(figure) is not None]
            out[name][figure] = {
                "mean": statistics.fmean(values) if values else None,
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values),
            }
    return out


def _scores(metrics: dict[str, Any]) -> dict[str, Any]:
    """``{"scores": {set: {figure: value}}}`` of one fold's ``metrics.json``: ``test`` (the
    fold), ``test_leak_free`` (without the images the model or its guide learnt from), each
    extra folder, and ``extra_combined``; an extra set with images the model learnt from also
    as ``<set>_leak_free``."""
    sets = {"test": metrics.get("test"), "test_leak_free": metrics.get("test_leak_free")}
    for s in extra_sets(metrics):
        sets[s.name + ("_leak_free" if s.leak_free else "")] = s.metrics
    return {"scores": {name: {figure: m.get(figure) for figure in SUMMARY}
                       for name, m in sets.items() if m}}


def _settings(config: TrainConfig) -> dict[str, Any]:
    """``config.model_settings()`` as ``config.yaml`` holds them."""
    return as_written(config.model_settings())


def _recipe(config: TrainConfig) -> dict[str, Any]:
    """The settings every fold shares (``cv.json`` ``recipe``): a fold's settings without
    its split and fold number."""
    values = _settings(config)
    values.pop("split"), values.pop("fold")
    return values


class _DataCheck:
    """Whether a fold's run was trained on the data of ``roots`` as it is now: the same
    folders, in its ``split.csv`` the same images, and no file of the folders changed after
    its model was written (modification times, as ``make`` judges; read once, when first
    asked)."""

    def __init__(self, roots: Sequence[Path | str]) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self._keys: set[str] | None = None
        self._newest: int | None = None

    def same(self, run: RunDir) -> bool:
        from braincam.data.records import data_listing, load_dataset

        try:
            if [Path(r).resolve() for r in run.data_roots()] != self.roots:
                return False
            if self._keys is None:
                self._keys = {r.key for r in load_dataset(self.roots).records}
                self._newest = max((mtime for root in self.roots  # ns; -1: a dangling link
                                    for _, _, mtime in data_listing(root)), default=0)
            listed = set(run.read_split()["path"])
            return (listed <= self._keys and self._keys <= listed | _skipped(run)
                    and run.model.stat().st_mtime_ns >= (self._newest or 0))
        except (BraincamError, OSError):
            return False


def _skipped(run: RunDir) -> set[str]:
    """The record keys of the run's ``skipped.csv`` (images it could not decode)."""
    import pandas as pd

    try:
        return set(pd.read_csv(run.skipped)["path"].astype(str))
    except (OSError, KeyError, ValueError):
        return set()


def _finished(run: RunDir, config: TrainConfig) -> bool:
    """Whether ``run`` is this fold, trained and evaluated with the same settings."""
    return run.metrics.is_file() and _same_settings(run, config)


def _interrupted(run: RunDir, config: TrainConfig) -> bool:
    """Whether ``run`` is this fold with the same settings, stopped before its evaluation
    wrote ``metrics.json``: it holds nothing to keep, so it is trained again without
    ``force``."""
    return not run.metrics.exists() and _same_settings(run, config)


def _same_settings(run: RunDir, config: TrainConfig) -> bool:
    if not run.config.is_file():
        return False
    try:
        stored = TrainConfig.from_dict(yaml.safe_load(run.config.read_text())["train"])
    except (OSError, KeyError, TypeError, yaml.YAMLError, BraincamError):
        return False
    return _settings(stored) == _settings(config)
