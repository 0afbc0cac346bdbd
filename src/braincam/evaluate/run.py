"""``evaluate_run``: score a trained run on its test split, the leak-free part of it, and
extra (cross-dataset) folders, each also without the images the model learnt from.

An extra folder is not unseen data just because it is another folder: public datasets copy
each other (Sartaj's Training tumours are nearly all Figshare slices, re-encoded). An extra
image is *seen* when it shares a duplicate group (:func:`braincam.data.hashing.duplicates_of`:
same bytes or pHash within 4 bits, chained) with an image the model trained or validated on
(its ``split.csv`` rows other than ``test``), or that a segmenter guiding it trained or
validated on (``--guide``: the run's ``guide_learnt.csv``, a copy of the segment runs'
``split.csv`` rows made at training time); the groups are formed over all
extra folders at once, and a slice of a volume is compared by its own hashes. The
``*_leak_free`` entries score the rest. For a guided model ``test_leak_free`` likewise leaves
out the test images its segmenters learnt from.

``metrics.json``::

    {"task", "classes",
     "test": M, "test_leak_free": M | null,
     "extra": {"<dataset folder name>": M, ...},
     "extra_seen": {"<dataset folder name>": number of seen images, ...},
     "extra_leak_free": {"<dataset folder name>": M | null, ...},   # null: every image seen
     "extra_combined": M | null,      # all extra datasets pooled (when there are two or more)
     "extra_combined_leak_free": M | null,
     "figures": {"<set>": {"confusion": "confusion_<set>.png", "roc": "roc_<set>.png" | null}},
     "n_boot", "checkpoint": {best phase/epoch/validation score,
                              "members": [...] for an ensemble}}

``M`` is :func:`braincam.evaluate.metrics.compute_metrics`'s dict. ``predictions.csv`` holds
one row per scored image: path, dataset, split (``test`` or ``extra``), leak_free, label,
pred, ``prob_<class>``...
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from braincam.data.hashing import duplicates_of
from braincam.data.records import distinct_name, key_file, source_names
from braincam.errors import BraincamError
from braincam.evaluate.metrics import compute_metrics
from braincam.labels import task_label
from braincam.runs import (
    RunDir,
    atomic_write_csv,
    atomic_write_json,
    check_outside_data,
    check_writable,
    json_object,
    prepare_output_dir,
    read_json,
)

log = logging.getLogger(__name__)


@dataclass
class ScoredSet:
    """Predictions for one evaluated set of images."""

    name: str
    kind: str  # "test" | "extra"
    paths: list[str]
    datasets: list[str]
    y: np.ndarray  # class indices
    prob: np.ndarray  # (N, K)
    leak_free: np.ndarray | None  # bool per image: no duplicate among the images learnt from
    groups: np.ndarray | None = None  # group id per image (copies, patient-proxy groups)

    def metrics(self, classes: Sequence[str], n_boot: int, seed: int,
                keep: np.ndarray | None = None) -> dict[str, Any]:
        """:func:`compute_metrics` of the images of ``keep`` (all by default), with the
        group bootstrap where the groups are known."""
        keep = np.ones(len(self.y), bool) if keep is None else keep
        return compute_metrics(self.y[keep], self.prob[keep], classes, n_boot=n_boot,
                               seed=seed, groups=None if self.groups is None
                               else self.groups[keep])


def evaluate_run(
    run_dir: Path | str,
    extra_roots: Sequence[Path | str] = (),
    force: bool = False,
    device: str = "auto",
    batch_size: int = 64,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
    out_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Write ``metrics.json``, ``predictions.csv`` and the figures into the run (or
    ``out_dir``); return the metrics. An existing ``metrics.json`` is kept unless ``force``."""
    from braincam.data.preprocess import PreprocessCache, preprocess_config
    from braincam.device import device_of
    from braincam.evaluate.predict import predict
    from braincam.models import load_checkpoint
    from braincam.models.checkpoint import meta_task
    from braincam.models.ensemble import is_ensemble

    run = RunDir(Path(run_dir))
    if not run.model.is_file():
        raise BraincamError(f"{run.root} holds no model.safetensors; train a model there first")
    own = _data_roots(run)  # the test split is read from them
    given, kept = list(extra_roots), {}
    for root in given:
        kept.setdefault(Path(root).resolve(), root)
    extra_roots = list(kept.values())
    if len(extra_roots) < len(given):  # scored twice, they would also count twice when pooled
        log.warning("a --data folder given twice is scored once")
    check_outside_data(Path(out_dir) if out_dir else run.root, [*extra_roots, *own])
    dest = RunDir(prepare_output_dir(Path(out_dir), force, "metrics.json")) if out_dir else run
    if dest.metrics.exists() and not force:
        raise BraincamError(f"{dest.metrics} exists; pass --force to evaluate again")
    check_writable(dest.root)  # before the slow scoring, not at its first file
    earlier = _figures(dest)
    model, meta = load_checkpoint(run.model)
    classes, task = list(meta["classes"]), meta_task(meta, run.model)
    prep = preprocess_config(meta)
    cache = PreprocessCache()
    dev = device_of(device)

    kept_records: dict[str, list] = {}  # per set name: the images scored (readable ones)

    def score(records, name: str, kind: str, leak_free=None) -> ScoredSet:
        images, _, bad = cache.load(records, prep, progress=progress)
        if bad:  # as training skips them
            log.warning("%s: %d images cannot be read and are left out (first: %s: %s)", name,
                        len(bad), bad[0].path, bad[0].reason)
            gone = {str(s.path) for s in bad}
            kept = np.array([r.key not in gone for r in records])
            records = [r for r, keep in zip(records, kept, strict=True) if keep]
            leak_free = None if leak_free is None else np.asarray(leak_free)[kept]
            if not records:
                raise BraincamError(f"no {name} image can be read (first: {bad[0].path}: "
                                    f"{bad[0].reason})")
        prob = predict(model, images, dev, batch_size, progress)
        y = np.array([classes.index(task_label(r.label, task)) for r in records])
        # an extra set's rows carry its metrics.json name, which differs from the folder's
        # when it repeats a folder's name or is called "test" (_extra_records)
        datasets = [r.source for r in records] if kind == "test" else [name] * len(records)
        kept_records[name] = records
        return ScoredSet(name, kind, [r.key for r in records], datasets, y, prob, leak_free)

    _warn_seen_by_guide(meta, extra_roots)
    test_records, leak_free = _test_records(run)
    if test_records:  # what a guide learnt from is seen too
        unflagged = leak_free is None  # a split.csv without the column: the run's images too
        known = np.ones(len(test_records), bool) if unflagged else leak_free
        leak_free = known & ~duplicates_of([r.image for r in test_records],
                                           learnt_from(run, meta, unflagged))
    sets = [score(test_records, "test", "test", leak_free)] if test_records else []
    sources = source_names(list(dict.fromkeys(Path(r).resolve() for r in own)))
    extras = list(_extra_records(extra_roots, classes, task, set(sources)))
    learnt = learnt_from(run, meta) if extras else []
    seen = duplicates_of([r.image for _, records in extras for r in records], learnt)
    bounds = np.cumsum([0] + [len(records) for _, records in extras])
    for (name, records), start, stop in zip(extras, bounds[:-1], bounds[1:], strict=True):
        unseen = ~seen[start:stop]
        if not unseen.all():
            log.warning("%s: %d of %d images duplicate images the model%s learnt from; "
                        "extra_leak_free scores the other %d", name, (~unseen).sum(),
                        len(unseen), " or its guide" if meta.get("guide") else "",
                        unseen.sum())
        sets.append(score(records, name, "extra", unseen))
    sets = with_groups(sets, kept_records)

    metrics: dict[str, Any] = {
        "task": task, "classes": classes, "test": None, "test_leak_free": None,
        "extra": {}, "extra_seen": {}, "extra_leak_free": {}, "extra_combined": None,
        "extra_combined_leak_free": None, "figures": {}, "n_boot": n_boot,
        "checkpoint": {"best": meta.get("best")},
    }

    def subset(scored: ScoredSet, keep: np.ndarray) -> dict[str, Any] | None:
        return scored.metrics(classes, n_boot, seed, keep) if keep.any() else None

    if is_ensemble(meta):  # each member's run, seed and best epoch
        metrics["checkpoint"]["members"] = meta["members"]
    for scored in sets:
        m = scored.metrics(classes, n_boot, seed)
        if scored.kind == "test":
            metrics["test"] = m
            metrics["test_leak_free"] = subset(scored, scored.leak_free)
        else:
            keep = scored.leak_free
            metrics["extra"][scored.name] = m
            metrics["extra_seen"][scored.name] = int((~keep).sum())
            metrics["extra_leak_free"][scored.name] = m if keep.all() else subset(scored, keep)
        metrics["figures"][scored.name] = write_figures(dest.root, scored, m, classes)
    scored_extras = [s for s in sets if s.kind == "extra"]
    if len(scored_extras) >= 2:
        pooled = pool(scored_extras)
        metrics["extra_combined"] = pooled.metrics(classes, n_boot, seed)
        metrics["extra_combined_leak_free"] = (
            metrics["extra_combined"] if pooled.leak_free.all()
            else subset(pooled, pooled.leak_free))
    if not sets:
        raise BraincamError(f"{run.root} has no test images and no extra data was given")
    atomic_write_csv(dest.predictions, predictions_frame(sets, classes))
    atomic_write_json(dest.metrics, metrics)
    for name in earlier - _figures(dest):  # of sets no longer scored
        (dest.root / name).unlink(missing_ok=True)
    return metrics


