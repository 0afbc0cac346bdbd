"""Attention penalty: "right for the right reasons" (Ross et al. 2017, arXiv:1703.03717).

The phase-2 loss becomes cross-entropy plus ``W`` (``TrainConfig.attention_penalty``) times
the mean over the batch of the share of explanation energy outside the head mask ``M``
(aligned with the augmented input, :class:`braincam.train.loop.Batch`)::

    loss = CE(z, y) + W * mean_n share_out(E_n, M_n)
    share_out(E, M) = sum_ij E_ij * (1 - M_ij) / sum_ij E_ij        (0 when E is all 0)

Energy ``E`` explains ``s = log p_y``, the log-softmax of the TRUE class ``y``. Its gradient
sees every logit (``d log p_y = d z_y - sum_c p_c d z_c``): a cue that only lowers a rival's
logit counts as well, which a Grad-CAM of the logit ``z_y`` alone would miss.

- ``gradcam`` (``TrainConfig.attention_source``, the default): Grad-CAM at the model's
  default target layer (:func:`braincam.models.default_target_layer`; with
  ``TrainConfig.attention_layer``, ``--attention-layer``, that layer, saved as the run's
  ``cam_layer`` so that its explanations and audit use the layer it was trained at), computed
  differentiably (``create_graph=True``), ReLU'd and upsampled bilinearly to the input:
  ``E = up(relu(sum_k w_k A_k))`` with ``w_k = mean_ij ds/dA_kij``
  (:func:`braincam.explain.gradcam.cam`). One forward pass serves the cross-entropy and the
  map; the extra backward runs from the logits to the target layer only, which sits just
  before the pooling: a training step costs the same as without the penalty (measured on
  one CPU thread, batch 16: resnet10t at 96 px 0.080 vs 0.083 s, efficientnet_lite0 at
  224 px 0.60 vs 0.58 s).
- ``input-gradient``: ``E = sum_c (ds/dx_c)^2`` over the input channels, by double
  backpropagation through the whole network (Ross et al.'s penalty, here as a share).
  Pixel-exact where a stride-32 Grad-CAM is coarse, but 4-5x the cost of a plain step
  (0.33 and 2.76 s in the settings above). On the marker phantoms below it did not lower
  the model's use of the marker at W = 3 or 10 (one seed); likely because a share of
  squared gradients undercounts a saturated cue (a uniform white square has small input
  gradients while it decides the class).

Mask reward (``TrainConfig.mask_reward`` = ``R``, ``--mask-reward``): on tumour images with
an expert mask ``T`` (carried in the batch, warped with the image: ``Batch.tumour``), the
same energy is rewarded for lying inside the tumour rather than elsewhere in the head::

    loss += R * mean_n [T_n non-empty] * (1 - sum_ij E_ij T_ij / sum_ij E_ij (M_ij | T_ij))

(0 for an image without a mask; 1 for a masked image whose map has no energy, so that the
loss does not report an all-zero Grad-CAM as a success -- the constant adds no gradient,
so it does not pull a map out of that state; the mean runs over the whole batch, so
``R`` weighs a masked image like the penalty's ``W`` weighs any image, and a batch's scale
does not depend on how many of its images have masks). Only tumour images carry a non-empty
``T``: a no-tumour image has none, nor has the tumour-removed copy of
:mod:`braincam.train.grounding`. The mask is the tumour's expert outline, not its box (a box
rewards the tissue around a small tumour as much as the tumour). Both terms share one map
and one backward; either may be 0.

The share is scale-free, so ``W`` reads as "cross-entropy nats per unit of energy share".
Only phase 2 applies it: phase 1 fits the head on features computed once, and the head alone
cannot move where the features respond.

Limits. The penalty cannot act on a cue inside the head mask (an intensity shift of the
head, a marker drawn over the brain). A CAM penalty constrains where the last feature map
holds the evidence, not which input pixels feed it: with receptive fields that span the
image, a network can move a corner cue's evidence into cells over the head. On marker
phantoms (``tests/train/test_mitigation.py``: resnet10t from scratch at 96 px, 12 epochs)
the background-only survival stayed above chance in 1 of 3 seeds at W = 3 (0.86, chance
0.61) and in none of 5 seeds at W = 5; there, marked test images still scored 3-12 points
higher than the same images without the marker (the baseline: 33-50 points), so the
reliance shrinks rather than vanishes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from braincam.errors import BraincamError
from braincam.explain import gradcam_map
from braincam.train.config import TrainConfig
from braincam.train.loop import Batch, LossFn, compute_loss


def loss_for(config: TrainConfig) -> LossFn:
    """The phase-2 loss a config asks for: plain cross-entropy, or with the explanation
    terms (attention penalty, mask reward)."""
    return attention_loss if config.explains_in_loss else compute_loss


def attention_loss(
    model: nn.Module, batch: Batch, criterion: nn.Module, config: TrainConfig
) -> Tensor:
    """``criterion(z, y) + attention_penalty * mean share_out + mask_reward * mean
    shortfall`` (see the module docstring); a term whose weight is 0 is left out."""
    if config.attention_source == "gradcam":
        logits, energy = gradcam_energy(model, batch.x, batch.y)
    else:
        logits, energy = input_gradient_energy(model, batch.x, batch.y)
    loss = criterion(logits, batch.y)
    if config.attention_penalty > 0:
        loss = loss + config.attention_penalty * share_outside(energy, batch.mask).mean()
    if config.mask_reward > 0 and batch.tumour is not None:
        loss = loss + config.mask_reward * mask_shortfall(energy, batch.tumour, batch.mask).mean()
    return loss


def share_outside(energy: Tensor, mask: Tensor) -> Tensor:
    """``sum(E * ~M) / sum(E)`` per image (N,), at least in float32; 0 for an all-zero ``E``.

    ``energy`` (N, S, S) non-negative; ``mask`` (N, S, S) bool, True inside the head.
    The denominator is clamped to the smallest positive float (not ``+ eps``), so a share is
    exact whenever there is energy at all and its gradient stays finite when there is none.
    """
    energy = at_least_float32(energy)
    outside = (energy * (~mask)).sum(dim=(1, 2))
    total = energy.sum(dim=(1, 2)).clamp_min(torch.finfo(energy.dtype).tiny)
    return outside / total


def mask_shortfall(energy: Tensor, tumour: Tensor, head: Tensor) -> Tensor:
    """``1 - sum(E * T) / sum(E * (M | T))`` per image (N,), at least in float32; 0 where
    ``T`` is empty, 1 where ``T`` is not but there is no energy in ``M | T`` (a map that
    shows nothing does not show the tumour; the constant carries no gradient). ``tumour``
    and ``head`` (N, S, S) bool. The union keeps the ratio in [0, 1] where augmentation or
    the head mask cut a tumour's edge."""
    energy = at_least_float32(energy)
    inside = (energy * tumour).sum(dim=(1, 2))
    total = (energy * (tumour | head)).sum(dim=(1, 2))
    shortfall = 1 - inside / total.clamp_min(torch.finfo(energy.dtype).tiny)
    return torch.where(tumour.any(dim=(1, 2)), torch.where(total > 0, shortfall, 1.0),
                       torch.zeros_like(shortfall))


