"""CAM galleries: per true class, correct and wrong predictions, the images whose map
puts the most and the least energy in the background.

Images come from ``braincam explain`` (``explain/<method>/explanations.npz`` and its
``overlays/NNNN_<name>.png``); when an overlay PNG is missing the map is drawn over the
original image with :func:`braincam.explain.render.overlay_original`. Labels, predictions
and background shares come from the model audit's per-image CSV (``audit/*.csv``) for the
images it looked at, labels and predictions of the others from ``predictions.csv`` (those
are shown unranked, after the ranked ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braincam.data.records import key_file
from braincam.report.figures import embed_array, embed_image_file
from braincam.report.fmt import pct
from braincam.report.sources import NOT_RUN, OK, UNREADABLE, Part
from braincam.report.tables import text_column
from braincam.runs import EXPLANATIONS_NPZ, RunDir, read_npz

PER_END = 2  # images from each end of the background ranking, per class and outcome
PREFERRED_METHOD = "gradcam"
# Column names accepted in the per-image CSV, first match wins.
COLUMNS = {
    "path": ("path", "image", "file"),
    "label": ("label", "true", "y_true", "true_label"),
    "pred": ("pred", "prediction", "predicted", "y_pred"),
    "background": ("background", "background_share", "attention_background"),
    "method": ("method",),
    "dataset": ("dataset", "source"),
}
BOX_COLUMNS = ("box_cx", "box_cy", "box_w", "box_h")


@dataclass(frozen=True)
class GalleryImage:
    uri: str
    caption: str


@dataclass
class GalleryCell:
    """The images of one true class and outcome (``correct`` / ``wrong``): those with the
    highest and the lowest background share, and others without a share."""

    label: str
    outcome: str
    n: int
    most_background: list[GalleryImage] = field(default_factory=list)
    least_background: list[GalleryImage] = field(default_factory=list)
    unranked: list[GalleryImage] = field(default_factory=list)


@dataclass
class GallerySection:
    part: Part
    method: str | None = None
    cells: list[GalleryCell] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)


@dataclass
class _Explanations:
    """Where one method's explanations live, by image path."""

    folder: Path
    method: str
    index: dict[str, int]  # image path -> row in the npz
    predicted: dict[str, str] = field(default_factory=dict)  # image path -> class, as explained


def collect_gallery(run: RunDir) -> GallerySection:
    audited = _read_rows(sorted(run.audit.glob("*.csv")))
    exp = _explanations(run, _methods(audited))
    if exp is None:
        return GallerySection(Part("CAM gallery", f"explain/<method>/{EXPLANATIONS_NPZ}", NOT_RUN))
    if isinstance(exp, Part):
        return GallerySection(exp)
    part = Part("CAM gallery", str(exp.folder.relative_to(run.root) / EXPLANATIONS_NPZ), OK)
    section = GallerySection(part, exp.method)
    rows = _explained_rows(exp, audited, _read_rows([run.predictions]))
    if rows is None:
        section.sentences.append(
            "Neither the model audit's per-image table nor predictions.csv gives the labels of "
            "the explained images, so they cannot be grouped by class and outcome."
        )
        return section
    n_ranked = int(rows["background"].notna().sum()) if "background" in rows else 0
    section.sentences.append(
        f"{len(rows)} images explained with {exp.method}; {n_ranked} of them have the share "
        "of CAM energy in the background outside the head from the model audit. Each group "
        "shows those with the highest and the lowest share"
        + (", then images the audit did not look at." if n_ranked < len(rows) else ".")
    )
    renderer = _Renderer(exp)
    for (label, outcome), group in _groups(rows):
        most, least, unranked = _pick(group)
        section.cells.append(GalleryCell(label, outcome, len(group), renderer.images(most),
                                         renderer.images(least), renderer.images(unranked)))
    return section


def _read_rows(paths: list[Path]) -> pd.DataFrame | None:
    """Per-image rows of the CSVs at ``paths`` (missing ones are passed over) with canonical
    column names (see ``COLUMNS``); None when none has a path column."""
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        renames = {next(a for a in aliases if a in frame.columns): name
                   for name, aliases in COLUMNS.items()
                   if any(a in frame.columns for a in aliases)}
        frame = frame[list(renames) + [c for c in BOX_COLUMNS if c in frame.columns]]
        frame = frame.rename(columns=renames)
        if "background" in frame.columns:
            frame["background"] = pd.to_numeric(frame["background"], errors="coerce")
        if "path" in frame.columns:
            frames.append(frame.assign(path=frame["path"].astype(str)))
    return pd.concat(frames, ignore_index=True) if frames else None


def _methods(rows: pd.DataFrame | None) -> list[str]:
    if rows is None or "method" not in rows.columns:
        return []
    return [str(m) for m in rows["method"].dropna().unique()]


def _explanations(run: RunDir, audited: list[str]) -> _Explanations | Part | None:
    """The explanations to show: a method the audit used, else gradcam, else the first."""
    files = sorted(run.explain.glob(f"*/{EXPLANATIONS_NPZ}")) + sorted(
        run.explain.glob(EXPLANATIONS_NPZ)
    )
    if not files:
        return None
    by_method = {f.parent.name: f for f in files}
    choice = next((m for m in [*audited, PREFERRED_METHOD] if m in by_method), None)
    file = by_method[choice] if choice else files[0]
    try:
        data = read_npz(file, ("paths", "method", "probs", "classes"))
        paths = [str(p) for p in data["paths"].tolist()]
        method = str(data["method"]) if "method" in data else file.parent.name
    except (OSError, KeyError, ValueError, EOFError):
        return Part("CAM gallery", str(file.relative_to(run.root)), UNREADABLE,
                    "not a readable explanations .npz")
    predicted = {}
    if "probs" in data and "classes" in data and len(data["probs"]) == len(paths):
        classes = [str(c) for c in data["classes"].tolist()]
        predicted = {p: classes[int(k)] for p, k in zip(paths, data["probs"].argmax(1),
                                                        strict=True) if k < len(classes)}
    return _Explanations(file.parent, method, {p: i for i, p in enumerate(paths)}, predicted)


