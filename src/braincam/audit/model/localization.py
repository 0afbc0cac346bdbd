"""Does the explanation point at the annotated tumour?

Annotations (boxes or masks) are compared in the model's input coordinates: a box given
in YOLO fractions of the original image is mapped through the preprocessing crop and
resize (:func:`braincam.data.preprocess.box_mask`) rather than mapping every CAM back with
``uncrop``; this keeps all checks on one pixel grid and costs one rectangle per image.

Per image with an annotation ``B`` and map ``M`` (explaining the true class:
``AuditBatch.label_maps`` where given, else the maps of the prediction):

- pointing game: hit when ``argmax M`` lies in ``B`` (Zhang et al. 2018, no tolerance; a
  constant map, such as an all-zero Grad-CAM, misses); a uniformly random point hits with
  probability ``|B| / |image|``;
- energy-based pointing game: ``sum(relu(M) * B) / sum(relu(M))`` (Wang et al. 2020),
  and its ratio to the area fraction ``|B| / |image|`` (1 = a uniform map);
- IoU of ``M >= IOU_LEVEL * max(M)`` with ``B``.

The summary's ratio is ``mean(energy in box) / mean(box area fraction)`` (a ratio of
means, so that tiny boxes do not dominate), both means over the images whose energy share is
defined (a map without positive evidence has none): a share and its chance on the same images.

Against expert masks ``T`` (``AuditBatch.expert_masks``; summary :class:`MaskLocalization`,
``audit.json``'s ``localization.mask``): the same pointing game, energy in mask and ratio,
plus IoU and Dice of the map's top-k region ``H``: the ``|T|`` highest-valued pixels (k = the
mask's own area share; pixels tied at the k-th value count by the expected overlap of a random
choice among them, ``|above & T| + (k - |above|) |tied & T| / |tied|``; NaN for a constant
map, which ranks nothing), so ``|H| = |T|``,
``Dice = 2|H & T| / (|H| + |T|) = |H & T| / |T|`` and ``IoU = |H & T| / |H | T|``. A uniformly
random top-k region scores ``Dice = |T| / |image|`` on average. The pointing game's ceiling is
the share of masks that hold a pixel where a map of the method's raw resolution can peak at
all (:func:`braincam.explain.grid.peak_pixels`; ``AuditBatch.map_grids``): a stride-32 CAM
cannot point into a small tumour that lies between its grid nodes. They are broken down by the
images' true class (``AuditBatch.group_labels``) and by tumour size: thirds of the images
by mask area (small / medium / large, cut at the 1/3 and 2/3 quantiles of that dataset's
mask areas). Occlusion maps (``AuditBatch.occlusion``: the signed drop of the predicted
class's probability, on the images where occlusion ran) are scored the same way, under the
method name ``occlusion``.

Findings, from the mask numbers where masks exist, else from the box numbers: ratio <
:data:`RATIO_CRITICAL` (worse than a uniform map) -> critical, < :data:`RATIO_WARNING` ->
warning; pointing game below twice the chance rate -> warning; a pointing-game ceiling below
:data:`CEILING_INFO` -> info.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from braincam.audit.findings import Finding
from braincam.audit.model.attention import area_fraction, energy_share
from braincam.audit.model.base import AuditBatch, Check, nanmean, paired_ratio, register
from braincam.explain.grid import peak_pixels

IOU_LEVEL = 0.5
RATIO_WARNING = 1.5
RATIO_CRITICAL = 1.0
POINTING_CHANCE_FACTOR = 2.0
CEILING_INFO = 0.9  # below: an info finding that the map's grid bounds the pointing game


def pointing_hits(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Whether each map's maximum lies in its region (N,) bool; NaN-free maps assumed.

    Ties (several maxima) count as a hit when any maximum is inside, as in Zhang et al.; a
    constant map (an all-zero Grad-CAM: no positive evidence anywhere) points nowhere and
    misses, since every pixel would otherwise tie for its maximum."""
    maps = np.asarray(maps, dtype=np.float64)
    peak = maps.max(axis=(-2, -1), keepdims=True)
    flat = peak[..., 0, 0] <= maps.min(axis=(-2, -1))
    return ((maps >= peak) & regions).any(axis=(-2, -1)) & ~flat


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


