"""Counterfactual inputs: does the prediction follow the head, the tumour, or something else?

(a) background only: every head pixel set to the image's background fill (median of the
    pixels outside the head mask). A content-blind model gives all such images one class
    ``c`` and so keeps exactly the predictions that were ``c``: at most the largest class
    share among the predictions (``background_only_baseline``). Survival above that means
    the background alone carries the decision. Head-less images are out of distribution
    and may push every output towards one class while the background still moves it, so
    two more numbers read the background-only probabilities ``q``: the class gap, mean over
    classes ``c`` of ``mean q_c(true class c) - mean q_c(other classes)`` (0 = the
    background tells the model nothing; an effect size), and the macro one-vs-rest ROC AUC
    of ``q`` against the true labels (0.5 = no order; it alone would also catch tiny,
    harmless differences).
(b) head only: background pixels set to 0 -> mean |change| of the predicted class's
    probability and the flip rate (prediction changes).
(c) intensity swap: each image histogram-matched (``skimage.exposure.match_histograms``)
    to a seeded random image of another true class -> flip rate.
(d) tumour removal, on images with an annotation: the region (dilated by 2 px) inpainted
    (:func:`braincam.data.regions.inpaint`: OpenCV's Telea, radius 5 px) -> flip rate and drop
    of the tumour probability (``1 - p(no_tumor)`` when the model has that class, else
    ``p(true class)``). On images with an expert mask (``AuditBatch.expert_masks``) the mask
    is removed the same way (``mask_removal_*``) and, as the control, the same shape moved
    to tumour-free brain of the same image (:func:`braincam.data.regions.control_region`
    inside the brain interior :func:`braincam.data.mask.brain_region`, a seeded generator
    per image; ``control_removal_*``). The tumour's own effect (``tumor_effect_*``) is the
    mean over the images where both ran of (mask removal - control removal), for the flip
    indicator and for the probability drop: inpainting alone, wherever it happens, should
    cost nothing.
(e) lesion views, on images with an expert mask and for a model with a ``no_tumor`` class:
    two windows of 0.4 of the image side cut from the same image
    (:func:`braincam.data.regions.make_views`), one holding the whole tumour, one holding no
    tumour pixel and about as much brain (brain shares within 0.1), each resized back to
    the input. The pair differs only by the lesion: same patient, scanner, sequence, zoom and
    processing, real tissue and no fill (unlike removal). ``lesion_view_tumor_recall``: share
    of tumour views predicted as a tumour class; ``lesion_view_clear_recall``: share of clear
    views predicted ``no_tumor``; ``lesion_view_balanced_accuracy``: their mean;
    ``lesion_view_auc``: ROC AUC of the tumour probability, tumour views against clear views;
    ``lesion_view_paired``: share of pairs whose tumour view gets the higher tumour
    probability (ties count half). A model that reads the source, the sequence or the
    intensity of the whole slice gives both views one answer (balanced accuracy 0.5); a
    zoomed view is itself new to a model trained on whole slices, so read the pair against
    each other rather than against the whole-slice accuracy.
(f) occlusion: share of the positive occlusion sensitivity (:mod:`braincam.explain`,
    ``AuditBatch.occlusion``) outside the head, against the background's area fraction.

Beside each flip rate, the accuracy on the counterfactual inputs (``*_accuracy``, against the
true labels, over the same images) and ``accuracy`` on the originals: a flip rate says the
model moved, the accuracy pair says whether its skill went with what was removed (for
example 0.95 -> 0.50 when the head is blanked: the skill lives in the head).

Findings: (a) survival > baseline + :data:`SURVIVAL_WARNING` (critical:
:data:`SURVIVAL_CRITICAL`), and separately gap >= :data:`GAP_WARNING` with AUC >=
:data:`AUC_WARNING` (critical: :data:`GAP_CRITICAL` and :data:`AUC_CRITICAL`); (b) flip
rate >= :data:`HEAD_ONLY_FLIP_WARNING`; (c) flip rate >= :data:`SWAP_FLIP_WARNING`
(critical: :data:`SWAP_FLIP_CRITICAL`); (d) the tumour's own probability drop (mask minus
control; where no mask: the annotation's drop) < :data:`TUMOR_DROP_WARNING`; (e) lesion-view
balanced accuracy < :data:`LESION_VIEW_WARNING`; (f) occlusion share outside the head above
its area fraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from braincam.audit.findings import Finding
from braincam.audit.model.attention import energy_share
from braincam.audit.model.base import AuditBatch, Check, nanmean, register
from braincam.data.mask import brain_region
from braincam.data.regions import control_region, inpaint, make_views
from braincam.labels import NO_TUMOR

SURVIVAL_WARNING = 0.05
SURVIVAL_CRITICAL = 0.15
GAP_WARNING = 0.10
GAP_CRITICAL = 0.25
AUC_WARNING = 0.75
AUC_CRITICAL = 0.9
HEAD_ONLY_FLIP_WARNING = 0.10
SWAP_FLIP_WARNING = 0.20
SWAP_FLIP_CRITICAL = 0.40
TUMOR_DROP_WARNING = 0.10
LESION_VIEW_WARNING = 0.80


def background_fill(images: np.ndarray, head_masks: np.ndarray) -> np.ndarray:
    """Median grey level outside the head, per image (N,) uint8; 0 when there is no background."""
    return np.array([np.median(im[~m]) if (~m).any() else 0
                     for im, m in zip(images, head_masks, strict=True)]).astype(np.uint8)


def background_only(images: np.ndarray, head_masks: np.ndarray) -> np.ndarray:
    """The images with every head pixel set to :func:`background_fill`."""
    fill = background_fill(images, head_masks)
    return np.where(head_masks, fill[:, None, None], images).astype(np.uint8)


def head_only(images: np.ndarray, head_masks: np.ndarray) -> np.ndarray:
    """The images with every background pixel set to 0."""
    return np.where(head_masks, images, 0).astype(np.uint8)


def swap_references(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """For each image, the index of a random image of another class (-1 when none exists)."""
    rng = np.random.default_rng(seed)
    refs = np.full(len(labels), -1)
    for i, label in enumerate(labels):
        others = np.flatnonzero(labels != label)
        if others.size:
            refs[i] = rng.choice(others)
    return refs


def intensity_swap(images: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Each image histogram-matched to ``images[refs[i]]`` (unchanged where ``refs[i] < 0``)."""
    from skimage.exposure import match_histograms

    out = images.copy()
    for i, ref in enumerate(refs):
        if ref >= 0:
            matched = match_histograms(images[i], images[ref])
            out[i] = np.clip(np.rint(matched), 0, 255).astype(np.uint8)
    return out


