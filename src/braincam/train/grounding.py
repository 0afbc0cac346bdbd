"""Grounded training data: tumour masks for the training images and counterfactual pairs.

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
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from braincam.data.regions import Pairs, make_pairs
from braincam.train.loop import TrainData

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
