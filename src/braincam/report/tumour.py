"""The "Where is the tumour?" section: example images side by side, and the localisation table.

Rows come from the model audit's ``audit/tumour_examples.npz``
(:mod:`braincam.audit.model.examples`): per image the model-input image, the image with the
expert mask's outline, the map over the image, and the predicted tumour mask's outline when
the audit stored one (the file's ``predicted`` array; without it that panel is left out).
The table is ``localization.mask`` of ``audit/audit.json``, per dataset: all images, each
class, each size third; chance columns say what a uniform map scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from braincam.audit.model.examples import EXAMPLES_FILE, TumourExamples
from braincam.explain.render import BOX_RGB, overlay
from braincam.report.figures import embed_array
from braincam.report.sources import NOT_RUN, OK, UNREADABLE, Part, read_json_part
from braincam.report.tables import Table
from braincam.runs import RunDir

MASK_RGB = BOX_RGB  # the expert outline: green, like the tumour box of other overlays
PREDICTED_RGB = (255, 0, 255)  # predicted outline
COLUMNS = (("n_images", "images"), ("pointing_game", "pointing game"),
           ("pointing_chance", "chance"), ("pointing_ceiling", "ceiling"),
           ("energy_in_mask", "energy in mask"),
           ("energy_in_mask_ratio", "energy ratio"), ("iou", "top-k IoU"),
           ("dice", "top-k Dice"))


@dataclass(frozen=True)
class TumourPanel:
    """One image's pictures (``predicted`` None when no predicted mask is known)."""

    caption: str
    image: str
    expert: str
    cam: str
    predicted: str | None


@dataclass
class TumourSection:
    part: Part
    method: str | None = None
    panels: list[TumourPanel] = field(default_factory=list)
    tables: list[tuple[str | None, Table]] = field(default_factory=list)  # (dataset, table)
    has_predicted: bool = False


def outline(picture: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """RGB uint8: ``picture`` (grey (S,S) or RGB (S,S,3) uint8) with the outer contour of
    ``mask`` drawn in ``rgb``, 1 px per 256 px of side."""
    picture = np.asarray(picture, dtype=np.uint8)
    out = picture.copy() if picture.ndim == 3 else np.repeat(picture[..., None], 3, axis=2)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, rgb, max(1, round(min(mask.shape) / 256)))
    return out


def collect_tumour(run: RunDir) -> TumourSection:
    """The section from ``audit/tumour_examples.npz`` and ``audit/audit.json``."""
    relpath = f"audit/{EXAMPLES_FILE}"
    path = run.audit / EXAMPLES_FILE
    name = "tumour examples"
    _, audit = read_json_part(run, run.audit_json, "model audit")
    tables = _tables(audit) if audit else []
    if not path.is_file():
        return TumourSection(Part(name, relpath, NOT_RUN), tables=tables)
    try:
        examples = TumourExamples.load(path)
    except (OSError, ValueError, KeyError) as exc:
        return TumourSection(Part(name, relpath, UNREADABLE, str(exc)), tables=tables)
    panels = [_panel(examples, i) for i in range(len(examples))]
    return TumourSection(Part(name, relpath, OK), examples.method, panels, tables,
                         examples.predicted is not None)


def _panel(ex: TumourExamples, i: int) -> TumourPanel:
    image, mask = ex.images[i], ex.masks[i]
    several = len(set(ex.datasets.tolist())) > 1
    caption = (f"{ex.datasets[i]}: " if several else "") + \
        f"{ex.groups[i]}, predicted {ex.preds[i]} ({ex.paths[i].rsplit('/', 1)[-1]})"
    predicted = None
    if ex.predicted is not None:
        predicted = embed_array(outline(image, ex.predicted[i], PREDICTED_RGB))
    return TumourPanel(
        caption, embed_array(image), embed_array(outline(image, mask, MASK_RGB)),
        embed_array(outline(overlay(image, ex.maps[i]), mask, MASK_RGB)), predicted)


def _tables(audit: dict[str, Any]) -> list[tuple[str | None, Table]]:
    """One localisation table per dataset with ``localization.mask`` numbers."""
    if isinstance(audit.get("datasets"), dict):
        blocks = [(str(k), v) for k, v in audit["datasets"].items() if isinstance(v, dict)]
    else:
        blocks = [(None, audit)]
    out = []
    for dataset, block in blocks:
        loc = block.get("localization")
        if not isinstance(loc, dict):
            continue
        methods = block.get("methods") if isinstance(block.get("methods"), list) else []
        first = str(loc.get("method") or (methods[0] if methods else "") or "map")
        per_method = loc.get("by_method") if isinstance(loc.get("by_method"), dict) else {
            first: loc}
        if isinstance(loc.get("occlusion"), dict):
            per_method = {**per_method, "occlusion": loc["occlusion"]}
        rows = []
        for method, values in per_method.items():
            mask = values.get("mask") if isinstance(values, dict) else None
            if not isinstance(mask, dict):
                continue
            rows.append((f"{method}: all", [mask.get(k) for k, _ in COLUMNS]))
            for key, prefix in (("by_class", "class "), ("by_size", "size ")):
                groups = mask.get(key) if isinstance(mask.get(key), dict) else {}
                for group, sub in groups.items():
                    if isinstance(sub, dict):
                        rows.append((f"{method}: {prefix}{group}",
                                     [sub.get(k) for k, _ in COLUMNS]))
        if rows:
            out.append((dataset, Table([title for _, title in COLUMNS], rows, "method: group")))
    return out
