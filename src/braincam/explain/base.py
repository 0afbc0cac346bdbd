"""Hooking a target layer: its activations and the gradients of class scores w.r.t. them.

:class:`LayerHook` is a context manager in the style of torchcam's ``_CAM``: on entry it puts
the model in eval mode and hooks one module (found by its ``named_modules`` name); on exit it
removes the hook and restores every module's train/eval flag.

Gradients go *only down to the target layer*. The forward pass runs under ``torch.no_grad``
until the target layer; its forward hook turns its output into a fresh leaf that requires grad
and switches autograd on, so only the part of the network after the layer is recorded, and
``torch.autograd.grad(scores, activation)`` computes no weight or input gradients. This works
on frozen models (no parameter requires grad) and costs little more than inference when the
layer is near the output. The ``no_grad`` context restores the caller's grad mode on exit.

Class scores (what a CAM explains) are the logits; a single-logit head (binary, sigmoid) is
read as two classes: class 1 = logit, class 0 = -logit (pytorch-grad-cam's
``BinaryClassifierOutputTarget``).
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import torch
from torch import Tensor, nn

from braincam.errors import BraincamError

MAX_LISTED_LAYERS = 40


@dataclass
class Capture:
    """One forward pass through a hooked model; tensors stay on the model's device."""

    activations: Tensor  # (N, K, h, w) output of the target layer, detached
    logits: Tensor  # (N, C) model output, detached; C = 1 for a single-logit head
    grads: Tensor | None = None  # d(sum of target scores) / d activations, like activations


def class_scores(logits: Tensor) -> Tensor:
    """``(N, C)`` scores indexable by class: the logits, or ``[-z, z]`` for one logit ``z``."""
    if logits.ndim == 1:
        logits = logits[:, None]
    return torch.cat([-logits, logits], dim=1) if logits.shape[1] == 1 else logits


def class_probs(logits: Tensor) -> Tensor:
    """``(N, C)`` probabilities: softmax, or ``[1 - sigmoid(z), sigmoid(z)]`` for one logit."""
    if logits.ndim == 1:
        logits = logits[:, None]
    logits = logits.float()
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameter-free model)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; every module's own train/eval flag restored afterwards."""
    training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, flag in training.items():
            module.training = flag


def layer_names(model: nn.Module, limit: int = MAX_LISTED_LAYERS) -> list[str]:
    """Module names for an error message: all names down to the deepest nesting level that
    keeps the list within ``limit`` (top-level modules, then stages, then blocks...)."""
    names = [name for name, _ in model.named_modules() if name]
    chosen: list[str] = []
    for depth in range(max((n.count(".") for n in names), default=0) + 1):
        level = [n for n in names if n.count(".") <= depth]
        if chosen and len(level) > limit:
            break
        chosen = level
    return chosen


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The module called ``name``; unknown names raise BraincamError listing valid ones."""
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, list(modules), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise BraincamError(
        f"unknown layer {name!r}{hint}; valid layers include: {', '.join(layer_names(model))}"
    )


def default_layer(model: nn.Module) -> str:
    """The model's default CAM layer: its ``default_layer`` attribute (a model spec's
    :class:`~braincam.models.foreign.net.ForeignNet`), else
    ``braincam.models.default_target_layer``; other models need an explicit layer."""
    from braincam.models import default_target_layer

    if isinstance(getattr(model, "default_layer", None), str):
        return model.default_layer
    if getattr(model, "arch", None) is None:
        raise BraincamError(
            f"{type(model).__name__} is not a braincam model; name the target layer, one of: "
            f"{', '.join(layer_names(model))}"
        )
    return default_target_layer(model)


class LayerHook:
    """``with LayerHook(model, "backbone.layer4.2") as hook: cap = hook.gradients(x, t)``."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.model = model
        self.layer = layer
        self.module = find_layer(model, layer)
        self._grad = False
        self._activation: Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._eval = contextlib.ExitStack()

    def __enter__(self) -> LayerHook:
        self._eval.enter_context(eval_mode(self.model))
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._eval.close()
        self._activation = None

    def _hook(self, module: nn.Module, inputs: object, output: object) -> Tensor | None:
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise BraincamError(
                f"layer {self.layer!r} does not output an (N, K, h, w) tensor; choose a "
                "convolutional layer or block"
            )
        if not self._grad:
            self._activation = output.detach()
            return None
        leaf = output.detach().requires_grad_(True)
        self._activation = leaf
        torch.set_grad_enabled(True)  # record the rest of the forward; undone by no_grad's exit
        return leaf.clone()  # later in-place ops (e.g. a residual ``+=``) must not hit the leaf

    def forward(self, x: Tensor) -> Capture:
        """Activations and logits, no autograd at all."""
        self._grad = False
        logits = self._run(x)
        return Capture(self._activation, logits.detach())

    def gradients(self, x: Tensor, targets: Tensor | None = None) -> Capture:
        """Activations, logits and ``d sum_n score_n[targets_n] / d activations``; targets
        default to the predicted classes.

        One backward pass serves a batch with a different target per image because image
        ``n``'s score depends only on image ``n``'s activations (eval mode).
        """
        self._grad = True
        logits = self._run(x)
        with torch.inference_mode(False), torch.enable_grad():  # whatever the caller's mode
            scores = class_scores(logits)
            if targets is None:
                targets = scores.detach().argmax(dim=1)
            scores = scores.gather(1, targets.view(-1, 1).to(logits.device))
            if not scores.requires_grad:
                raise BraincamError(f"the model output does not depend on layer {self.layer!r}")
            (grads,) = torch.autograd.grad(scores.sum(), self._activation)
        return Capture(self._activation.detach(), logits.detach(), grads)

    def _run(self, x: Tensor) -> Tensor:
        if self._handle is None:
            raise RuntimeError("LayerHook must be used as a context manager")
        self._activation = None
        with torch.inference_mode(False), torch.no_grad():  # autograd usable even if the
            logits = self.model(x)  # caller is in inference mode
        if self._activation is None:
            raise BraincamError(f"layer {self.layer!r} is not used by the model's forward pass")
        return logits
