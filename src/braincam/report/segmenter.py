"""The report of a segment run (``braincam report SEG``, SEG made by ``braincam segment``), or
of a segmenter's scores on other folders (``braincam report DIR``, DIR written by ``braincam
segment SEG --evaluate DATA --out DIR``: the same held-out figures and overlays, then the images
none of the segmenters learnt from).

One page, in the order a reader checks a segmenter: how well it outlines held-out tumours
(mean Dice and IoU, Dice per class, detection rate = share of tumour images with Dice > 0.5)
and how often it marks tumour-free images (false-positive rate, per source); the mask rule
it chose on validation; the distribution of held-out Dice per class (``per_image.csv``); the
data and its split; the training curves; the run's overlay pictures (expert outline green,
predicted red); its command and settings. Every part reads the run without failing, like the
classifier report (:mod:`braincam.report.sources`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braincam.evaluate.segmentation import DETECTED_DICE
from braincam.labels import CANONICAL, NO_TUMOR
from braincam.report.figures import Figure, embed_image_file, figure_uri, training_curves
from braincam.report.fmt import num
from braincam.report.overview import OverviewSection, collect_overview
from braincam.report.settings import SettingsSection, collect_settings
from braincam.report.sources import (
    UNREADABLE,
    Part,
    read_csv_part,
    read_json_part,
)
from braincam.report.tables import Table
from braincam.runs import RunDir, true_flags

TEMPLATE = "segment.html"
OVERLAYS_PER_CLASS = 8  # at most, spread from the worst Dice to the best
_OVERLAY_NAME = re.compile(r"^(?P<name>.+_.+)_dice(?P<dice>\d+(?:\.\d+)?)$")  # label_stem_diceD


@dataclass
class HeldOut:
    """The held-out figures of ``metrics.json`` and ``per_image.csv``."""

    part: Part
    measures: list[tuple[str, Any]] = field(default_factory=list)
    per_class: Table | None = None
    false_positives: list[tuple[str, Any]] = field(default_factory=list)
    rule: str | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    extras: list[tuple[str, list[tuple[str, Any]]]] = field(default_factory=list)
    dice_figure: str | None = None
    per_image_part: Part | None = None  # per_image.csv as found: its counts and the box plot


@dataclass
class SegmentTraining:
    part: Part
    curves: str | None = None
    facts: list[tuple[str, Any]] = field(default_factory=list)
    validated: bool = True  # epochs scored on validation images (else the last one is kept)


@dataclass
class SegmenterReport:
    """Everything ``templates/segment.html`` shows; ``scored`` names the segmenters and folders
    of a ``--evaluate`` output (None for a segment run)."""

    run_name: str
    summary: str
    scored: str | None
    held_out: HeldOut
    overview: OverviewSection
    training: SegmentTraining
    overlays: list[Figure]
    settings: SettingsSection

    @property
    def template(self) -> str:
        return TEMPLATE


def collect_segmenter_report(run_dir: Path) -> SegmenterReport:
    """The report's parts from a segment run directory; missing files read "not run"."""
    run = RunDir(Path(run_dir))
    part, metrics = read_json_part(run, run.metrics, "held-out scores")
    scored = None
    if _names_segmenters(metrics):
        scored = (f"Scores of {', '.join(map(str, metrics['segmenters']))} on "
                  f"{', '.join(map(str, metrics.get('data') or []))} (braincam segment SEG "
                  "--evaluate).")
    settings = collect_settings(run)
    if scored:  # the scored segmenters' own runs hold their settings
        settings.part = settings.part.not_applicable(
            "an --evaluate folder trains nothing; each segmenter's report gives its settings")
    return SegmenterReport(
        run_name=run.root.resolve().name,
        summary=_summary(part, metrics, held_out=scored is None),
        scored=scored,
        held_out=_held_out(run, part, metrics, held_out=scored is None),
        overview=collect_overview(run),
        training=_training(run, metrics or {}),
        overlays=_overlays(run.overlays),
        settings=settings,
    )


