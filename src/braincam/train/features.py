"""Backbone features remembered across the folds of a cross-validation.

Phase 1 of training (:func:`braincam.train.loop.fit_head`) runs the frozen backbone once over
every training and validation image. The folds of ``braincam cv`` start from the same
backbone (the same pretrained weights, the same guide) and share most of their images; the
lesion views of ``--guide-views`` are the same in every fold. Inside
:func:`remembered_features` each image's features are therefore computed once and looked up
after that, under the key::

    (blake2b of the backbone's class and state dict,  blake2b of the image's shape and bytes)

so a backbone that differs in any weight or buffer, or an image that differs in any pixel,
is computed afresh. Features are computed in eval mode without augmentation, so a looked-up
row is the row a fresh computation would give, up to the floating-point effects of a
different batch composition.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
from torch import nn

from braincam.distributed import SINGLE, DistContext, sharded_rows
from braincam.evaluate.predict import forward_batches

_MEMO: ContextVar[dict[bytes, dict[bytes, torch.Tensor]] | None] = ContextVar(
    "braincam_feature_memo", default=None)


@contextlib.contextmanager
def remembered_features() -> Iterator[None]:
    """Inside the block, :func:`backbone_features` computes each (backbone, image) once;
    the remembered rows are dropped on exit."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def module_digest(module: nn.Module) -> bytes:
    """blake2b of the module's class name and every state-dict entry (name, dtype, shape,
    bytes): equal digests mean equal weights and buffers."""
    h = hashlib.blake2b(type(module).__qualname__.encode(), digest_size=16)
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


def image_digest(image: torch.Tensor) -> bytes:
    """blake2b of one image's shape and bytes."""
    h = hashlib.blake2b(str(tuple(image.shape)).encode(), digest_size=16)
    h.update(image.contiguous().numpy().tobytes())
    return h.digest()


def backbone_features(
    backbone: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int,
    ctx: DistContext = SINGLE,
    progress: bool = False,
) -> torch.Tensor:
    """``backbone`` features of grey uint8 ``images`` (N, S, S) (under torchrun each rank
    computes a share, every rank gets all rows); inside :func:`remembered_features` only the
    rows not computed before are."""

    def compute(x: torch.Tensor) -> torch.Tensor:
        return sharded_rows(
            lambda idx: forward_batches(backbone, x[idx], device, batch_size, progress,
                                        "features"),
            len(x), ctx)

    memo = _MEMO.get()
    if memo is None:
        return compute(images)
    rows = memo.setdefault(module_digest(backbone), {})
    keys = [image_digest(image) for image in images]
    first_new: dict[bytes, int] = {}  # each image not seen before, at its first index
    for i, key in enumerate(keys):
        if key not in rows:
            first_new.setdefault(key, i)
    if first_new:  # every rank holds the same rows, so all compute the same missing set
        missing = torch.tensor(list(first_new.values()))
        computed = compute(images[missing])
        for i, row in zip(missing.tolist(), computed, strict=True):
            rows[keys[i]] = row.clone()
    return torch.stack([rows[key] for key in keys])
