"""Training curves and a per-phase summary from history.csv, the recipe in one sentence
from config.yaml (guided by a segmenter or plain, and the remedies used), and for a guided run
how well each guiding segmenter outlines tumours on its own held-out images (its
``metrics.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from braincam.report.figures import training_curves
from braincam.report.sources import (
    UNREADABLE,
    Part,
    load_json_object,
    read_csv_part,
    read_yaml_part,
)
from braincam.runs import RunDir


@dataclass
class PhaseSummary:
    """One training phase: how long, and its best validation balanced accuracy."""

    phase: str
    epochs: int
    best_val_balanced_accuracy: Any
    best_epoch: Any
    last_val_loss: Any
    seconds: Any


@dataclass
class GuideScore:
    """A segment run that guides the classifier, on its own held-out images."""

    run: str
    n_tumour_images: Any
    mean_dice: Any
    per_class_dice: dict[str, Any]
    detection_rate: Any
    n_tumour_free_images: Any
    false_positive_rate: Any
    page: str | None = None  # its report.html (``braincam report SEG``), when written


@dataclass
class TrainingSection:
    part: Part
    curves: str | None = None
    phases: list[PhaseSummary] = field(default_factory=list)
    recipe: str | None = None
    guides: list[GuideScore] = field(default_factory=list)


def collect_training(run: RunDir) -> TrainingSection:
    part, history = read_csv_part(run, run.history, "training history")
    _, config = read_yaml_part(run, run.config, "run settings")
    train = (config or {}).get("train")
    recipe = recipe_sentence(train, _threshold(run)) if isinstance(train, dict) else None
    guides = guide_scores(run, train.get("guide")) if isinstance(train, dict) else []
    if history is None:
        return TrainingSection(part, recipe=recipe, guides=guides)
    if history.empty:
        return TrainingSection(Part(part.name, part.relpath, UNREADABLE, "no epochs recorded"),
                               recipe=recipe, guides=guides)
    if "phase" not in history.columns:
        history = history.assign(phase="1")
    phases = [
        _phase(str(name), rows) for name, rows in history.groupby("phase", sort=False)
    ]
    return TrainingSection(part, training_curves(history), phases, recipe, guides)


def guide_scores(run: RunDir, guide: Any) -> list[GuideScore]:
    """The held-out figures of each segment run guiding ``run`` (config ``train.guide``,
    :func:`braincam.models.segment.guide_members`: the runs it names, and ``run/guide`` when
    it names dataset folders); a member whose ``metrics.json`` cannot be read is left out."""
    if not guide:
        return []
    from braincam.models.segment import guide_members

    scores = []
    for member in guide_members(str(guide), run.root):
        try:
            m = load_json_object(RunDir(Path(member)).metrics)
        except (OSError, ValueError):
            continue
        page = RunDir(Path(member)).report
        scores.append(GuideScore(
            str(member), m.get("n_tumour_images"), m.get("mean_dice"),
            m.get("per_class_dice") or {}, m.get("detection_rate"),
            m.get("n_tumour_free_images"), m.get("false_positive_rate"),
            _link(page, run.root) if page.is_file() else None))
    return scores


def _link(page: Path, root: Path) -> str:
    """``page`` relative to the run folder when it lies inside it (the link survives moving
    the run), else as a file URI."""
    try:
        return page.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return page.resolve().as_uri()


def _threshold(run: RunDir) -> float | None:
    """The tumour threshold folded into the run's model (meta ``threshold``), if any."""
    from braincam.errors import BraincamError
    from braincam.models.checkpoint import read_meta

    try:
        return read_meta(run.model).get("threshold")
    except (BraincamError, OSError, ValueError):
        return None