def is_score_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a ``braincam segment SEG --evaluate`` output: a
    ``metrics.json`` that names the ``segmenters`` scored."""
    run = RunDir(Path(folder))
    return _names_segmenters(read_json_part(run, run.metrics, "scores")[1])


def _names_segmenters(metrics: dict[str, Any] | None) -> bool:
    return isinstance(metrics, dict) and isinstance(metrics.get("segmenters"), list)


def _held_out(run: RunDir, part: Part, m: dict[str, Any] | None,
              held_out: bool = True) -> HeldOut:
    section = HeldOut(part)
    if m is None:
        return section
    section.measures = [
        ("tumour images", m.get("n_tumour_images")),
        ("mean Dice", m.get("mean_dice")),
        ("mean IoU", m.get("mean_iou")),
        (f"detection rate (Dice > {DETECTED_DICE})", m.get("detection_rate")),
        ("tumour-free images", m.get("n_tumour_free_images")),
        ("false-positive rate (any tumour pixel)", m.get("false_positive_rate")),
        ("Dice over all images (tumour-free: 1 when nothing is marked)",
         m.get("all_image_dice")),
    ]
    section.per_image_part, per_image = read_csv_part(run, run.per_image, "per-image scores")
    section.per_class = _per_class(m.get("per_class_dice"), per_image)
    by_source = m.get("false_positive_rate_by_source")
    if isinstance(by_source, dict):
        section.false_positives = sorted(by_source.items())
    members = m.get("member_rules")
    if isinstance(members, list) and members and all(isinstance(r, dict) for r in members):
        each = ", ".join(f"P >= {num(r.get('threshold'))} on "
                         + ("the mirror average" if r.get("flip_average") else "the image")
                         for r in members)
        section.rule = (f"the mean of the {len(members)} segmenters' probabilities, each "
                        f"rescaled to its own rule ({each}), is >= 0.5")
    elif m.get("threshold") is not None:
        mean = "the mean of the image and its mirror image" if m.get("flip_average") else \
            "the image alone"
        section.rule = f"P(tumour) >= {num(m.get('threshold'))}, on {mean}"
    decision = m.get("decision")
    if isinstance(decision, dict) and isinstance(decision.get("candidates"), list):
        section.rule = f"{section.rule}; chosen by {decision.get('chosen_by', 'validation')}"
        chosen = (decision.get("flip_average"), decision.get("threshold"))
        section.candidates = [
            {**c, "chosen": (c.get("flip_average"), c.get("threshold")) == chosen}
            for c in decision["candidates"] if isinstance(c, dict)]
    for key, title in (("weak", "Tumour images without a mask (weak labels)"),
                       ("counterfactual", "Counterfactual copies of held-out tumours"),
                       ("unseen", f"Without the {m.get('n_seen')} images a segmenter learnt "
                                  "from or copies of them")):
        if isinstance(m.get(key), dict):
            section.extras.append((title, [
                (k.replace("_", " "), v) for k, v in m[key].items() if not isinstance(v, dict)]))
    if per_image is not None:
        section.dice_figure = dice_by_class(per_image, held_out)
    return section


def _per_class(dice: Any, per_image: pd.DataFrame | None) -> Table | None:
    """Mean Dice per tumour class (``metrics.json``), with each class's image count and
    detection rate where ``per_image.csv`` has them."""
    if not isinstance(dice, dict) or not dice:
        return None
    counts: dict[str, tuple[int, float]] = {}
    rows = _scored(per_image)
    if rows is not None:
        for label, group in rows.groupby(rows["label"].astype(str)):
            counts[label] = (len(group), float((group["dice"] > DETECTED_DICE).mean()))
    return Table(["mean Dice", "images", "detection rate"], [
        (str(label), [value, *counts.get(str(label), (None, None))])
        for label, value in dice.items()], "class")


def _scored(per_image: pd.DataFrame | None) -> pd.DataFrame | None:
    """The tumour images of ``per_image.csv`` with an expert mask and a Dice; None when the
    file lacks the columns."""
    if per_image is None or not {"label", "dice", "mask"} <= set(per_image.columns):
        return None
    rows = per_image.assign(dice=pd.to_numeric(per_image["dice"], errors="coerce"))
    rows = rows[true_flags(rows["mask"]) & (rows["label"].astype(str) != NO_TUMOR)]
    return rows.dropna(subset=["dice"])


def dice_by_class(per_image: pd.DataFrame, held_out: bool = True) -> str | None:
    """Box plot of the tumour images' Dice per class (points: the images): a run's held-out
    images, or (not ``held_out``) the images an --evaluate folder scored."""
    rows = _scored(per_image)
    if rows is None or rows.empty:
        return None
    from matplotlib.figure import Figure as MplFigure

    labels = sorted(rows["label"].astype(str).unique())
    values = [rows.loc[rows["label"].astype(str) == lab, "dice"].to_numpy() for lab in labels]
    fig = MplFigure(figsize=(6, 3.2))
    ax = fig.subplots()
    ax.boxplot(values, showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), [f"{lab}\n({len(v)})" for lab, v in
                                              zip(labels, values, strict=True)])
    jitter = np.random.default_rng(0)
    for i, v in enumerate(values, start=1):
        ax.plot(i + jitter.uniform(-0.15, 0.15, len(v)), v, ".", alpha=0.35, markersize=3)
    ax.axhline(DETECTED_DICE, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("Dice per held-out image" if held_out else "Dice per image")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return figure_uri(fig)


def _training(run: RunDir, m: dict[str, Any]) -> SegmentTraining:
    part, history = read_csv_part(run, run.history, "training history")
    facts = [(k.replace("_", " "), m.get(k)) for k in
             ("epochs", "best_epoch", "train_seconds", "train_images_per_second", "device",
              "world_size") if m.get(k) is not None]
    if history is None:
        return SegmentTraining(part, facts=facts)
    if history.empty:
        return SegmentTraining(Part(part.name, part.relpath, UNREADABLE, "no epochs recorded"),
                               facts=facts)
    validated = "val_score" in history and bool(history["val_score"].notna().any())
    return SegmentTraining(part, training_curves(history), facts, validated)


def _overlays(folder: Path) -> list[Figure]:
    """The run's overlay PNGs (``overlays/<label>_<stem>_dice<D>.png``), worst Dice first
    within each class, at most :data:`OVERLAYS_PER_CLASS` of a class spread evenly from the
    worst to the best, captioned ``label, stem: Dice D``."""
    if not folder.is_dir():
        return []
    by_label: dict[str, list[tuple[float, str, Path]]] = {}
    for path in folder.glob("*.png"):
        match = _OVERLAY_NAME.match(path.stem)
        if match:
            label = next((c for c in CANONICAL if match["name"].startswith(f"{c}_")),
                         match["name"].split("_", 1)[0])
            by_label.setdefault(label, []).append(
                (float(match["dice"]), match["name"][len(label) + 1:], path))
    figures = []
    for label, items in sorted(by_label.items()):
        items.sort()
        keep = np.unique(np.linspace(0, len(items) - 1, OVERLAYS_PER_CLASS).round().astype(int))
        for dice, stem, path in (items[i] for i in keep):
            uri = embed_image_file(path, max_side=384)
            if uri is not None:
                figures.append(Figure(f"{label}, {stem}: Dice {dice:.2f}", uri))
    return figures


def _summary(part: Part, m: dict[str, Any] | None, held_out: bool = True) -> str:
    """One line: mean Dice on the tumour images, false-positive rate on the tumour-free ones."""
    said = []
    if m and m.get("mean_dice") is not None:
        said.append(f"{'held-out ' if held_out else ''}mean Dice {num(m['mean_dice'])} on "
                    f"{num(m.get('n_tumour_images'))} tumour images")
    if m and m.get("false_positive_rate") is not None:
        said.append(f"false-positive rate {num(m['false_positive_rate'])} on "
                    f"{num(m.get('n_tumour_free_images'))} tumour-free images")
    return f"Segmenter: {'; '.join(said)}." if said else f"Segmenter: {part.note}"