def _explained_rows(exp: _Explanations, audited: pd.DataFrame | None,
                    predictions: pd.DataFrame | None) -> pd.DataFrame | None:
    """One row per explained image: label, prediction and background share from the model
    audit where it looked at the image (same method), else label and prediction from
    predictions.csv; images known to neither are left out. The prediction the explanations
    file holds wins: it is the one the map was made with (a model spec's evaluation reads
    images its own way, its explanations braincam's way)."""
    sources = []
    if audited is not None and {"label", "pred"} <= set(audited.columns):
        if "method" in audited.columns:
            audited = audited[audited["method"].astype(str) == exp.method]
        sources.append(audited)
    if predictions is not None and {"label", "pred"} <= set(predictions.columns):
        sources.append(predictions.drop(columns=["background"], errors="ignore"))
    if not sources:
        return None
    merged = sources[0].drop_duplicates("path").set_index("path")
    for other in sources[1:]:
        merged = merged.combine_first(other.drop_duplicates("path").set_index("path"))
    rows = pd.DataFrame({"path": list(exp.index)}).join(merged, on="path")
    if exp.predicted:
        rows["pred"] = rows["path"].map(exp.predicted).fillna(rows["pred"])
    return rows.dropna(subset=["label", "pred"])


def _groups(rows: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """Rows grouped by (true class, correct/wrong): classes sorted, correct first, and
    both outcomes for every class (possibly empty, so the page says "none")."""
    label, pred = (text_column(rows[c]) for c in ("label", "pred"))
    rows = rows.assign(outcome=np.where(label == pred, "correct", "wrong"), label=label)
    return [
        ((label, kind), rows[(rows["label"] == label) & (rows["outcome"] == kind)])
        for label in sorted(rows["label"].unique())
        for kind in ("correct", "wrong")
    ]


def _pick(group: pd.DataFrame) -> tuple[list[dict], list[dict], list[dict]]:
    """``PER_END`` rows with the highest background share, ``PER_END`` with the lowest
    (disjoint, lowest first), then rows without a share up to ``2 * PER_END`` images."""
    if "background" in group.columns:
        ranked = group[group["background"].notna()].sort_values("background", ascending=False)
        unranked = group[group["background"].isna()]
    else:
        ranked, unranked = group.iloc[:0], group
    records = ranked.to_dict("records")
    most = records[:PER_END]
    least = records[max(PER_END, len(records) - PER_END):][::-1]
    rest = unranked.head(max(0, 2 * PER_END - len(most) - len(least))).to_dict("records")
    return most, least, rest


class _Renderer:
    """Overlay images for rows, from explain's PNGs or drawn from the maps."""

    def __init__(self, exp: _Explanations) -> None:
        self.exp = exp
        self._maps: dict[str, np.ndarray] | None = None

    def images(self, rows: list[dict[str, Any]]) -> list[GalleryImage]:
        """Overlays of ``rows``; an image that cannot be shown is left out."""
        out = []
        for row in rows:
            path = str(row["path"])
            index = self.exp.index[path]
            uri = self._overlay_file(index, path) or self._drawn(index, path, row)
            if uri is not None:
                out.append(GalleryImage(uri, _caption(row)))
        return out

    def _overlay_file(self, index: int, path: str) -> str | None:
        from braincam.explain.files import OVERLAY_DIR, overlay_name

        file = self.exp.folder / OVERLAY_DIR / overlay_name(index, *key_file(path))
        return embed_image_file(file, max_side=256) if file.is_file() else None

    def _drawn(self, index: int, path: str, row: dict[str, Any]) -> str | None:
        """The map over the original image, through the preprocessing crop stored with it."""
        from braincam.data.imageio import ImageReadError, read_grey
        from braincam.data.preprocess import Preprocessed
        from braincam.data.records import Box
        from braincam.explain.render import overlay_original

        try:
            arrays = self._arrays()
            original = read_grey(*key_file(path))
        except (ImageReadError, OSError, KeyError, ValueError, EOFError):
            return None
        cam = arrays["maps"][index]
        # overlay_original reads only crop and original_size when the mask is not drawn
        prep = Preprocessed(
            image=np.zeros(cam.shape, np.uint8), mask=np.zeros(cam.shape, bool),
            crop=tuple(int(v) for v in arrays["crops"][index]),
            original_size=tuple(int(v) for v in arrays["original_sizes"][index]),
        )
        box = None
        if all(pd.notna(row.get(c)) for c in BOX_COLUMNS):
            box = Box(*(float(row[c]) for c in BOX_COLUMNS))
        rgb = overlay_original(original, cam, prep, box=box, draw_mask=False)
        return embed_array(rgb, max_side=256)

    def _arrays(self) -> dict[str, np.ndarray]:
        if self._maps is None:
            names = ("maps", "crops", "original_sizes")
            self._maps = read_npz(self.exp.folder / EXPLANATIONS_NPZ, names)
        return self._maps


def _caption(row: dict[str, Any]) -> str:
    text = f"true {row['label']}, predicted {row['pred']}"
    if pd.notna(row.get("background")):
        text += f", background {pct(float(row['background']))}"
    if pd.notna(row.get("dataset")):
        text = f"{row['dataset']}: {text}"
    return text + f" ({Path(str(row['path'])).name})"
