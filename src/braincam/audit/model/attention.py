"""Where does the explanation put its weight: brain, skull rim, or background?

For a map ``M`` (explaining one image) and a region ``R`` the *energy share* is

    share(M, R) = sum(relu(M) * R) / sum(relu(M))

(NaN for a map with no positive value). A uniform map gets ``share = |R| / |image|``,
the region's area fraction, so each share is reported next to that chance level.
Regions are the brain interior, the skull-rim band and the background outside the head
from :mod:`braincam.data.mask`, at the model's input resolution, plus any extra named
region (e.g. the corner where a marker might sit).

Findings, per method, for all images and per true class (classes with at least
:data:`MIN_GROUP` images):

- share outside the brain (rim + background) >= :data:`OUTSIDE_WARNING` x a uniform
  map's share -> warning; >= :data:`OUTSIDE_CRITICAL` x -> critical;
- share of an extra region >= :data:`REGION_WARNING` x (critical: :data:`REGION_CRITICAL`
  x) its area fraction and at least :data:`REGION_MIN_SHARE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from braincam.audit.findings import Finding
from braincam.audit.model.base import AuditBatch, Check, nanmean, register

HEAD_REGIONS = ("brain", "rim", "background")
MIN_GROUP = 5
EMPTY_WARNING = 0.5  # share of empty maps from which attention.empty_maps warns
OUTSIDE_WARNING = 1.0
OUTSIDE_CRITICAL = 1.5
REGION_WARNING = 2.0
REGION_CRITICAL = 5.0
REGION_MIN_SHARE = 0.05


def energy_share(maps: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Share of each map's positive energy inside ``region`` (N,); NaN for an all-<=0 map.

    ``maps`` is (N, H, W) or (H, W); ``region`` is a bool mask broadcastable to it.
    """
    maps = np.asarray(maps, dtype=np.float64)
    positive = np.clip(maps, 0, None)
    inside = (positive * np.asarray(region, dtype=bool)).sum(axis=(-2, -1))
    total = positive.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)


def area_fraction(region: np.ndarray, n: int | None = None) -> np.ndarray:
    """The share a uniform map gives ``region``: its area fraction, per image (N,).

    A single (H, W) region is repeated ``n`` times."""
    region = np.asarray(region, dtype=bool)
    fractions = region.mean(axis=(-2, -1))
    if region.ndim == 2:
        return np.full(n or 1, float(fractions))
    return fractions


def head_regions(head_masks: np.ndarray) -> dict[str, np.ndarray]:
    """Brain interior, skull-rim band and background of each head mask, (N, S, S) each.

    :mod:`braincam.data.mask` makes them a partition: rim = head minus brain interior."""
    from braincam.data import mask as masks

    out: dict[str, list[np.ndarray]] = {name: [] for name in HEAD_REGIONS}
    for head in head_masks:
        out["brain"].append(masks.brain_region(head))
        out["rim"].append(masks.rim_band(head, masks.rim_width(head.shape)))
        out["background"].append(masks.background(head))
    return {name: np.stack(arrays).astype(bool) for name, arrays in out.items()}


@dataclass
class AttentionSummary:
    """Mean energy shares of one method, against a uniform map's (``uniform_*``).

    ``regions`` / ``uniform_regions`` cover the extra named regions; ``by_class`` (true
    class) and ``by_correctness`` (``correct`` / ``incorrect``) hold the same keys as
    :meth:`shares` for those image groups, plus ``n``.
    """

    method: str
    n_images: int
    brain: float | None
    rim: float | None
    background: float | None
    uniform_brain: float | None
    uniform_rim: float | None
    uniform_background: float | None
    regions: dict[str, float | None]
    uniform_regions: dict[str, float | None]
    by_class: dict[str, dict[str, float | None]]
    by_correctness: dict[str, dict[str, float | None]]


@register
class AttentionCheck(Check):
    """Energy shares in brain / rim / background / extra regions, per method."""

    name = "attention"
    title = "Attention"
    description = ("Share of the CAM's energy inside the brain, on the skull rim and in the "
                   "background.")
    per_method = True
    higher_is_better = {"brain": True, "background": False}
    unprefixed_columns = True

    def evaluate(self, batch: AuditBatch) -> dict[str, dict[str, np.ndarray]]:
        n = len(batch)
        head = head_regions(batch.head_masks)
        regions = {**head, **{f"region_{k}": r for k, r in batch.regions.items()}}
        out = {}
        for method, maps in batch.maps.items():
            cols = {}
            for name, region in regions.items():
                cols[name] = energy_share(maps, region)
                cols[f"uniform_{name}"] = area_fraction(region, n)
            out[method] = cols
        return out

    def summarise(
        self, batch: AuditBatch, per_image: dict[str, dict[str, np.ndarray]]
    ) -> tuple[dict[str, AttentionSummary], list[Finding]]:
        summaries, findings = {}, []
        everyone = np.ones(len(batch), dtype=bool)
        groups = {"all images": everyone}
        groups |= {f"class {c}": batch.labels == i for i, c in enumerate(batch.classes)}
        for method, cols in per_image.items():
            summary = _summary(method, cols, batch)
            summaries[method] = summary
            for group, sel in groups.items():
                if sel.sum() >= (1 if group == "all images" else MIN_GROUP):
                    findings += _findings(method, group, _group_means(cols, sel))
            findings += _empty_maps(method, cols)
        return summaries, findings


