"""Upweighting the training images a simpler model gets wrong (JTT, Liu et al. 2021).

A shortcut is the rule most training images obey; the images that contradict it are few, and
empirical risk minimisation fits them last, by memorising. In Sartaj's Training folder every
glioma is a T1 post-contrast slice while the no-tumour folder holds every sequence and CT, so
"T1 post-contrast means tumour" fits almost every image; the contradicting ones are the T2,
FLAIR and CT tumours and the T1 post-contrast slices without a tumour. "Just Train Twice"
finds them as the errors ``E`` of a first, low-capacity model and trains the final model with
``E`` upsampled ``lambda`` times. braincam's phase 1 -- the head alone on frozen ImageNet
features, too small to memorise -- is that first model, so ``E`` costs one pass of the head
over features already computed, and phase 2 sees each image of ``E`` ``lambda`` times an
epoch. The class weights of phase 2 count the upsampled images, so classes stay balanced.
"""

from __future__ import annotations

import torch


def task_errors(logits: torch.Tensor, labels: torch.Tensor, task_of: torch.Tensor) -> torch.Tensor:
    """Bool per image: the predicted output's task class differs from the label's.

    ``task_of[k]``: the task class of output ``k`` (a binary model trained on subtypes maps
    glioma, meningioma, pituitary to tumour; otherwise the identity). A glioma called
    meningioma is right for the task and not counted: the shortcut is about the task.
    """
    return task_of[logits.argmax(1)] != task_of[labels]


def upsampled_pool(n: int, errors: torch.Tensor, factor: int) -> torch.Tensor:
    """The indices an epoch draws from: ``0..n-1`` once, and each error index ``factor - 1``
    more times (``factor`` 1: no change)."""
    extra = torch.nonzero(errors).flatten().repeat(factor - 1)
    return torch.cat([torch.arange(n), extra])