def remove_tumour(images: np.ndarray, tumor_masks: np.ndarray) -> np.ndarray:
    """The annotated regions inpainted (:func:`braincam.data.regions.inpaint`)."""
    return np.stack([inpaint(im, m) for im, m in zip(images, tumor_masks, strict=True)])


def control_masks(
    tumor_masks: np.ndarray, head_masks: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Per image, the control region of its tumour mask (module docstring (d)), with the
    generator ``default_rng([seed, i])``; all False where the tumour is empty or the shape
    does not fit."""
    out = np.zeros_like(tumor_masks, dtype=bool)
    for i, (tumour, head) in enumerate(zip(tumor_masks, head_masks, strict=True)):
        region = control_region(tumour, brain_region(head), np.random.default_rng([seed, i]))
        if region is not None:
            out[i] = region
    return out


def paired_order(higher: np.ndarray, lower: np.ndarray) -> float | None:
    """Share of pairs with ``higher[i] > lower[i]``, ties counting half; None when empty."""
    if not len(higher):
        return None
    return float(np.mean((higher > lower) + 0.5 * (higher == lower)))


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """Mean over the classes present (with positives and negatives) of the ROC AUC of
    ``probs[:, c]`` for ``labels == c``; None with fewer than two classes present."""
    from sklearn.metrics import roc_auc_score

    present = np.unique(labels)
    if len(present) < 2:
        return None
    return float(np.mean([roc_auc_score(labels == c, probs[:, c]) for c in present]))


def class_gap(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """Mean over the classes present (with positives and negatives) of
    ``mean probs[y == c, c] - mean probs[y != c, c]``; None with fewer than two classes."""
    present = np.unique(labels)
    if len(present) < 2:
        return None
    return float(np.mean([probs[labels == c, c].mean() - probs[labels != c, c].mean()
                          for c in present]))


def tumour_probability(
    probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]
) -> np.ndarray:
    """``1 - p(no_tumor)`` when ``no_tumor`` is a class, else the true class's probability."""
    if NO_TUMOR in classes:
        return 1 - probs[:, classes.index(NO_TUMOR)]
    return probs[np.arange(len(probs)), labels]


@dataclass
class CounterfactualSummary:
    """Rates over the images each test applies to (``n_*``; for occlusion, the images whose
    map has some positive sensitivity); None when it applies to none."""

    n_images: int
    background_only_survival: float | None
    background_only_baseline: float | None
    majority_share: float | None  # the largest class share among the true labels: the
    # accuracy of one answer for every image
    background_only_gap: float | None
    background_only_auc: float | None
    background_only_survival_by_class: dict[str, float | None]
    head_only_change: float | None
    head_only_flip_rate: float | None
    intensity_swap_flip_rate: float | None
    n_intensity_swap: int
    tumor_removal_flip_rate: float | None
    tumor_removal_prob_drop: float | None
    n_tumor_removal: int
    mask_removal_flip_rate: float | None
    mask_removal_prob_drop: float | None
    n_mask_removal: int
    control_removal_flip_rate: float | None
    control_removal_prob_drop: float | None
    n_control_removal: int
    tumor_effect_flip_rate: float | None
    tumor_effect_prob_drop: float | None
    lesion_view_tumor_recall: float | None
    lesion_view_clear_recall: float | None
    lesion_view_balanced_accuracy: float | None
    lesion_view_auc: float | None
    lesion_view_paired: float | None
    n_lesion_view: int
    occlusion_outside_head: float | None
    uniform_outside_head: float | None
    n_occlusion: int
    # accuracy on the originals and on each counterfactual, over the images each applies to
    accuracy: float | None = None
    background_only_accuracy: float | None = None
    head_only_accuracy: float | None = None
    intensity_swap_accuracy: float | None = None
    tumor_removal_accuracy: float | None = None
    tumor_removal_original_accuracy: float | None = None


@register
class CounterfactualCheck(Check):
    """Background-only, head-only, intensity-swap, tumour-removal and occlusion tests."""

    name = "counterfactual"
    title = "Counterfactuals"
    description = ("How predictions change when the head, background, intensities or tumour "
                   "are altered.")
    per_method = False
    unprefixed_columns = True
    higher_is_better = {"background_only_survival": False, "head_only_flip_rate": False,
                        "intensity_swap_flip_rate": False, "tumor_removal_flip_rate": True,
                        "lesion_view_balanced_accuracy": True}

    def evaluate(self, batch: AuditBatch) -> dict[str, dict[str, np.ndarray]]:
        if batch.handle is None:
            raise ValueError("the counterfactual check needs a model handle")
        predict, n = batch.handle.predict, len(batch)
        rows = np.arange(n)
        preds, p_pred = batch.preds, batch.probs[rows, batch.preds]
        cols: dict[str, np.ndarray] = {}

        bg_probs = predict(background_only(batch.images, batch.head_masks))
        bg_preds = bg_probs.argmax(1)
        for c, name in enumerate(batch.classes):
            cols[f"background_only_p_{name}"] = bg_probs[:, c]
        cols["background_only_survived"] = (bg_preds == preds).astype(float)
        cols["background_only_correct"] = (bg_preds == batch.labels).astype(float)

        head = predict(head_only(batch.images, batch.head_masks))
        cols["head_only_change"] = np.abs(head[rows, preds] - p_pred)
        cols["head_only_flipped"] = (head.argmax(1) != preds).astype(float)
        cols["head_only_correct"] = (head.argmax(1) == batch.labels).astype(float)

        refs = swap_references(batch.labels, self.settings.seed)
        swapped = predict(intensity_swap(batch.images, refs)).argmax(1)
        cols["intensity_swap_flipped"] = np.where(refs >= 0, swapped != preds, np.nan)
        cols["intensity_swap_correct"] = np.where(refs >= 0, swapped == batch.labels, np.nan)

        cols["tumor_removal_flipped"] = np.full(n, np.nan)
        cols["tumor_removal_prob_drop"] = np.full(n, np.nan)
        cols["tumor_removal_correct"] = np.full(n, np.nan)
        if batch.tumor_masks is not None and batch.tumor_masks.any():
            idx = np.flatnonzero(batch.tumor_masks.any(axis=(1, 2)))
            after = predict(remove_tumour(batch.images[idx], batch.tumor_masks[idx]))
            labels = batch.labels[idx]
            before_p = tumour_probability(batch.probs[idx], labels, batch.classes)
            cols["tumor_removal_flipped"][idx] = after.argmax(1) != preds[idx]
            cols["tumor_removal_correct"][idx] = after.argmax(1) == labels
            cols["tumor_removal_prob_drop"][idx] = before_p - tumour_probability(
                after, labels, batch.classes)

        cols |= self._mask_removal(batch) | self._lesion_views(batch)

        cols["occlusion_outside_head"] = np.full(n, np.nan)
        cols["uniform_outside_head"] = (~batch.head_masks).mean(axis=(1, 2))
        if batch.occlusion is not None:
            done = ~np.isnan(batch.occlusion).any(axis=(1, 2))
            cols["occlusion_outside_head"][done] = energy_share(
                batch.occlusion[done], ~batch.head_masks[done])
        return {"": cols}

    def _mask_removal(self, batch: AuditBatch) -> dict[str, np.ndarray]:
        """Flip and drop columns of mask removal and of its control (module docstring (d))."""
        n = len(batch)
        cols = {f"{kind}_removal_{what}": np.full(n, np.nan)
                for kind in ("mask", "control") for what in ("flipped", "prob_drop")}
        if batch.expert_masks is None or not batch.expert_masks.any():
            return cols
        idx = np.flatnonzero(batch.expert_masks.any(axis=(1, 2)))
        labels, preds = batch.labels[idx], batch.preds[idx]
        before = tumour_probability(batch.probs[idx], labels, batch.classes)
        controls = control_masks(batch.expert_masks[idx], batch.head_masks[idx],
                                 self.settings.seed)
        for kind, regions, rows in (
            ("mask", batch.expert_masks[idx], np.arange(idx.size)),
            ("control", controls, np.flatnonzero(controls.any(axis=(1, 2)))),
        ):
            if rows.size:
                after = batch.handle.predict(remove_tumour(batch.images[idx[rows]],
                                                           regions[rows]))
                cols[f"{kind}_removal_flipped"][idx[rows]] = after.argmax(1) != preds[rows]
                cols[f"{kind}_removal_prob_drop"][idx[rows]] = before[rows] - \
                    tumour_probability(after, labels[rows], batch.classes)
        return cols

    def _lesion_views(self, batch: AuditBatch) -> dict[str, np.ndarray]:
        """Tumour probability and tumour-class prediction on each image's two lesion views
        (module docstring (e)); NaN where the test does not apply."""
        n = len(batch)
        cols = {f"lesion_view_{kind}_{what}": np.full(n, np.nan)
                for kind in ("tumor", "clear") for what in ("p", "detected")}
        if NO_TUMOR not in batch.classes or batch.expert_masks is None:
            return cols
        views = make_views(batch.images, batch.head_masks, batch.expert_masks,
                           self.settings.seed)
        if not views.source.size:
            return cols
        no_tumor = batch.classes.index(NO_TUMOR)
        for kind, images in (("tumor", views.tumour), ("clear", views.clear)):
            probs = batch.handle.predict(images)
            cols[f"lesion_view_{kind}_p"][views.source] = 1 - probs[:, no_tumor]
            cols[f"lesion_view_{kind}_detected"][views.source] = probs.argmax(1) != no_tumor
        return cols

    def summarise(
        self, batch: AuditBatch, per_image: dict[str, dict[str, np.ndarray]]
    ) -> tuple[CounterfactualSummary, list[Finding]]:
        cols = per_image[""]
        preds = batch.preds
        bg_probs = np.stack([cols[f"background_only_p_{c}"] for c in batch.classes], axis=1)
        shares = np.bincount(preds, minlength=len(batch.classes)) / max(len(preds), 1)
        occluded = ~np.isnan(cols["occlusion_outside_head"])
        summary = CounterfactualSummary(
            n_images=len(batch),
            background_only_survival=nanmean(cols["background_only_survived"]),
            background_only_baseline=float(shares.max()) if len(preds) else None,
            majority_share=float(np.bincount(batch.labels).max() / len(batch.labels))
            if len(batch.labels) else None,
            background_only_gap=class_gap(batch.labels, bg_probs),
            background_only_auc=macro_auc(batch.labels, bg_probs),
            background_only_survival_by_class={
                c: nanmean(cols["background_only_survived"][batch.labels == i])
                for i, c in enumerate(batch.classes) if (batch.labels == i).any()},
            head_only_change=nanmean(cols["head_only_change"]),
            head_only_flip_rate=nanmean(cols["head_only_flipped"]),
            intensity_swap_flip_rate=nanmean(cols["intensity_swap_flipped"]),
            n_intensity_swap=int((~np.isnan(cols["intensity_swap_flipped"])).sum()),
            tumor_removal_flip_rate=nanmean(cols["tumor_removal_flipped"]),
            tumor_removal_prob_drop=nanmean(cols["tumor_removal_prob_drop"]),
            n_tumor_removal=int((~np.isnan(cols["tumor_removal_flipped"])).sum()),
            **_mask_summary(cols),
            **_lesion_view_summary(cols),
            occlusion_outside_head=nanmean(cols["occlusion_outside_head"]),
            uniform_outside_head=nanmean(cols["uniform_outside_head"][  # as its share
                occluded & ~np.isnan(cols["occlusion_outside_head"])]),
            n_occlusion=int(occluded.sum()),
            accuracy=nanmean(batch.correct.astype(float)),
            background_only_accuracy=nanmean(cols["background_only_correct"]),
            head_only_accuracy=nanmean(cols["head_only_correct"]),
            intensity_swap_accuracy=nanmean(cols["intensity_swap_correct"]),
            tumor_removal_accuracy=nanmean(cols["tumor_removal_correct"]),
            tumor_removal_original_accuracy=nanmean(np.where(
                np.isnan(cols["tumor_removal_correct"]), np.nan, batch.correct)),
        )
        return summary, _findings(summary)


def _mask_summary(cols: dict[str, np.ndarray]) -> dict[str, float | int | None]:
    """The mask-removal, control and tumour-effect fields of :class:`CounterfactualSummary`;
    the effect is paired: over the images where both removals ran."""
    both = ~np.isnan(cols["mask_removal_flipped"]) & ~np.isnan(cols["control_removal_flipped"])
    out: dict[str, float | int | None] = {}
    for kind in ("mask", "control"):
        out[f"{kind}_removal_flip_rate"] = nanmean(cols[f"{kind}_removal_flipped"])
        out[f"{kind}_removal_prob_drop"] = nanmean(cols[f"{kind}_removal_prob_drop"])
        out[f"n_{kind}_removal"] = int((~np.isnan(cols[f"{kind}_removal_flipped"])).sum())
    for what, col in (("flip_rate", "flipped"), ("prob_drop", "prob_drop")):
        diff = cols[f"mask_removal_{col}"][both] - cols[f"control_removal_{col}"][both]
        out[f"tumor_effect_{what}"] = nanmean(diff)
    return out


def _lesion_view_summary(cols: dict[str, np.ndarray]) -> dict[str, float | int | None]:
    """The ``lesion_view_*`` fields of :class:`CounterfactualSummary` (module docstring (e))."""
    from sklearn.metrics import roc_auc_score

    done = ~np.isnan(cols["lesion_view_tumor_p"])
    tumour_p, clear_p = cols["lesion_view_tumor_p"][done], cols["lesion_view_clear_p"][done]
    tumour_recall = nanmean(cols["lesion_view_tumor_detected"][done])
    clear_recall = nanmean(1 - cols["lesion_view_clear_detected"][done])
    any_pair = done.any()
    return {
        "lesion_view_tumor_recall": tumour_recall,
        "lesion_view_clear_recall": clear_recall,
        "lesion_view_balanced_accuracy": (tumour_recall + clear_recall) / 2 if any_pair else None,
        "lesion_view_auc": float(roc_auc_score(
            np.r_[np.ones(done.sum()), np.zeros(done.sum())], np.r_[tumour_p, clear_p]))
        if any_pair else None,
        "lesion_view_paired": paired_order(tumour_p, clear_p),
        "n_lesion_view": int(done.sum()),
    }


def _findings(s: CounterfactualSummary) -> list[Finding]:
    out = []
    if s.background_only_survival is not None:
        excess = s.background_only_survival - s.background_only_baseline
        severity = ("critical" if excess > SURVIVAL_CRITICAL else
                    "warning" if excess > SURVIVAL_WARNING else None)
        if severity:
            margin = SURVIVAL_CRITICAL if severity == "critical" else SURVIVAL_WARNING
            out.append(Finding(
                severity, "counterfactual.background_only", s.background_only_survival,
                s.background_only_baseline + margin,
                f"With the head replaced by background, {s.background_only_survival:.0%} of "
                f"predictions stay the same; a model blind to the background would keep at most "
                f"{s.background_only_baseline:.0%}."))
    gap, auc = s.background_only_gap, s.background_only_auc
    if gap is not None and gap >= GAP_WARNING and auc >= AUC_WARNING:
        critical = gap >= GAP_CRITICAL and auc >= AUC_CRITICAL
        out.append(Finding(
            "critical" if critical else "warning", "counterfactual.background_only_gap", gap,
            GAP_CRITICAL if critical else GAP_WARNING,
            f"With the head replaced by background, the model still gives each image's true "
            f"class {gap:.2f} more probability than other images get (ROC AUC {auc:.2f}): "
            "the background alone tells it the class."))
    if s.head_only_flip_rate is not None and s.head_only_flip_rate >= HEAD_ONLY_FLIP_WARNING:
        out.append(Finding(
            "warning", "counterfactual.head_only", s.head_only_flip_rate, HEAD_ONLY_FLIP_WARNING,
            f"Blanking the background outside the head flips {s.head_only_flip_rate:.0%} of "
            f"predictions (mean probability change {s.head_only_change:.2f})."))
    rate = s.intensity_swap_flip_rate
    if rate is not None and rate >= SWAP_FLIP_WARNING:
        severity = "critical" if rate >= SWAP_FLIP_CRITICAL else "warning"
        out.append(Finding(
            severity, "counterfactual.intensity_swap", rate,
            SWAP_FLIP_CRITICAL if severity == "critical" else SWAP_FLIP_WARNING,
            f"Matching each image's intensity histogram to an image of another class flips "
            f"{rate:.0%} of {s.n_intensity_swap} predictions: the model reads global intensity."))
    effect = s.tumor_effect_prob_drop
    if effect is not None and effect < TUMOR_DROP_WARNING:
        out.append(Finding(
            "warning", "counterfactual.tumor_effect", effect, TUMOR_DROP_WARNING,
            f"Inpainting the expert tumour mask lowers the tumour probability by "
            f"{s.mask_removal_prob_drop:.2f} and flips {s.mask_removal_flip_rate:.0%} of "
            f"{s.n_mask_removal} predictions; the same shape inpainted in tumour-free brain "
            f"lowers it by {s.control_removal_prob_drop:.2f} (flips "
            f"{s.control_removal_flip_rate:.0%}): the tumour's own effect is {effect:.2f}."))
    drop = s.tumor_removal_prob_drop
    if effect is None and drop is not None and drop < TUMOR_DROP_WARNING:
        out.append(Finding(
            "warning", "counterfactual.tumor_removal", drop, TUMOR_DROP_WARNING,
            f"Inpainting the annotated tumour lowers the tumour probability by only {drop:.2f} "
            f"and flips {s.tumor_removal_flip_rate:.0%} of {s.n_tumor_removal} predictions."))
    views = s.lesion_view_balanced_accuracy
    if views is not None and views < LESION_VIEW_WARNING:
        out.append(Finding(
            "warning", "counterfactual.lesion_views", views, LESION_VIEW_WARNING,
            f"Cut from the same {s.n_lesion_view} slices, views of the tumour and views of "
            f"tumour-free brain get balanced accuracy {views:.2f} (tumour found in "
            f"{s.lesion_view_tumor_recall:.0%}, tumour-free views cleared in "
            f"{s.lesion_view_clear_recall:.0%}; AUC {s.lesion_view_auc:.2f}): where only the "
            "lesion tells the views apart, the model often does not."))
    if s.occlusion_outside_head is not None and s.occlusion_outside_head > s.uniform_outside_head:
        out.append(Finding(
            "warning", "counterfactual.occlusion", s.occlusion_outside_head,
            s.uniform_outside_head,
            f"{s.occlusion_outside_head:.0%} of the occlusion sensitivity lies outside the head, "
            f"which covers {s.uniform_outside_head:.0%} of the image ({s.n_occlusion} images)."))
    return out
