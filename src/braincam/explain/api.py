"""``explain``: one call for every method, one result type.

Normalisation, per image, as pytorch-grad-cam's ``scale_cam_image`` does it: ReLU (only
evidence *for* the target class is shown), min-max ``(c - min) / (max - min + 1e-7)`` at the
raw map's resolution, bilinear resize to the input size (half-pixel centres, like OpenCV's
``INTER_LINEAR``), min-max again (interpolation can move the extremes). The raw maps are kept
in :class:`CamResult` for anything that needs signed or unscaled values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from braincam.errors import BraincamError
from braincam.explain import gradcam, gradcampp, hirescam, ig, layercam, wrapped, xgradcam
from braincam.explain.base import (
    LayerHook,
    class_probs,
    default_layer,
    eval_mode,
    model_device,
)
from braincam.explain.occlusion import STRIDE, WINDOW, occlusion

GRADIENT_CAMS = {
    "gradcam": gradcam.cam,
    "gradcam++": gradcampp.cam,
    "xgradcam": xgradcam.cam,
    "hirescam": hirescam.cam,
    "layercam": layercam.cam,
}
METHODS = (*GRADIENT_CAMS, *wrapped.WRAPPED, "ig", "occlusion")
EPS = 1e-7


@dataclass(frozen=True)
class ExplainOptions:
    """Settings of the perturbation and path methods (CAMs need none)."""

    window: int = WINDOW  # occlusion window, px
    stride: int = STRIDE  # occlusion stride, px
    fill: str = "zero"  # occlusion fill: zero | mean | blur
    ig_steps: int = ig.STEPS  # integrated-gradients steps
    batch_size: int | None = None  # occluded copies / IG steps per forward; None: per method


@dataclass
class CamResult:
    """Maps for N images; tensors on the model's device until :meth:`numpy`."""

    maps: Tensor  # (N, H, W) float32 in [0, 1] at input size, normalised per image
    raw: Tensor  # (N, h, w) before normalisation; layer resolution for CAMs, input for ig/occlusion
    targets: Tensor  # (N,) int64, the class each map explains
    probs: Tensor  # (N, C) class probabilities (C = 2 for a single-logit head)
    method: str
    layer: str | None  # target layer of a CAM; None for ig and occlusion

    def numpy(self) -> dict[str, np.ndarray]:
        """``maps``, ``raw``, ``probs`` as float32 and ``targets`` as int64, on the CPU."""
        return {
            "maps": self.maps.float().cpu().numpy(),
            "raw": self.raw.float().cpu().numpy(),
            "targets": self.targets.cpu().numpy().astype(np.int64),
            "probs": self.probs.float().cpu().numpy(),
        }


def normalise(raw: Tensor, size: tuple[int, int]) -> Tensor:
    """``(N, h, w)`` raw maps -> ``(N, H, W)`` in [0, 1] (see the module docstring)."""
    cam = _minmax(raw.float().clamp_min(0))
    if tuple(cam.shape[-2:]) != tuple(size):
        cam = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)
        cam = cam[:, 0]
    return _minmax(cam)


def _minmax(cam: Tensor) -> Tensor:
    cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + EPS)


def as_model_input(images: Tensor | np.ndarray) -> Tensor:
    """Grey uint8 ``(N, S, S)`` images go through ``braincam.models.to_model_input``; float
    ``(N, C, H, W)`` tensors are taken as model input already."""
    tensor = torch.as_tensor(images)
    if tensor.dtype == torch.uint8 and tensor.ndim == 3:
        from braincam.models import to_model_input

        return to_model_input(tensor)
    if tensor.ndim != 4 or not tensor.is_floating_point():
        raise ValueError(
            f"expected uint8 (N, S, S) images or a float (N, C, H, W) batch, got "
            f"{tensor.dtype} {tuple(tensor.shape)}"
        )
    return tensor


def explain(
    model: nn.Module,
    images: Tensor | np.ndarray,
    targets: Tensor | np.ndarray | list[int] | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    options: ExplainOptions | None = None,
) -> CamResult:
    """Explain ``targets`` (default: the predicted classes) for a batch of images.

    ``layer`` is a module name (``model.named_modules()``) for the CAM methods; default
    ``braincam.models.default_target_layer``. The whole batch is processed at once.
    """
    if method not in METHODS:
        raise BraincamError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    options = options or ExplainOptions()
    device = model_device(model)
    x = as_model_input(images).to(device)
    if targets is not None:
        targets = torch.as_tensor(targets if isinstance(targets, Tensor) else np.asarray(targets))
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise ValueError(f"targets must be integer class indices, got {targets.dtype}")
        targets = targets.to(device=device, dtype=torch.long)
        if targets.shape != (len(x),):
            raise ValueError(f"need one target per image, got shape {tuple(targets.shape)}")
        check_targets(model, x, targets)
    if method == "occlusion":
        occ = occlusion(model, x, targets, options.window, options.stride, options.fill,
                        options.batch_size)
        return _result(occ.drop, occ.targets, occ.probs, method, None, x)
    if method == "ig":
        with eval_mode(model):
            with torch.no_grad():
                probs = class_probs(model(x))
            targets = probs.argmax(dim=1) if targets is None else targets
            raw = ig.raw_map(model, x, targets, options.ig_steps, options.batch_size)
        return _result(raw, targets, probs, method, None, x)
    layer = layer or default_layer(model)
    with LayerHook(model, layer) as hook:
        if method in GRADIENT_CAMS:
            cap = hook.gradients(x, targets)
            raw = GRADIENT_CAMS[method](cap.activations, cap.grads)
        else:
            cap = hook.forward(x)
        probs = class_probs(cap.logits)
        targets = probs.argmax(dim=1) if targets is None else targets
        if method in wrapped.WRAPPED:
            raw = wrapped.raw_map(method, model, hook.module, x, targets, cap.activations,
                                  single_logit=cap.logits.shape[1] == 1)
    return _result(raw, targets, probs, method, layer, x)


def check_targets(model: nn.Module, x: Tensor, targets: Tensor) -> None:
    """A ValueError unless every target is a class index of ``model`` (K read from one
    image's output): out of range, some methods fail deep inside and one (EigenCAM, which
    needs no target) would record the wrong number silently."""
    with eval_mode(model), torch.no_grad():
        k = class_probs(model(x[:1])).shape[1]
    bad = (targets < 0) | (targets >= k)
    if bad.any():
        raise ValueError(f"targets must be class indices in [0, {k}), got {int(targets[bad][0])}")


def _result(raw: Tensor, targets: Tensor, probs: Tensor, method: str, layer: str | None,
            x: Tensor) -> CamResult:
    raw = raw.detach().float()
    return CamResult(normalise(raw, x.shape[-2:]), raw, targets, probs, method, layer)
