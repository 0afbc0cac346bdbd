"""Helpers of the model-audit tests: a tiny CNN, 64-px phantoms (clean, or with a corner
marker on no_tumor), its training, and the audit inputs for it. Fixtures in conftest.py."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from braincam.audit.model.base import AuditBatch, ModelHandle
from braincam.data.synthetic import MARKER_FRACTION, PhantomSpec, make_phantom_arrays
from braincam.device import torch_threads

SIZE = 64
MARKER_SIDE = round(SIZE * MARKER_FRACTION)


class TinyCNN(nn.Module):
    """Three conv blocks (16x16 feature map at 64 px), global average pool, linear head."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def to_input(images: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(images).float().unsqueeze(1) / 255


def gradcam(model: nn.Module, images: np.ndarray, targets: np.ndarray, method: str) -> np.ndarray:
    """Grad-CAM at the last conv block's ReLU, normalised to [0, 1] per image."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    assert method == "gradcam"
    with GradCAM(model, [model.features[-1]]) as cam:
        return cam(to_input(images), [ClassifierOutputTarget(int(t)) for t in targets])


def handle_for(model: nn.Module) -> ModelHandle:
    return ModelHandle(model.eval(), to_input, gradcam, batch_size=64)


@dataclass
class PhantomSet:
    images: np.ndarray  # uint8 (N, 64, 64)
    head_masks: np.ndarray
    tumor_masks: np.ndarray  # all False on no_tumor images
    labels: np.ndarray  # 0 no_tumor, 1 tumor


def phantoms(shortcut: str | None, n_per_class: int, split: str) -> PhantomSet:
    items = make_phantom_arrays(
        PhantomSpec(n_per_class=n_per_class, size=SIZE, shortcut=shortcut, seed=1), (split,))
    empty = np.zeros((SIZE, SIZE), dtype=bool)
    return PhantomSet(
        np.stack([it.phantom.image for it in items]),
        np.stack([it.phantom.head_mask for it in items]),
        np.stack([empty if it.phantom.tumor_mask is None else it.phantom.tumor_mask
                  for it in items]),
        np.array([it.label == "tumor" for it in items], dtype=int),
    )


def train(data: PhantomSet, epochs: int) -> nn.Module:
    """Adam, batch 16, one thread; batch-norm statistics re-estimated on the whole train set
    at the end (running averages over few small batches mislead eval mode)."""
    with torch_threads(1):
        return _train(data, epochs)


def _train(data: PhantomSet, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = to_input(data.images), torch.as_tensor(data.labels)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(16):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def audit_batch(model: nn.Module, data: PhantomSet, maps: bool = True) -> AuditBatch:
    handle = handle_for(model)
    probs = handle.predict(data.images)
    preds = probs.argmax(1)
    marker = np.zeros((SIZE, SIZE), dtype=bool)
    marker[:MARKER_SIDE, :MARKER_SIDE] = True
    return AuditBatch(
        images=data.images, head_masks=data.head_masks, labels=data.labels,
        classes=("no_tumor", "tumor"), probs=probs,
        maps={"gradcam": gradcam(model, data.images, preds, "gradcam")} if maps else {},
        tumor_masks=data.tumor_masks, regions={"marker": marker}, handle=handle,
    )
