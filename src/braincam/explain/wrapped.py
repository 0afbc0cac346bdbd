"""Gradient-free CAMs through pytorch-grad-cam: Score-CAM, Ablation-CAM and EigenCAM.

The library's own ``get_cam_image`` computes the raw map from the activations that
:class:`~braincam.explain.base.LayerHook` captured, so no extra hooked forward is run and
braincam normalises every method the same way.

- Score-CAM (Wang et al. 2020): ``w_k = softmax_k S(x * norm(up(A_k)))``, one forward per
  channel; ``cam = sum_k w_k A_k``. Slow (K forwards per image), run one image at a time.
- Ablation-CAM (Desai & Ramaswamy 2020): ``w_k = (S - S_without_k) / S``, one forward per
  channel; ``cam = sum_k w_k A_k``.
- EigenCAM (Muhammad & Yeasin 2020): projection of the centred activations on their first
  principal component; class-agnostic, and its sign is arbitrary (SVD).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from types import SimpleNamespace

import numpy as np
import torch
from torch import Tensor, nn

WRAPPED = ("scorecam", "ablationcam", "eigencam")


@contextmanager
def _library_bars_off() -> Iterator[None]:
    """pytorch-grad-cam draws a tqdm bar over the channels of every batch (Score-CAM: of every
    image) whatever ``--no-progress`` says; braincam shows its own progress, so they are off."""
    import tqdm
    from pytorch_grad_cam import ablation_cam, score_cam

    modules = (ablation_cam, score_cam)
    saved = [m.tqdm for m in modules]
    for m in modules:
        m.tqdm = SimpleNamespace(tqdm=partial(tqdm.tqdm, disable=True))
    try:
        yield
    finally:
        for m, bar in zip(modules, saved, strict=True):
            m.tqdm = bar


def raw_map(
    method: str,
    model: nn.Module,
    module: nn.Module,
    x: Tensor,
    targets: Tensor,
    activations: Tensor,
    single_logit: bool,
) -> Tensor:
    """Raw ``(N, h, w)`` map of a pytorch-grad-cam method, on the activations' device."""
    from pytorch_grad_cam import AblationCAM, EigenCAM, ScoreCAM
    from pytorch_grad_cam.ablation_layer import AblationLayer
    from pytorch_grad_cam.utils.find_layers import replace_layer_recursive
    from pytorch_grad_cam.utils.model_targets import (
        BinaryClassifierOutputTarget,
        ClassifierOutputTarget,
    )

    target_type = BinaryClassifierOutputTarget if single_logit else ClassifierOutputTarget
    outputs = [target_type(int(t)) for t in targets.tolist()]
    acts = activations.float().cpu().numpy()
    if method == "ablationcam":
        ablation = AblationLayer()
        cam = AblationCAM(model, [module], ablation_layer=ablation)
    else:
        cam = {"scorecam": ScoreCAM, "eigencam": EigenCAM}[method](model, [module])
    cam.activations_and_grads.release()  # LayerHook already captured the activations
    try:
        with torch.no_grad(), _library_bars_off():
            if method == "scorecam":  # it holds N x K upsampled copies of the input
                raw = np.concatenate([
                    cam.get_cam_image(x[i : i + 1], module, outputs[i : i + 1], acts[i : i + 1],
                                      None, eigen_smooth=False)
                    for i in range(len(x))
                ])
            else:
                raw = cam.get_cam_image(x, module, outputs, acts, None, eigen_smooth=False)
    finally:
        if method == "ablationcam":  # put the layer back even if the ablation failed midway
            replace_layer_recursive(model, ablation, module)
    return torch.from_numpy(np.asarray(raw, dtype=np.float32)).to(activations.device)