COMBINED = "extra_combined"
TEST_SETS = ("test", "test_leak_free")  # metrics.json's own sets: no extra folder is named so


@dataclass(frozen=True)
class ExtraSet:
    """One extra set of ``metrics.json``: a dataset folder, or all of them pooled (``name``
    :data:`COMBINED`), whole or (``leak_free``) without the ``seen`` images the model learnt
    from; ``metrics`` is None where every image was seen."""

    name: str
    leak_free: bool
    seen: int
    metrics: dict[str, Any] | None


def extra_sets(metrics: dict[str, Any]) -> list[ExtraSet]:
    """Each extra dataset, then the pooled sets, each followed by its leak-free part where some
    of its images were seen: the one reading of ``extra``, ``extra_seen``, ``extra_leak_free``,
    ``extra_combined`` and ``extra_combined_leak_free`` (module docstring)."""
    seen = {name: n for name, n in json_object(metrics.get("extra_seen")).items()
            if isinstance(n, int) and not isinstance(n, bool) and n > 0}
    free = json_object(metrics.get("extra_leak_free"))
    sets = []
    for name, m in json_object(metrics.get("extra")).items():
        sets.append(ExtraSet(name, False, seen.get(name, 0), m))
        if name in seen:
            sets.append(ExtraSet(name, True, seen[name], free.get(name)))
    if metrics.get(COMBINED):
        total = sum(seen.values())
        sets.append(ExtraSet(COMBINED, False, total, metrics[COMBINED]))
        if total:
            sets.append(ExtraSet(COMBINED, True, total, metrics.get(f"{COMBINED}_leak_free")))
    return [s for s in sets if s.metrics is None or isinstance(s.metrics, dict)]