def recipe_sentence(train: dict[str, Any], threshold: float | None = None) -> str:
    """config.yaml's ``train`` settings as one sentence: guided (by which segmenters, with
    which floor, head alone or fine-tuned) or plain, then the remedies that are on, then the
    decision rule when ``--tune-threshold`` chose one (``threshold``: the model's)."""
    arch = train.get("arch") or "the network"
    finetune = train.get("finetune_epochs") or 0
    head = train.get("head_epochs", 1)  # absent in older config.yaml: the head trained first
    trained = ("the head alone on the backbone's features" if not finetune
               else f"the head, then the backbone's last stages fine-tuned for up to {finetune} "
               "epochs" if head
               else f"the head and the backbone's last stages together for up to {finetune} "
               "epochs")
    guide = train.get("guide")
    if guide:
        segmenters = ", ".join(p.strip() for p in str(guide).split(",") if p.strip())
        floor = train.get("guide_floor") or 0
        rest = ("nothing else reaches it" if not floor
                else f"the rest of the image reaches it at weight {floor:g}")
        cut = train.get("guide_cut") or 0
        where = "predicts tumour" if not cut else f"predicts tumour with probability >= {cut:g}"
        text = (f"Recipe: guided. {arch} pools its features where the tumour segmenter of "
                f"--guide {segmenters} {where}, and {rest}; trained: {trained}.")
    else:
        text = (f"Recipe: plain (no segmenter guide). {arch} may use any part of the image; "
                f"the audits below show which. Trained: {trained}.")
    guide_views = "lesion views of the segmenter's training images"
    if train.get("guide_views_max"):
        guide_views += f" (at most {train['guide_views_max']})"
    from braincam.train.config import VIEWS_WEIGHT

    weight = train.get("guide_views_weight")
    guide_views += (", pooled with the own images" if weight == 0 else
                    f", weighing {VIEWS_WEIGHT if weight is None else weight:g} times the "
                    "own images")
    prep = train.get("preprocess") if isinstance(train.get("preprocess"), dict) else {}
    standardize = prep.get("standardize")
    upweight = train.get("upweight_errors")
    remedies = [f"attention penalty {train['attention_penalty']:g}"
                if train.get("attention_penalty") else None,
                f"phase 1's errors shown {upweight} times (--upweight-errors)"
                if finetune and isinstance(upweight, int) and upweight > 1 else None,
                f"contrast remapping {train['contrast_remap']:g}"  # phase 2's augmentation
                if finetune and train.get("contrast_remap") else None,
                "the brain interior only (--mask-skull)" if prep.get("mask_skull") else
                "the head only (--mask-background)" if prep.get("mask_background") else None,
                f"intensities standardised ({standardize})"
                if standardize and standardize != "none" else None,
                f"mask reward {train['mask_reward']:g}" if train.get("mask_reward") else None,
                "counterfactual pairs" if train.get("counterfactual_pairs") else None,
                "lesion views" if train.get("view_pairs") else None,
                guide_views if train.get("guide_views") else None]
    remedies = [r for r in remedies if r]
    text += f" Remedies: {', '.join(remedies)}." if remedies else ""
    if train.get("tune_threshold"):
        value = "" if threshold is None else f" {threshold:.3f}"
        text += (f" Decision: tumour where P(tumour) reaches the threshold{value} chosen on "
                 "validation (--tune-threshold), not 0.5.")
    return text


AVERAGED = {"heads": "heads'", "average": "epochs'"}  # one row: a mean of weights, not an epoch


def _phase(name: str, rows: pd.DataFrame) -> PhaseSummary:
    """The phase's best epoch by training's own rule (:class:`braincam.train.loop.BestTracker`):
    the highest validation balanced accuracy, ties to the lower validation loss. The row of
    a phase of :data:`AVERAGED` scores the mean of the weights of its ``epoch`` heads or
    epochs: it trains no epoch, and has no best one."""
    summary = _trained_phase(name, rows)
    count = pd.to_numeric(rows.get("epoch", pd.Series(dtype=float)), errors="coerce")
    if name in AVERAGED and len(rows) == 1 and count.notna().all():
        return PhaseSummary(f"{name} (the mean of {int(count.iloc[0])} {AVERAGED[name]} "
                            "weights)", 0, summary.best_val_balanced_accuracy, None,
                            summary.last_val_loss, summary.seconds)
    return summary


def _trained_phase(name: str, rows: pd.DataFrame) -> PhaseSummary:
    best = bacc = last_loss = seconds = None
    if "val_balanced_accuracy" in rows.columns:
        scores = pd.to_numeric(rows["val_balanced_accuracy"], errors="coerce")
        if scores.notna().any():
            tied = scores[scores == scores.max()].index
            losses = pd.to_numeric(rows.get("val_loss", pd.Series(index=rows.index)),
                                   errors="coerce")[tied]
            best_row = losses.idxmin() if losses.notna().any() else tied[0]
            bacc = float(scores[best_row])
            if "epoch" in rows.columns:
                epoch = pd.to_numeric(rows["epoch"], errors="coerce")[best_row]
                best = int(epoch) if pd.notna(epoch) else None
    if "val_loss" in rows.columns:
        losses = pd.to_numeric(rows["val_loss"], errors="coerce").dropna()
        last_loss = float(losses.iloc[-1]) if len(losses) else None
    if "seconds" in rows.columns:
        seconds = float(pd.to_numeric(rows["seconds"], errors="coerce").sum())
    return PhaseSummary(name, len(rows), bacc, best, last_loss, seconds)
