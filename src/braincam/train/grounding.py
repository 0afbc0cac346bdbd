"""Grounded training data: tumour masks for the training images, counterfactual pairs and
lesion views.

Counterfactual pairs (``TrainConfig.counterfactual_pairs``, ``--counterfactual-pairs``):
every training tumour image ``x`` with a non-empty expert mask ``T`` (model-input
coordinates, :func:`braincam.data.preprocess.tumour_mask`) adds two images to the training
pool::

    removed  = inpaint(x, T)    label: no_tumor    tumour mask: empty
    control  = inpaint(x, C)    label: x's label   tumour mask: T
    C = control_region(T, brain(x), rng)   T's shape moved into tumour-free brain

``inpaint`` is OpenCV's Telea inpainting of the region dilated by
:data:`braincam.data.regions.INPAINT_DILATE` pixels, and ``control_region`` keeps its margin
from the tumour (:mod:`braincam.data.regions`): the removal the model audit measures, so a
model trained on these copies is tested with the same edit. ``brain(x)`` is the head mask's
interior (:func:`braincam.data.mask.brain_region`). Both copies carry the same inpainting artefacts,
one with each label, so the artefacts predict nothing and only the tumour's absence does.
An image where no control region fits (the brain too small for the tumour's shape) adds
neither copy. With subtypes the removed copy takes the trained no-tumour class. The copies
are made once from the preprocessed uint8 images (so phase 1's features include them);
validation and test images are never altered. The control is drawn from a generator seeded
with the run's seed: a run reproduces its pairs.

Lesion views (``TrainConfig.view_pairs``, ``--view-pairs``): every such image also adds the
two views the model audit tests with (:func:`braincam.data.regions.make_views`), cut from
the original image and enlarged to the input::

    tumour view  = window holding all of T         label: x's label   tumour mask: T, cut
    clear view   = window of tumour-free brain     label: no_tumor    tumour mask: empty

Both views hold about as much brain and carry the same zoom and resampling, one with each
label, so only the tumour tells them apart; nothing is inpainted, so the tumour-removal test
stays independent evidence for such a model (the lesion-view test does not). Head masks
are cut with their view. The windows are placed with generators seeded by the run's seed
and the image's index.

Guide views (``TrainConfig.guide_views``, ``--guide-views``): with ``--guide``, the lesion
views of the masked images the guide's segmenter trained on (its ``split.csv`` rows under
``train``; never its validation or held-out images, nor the classifier's own validation and
test images) join the training pool, the slices themselves do not (:func:`guide_originals`).
A guided classifier sees only what its segmenter marks, and a segmenter trained on slices
that all hold a tumour marks something in most tumour-free views of the same source; these
views teach the head what such marks look like on tumour-free tissue of the segmenter's own
sources, beside tumour tissue cut the same way, one view of each label per slice, so the
source itself predicts nothing. With
``guide_views_max`` N (``--guide-views-max``), views of N of those images only (:func:`sample`,
seeded by the run's seed), so the views need not outnumber the classifier's own images.

The views weigh as a group of their own (:func:`group_weights`; ``guide_views_weight`` W,
``--guide-views-weight``, 1 unless set)::

    w_i = class_weights(y_own)[y_i]     the classifier's own images (sum: n_own)
    w_i = W * n_own / n_views           each view (sum: W * n_own)

so the own images keep their class balance whatever the views hold, and the views (one of
each label per slice, balanced by construction) weigh W times as much as all of them. With
``--upweight-errors`` the counts and class weights are those of the rows an epoch draws,
repeats included. With
W = 0 the views join the own images in one pool whose classes the loss balances instead, and
views of tumour-free tissue then dilute the weight of the classifier's own tumour-free images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from braincam.data.regions import Pairs, make_pairs, make_views
from braincam.train.loop import TrainData, class_weights

if TYPE_CHECKING:
    from braincam.data.preprocess import PreprocessCache, PreprocessConfig
    from braincam.data.records import ImageRecord

log = logging.getLogger(__name__)

def tumour_masks(
    records: Sequence[ImageRecord], config: PreprocessConfig, cache: PreprocessCache
) -> torch.Tensor:
    """The expert tumour masks of ``records`` in model-input coordinates (N, S, S) bool,
    empty where a record has no mask (a box is not a mask: it would reward or inpaint the
    tissue around a tumour too) or its mask has become unreadable (a warning)."""
    from braincam.data.imageio import ImageReadError
    from braincam.data.preprocess import tumour_mask

    out = torch.zeros(len(records), config.size, config.size, dtype=torch.bool)
    for i, record in enumerate(records):
        if record.mask is None:
            continue
        try:
            out[i] = torch.from_numpy(tumour_mask(record, cache.get(record, config)))
        except ImageReadError as exc:
            log.warning("tumour mask left out: %s", exc)
    return out


def with_pairs(train: TrainData, no_tumor: int, seed: int) -> tuple[TrainData, Pairs]:
    """``train`` followed by its counterfactual copies: removed (label ``no_tumor``, empty
    tumour mask), then control (own label and tumour mask); head masks are the source's.
    ``train.tumour`` must be loaded."""
    if train.tumour is None:
        raise ValueError("counterfactual pairs need the training images' tumour masks")
    pairs = make_pairs(train.images.numpy(), train.masks.numpy(), train.tumour.numpy(), seed)
    src = torch.from_numpy(pairs.source)
    images = torch.cat([train.images, torch.from_numpy(pairs.removed),
                        torch.from_numpy(pairs.control)])
    masks = torch.cat([train.masks, train.masks[src], train.masks[src]])
    labels = torch.cat([train.labels, torch.full((len(src),), no_tumor, dtype=train.labels.dtype),
                        train.labels[src]])
    tumour = torch.cat([train.tumour, torch.zeros_like(train.tumour[src]), train.tumour[src]])
    return TrainData(images, masks, labels, tumour), pairs


def with_views(
    train: TrainData, originals: TrainData, no_tumor: int, seed: int
) -> tuple[TrainData, int]:
    """``train`` followed by the lesion views of ``originals`` (the training split before
    any copies; ``train`` may already hold them): tumour views (own label and cut tumour
    mask), then clear views (label ``no_tumor``, empty tumour mask); returns the data and the
    number of view pairs. ``originals.tumour`` must be loaded."""
    if originals.tumour is None:
        raise ValueError("lesion views need the training images' tumour masks")
    views = make_views(originals.images.numpy(), originals.masks.numpy(),
                       originals.tumour.numpy(), seed)
    src = torch.from_numpy(views.source)
    images = torch.cat([train.images, torch.from_numpy(views.tumour),
                        torch.from_numpy(views.clear)])
    masks = torch.cat([train.masks, torch.from_numpy(views.tumour_heads),
                       torch.from_numpy(views.clear_heads)])
    labels = torch.cat([train.labels, originals.labels[src],
                        torch.full((len(src),), no_tumor, dtype=train.labels.dtype)])
    tumour = None if train.tumour is None else torch.cat(  # only --mask-reward reads them
        [train.tumour, torch.from_numpy(views.tumour_masks), torch.zeros_like(train.tumour[src])])
    return TrainData(images, masks, labels, tumour), len(src)


def group_weights(
    labels: torch.Tensor, n_own: int, views_weight: float, num_classes: int,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """Loss weights of ``labels`` whose first ``n_own`` rows are the classifier's own images
    and the rest guide views: own rows class-balanced among themselves, the views sharing
    ``views_weight * n_own`` equally (the module docstring's formula). ``pool``: the rows an
    epoch draws, a row once per draw (``--upweight-errors``); both counts are then of draws,
    so the own classes stay balanced over an epoch, repeats included."""
    drawn = torch.arange(len(labels)) if pool is None else pool
    own_drawn = labels[drawn[drawn < n_own]]
    own = class_weights(own_drawn, num_classes)[labels[:n_own]]
    n_views = int((drawn >= n_own).sum())
    views = torch.full((len(labels) - n_own,), views_weight * len(own_drawn) / max(n_views, 1))
    return torch.cat([own, views])


def sample(data: TrainData, n: int, seed: int) -> TrainData:
    """``n`` rows of ``data`` in the order of ``torch.randperm`` seeded with ``seed``."""
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return TrainData(data.images[idx], data.masks[idx], data.labels[idx],
                     None if data.tumour is None else data.tumour[idx])


def guide_originals(
    members: Sequence[Path], config: PreprocessConfig, cache: PreprocessCache,
    target: Callable[[str], int | None], progress: bool = False,
    left_out: Collection[str] = (),
) -> TrainData:
    """The masked images the guide's segmenter runs ``members`` trained on (``split.csv``
    rows under ``train`` that have a tumour mask; a path in several members once),
    preprocessed as the classifier's own, with their labels (``target``: the trained class
    of a label, None for one the classifier does not know: left out) and tumour masks. A
    member without a ``split.csv`` (a segmenter saved by hand) adds none. ``left_out``: record
    keys never used (the classifier's validation and test images, which a guide trained on
    the same folders may have learnt from: their views would leak into its training)."""
    from braincam.data.records import records_at, without_skipped
    from braincam.runs import RunDir

    records: dict[str, ImageRecord] = {}
    for member in map(RunDir, members):
        if not member.split.is_file():
            log.warning("--guide-views: %s has no split.csv; no views of its images",
                        member.root)
            continue
        for record in records_at(member.data_roots(), member.split_paths("train"),
                                 member.split):
            if (record.mask is not None and target(record.label) is not None
                    and record.key not in left_out):
                records.setdefault(record.key, record)
    chosen = list(records.values())
    images, heads, unreadable = cache.load(chosen, config, progress=progress)
    chosen = without_skipped(chosen, unreadable)
    labels = torch.tensor([target(r.label) for r in chosen], dtype=torch.long)
    return TrainData(torch.from_numpy(images), torch.from_numpy(heads), labels,
                     tumour_masks(chosen, config, cache))