def extra_rows(metrics: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(name, description, M)`` for people (the report, the command lines) of each
    :func:`extra_sets` entry that has figures."""
    rows = []
    for s in extra_sets(metrics):
        if not s.metrics:
            continue
        pooled = s.name == COMBINED
        name = "other datasets pooled" if pooled else s.name
        if not s.leak_free:
            rows.append((name, "the other datasets pooled" if pooled
                         else f"{name} (another dataset)", s.metrics))
        else:
            whole = "the other datasets pooled," if pooled else name
            rows.append((f"{name}, leak-free", f"{whole} without the {s.seen} images the model "
                         "learnt from", s.metrics))
    return rows


def with_groups(sets: Sequence[ScoredSet], records: dict[str, list]) -> list[ScoredSet]:
    """``sets`` with their groups (:func:`braincam.data.splits.record_groups`): the test
    set's own, and one grouping of all extra sets at once, so that a copy in two sets is one
    group of the pooled set. ``records``: each set's scored records, by set name."""
    from dataclasses import replace

    from braincam.data.splits import record_groups as group

    extras = [s for s in sets if s.kind == "extra"]
    ids = group([r for s in extras for r in records[s.name]])
    bounds = np.cumsum([0] + [len(s.y) for s in extras])
    spans = {s.name: (a, b) for s, a, b in zip(extras, bounds[:-1], bounds[1:], strict=True)}
    return [replace(s, groups=group(records[s.name]) if s.kind == "test"
                    else ids[slice(*spans[s.name])]) for s in sets]


def pool(sets: Sequence[ScoredSet]) -> ScoredSet:
    """``sets`` as one (``extra_combined``); their groups, formed over all of them at once,
    stay as they are (a copy in two sets is one group)."""
    flags = [s.leak_free for s in sets]
    return ScoredSet(
        COMBINED, "extra", [p for s in sets for p in s.paths],
        [d for s in sets for d in s.datasets], np.concatenate([s.y for s in sets]),
        np.concatenate([s.prob for s in sets]),
        None if any(f is None for f in flags) else np.concatenate(flags),
        None if any(s.groups is None for s in sets) else np.concatenate(
            [s.groups for s in sets]))


def predictions_frame(sets: Sequence[ScoredSet], classes: Sequence[str]):  # -> DataFrame
    """One row per scored image (see the module docstring)."""
    import pandas as pd

    frames = []
    for s in sets:
        frame = pd.DataFrame({
            "path": s.paths,
            "dataset": s.datasets,
            "split": s.kind,
            "leak_free": s.leak_free if s.leak_free is not None else [None] * len(s.paths),
            "label": [classes[i] for i in s.y],
            "pred": [classes[i] for i in s.prob.argmax(1)],
        })
        for i, name in enumerate(classes):
            frame[f"prob_{name}"] = significant(s.prob[:, i])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def significant(values: np.ndarray, digits: int = 6) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits, not decimals: a confident model gives
    the other classes probabilities of 1e-7 to 1e-12, which six decimals would tie at 0, so an
    AUC or a ranking recomputed from ``predictions.csv`` would differ from ``metrics.json``."""
    return np.array([float(f"{v:.{digits}g}") for v in np.asarray(values, dtype=float)])


def _test_records(run: RunDir):
    """The run's test images (from ``split.csv``) as records of its data roots, with their
    leak-free flags. Only these are decoded, not the training images."""
    from braincam.data.records import records_at

    table = run.read_split()
    test = table[table["split"] == "test"]
    if test.empty:
        log.warning("%s: the split has no test images", run.root)
        return [], None
    flags = test["leak_free"].to_numpy() if "leak_free" in test else None
    return records_at(run.data_roots(), test["path"].tolist(), run.split), flags


def learnt_from(run: RunDir, meta: dict[str, Any] | None = None, own: bool = True
                ) -> list[tuple[Path, int | None]]:
    """The images the model learnt from (module docstring), as ``(file, slice)``
    (:func:`key_file` of each key): ``split.csv`` rows other than ``test`` of the run (unless
    not ``own``) and the images of the segmenters guiding it (:func:`guide_learnt`). Images
    whose file is no longer there are left out with a warning. ``meta``: the checkpoint's,
    read from the run when None."""
    from braincam.models.checkpoint import read_meta

    meta = read_meta(run.model) if meta is None else meta
    paths = (split_learnt(run) if own else []) + guide_learnt(run, meta)
    listed = [key_file(p) for p in dict.fromkeys(paths)]
    found = [(file, k) for file, k in listed if file.is_file()]
    if len(found) < len(listed):
        log.warning("%d of the %d images %s learnt from are no longer at their paths; copies "
                    "of them cannot be told apart", len(listed) - len(found), len(listed),
                    run.root)
    return found


def guide_learnt(run: RunDir, meta: dict[str, Any]) -> list[str]:
    """The record keys the segmenters guiding ``run`` trained or validated on: its
    ``guide_learnt.csv``, written when it was trained (an ensemble's: its members'), else,
    for a run without that file, the ``split.csv`` rows other than ``test`` of the guide runs
    its checkpoint names. A guided run whose guides' images cannot be read gets a warning:
    its leak-free figures may then count images the guide learnt from."""
    from braincam.models.segment import guide_members

    if run.guide_learnt.is_file():
        import pandas as pd

        try:
            return pd.read_csv(run.guide_learnt, dtype=str)["path"].dropna().tolist()
        except (OSError, ValueError, KeyError) as exc:
            raise BraincamError(f"{run.guide_learnt} cannot be read ({exc}); train the run "
                                "again") from None
    sources = [meta["guide"]["source"]] if meta.get("guide") else [
        m["guide"]["source"] for m in meta.get("members") or () if m.get("guide")]
    if not sources:
        return []
    members = [RunDir(p) for source in sources for p in guide_members(source, run.root)]
    missing = [m.root for m in members if not m.split.is_file()]
    if missing:
        log.warning("%s: cannot read what its guide learnt from (%s holds no split.csv); "
                    "copies of those images count as unseen", run.root, missing[0])
    return [p for m in members for p in split_learnt(m)]


def split_learnt(run: RunDir) -> list[str]:
    """The ``split.csv`` rows of ``run`` other than ``test`` (none without the file)."""
    if not run.split.is_file():
        return []
    table = run.read_split()
    return table.loc[table["split"] != "test", "path"].tolist()


def write_guide_learnt(run: RunDir, keys: Sequence[str]) -> None:
    """``guide_learnt.csv`` of ``keys`` (:meth:`RunDir.guide_learnt`), each once, in order."""
    import pandas as pd

    atomic_write_csv(run.guide_learnt, pd.DataFrame({"path": list(dict.fromkeys(keys))}))


def _warn_seen_by_guide(meta: dict[str, Any], extra_roots: Sequence[Path | str]) -> None:
    """A warning for each extra dataset that trained the model's guide (``--guide``): its
    figures are not those of unseen data."""
    from braincam.models.segment import guide_data

    if not meta.get("guide"):
        return
    seen = set(guide_data(meta["guide"]["source"]))
    for root in extra_roots:
        if Path(root).resolve() in seen:
            log.warning("%s trained the guide's segmenter (all but its held-out patient "
                        "groups): its figures are not those of unseen data", root)


def _data_roots(run: RunDir) -> list[Path]:
    """The run's training folders; none for a run that names none (an ensemble's)."""
    try:
        return run.data_roots()
    except BraincamError:
        return []


def _extra_records(roots: Sequence[Path | str], classes: list[str], task: str,
                   taken: set[str] = frozenset()):
    """``(dataset name, records)`` per extra root: all its images, labels mapped to the task;
    images whose class the model does not know are left out with a warning. A name is the
    folder's, ``_`` appended while it repeats an earlier one, one of ``taken`` (the training
    data's sources, which name the test rows) or a test set's: as the model audit names it."""
    from braincam.data.records import load_dataset

    names: set[str] = set(taken)
    for root in roots:
        records = load_dataset([root]).records
        known = [r for r in records if task_label(r.label, task) in classes]
        if len(known) < len(records):
            log.warning("%s: %d images of classes the model does not know are left out",
                        root, len(records) - len(known))
        if not known:
            raise BraincamError(f"{root}: no image of the model's classes ({', '.join(classes)})")
        name = distinct_name(Path(root).resolve().name, names, reserved=TEST_SETS)
        yield name, known


def _figures(dest: RunDir) -> set[str]:
    """The figure files ``dest``'s metrics.json lists (none when it cannot be read)."""
    try:
        figures = read_json(dest.metrics).get("figures") or {}
    except (BraincamError, OSError, ValueError, AttributeError):
        return set()
    return {name for files in (figures.values() if isinstance(figures, dict) else ())
            for name in ((files or {}).values() if isinstance(files, dict) else ())
            if isinstance(name, str) and Path(name).name == name}  # files of dest itself


def write_figures(root: Path, scored: ScoredSet, m: dict[str, Any], classes: list[str]):
    """Confusion matrix and ROC figures of one set; file names relative to the run."""
    from braincam.evaluate.plots import confusion_figure, roc_figure

    confusion, roc = f"confusion_{scored.name}.png", f"roc_{scored.name}.png"
    title = f"{scored.name} (n={m['n']})"
    confusion_figure(m["confusion_matrix"], classes, title, root / confusion)
    has_roc = roc_figure(scored.y, scored.prob, classes, title, root / roc)
    return {"confusion": confusion, "roc": roc if has_roc else None}
