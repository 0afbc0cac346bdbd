"""Where a guided classifier's segmenter comes from (``--guide``, :mod:`braincam.models.guided`).

``--guide`` takes comma-separated parts. A part that holds a ``model.safetensors`` is a
``braincam segment`` run; any other part is a dataset folder with tumour masks
(``ROOT/masks/``). The dataset folders together train one segmenter first, with
``braincam segment``'s default settings and the classifier's ``--seed`` and ``--device``, into
the classifier's run directory (``RUN/guide/``, a complete segment run with its own
``metrics.json``, ``split.csv`` and overlays). That segmenter joins the named runs, and all of
them guide with their mean probability. So one command trains the whole grounded recipe:

    braincam train SARTAJ --guide FIGSHARE,BR35H --finetune-epochs 0 ...

The segmenter's own split holds out whole patient groups for its ``metrics.json``; the
classifier's split is separate. The classifier's test images play no part in the segmenter
(``train_segmenter(left_out=...)``): where ``--guide`` names the classifier's own folder (with
``--guide-weak-labels``, e.g. ``SARTAJ/Training``) under a split that tests on some of its
images (``--split dedup``), the segmenter never sees them, so the test figure stays one of unseen
images. Its validation images do train the segmenter. A classifier later evaluated on other
images of those dataset folders is evaluated on images its segmenter trained on (all but the
held-out groups). ``braincam cv`` trains one segmenter for all folds when the folders hold none
of its images, else one per fold without the fold's test images (:mod:`braincam.train.cv`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from braincam.errors import BraincamError
from braincam.models.segment import check_preprocess, guide_members, guide_parts
from braincam.runs import RunDir, as_written
from braincam.train.config import TrainConfig

if TYPE_CHECKING:
    from braincam.train.segment import SegmentConfig


@dataclass(frozen=True)
class GuidePlan:
    """The parts of ``--guide``: segment runs to load, dataset folders to train one on."""

    runs: list[Path]
    data: list[Path]


def resolved_guide(source: str) -> str:
    """``--guide``'s parts as absolute paths: a segment run or folder is the same guide
    however it is spelt, and the checkpoint that records it is read from any directory."""
    return ",".join(str(Path(p.strip()).resolve()) for p in source.split(",") if p.strip())


def guide_plan(source: str) -> GuidePlan:
    """Split ``--guide`` into segment runs and dataset folders (module docstring); a part that
    is neither a run nor a folder, or a run directory without its model, is a one-line
    error."""
    runs, data = guide_parts(source)
    if not runs + data:
        raise BraincamError("--guide names no segmenter run or dataset folder")
    for p in data:
        if not p.is_dir():
            raise BraincamError(f"--guide {p}: neither a braincam segment run nor a dataset "
                                "folder")
        if RunDir(p).config.is_file():
            raise BraincamError(f"--guide {p} holds a run's config.yaml but no "
                                "model.safetensors: an unfinished run?")
    return GuidePlan(runs, data)


def segment_config(config: TrainConfig) -> SegmentConfig:
    """The settings of the segmenter trained from ``--guide`` dataset folders: ``braincam
    segment``'s defaults with the classifier's seed and device, ``--weak-labels`` with
    ``--guide-weak-labels``, ``--epochs`` from ``--guide-epochs`` and ``--freeze-blocks`` from
    ``--guide-freeze-blocks``."""
    from braincam.train.segment import SegmentConfig

    seg = SegmentConfig(seed=config.seed, device=config.device,
                        weak_labels=config.guide_weak_labels,
                        freeze_blocks=config.guide_freeze_blocks)
    return seg if config.guide_epochs is None else replace(seg, epochs=config.guide_epochs)


def check_training_options(plan: GuidePlan, config: TrainConfig) -> None:
    """The options of the segmenter to train (``--guide-weak-labels``, ``--guide-epochs``,
    ``--guide-freeze-blocks``) need dataset folders in ``--guide``: given with segment runs
    alone, they would be recorded in config.yaml and change nothing."""
    for flag, given in (("--guide-weak-labels", config.guide_weak_labels),
                        ("--guide-epochs", config.guide_epochs is not None),
                        ("--guide-freeze-blocks", config.guide_freeze_blocks > 0)):
        if given and not plan.data:
            raise BraincamError(f"{flag} trains a segmenter on --guide's dataset folders, "
                                "and --guide names none")


def check_plan(plan: GuidePlan, config: TrainConfig) -> None:
    """Before anything is trained: the segmenter to train must crop like the classifier, and
    the named runs must share its input side and preprocessing (they guide as one mean)."""
    from braincam.models.checkpoint import read_meta

    seg = segment_config(config)
    try:
        seg.validate()
    except BraincamError as exc:
        raise BraincamError(f"--guide's segmenter: {exc}") from None
    planned = {"size": seg.size, "preprocess": asdict(seg.preprocess)}
    check_preprocess(planned, config.preprocess, "of --guide")
    for run in plan.runs:
        meta = read_meta(RunDir(run).model)
        for key, value in planned.items():
            if meta.get(key) != value:
                raise BraincamError(f"--guide {run} differs in {key} from the segmenter "
                                    "trained on the --guide folders (braincam segment's "
                                    "defaults); a mean of segmenters needs the same")


def train_guide(plan: GuidePlan, config: TrainConfig, run_dir: Path | str,
                progress: bool = False, left_out: Collection[Path] = (),
                command: str | None = None) -> list[Path]:
    """Train the segmenter of ``plan.data`` into ``run_dir/guide`` without the images of
    ``left_out`` that lie in those folders (the classifier's test images); its config.yaml
    names ``command`` (the classifier's) as the one that trained it. Nothing is trained
    when there is no dataset folder, nor when a finished one with the same data, settings and
    left-out images is there (``braincam cv`` trains it once for all folds). Returns the runs
    that guide (:func:`braincam.models.segment.guide_members`). Every torchrun process calls
    it."""
    from braincam.train.segment import train_segmenter

    seg = segment_config(config)
    target = RunDir(RunDir(run_dir).guide)
    roots = [p.resolve() for p in plan.data]
    resolved = [Path(p).resolve() for p in left_out]
    left_out = [p for p in resolved if any(p.is_relative_to(root) for root in roots)]
    if plan.data and not finished(target, plan.data, seg, left_out):
        train_segmenter(plan.data, seg, target.root, force=True, progress=progress,
                        command=f"{command or 'braincam train --guide ' + config.guide} "
                        "(this segmenter: its --guide)", left_out=left_out)
    return guide_members([*plan.runs, *plan.data], run_dir)


def holds_any(folders: Collection[Path], roots: Collection[Path | str]) -> bool:
    """Whether a dataset folder of ``folders`` holds images of ``roots``: one folder lies
    inside the other, or a file under ``roots`` resolves (through links) into a folder."""
    inner = [Path(r).resolve() for r in roots]
    outer = [Path(f).resolve() for f in folders]
    if any(r.is_relative_to(f) or f.is_relative_to(r) for r in inner for f in outer):
        return True
    files = (p.resolve() for r in inner for p in r.rglob("*") if p.is_file())
    return any(p.is_relative_to(f) for p in files for f in outer)


def finished(run: RunDir, data: list[Path], seg: SegmentConfig,
             left_out: Collection[Path] = ()) -> bool:
    """Whether ``run`` is a finished segment run (``metrics.json``, and its model) of ``data``
    as it is now (the digest of its files' listing, where ``config.yaml`` records one) without
    the images ``left_out``, with the settings ``seg`` (the device aside); a setting its
    ``config.yaml`` lacks (one added to braincam after the run) counts as that setting's
    default, which the run trained with."""
    from braincam.data.records import listing_digest
    from braincam.train.segment import left_out_digest

    if not (run.metrics.is_file() and run.model.is_file()):
        return False
    try:
        doc = run.read_config()
    except BraincamError:
        return False
    wanted = as_written(asdict(seg))
    stored = as_written(asdict(type(seg)())) | dict(doc.get("segment") or {})
    wanted.pop("device"), stored.pop("device", None)
    listing = doc.get("data_listing_sha256")
    return (stored == wanted and doc.get("data") == [str(p.resolve()) for p in data]
            and doc.get("left_out_sha256") == left_out_digest(left_out)
            and (listing is None or listing == listing_digest(data)))