def _empty_maps(method: str, cols: dict[str, np.ndarray]) -> list[Finding]:
    """A finding when maps carry no positive evidence: their shares are left out, and the
    localisation and faithfulness numbers of those images say nothing of the model (a
    probability output saturated in float32 has no gradient; a guided model's gate closes
    where its segmenter sees no tumour). A warning from half of the images on."""
    empty = np.isnan(cols["brain"])
    if not empty.any():
        return []
    share = float(empty.mean())
    return [Finding(
        "warning" if share >= EMPTY_WARNING else "info", "attention.empty_maps", share,
        EMPTY_WARNING,
        f"{method}: {int(empty.sum())} of {len(empty)} maps are empty (no positive evidence, "
        "e.g. a saturated probability output or a closed gate): their attention shares are "
        "left out and they miss in the pointing game.")]


def _group_means(cols: dict[str, np.ndarray], sel: np.ndarray) -> dict[str, float | None]:
    """Means over the selected images; a ``uniform_<region>`` chance level only over those
    whose map has a ``<region>`` share (a map without positive evidence has none), so that a
    share and its chance are averaged over the same images."""
    means: dict[str, float | None] = {}
    for key, values in cols.items():
        share = cols.get(key.removeprefix("uniform_")) if key.startswith("uniform_") else None
        means[key] = nanmean(values[sel & ~np.isnan(share)] if share is not None
                             else values[sel])
    means["n"] = int(sel.sum())
    return means


def _summary(method: str, cols: dict[str, np.ndarray], batch: AuditBatch) -> AttentionSummary:
    every = _group_means(cols, np.ones(len(batch), dtype=bool))
    names = [k[len("region_"):] for k in cols if k.startswith("region_")]
    return AttentionSummary(
        method=method,
        n_images=len(batch),
        **{k: every[k] for k in HEAD_REGIONS},
        **{f"uniform_{k}": every[f"uniform_{k}"] for k in HEAD_REGIONS},
        regions={k: every[f"region_{k}"] for k in names},
        uniform_regions={k: every[f"uniform_region_{k}"] for k in names},
        by_class={c: _group_means(cols, batch.labels == i)
                  for i, c in enumerate(batch.classes) if (batch.labels == i).any()},
        by_correctness={name: _group_means(cols, sel) for name, sel in
                        (("correct", batch.correct), ("incorrect", ~batch.correct)) if sel.any()},
    )


def _findings(method: str, group: str, m: dict[str, float | None]) -> list[Finding]:
    out = []
    if m["brain"] is not None:
        outside, uniform = 1 - m["brain"], 1 - m["uniform_brain"]
        severity = _severity(outside / max(uniform, 1e-9), OUTSIDE_WARNING, OUTSIDE_CRITICAL)
        if severity:
            factor = OUTSIDE_CRITICAL if severity == "critical" else OUTSIDE_WARNING
            out.append(Finding(
                severity, "attention.outside_brain", outside, factor * uniform,
                f"{method}, {group}: {outside:.0%} of CAM energy lies outside the brain "
                f"({m['background']:.0%} outside the head); a uniform map would put "
                f"{uniform:.0%} there ({m['uniform_background']:.0%})."))
    for key, share in m.items():
        if not key.startswith("region_") or share is None:
            continue
        uniform = m[f"uniform_{key}"]
        severity = _severity(share / max(uniform, 1e-9), REGION_WARNING, REGION_CRITICAL)
        if severity and share >= REGION_MIN_SHARE:
            factor = REGION_CRITICAL if severity == "critical" else REGION_WARNING
            name = key[len("region_"):]
            out.append(Finding(
                severity, f"attention.region.{name}", share, factor * uniform,
                f"{method}, {group}: {share:.0%} of CAM energy lies in region '{name}', "
                f"which covers {uniform:.1%} of the image ({share / max(uniform, 1e-9):.0f}x "
                "a uniform map's share)."))
    return out


def _severity(ratio: float, warning: float, critical: float) -> str | None:
    if ratio >= critical:
        return "critical"
    if ratio >= warning:
        return "warning"
    return None
