"""Pictures for the report, always as ``data:`` URIs so the HTML file stands alone.

Figures are drawn on :class:`matplotlib.figure.Figure` objects directly (no
pyplot state, no GUI backend), saved to PNG in memory and base64-encoded.
Image files from other stages are downscaled to ``max_side`` pixels before
embedding: the report stays a few MB even with dozens of CAM overlays.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

THUMB_SIDE = 320


@dataclass(frozen=True)
class Figure:
    """An embedded picture and the words under it."""

    caption: str
    uri: str


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,<data>``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def embed_image_file(path: Path, max_side: int = THUMB_SIDE) -> str | None:
    """An image file as a PNG data URI, downscaled to fit ``max_side``; None if unreadable."""
    from PIL import Image

    from braincam.data.imageio import upright

    try:
        with Image.open(path) as img:
            img.load()
            img = upright(img).convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB")
    except (OSError, ValueError):
        return None
    return _png_uri(img, max_side)


def embed_array(rgb: np.ndarray, max_side: int = THUMB_SIDE) -> str:
    """An RGB (or grey) uint8 array as a PNG data URI, downscaled to fit ``max_side``."""
    from PIL import Image

    return _png_uri(Image.fromarray(rgb), max_side)


def _png_uri(img: Any, max_side: int) -> str:
    from PIL import Image

    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return data_uri(buf.getvalue())


def embed_figures(paths: Iterable[Path], max_side: int = 720) -> list[Figure]:
    """Readable image files as figures captioned by their names (``roc_curve`` -> "roc curve")."""
    figures = []
    for path in paths:
        uri = embed_image_file(path, max_side=max_side)
        if uri is not None:
            figures.append(Figure(path.stem.replace("_", " ").replace("-", " "), uri))
    return figures


def figure_uri(fig: Any, dpi: int = 100) -> str:
    """A matplotlib figure as a PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return data_uri(buf.getvalue())


SCORE_COLUMNS = ("val_accuracy", "val_balanced_accuracy",  # a classifier's history.csv
                 "val_dice", "val_score", "val_false_positive_rate")  # a segmenter's


def training_curves(history: pd.DataFrame) -> str | None:
    """Loss and validation scores (:data:`SCORE_COLUMNS`) per epoch, phases one after the other.

    The x axis counts epochs over all phases (phase 1 epochs 1..n1, then phase 2);
    a dashed line marks where a new phase starts, its name written upright beside it so that
    short phases (``--head-average``'s heads) do not print over each other. Returns None when
    the history has no epoch rows or none of the plotted columns.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    losses = [c for c in ("train_loss", "val_loss") if c in history.columns]
    scores = [c for c in SCORE_COLUMNS if c in history.columns]
    if history.empty or not (losses or scores):
        return None
    step = range(1, len(history) + 1)
    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, 2)
    for ax, columns, title in ((axes[0], losses, "loss"), (axes[1], scores, "validation score")):
        for column in columns:
            values = pd.to_numeric(history[column], errors="coerce")
            ax.plot(step, values, marker="o", markersize=3, label=column.replace("_", " "))
        if "phase" in history.columns:
            phases = history["phase"].astype(str).tolist()
            for i in range(1, len(phases)):
                if phases[i] != phases[i - 1]:
                    ax.axvline(i + 0.5, color="grey", linestyle="--", linewidth=1)
                    ax.annotate(phases[i], (i + 0.6, 0.97), fontsize=7, rotation=90,
                                va="top", xycoords=("data", "axes fraction"), color="grey")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_xlabel("epoch (all phases)")
        ax.grid(alpha=0.3)
        if columns:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_uri(fig)


def deletion_insertion_curves(curves: dict[str, list[float]]) -> str | None:
    """Model score against the fraction of pixels deleted / inserted, most important first.

    ``curves`` maps a label (e.g. "deletion") to scores at evenly spaced fractions 0..1; the
    areas under these curves are the deletion and insertion AUCs.
    """
    from matplotlib.figure import Figure

    curves = {k: v for k, v in curves.items() if _numbers(v)}
    if not curves:
        return None
    fig = Figure(figsize=(4.2, 3))
    ax = fig.subplots()
    for name, values in curves.items():
        ax.plot(np.linspace(0, 1, len(values)), values, marker=".", label=name)
    ax.set_xlabel("fraction of pixels (most important first)")
    ax.set_ylabel("score of the explained class")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_uri(fig)


def randomisation_curve(layers: list[str], similarities: dict[str, list[float]]) -> str | None:
    """Similarity of the maps to the trained model's maps as layers are randomised one after
    another from the top (cascading randomisation, Adebayo et al. 2018)."""
    from matplotlib.figure import Figure

    similarities = {k: v for k, v in similarities.items()
                    if _numbers(v) and len(v) == len(layers)}
    if not layers or not similarities:
        return None
    fig = Figure(figsize=(max(4.2, 0.45 * len(layers) + 1.5), 3.4))
    ax = fig.subplots()
    for name, values in similarities.items():
        ax.plot(range(len(layers)), values, marker="o", markersize=3, label=name)
    ax.set_xticks(range(len(layers)), [str(layer) for layer in layers], rotation=60,
                  ha="right", fontsize=7)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylabel("similarity to the trained maps")
    ax.set_xlabel("randomised down to")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_uri(fig)


def _numbers(values: Any) -> bool:
    return isinstance(values, list) and len(values) > 1 and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )
