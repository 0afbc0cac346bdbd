"""Deep ensembles as runs: several trained runs written and scored as one run directory.

:func:`make_ensemble` writes a run directory that ``braincam evaluate`` (and ``report``) read
like any other: ``model.safetensors`` holds every member's tensors under ``members.<i>.`` and
the meta key ``members``; ``split.csv`` is the members' common split, an image counting as
``train`` when any member trained on it, so ``leak_free`` is true only for test images with
no near duplicate in any member's training set. Members that differ only by ``--seed`` differ
in head initialisation, validation carve, augmentation and batch order; averaging their
probabilities (:class:`braincam.models.MeanProbability`) takes most of that lottery away.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from braincam.errors import BraincamError
from braincam.models.ensemble import is_ensemble
from braincam.runs import (
    RunDir,
    atomic_write_csv,
    atomic_write_yaml,
    check_dataset_folders,
    check_outside_data,
    prepare_output_dir,
    versions,
)

SHARED_META = ("arch", "classes", "task", "preprocess")  # every member must agree on these
MEMBER_META = ("subtypes", "dropout", "seed", "best", "guide")  # kept per member


def make_ensemble(
    member_dirs: Sequence[Path | str], out_dir: Path | str, force: bool = False,
    command: str | None = None, extra: Sequence[Path | str] = (),
) -> RunDir:
    """Write the ensemble run directory of ``member_dirs`` (see the module docstring).

    The members must share architecture, classes, task, preprocessing, data roots and test
    split; anything else stops with a one-line error before a file is written, as does an
    ``out_dir`` inside or holding their data or ``extra`` (the folders it will be evaluated on).
    """
    from braincam.evaluate.run import guide_learnt, write_guide_learnt
    from braincam.models.checkpoint import read_tensors, save_tensors

    runs = [RunDir(Path(d)) for d in member_dirs]
    if len(runs) < 2:
        raise BraincamError("an ensemble needs at least two runs")
    real = [r.root.resolve() for r in runs]
    twice = next((r for i, r in enumerate(runs) if real[i] in real[:i]), None)
    if twice is not None:
        raise BraincamError(f"{twice.root} is named twice; an ensemble averages different runs")
    metas, configs, splits = zip(*(_read_member(r) for r in runs), strict=True)
    for key in SHARED_META:
        if len({json.dumps(m.get(key), sort_keys=True) for m in metas}) > 1:
            raise BraincamError(f"the runs differ in {key}; an ensemble's members must agree")
    data = [tuple(c.get("data") or ()) for c in configs]
    if len({frozenset(d) for d in data}) > 1:
        raise BraincamError("the runs were trained on different data roots")
    split = _common_split(splits, runs)

    out = RunDir(Path(out_dir))
    check_dataset_folders(out.root, extra)  # the members' data may live elsewhere now
    check_outside_data(out.root, data[0])
    prepare_output_dir(out.root, force=force, reads=[*(r.root for r in runs), *data[0], *extra])
    tensors: dict[str, torch.Tensor] = {}
    for i, run in enumerate(runs):
        member_tensors, _ = read_tensors(run.model)
        tensors.update({f"members.{i}.{k}": v for k, v in member_tensors.items()})
    meta = {key: metas[0][key] for key in SHARED_META if key in metas[0]}
    meta["members"] = [
        {"run": str(run.root.resolve()), **{k: m[k] for k in MEMBER_META if k in m}}
        for run, m in zip(runs, metas, strict=True)
    ]
    save_tensors(tensors, out.model, meta)
    atomic_write_csv(out.split, split)
    guides = [p for run, m in zip(runs, metas, strict=True) for p in guide_learnt(run, m)]
    if guides:  # what every member's guide learnt from is seen by the ensemble
        write_guide_learnt(out, guides)
    atomic_write_yaml(out.config, {
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": configs[0].get("data"),
        "members": [str(r.root.resolve()) for r in runs],
        "member_train": [c.get("train") for c in configs],
        "versions": versions(),
    })
    return out


def _read_member(run: RunDir):
    from braincam.models.checkpoint import read_meta
    from braincam.models.segment import is_segment_run

    if is_segment_run(run.root):
        raise BraincamError(f"{run.root} is a segment run (braincam segment), not a classifier "
                            "run; an ensemble's members are classifiers")
    meta = read_meta(run.model)
    if is_ensemble(meta):
        raise BraincamError(f"{run.root} is itself an ensemble; list its members instead")
    return meta, run.read_config(), run.read_split()


def _common_split(splits, runs: Sequence[RunDir]):  # -> DataFrame
    """Member 0's ``split.csv`` with ``split`` = ``train`` where any member trained on the
    image (``val`` where all validated on it) and ``leak_free`` = all members' flags."""
    first = splits[0].set_index("path")
    test = set(first.index[first["split"] == "test"])
    for run, other in zip(runs[1:], splits[1:], strict=True):
        other = other.set_index("path")
        if set(other.index[other["split"] == "test"]) != test:
            raise BraincamError(
                f"{run.root} has another test split than {runs[0].root}; members must share "
                "one (--split official, or the same --split-seed for random and dedup splits)"
            )
        if set(other.index) != set(first.index):
            raise BraincamError(
                f"{run.root} and {runs[0].root} were trained on different images of the same "
                f"folders ({len(set(other.index) ^ set(first.index))} listed by one only): "
                "the data changed between their trainings")
    out = first.copy()
    aligned = [s.set_index("path").loc[out.index] for s in splits]
    trained = np.logical_or.reduce([(s["split"] == "train").to_numpy() for s in aligned])
    out.loc[trained & (out["split"] != "test"), "split"] = "train"
    out["leak_free"] = np.logical_and.reduce([s["leak_free"].to_numpy() for s in aligned])
    return out.reset_index()