def topk_overlap(maps: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and Dice (each (N,)) of each map's ``|region|`` highest pixels with the region
    (module docstring); NaN for an empty region."""
    maps = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    regions = np.asarray(regions, dtype=bool).reshape(len(regions), -1)
    iou, dice = np.full(len(maps), np.nan), np.full(len(maps), np.nan)
    for i, (m, t) in enumerate(zip(maps, regions, strict=True)):
        k = int(t.sum())
        if not k or not np.isfinite(m).all() or m.max() <= m.min():
            continue  # no region, or a map that ranks no pixel above another
        kth = np.partition(m, -k)[-k]
        above, tied = m > kth, m == kth
        inter = (above & t).sum() + (k - above.sum()) * (tied & t).sum() / tied.sum()
        iou[i], dice[i] = inter / (2 * k - inter), inter / k
    return iou, dice


def size_thirds(areas: np.ndarray) -> np.ndarray:
    """"small" / "medium" / "large" per finite area: below the 1/3 quantile, below the 2/3
    quantile, the rest; "" for NaN (no mask)."""
    areas = np.asarray(areas, dtype=float)
    out = np.full(len(areas), "", dtype=object)
    known = ~np.isnan(areas)
    if known.any():
        low, high = np.quantile(areas[known], [1 / 3, 2 / 3])
        out[known] = np.where(areas[known] < low, "small",
                              np.where(areas[known] < high, "medium", "large"))
    return out


SIZES = ("small", "medium", "large")
MASK_COLUMNS = ("mask_pointing_hit", "energy_in_mask", "mask_area", "mask_iou", "mask_dice",
                "mask_pointing_reachable")


@dataclass
class MaskLocalization:
    """Localisation of one method against expert masks on ``n_images`` images (see the
    module docstring); ``by_class`` and ``by_size`` hold the same numbers per group."""

    n_images: int
    pointing_game: float | None
    pointing_chance: float | None
    energy_in_mask: float | None
    mask_area: float | None
    energy_in_mask_ratio: float | None
    iou: float | None
    dice: float | None
    pointing_ceiling: float | None = None  # share of masks the map's grid can point into
    by_class: dict[str, dict] = field(default_factory=dict)
    by_size: dict[str, dict] = field(default_factory=dict)


def mask_localization(
    cols: dict[str, np.ndarray], groups: np.ndarray, sizes: np.ndarray, top: bool = True
) -> MaskLocalization:
    """The summary of the mask columns over the images that have a mask (``mask_area`` not
    NaN), with the class and size breakdowns when ``top``."""
    mean = {k: nanmean(cols[k]) for k in MASK_COLUMNS}
    energy, area = mean["energy_in_mask"], mean["mask_area"]
    summary = MaskLocalization(
        int((~np.isnan(cols["mask_area"])).sum()), mean["mask_pointing_hit"], area, energy,
        area, paired_ratio(cols["energy_in_mask"], cols["mask_area"]), mean["mask_iou"],
        mean["mask_dice"], mean["mask_pointing_reachable"])
    if top:
        has = ~np.isnan(cols["mask_area"])
        present_sizes = set(sizes[has])
        for attr, keys, order in (
            ("by_class", groups, sorted(set(groups[has]) - {""})),
            ("by_size", sizes, [k for k in SIZES if k in present_sizes]),
        ):
            for key in order:
                sub = {k: v[keys == key] for k, v in cols.items()}
                part = dataclasses.asdict(mask_localization(sub, groups, sizes, top=False))
                getattr(summary, attr)[str(key)] = {
                    k: v for k, v in part.items() if k not in ("by_class", "by_size")}
    return summary


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
    mask: MaskLocalization | None = None  # None without expert masks


@register
class LocalizationCheck(Check):
    """Pointing game, energy in box, its ratio to chance, thresholded-map IoU; against
    expert masks also top-k IoU and Dice, by class and size."""

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
        masks = batch.expert_masks if batch.expert_masks is not None else np.zeros(
            batch.images.shape, dtype=bool)
        idx = np.flatnonzero(boxes.any(axis=(1, 2)))
        with_mask = np.flatnonzero(masks.any(axis=(1, 2)))
        all_maps = {m: batch.label_maps.get(m, maps) for m, maps in batch.maps.items()}
        occluded = np.ones(n, bool)
        if batch.occlusion is not None and "occlusion" not in all_maps:
            occluded = ~np.isnan(batch.occlusion).any(axis=(1, 2))
            if occluded.any():
                all_maps["occlusion"] = np.nan_to_num(batch.occlusion)
        out = {}
        for method, maps in all_maps.items():
            keep = occluded if method == "occlusion" else np.ones(n, bool)
            box_idx, mask_idx = idx[keep[idx]], with_mask[keep[with_mask]]
            cols = {k: np.full(n, np.nan) for k in ("pointing_hit", "energy_in_box", "box_area",
                                                    "iou", *MASK_COLUMNS)}
            if box_idx.size:
                cols["pointing_hit"][box_idx] = pointing_hits(maps[box_idx], boxes[box_idx])
                cols["energy_in_box"][box_idx] = energy_share(maps[box_idx], boxes[box_idx])
                cols["box_area"][box_idx] = area_fraction(boxes[box_idx])
                cols["iou"][box_idx] = thresholded_iou(maps[box_idx], boxes[box_idx])
            if mask_idx.size:
                m, t = maps[mask_idx], masks[mask_idx]
                cols["mask_pointing_hit"][mask_idx] = pointing_hits(m, t)
                cols["energy_in_mask"][mask_idx] = energy_share(m, t)
                cols["mask_area"][mask_idx] = area_fraction(t)
                cols["mask_iou"][mask_idx], cols["mask_dice"][mask_idx] = topk_overlap(m, t)
                if method in batch.map_grids:
                    reach = peak_pixels(batch.map_grids[method], t.shape[-2:])
                    cols["mask_pointing_reachable"][mask_idx] = (t & reach).any(axis=(1, 2))
            out[method] = cols
        return out

    def summarise(
        self, batch: AuditBatch, per_image: dict[str, dict[str, np.ndarray]]
    ) -> tuple[dict[str, LocalizationSummary], list[Finding]]:
        summaries, findings = {}, []
        groups = batch.group_names
        sizes = size_thirds(_mask_areas(batch))  # one cut for every method, occlusion's subset too
        for method, cols in per_image.items():
            n = int((~np.isnan(cols["box_area"])).sum())
            mean = {k: nanmean(v) for k, v in cols.items()}
            energy, area = mean.get("energy_in_box"), mean.get("box_area")
            ratio = paired_ratio(cols["energy_in_box"], cols["box_area"])
            masked = "mask_area" in cols and not np.isnan(cols["mask_area"]).all()
            mask = mask_localization(cols, groups, sizes) if masked else None
            summary = LocalizationSummary(
                method, n, mean.get("pointing_hit"), area, energy, area, ratio, mean.get("iou"),
                mask)
            summaries[method] = summary
            if method in batch.maps:
                findings += _findings(summary)
        return summaries, findings


def _mask_areas(batch: AuditBatch) -> np.ndarray:
    """Each image's expert-mask share of the image, NaN without a mask."""
    areas = np.full(len(batch), np.nan)
    if batch.expert_masks is not None:
        with_mask = batch.expert_masks.any(axis=(1, 2))
        areas[with_mask] = area_fraction(batch.expert_masks[with_mask])
    return areas


def _ratio_severity(ratio: float) -> tuple[str, float] | None:
    """The severity of an energy ratio (energy share over region share) and the threshold it
    falls below: under ``RATIO_CRITICAL`` critical, under ``RATIO_WARNING`` a warning."""
    if ratio < RATIO_CRITICAL:
        return "critical", RATIO_CRITICAL
    if ratio < RATIO_WARNING:
        return "warning", RATIO_WARNING
    return None


def _findings(s: LocalizationSummary) -> list[Finding]:
    """Findings of the mask numbers where expert masks exist (the mask wins over the box),
    else of the box numbers."""
    if s.mask is not None:
        return _mask_findings(s.method, s.mask)
    return _region_findings(
        s.method, "box", "tumour box", s.n_images, s.energy_in_box, s.box_area,
        s.energy_in_box_ratio, s.pointing_game, s.pointing_chance, ".0%")


def _region_findings(
    method: str, kind: str, region: str, n_images: int, energy: float | None,
    area: float | None, ratio: float | None, pointing: float | None, chance: float | None,
    small: str,
) -> list[Finding]:
    """The energy-ratio and pointing-game findings against one kind of tumour region
    (``box`` or ``mask``, named ``region`` in the text); ``small`` formats the region's
    share of the image (a mask covers less than a box)."""
    out = []
    if ratio is not None and (graded := _ratio_severity(ratio)):
        severity, threshold = graded
        out.append(Finding(
            severity, f"localization.energy_in_{kind}_ratio", ratio, threshold,
            f"{method}: {energy:.0%} of CAM energy lies in the {region}, which covers "
            f"{area:{small}} of the image ({ratio:.1f}x a uniform map; {n_images} images)."))
    if pointing is not None and chance is not None:
        threshold = POINTING_CHANCE_FACTOR * chance
        if pointing < threshold:
            check = "pointing_game" if kind == "box" else f"{kind}_pointing_game"
            out.append(Finding(
                "warning", f"localization.{check}", pointing, threshold,
                f"{method}: the map's maximum falls in the {region} on {pointing:.0%} of "
                f"{n_images} images; a random point would on {chance:{small}}."))
    return out


def _mask_findings(method: str, s: MaskLocalization) -> list[Finding]:
    out = _region_findings(
        method, "mask", "expert tumour mask", s.n_images, s.energy_in_mask, s.mask_area,
        s.energy_in_mask_ratio, s.pointing_game, s.pointing_chance, ".1%")
    if s.pointing_ceiling is not None and s.pointing_ceiling < CEILING_INFO:
        out.append(Finding(
            "info", "localization.pointing_ceiling", s.pointing_ceiling, CEILING_INFO,
            f"{method}: the map's grid can point into {s.pointing_ceiling:.0%} of the "
            f"{s.n_images} tumour masks at most (the others lie between its nodes); its "
            f"pointing game of {s.pointing_game:.0%} is bounded by that."))
    return out
