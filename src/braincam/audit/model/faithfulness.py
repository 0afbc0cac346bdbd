"""Is the explanation faithful: do the pixels it ranks highest drive the prediction?

Deletion and insertion (Petsiuk et al. 2018, RISE): pixels are ranked by the map, most
important first (ties broken at random, so flat regions are not removed in scan order).
At step ``k = 0..STEPS`` the top ``k / STEPS`` of the pixels are

- deletion: replaced by a blurred copy of the image (Gaussian, sigma = 5 px at 224 px,
  scaled with the side) -- the target probability should fall fast (low AUC);
- insertion: copied into the blurred image -- the target probability should rise fast
  (high AUC).

AUC is the trapezoid area under probability vs. fraction ``x = k / STEPS`` in [0, 1].
The same curves for random maps (uniform noise on a 7 x 7 grid, upsampled bicubically:
as smooth as a CAM of a 224-px ResNet/EfficientNet) give the chance level.

ROAD (Rong et al. 2022) uses pytorch-grad-cam's :class:`ROADCombined`: the mean over
percentiles of (least-relevant-first - most-relevant-first) change in the target's
softmax probability, after noisy linear imputation of the removed pixels (positive =
faithful). The imputation solves a sparse system per image and percentile, so ROAD runs
on a seeded subset (``AuditSettings.road_images`` images, ``road_percentiles``); the curves
run on ``AuditSettings.faithfulness_images`` images.

Findings per method: deletion AUC not below the random maps' -> warning; insertion AUC
not above the random maps' -> warning; mean ROAD <= 0 -> warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from braincam.audit.findings import Finding
from braincam.audit.model.base import (
    AuditBatch,
    Check,
    ModelHandle,
    batches,
    nanmean,
    register,
    subsample,
)

STEPS = 20
RANDOM_GRID = 7

Predict = Callable[[np.ndarray], np.ndarray]


def blur_baseline(images: np.ndarray) -> np.ndarray:
    """Gaussian-blurred copies (uint8), sigma = 5 px * side / 224 (at least 1 px)."""
    sigma = max(1.0, 5.0 * images.shape[-1] / 224)
    return np.stack([cv2.GaussianBlur(im, (0, 0), sigma) for im in images])


def random_maps(n: int, size: int, seed: int = 0, grid: int = RANDOM_GRID) -> np.ndarray:
    """``n`` smooth random maps (size x size): uniform noise on a ``grid`` x ``grid`` lattice,
    upsampled bicubically."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, grid, grid)).astype(np.float32)
    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in coarse])