def true_class_score(logits: Tensor, labels: Tensor) -> Tensor:
    """``sum_n log p_n[y_n]``: one backward gives every image's own gradient, since image
    ``n``'s score depends on image ``n`` only (BatchNorm frozen or after the target layer)."""
    log_probs = F.log_softmax(at_least_float32(logits), dim=1)
    return log_probs.gather(1, labels.view(-1, 1)).sum()


def at_least_float32(t: Tensor) -> Tensor:
    """``t`` in float32 when it is in a lower precision (autocast), else unchanged."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def gradcam_energy(
    model: nn.Module, x: Tensor, labels: Tensor, layer: str | None = None
) -> tuple[Tensor, Tensor]:
    """Logits and the differentiable, ReLU'd Grad-CAM of ``log p_y`` at ``layer`` (default
    :func:`braincam.models.default_target_layer`), upsampled to the input (N, S, S)."""
    from braincam.models import default_target_layer

    layer = layer or default_target_layer(model)
    module = model.get_submodule(layer)
    captured: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    activations = captured[-1]
    if not activations.requires_grad:  # every weight up to the layer is frozen
        raise BraincamError(
            f"--attention-layer {layer}: the layer and everything before it stay frozen in "
            "fine-tuning, so its Grad-CAM cannot be trained; choose a later layer or train "
            "more of the backbone (--finetune-stages)")
    (grads,) = torch.autograd.grad(
        true_class_score(logits, labels), activations, create_graph=True
    )
    maps = F.relu(gradcam_map(activations, grads)).unsqueeze(1)
    maps = F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return logits, maps.squeeze(1)


def input_gradient_energy(
    model: nn.Module, x: Tensor, labels: Tensor
) -> tuple[Tensor, Tensor]:
    """Logits and ``sum_c (d log p_y / d x_c)^2`` (N, S, S), differentiable (double backprop)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    (grads,) = torch.autograd.grad(true_class_score(logits, labels), x, create_graph=True)
    return logits, grads.pow(2).sum(dim=1)
