"""Does the explanation point at the annotated tumour?

Annotations (boxes or masks) are compared in the model's input coordinates: a box given
in YOLO fractions of the original image is mapped through the preprocessing crop and
resize (:func:`braincam.data.preprocess.box_mask`) rather than mapping every CAM back with
``uncrop``; this keeps all checks on one pixel grid and costs one rectangle per image.

Per image with an annotation ``B`` and map ``M`` (explaining the true class:
``AuditBatch.label_maps`` where given, else the maps of the prediction):

- pointing game: hit when ``argmax M`` lies in ``B`` (Zhang et al. 2018, no tolerance);
  a uniformly random point hits with probability ``|B| / |image|``;
- energy-based pointing game: ``sum(relu(M) * B) / sum(relu(M))`` (Wang et al. 2020),
  and its ratio to the area fraction ``|B| / |image|`` (1 = a uniform map);
- IoU of ``M >= IOU_LEVEL * max(M)`` with ``B``.

The summary's ratio is ``mean(energy in box) / mean(box area fraction)`` (a ratio of
means, so that tiny boxes do not dominate). Findings: ratio < :data:`RATIO_CRITICAL`
(worse than a uniform map) -> critical, < :data:`RATIO_WARNING` -> warning; pointing
game below twice the chance rate -> warning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from braincam.audit.findings import Finding
from braincam.audit.model.attention import area_fraction, energy_share
from braincam.audit.model.base import AuditBatch, Check, nanmean, register

IOU_LEVEL = 0.5
RATIO_WARNING = 1.5
RATIO_CRITICAL = 1.0
POINTING_CHANCE_FACTOR = 2.0


def pointing_hits(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Whether each map's maximum lies in its region (N,) bool; NaN-free maps assumed.

    Ties (several maxima) count as a hit when any maximum is inside, as in Zhang et al."""
    maps = np.asarray(maps, dtype=np.float64)
    peak = maps.max(axis=(-2, -1), keepdims=True)
    return ((maps >= peak) & regions).any(axis=(-2, -1))


def thresholded_iou(maps: np.ndarray, regions: np.ndarray, level: float = IOU_LEVEL) -> np.ndarray:
    """IoU of ``map >= level * max(map)`` with the region, per image (N,); NaN for a map
    without a positive maximum."""
    maps = np.asarray(maps, dtype=np.float64)
    peak = maps.max(axis=(-2, -1), keepdims=True)
    hot = (maps >= level * peak) & (peak > 0)
    inter = (hot & regions).sum(axis=(-2, -1))
    union = (hot | regions).sum(axis=(-2, -1))
    valid = peak[..., 0, 0] > 0
    return np.where(valid, inter / np.maximum(union, 1), np.nan)


@dataclass
class LocalizationSummary:
    """Localisation of one method on the ``n_images`` images with an annotation."""

    method: str
    n_images: int
    pointing_game: float | None
    pointing_chance: float | None  # mean box area fraction: a random point's hit rate
    energy_in_box: float | None
    box_area: float | None
    energy_in_box_ratio: float | None
    iou: float | None


@register
class LocalizationCheck(Check):
    """Pointing game, energy in box, its ratio to chance, thresholded-map IoU."""

    name = "localization"
    title = "Localisation"
    description = "Whether the map points at the tumour, where tumour boxes are known."
    per_method = True
    higher_is_better = {"pointing_game": True, "energy_in_box_ratio": True, "iou": True}

    def evaluate(self, batch: AuditBatch) -> dict[str, dict[str, np.ndarray]]:
        """Per-image numbers, NaN on images without an annotation."""
        n = len(batch)
        boxes = batch.tumor_masks if batch.tumor_masks is not None else np.zeros(
            batch.images.shape, dtype=bool)
        idx = np.flatnonzero(boxes.any(axis=(1, 2)))
        out = {}
        for method, maps in batch.maps.items():
            maps = batch.label_maps.get(method, maps)
            cols = {k: np.full(n, np.nan) for k in ("pointing_hit", "energy_in_box", "box_area",
                                                    "iou")}
            if idx.size:
                cols["pointing_hit"][idx] = pointing_hits(maps[idx], boxes[idx])
                cols["energy_in_box"][idx] = energy_share(maps[idx], boxes[idx])
                cols["box_area"][idx] = area_fraction(boxes[idx])
                cols["iou"][idx] = thresholded_iou(maps[idx], boxes[idx])
            out[method] = cols
        return out

    def summarise(
        self, batch: AuditBatch, per_image: dict[str, dict[str, np.ndarray]]
    ) -> tuple[dict[str, LocalizationSummary], list[Finding]]:
        summaries, findings = {}, []
        for method, cols in per_image.items():
            n = int((~np.isnan(cols["box_area"])).sum())
            mean = {k: nanmean(v) for k, v in cols.items()}
            energy, area = mean.get("energy_in_box"), mean.get("box_area")
            ratio = energy / area if energy is not None and area else None
            summary = LocalizationSummary(
                method, n, mean.get("pointing_hit"), area, energy, area, ratio, mean.get("iou"))
            summaries[method] = summary
            findings += _findings(summary)
        return summaries, findings


def _findings(s: LocalizationSummary) -> list[Finding]:
    out = []
    if s.energy_in_box_ratio is not None:
        ratio = s.energy_in_box_ratio
        severity = ("critical" if ratio < RATIO_CRITICAL else
                    "warning" if ratio < RATIO_WARNING else None)
        if severity:
            threshold = RATIO_CRITICAL if severity == "critical" else RATIO_WARNING
            out.append(Finding(
                severity, "localization.energy_in_box_ratio", ratio, threshold,
                f"{s.method}: {s.energy_in_box:.0%} of CAM energy lies in the tumour box, "
                f"which covers {s.box_area:.0%} of the image ({ratio:.1f}x a uniform map; "
                f"{s.n_images} images)."))
    if s.pointing_game is not None and s.pointing_chance is not None:
        threshold = POINTING_CHANCE_FACTOR * s.pointing_chance
        if s.pointing_game < threshold:
            out.append(Finding(
                "warning", "localization.pointing_game", s.pointing_game, threshold,
                f"{s.method}: the map's maximum falls in the tumour box on "
                f"{s.pointing_game:.0%} of {s.n_images} images; a random point would on "
                f"{s.pointing_chance:.0%}."))
    return out