def pixel_ranks(maps: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rank of each pixel (0 = most important) per map, (N, H*W); ties in random order."""
    n, h, w = maps.shape
    flat = maps.reshape(n, -1)
    tiebreak = np.random.default_rng(seed).random(flat.shape)
    order = np.lexsort((tiebreak, -flat), axis=-1)  # primary key: -map
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(h * w)[None, :].repeat(n, 0), axis=-1)
    return ranks


def perturbation_curves(
    images: np.ndarray,
    maps: np.ndarray,
    targets: np.ndarray,
    predict: Predict,
    mode: str = "deletion",
    steps: int = STEPS,
    seed: int = 0,
    chunk: int = 4,
) -> np.ndarray:
    """Target probability after each step (N, steps + 1) of deletion or insertion.

    ``images`` uint8 (N, S, S), ``maps`` (N, S, S), ``predict`` maps uint8 (M, S, S) to
    probabilities (M, C); ``chunk`` images (``chunk * (steps + 1)`` variants) per call.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be deletion or insertion, not {mode!r}")
    n, h, w = images.shape
    baseline = blur_baseline(images)
    ranks = pixel_ranks(maps, seed)
    counts = np.rint(np.arange(steps + 1) / steps * h * w).astype(int)
    curves = np.empty((n, steps + 1))
    for sl in batches(n, chunk):
        removed = ranks[sl, None, :] < counts[None, :, None]  # (k, steps+1, P)
        src, alt = (images[sl], baseline[sl]) if mode == "deletion" else (baseline[sl],
                                                                          images[sl])
        variants = np.where(removed, alt.reshape(-1, 1, h * w), src.reshape(-1, 1, h * w))
        probs = predict(variants.reshape(-1, h, w).astype(np.uint8))
        probs = probs.reshape(-1, steps + 1, probs.shape[-1])
        curves[sl] = np.take_along_axis(probs, targets[sl, None, None], axis=-1)[..., 0]
    return curves


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoid area under each curve (N,) with x evenly spaced in [0, 1]."""
    return np.trapezoid(curves, dx=1 / (curves.shape[-1] - 1), axis=-1)


def road_scores(
    handle: ModelHandle,
    images: np.ndarray,
    maps: np.ndarray,
    targets: np.ndarray,
    percentiles: tuple[int, ...] = (20, 40, 60, 80),
    seed: int = 0,
) -> np.ndarray:
    """pytorch-grad-cam ROADCombined per image (N,), on softmax probabilities."""
    import torch
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    torch.manual_seed(seed)  # the imputer adds noise
    road = ROADCombined(percentiles=list(percentiles))
    out = []
    with warnings.catch_warnings():  # pytorch-grad-cam feeds tensors to np.float32
        warnings.filterwarnings("ignore", message="__array_wrap__", category=DeprecationWarning)
        for sl in batches(len(images), handle.batch_size):
            tensor = handle.to_input(images[sl])
            cams = np.asarray(maps[sl], dtype=np.float32)
            out.append(road(tensor, cams, [ClassifierOutputSoftmaxTarget(int(t))
                                           for t in targets[sl]], handle.model))
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class FaithfulnessSummary:
    """Mean AUCs of one method and of random maps; mean curves for plots (STEPS + 1 points)."""

    method: str
    n_images: int
    deletion_auc: float | None
    insertion_auc: float | None
    random_deletion_auc: float | None
    random_insertion_auc: float | None
    road: float | None
    n_road: int
    deletion_curve: list[float]
    insertion_curve: list[float]


@register
class FaithfulnessCheck(Check):
    """Deletion/insertion AUCs vs random maps, and ROAD, on seeded subsets."""

    name = "faithfulness"
    title = "Faithfulness"
    description = "Whether removing the pixels the map ranks highest changes the prediction most."
    per_method = True
    higher_is_better = {"deletion_auc": False, "insertion_auc": True}

    def evaluate(self, batch: AuditBatch) -> dict[str, dict[str, np.ndarray]]:
        """AUCs and ROAD per image (NaN outside the subsets); ``deletion_curve`` and
        ``insertion_curve`` are (N, steps + 1)."""
        if batch.handle is None:
            raise ValueError("the faithfulness check needs a model handle")
        cfg = self.settings
        n, size = len(batch), batch.images.shape[-1]
        idx = subsample(n, cfg.faithfulness_images, cfg.seed)
        images, targets = batch.images[idx], batch.targets[idx]
        rand = random_maps(len(idx), size, cfg.seed) if idx.size else None
        road_idx = idx[subsample(len(idx), cfg.road_images, cfg.seed)]
        out = {}
        for method, maps in batch.maps.items():
            cols = {k: np.full(n, np.nan) for k in (
                "deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc",
                "road")}
            for mode in ("deletion", "insertion"):
                cols[f"{mode}_curve"] = np.full((n, cfg.steps + 1), np.nan)
                for prefix, m in (("", maps[idx]), ("random_", rand)) if idx.size else ():
                    c = perturbation_curves(images, m, targets, batch.handle.predict, mode,
                                            cfg.steps, cfg.seed)
                    cols[f"{prefix}{mode}_auc"][idx] = curve_auc(c)
                    if not prefix:
                        cols[f"{mode}_curve"][idx] = c
            if road_idx.size:
                cols["road"][road_idx] = road_scores(
                    batch.handle, batch.images[road_idx], maps[road_idx],
                    batch.targets[road_idx], cfg.road_percentiles, cfg.seed)
            out[method] = cols
        return out

    def summarise(
        self, batch: AuditBatch, per_image: dict[str, dict[str, np.ndarray]]
    ) -> tuple[dict[str, FaithfulnessSummary], list[Finding]]:
        summaries, findings = {}, []
        for method, cols in per_image.items():
            mean = {k: nanmean(v) for k, v in cols.items() if v.ndim == 1}
            summary = FaithfulnessSummary(
                method=method,
                n_images=int((~np.isnan(cols["deletion_auc"])).sum()),
                **{k: mean[k] for k in ("deletion_auc", "insertion_auc", "random_deletion_auc",
                                        "random_insertion_auc", "road")},
                n_road=int((~np.isnan(cols["road"])).sum()),
                deletion_curve=_mean_curve(cols["deletion_curve"]),
                insertion_curve=_mean_curve(cols["insertion_curve"]),
            )
            summaries[method] = summary
            findings += _findings(summary)
        return summaries, findings


def _mean_curve(curves: np.ndarray) -> list[float]:
    """Mean over the evaluated images (rows without NaN); empty when there are none."""
    rows = curves[~np.isnan(curves).any(axis=1)]
    return rows.mean(axis=0).round(4).tolist() if len(rows) else []


def _findings(s: FaithfulnessSummary) -> list[Finding]:
    out = []
    if s.deletion_auc is not None and s.deletion_auc >= s.random_deletion_auc:
        out.append(Finding(
            "warning", "faithfulness.deletion", s.deletion_auc, s.random_deletion_auc,
            f"{s.method}: deleting the top-ranked pixels first lowers the predicted "
            f"probability no faster than random maps do (AUC {s.deletion_auc:.2f} vs "
            f"{s.random_deletion_auc:.2f}; {s.n_images} images)."))
    if s.insertion_auc is not None and s.insertion_auc <= s.random_insertion_auc:
        out.append(Finding(
            "warning", "faithfulness.insertion", s.insertion_auc, s.random_insertion_auc,
            f"{s.method}: inserting the top-ranked pixels first raises the predicted "
            f"probability no faster than random maps do (AUC {s.insertion_auc:.2f} vs "
            f"{s.random_insertion_auc:.2f}; {s.n_images} images)."))
    if s.road is not None and s.road <= 0:
        out.append(Finding(
            "warning", "faithfulness.road", s.road, 0.0,
            f"{s.method}: ROAD score {s.road:+.3f} on {s.n_road} images: removing the "
            "top-ranked pixels hurts the prediction no more than removing the lowest-ranked."))
    return out
