"""Segmentation-guided classification (``braincam train --guide SEG``): gated pooling.

A guided classifier pools its last spatial feature map through the tumour probability of a
frozen ``braincam segment`` model, so that its decision rests on the predicted tumour region
by construction. With ``F`` the backbone's last spatial feature map ``(N, C, h, w)`` (timm
networks: ``forward_features``, e.g. EfficientNet's after ``conv_head``/``bn2``/activation;
torchvision ResNets: the output of ``layer4``) and ``P`` the segmenter's ``P(tumour)`` for
the same input image::

    p    = sigmoid(segmenter(resize(x, s))) * [sigmoid(...) >= cut]        (cut = 0: all of it)
    P_uv = mean of p over gate cell uv                                       (adaptive avg pool)
    G    = floor + (1 - floor) * P                                           (N, 1, kh, kw)
    M    = sum_uv G_uv / k^2                  (predicted tumour, in feature cells)
    f    = sum_uv G_uv F_cell(uv) / k^2 / max(M, 1)                        (N, C)
    z    = Linear(Dropout(f));   z_absent -= log clip(k^2 M, EPS, 1)
    y    = z, or MergeSubtypes(z) for a head with tumour subtypes

The evidence term makes "no predicted tumour" mean "no tumour" by construction: ``absent`` is
the output meaning no tumour (``no_tumor``), and its logit rises by ``-log(k^2 M)`` while the
predicted tumour covers less than one gate cell, to ``-log EPS = 13.8`` when nothing is
predicted, so ``P(tumour)`` is at most ``EPS`` times the head's own odds there. Without the term
the head's bias alone answers for such images, and a head fitted on subtype logits starts out
at P(tumour) = 3/4 (three tumour subtypes, one no-tumour output, equal biases): two of three
real guided runs called most tumour-free images tumours that way. A model whose
classes have no ``no_tumor`` (tumour types only) gets no term.

The gate works on a grid ``k = UPSAMPLE`` times finer than the feature map: gate cell ``uv``
lies in feature cell ``cell(uv) = (u // k, v // k)`` and carries that cell's features (nearest
upsampling), weighted by its own share predicted tumour. Summed over a feature cell's ``k^2``
gate cells, ``G`` gives ``k^2`` times the cell's share, so ``f`` is the feature cells' mean
weighted by their share predicted tumour -- what a gate at the feature map's own resolution
would give. The finer grid changes what the explanation can show, not the decision: a linear
head's logit splits exactly into one term per gate cell, ``G_uv w . F_cell(uv)``, and
Grad-CAM at the gate (``CAM = ReLU(sum_c alpha_c G F_c)``) is that split, at 8 px instead of
32 px for a stride-32 network. At 32 px a tumour of 1% of the image falls inside one cell
whose centre the pointing game rarely hits.

``x`` is the classifier's input (ImageNet-normalised three-channel replica of the grey slice,
:func:`braincam.models.normalize.to_model_input`, exactly what the segmenter was trained on)
resized bilinearly (antialiased, as :meth:`braincam.models.segment.Segmenter.predict` does) to
the segmenter's input side ``s``; ``P_uv`` is the share of gate cell ``uv`` predicted tumour.
With ``floor = 0`` (the default) only the cells overlapping the predicted tumour reach the
head: an image without predicted tumour gives ``f = 0``, and the evidence term answers
``no_tumor``. ``f`` is the mean of ``F`` over the predicted tumour (weighted by
``G``) once the tumour covers at least one feature cell (``M >= 1``), and shrinks towards 0
with the predicted mass below that. (A plain mean over all cells, ``mean_uv G_uv F_cell(uv)``,
scales a tumour's features by its area: a tumour covering 2% of the image gives features 50
times smaller than the network's usual ones, and a head trained on ImageNet-pretrained features
answered "tumour" for every Sartaj image.) When ``G = 1`` everywhere, ``f`` is the plain
network's pooled features. ``floor > 0`` lets the other cells through at that weight, trading
the guarantee for robustness to tumours the segmenter misses. ``cut > 0`` (``--guide-cut``)
feeds the gate only the pixels whose probability reaches ``cut``: ``M`` sums probabilities, and
a segmenter that answers a near-blank slice with faint probabilities everywhere can otherwise
sum past one gate cell and silence the evidence term (docs/grounded.md, known limits). The
gate acts on feature cells: a
gated cell's features still depend on its whole receptive field, so only pixels outside the
receptive fields of the gated cells provably cannot matter.

Construction: :func:`guide` replaces a :class:`~braincam.models.build.BraincamNet`'s
``backbone`` by a :class:`GuidedBackbone` with three children -- ``net`` (the original
backbone, unchanged), ``segmenter`` (the frozen U-Net) and ``gate`` (:class:`Gate`, whose
output is ``G * F``), and wraps its ``head`` in an :class:`EvidenceHead` (the same children
under the same names). So ``model.backbone(x)`` still returns what the head sees (the pooled
features, and the mass ``M`` as one more column), and everything built on that (phase 1's
cached features, phase 2, the attention penalty and mask reward, checkpoints, explanations, the
audit, the API's feature reference) works unchanged. The default Grad-CAM layer of a guided
model is ``backbone.gate``: ``CAM = ReLU(sum_c alpha_c G F_c)`` is 0 wherever ``G`` is 0, on
the gate's finer grid. The price is that the backbone's module names gain ``net.``
(``backbone.net.blocks.3``, ``backbone.net.layer4``); the two lookups that name modules
(:func:`braincam.models.build.finetune_modules` and
:func:`~braincam.models.build.default_target_layer`) resolve them through :func:`feature_net`,
and :func:`braincam.models.weights.load_weights_file` reads a guided checkpoint's backbone from
under ``backbone.net.``. A wrapper was chosen over keeping the names by swapping the backbone's
class: it works the same for any supported network, needs no dynamically made classes, and the
incremental occlusion planner (:mod:`braincam.explain.incremental`), which knows plain ResNets
and EfficientNets only, recognises a guided model as a network it cannot describe instead of
planning it without its gate.

The segmenter never trains: its parameters do not require gradients (so no optimiser or DDP
reducer sees them), it runs under ``torch.no_grad``, and :meth:`GuidedBackbone.train` keeps it
in eval mode (BatchNorm statistics unchanged) whatever mode the classifier is put in. Its
weights are part of the classifier's state dict (``backbone.segmenter.*``), so a guided run's
``model.safetensors`` is self-contained; its meta ``guide`` (``size``, ``floor``, ``source``,
``cut``) is enough for :func:`braincam.models.checkpoint.load_checkpoint` to rebuild the model.

Supported backbones: torchvision ResNets (``resnet50``) and timm networks whose pooled
features are a global average of ``forward_features`` right before the classifier (timm's
EfficientNets such as ``efficientnet_lite0``, timm ResNets); others raise BraincamError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from braincam.errors import BraincamError

EPS = 1e-6
"""Lower clip of the evidence ``k^2 M`` (module docstring): a no-tumour logit bonus of 13.8."""
GATE = "backbone.gate"
"""The default CAM layer of a guided model: the gated feature map ``G * F``."""
UPSAMPLE = 4
"""Gate cells per feature cell along each side (module docstring): 8 px at stride 32."""


class Gate(nn.Module):
    """``G * F``: features ``(N, C, h, w)`` repeated over ``upsample x upsample`` gate cells
    each (nearest) and weighted by the prior ``G = floor + (1 - floor) * adaptive_avg_pool(P *
    [P >= cut], (kh, kw))`` (:meth:`prior`), the share of each gate cell predicted tumour
    (``P``: ``(N, 1, H, W)`` probabilities at any resolution). ``forward`` takes ``G``, which
    the caller also sums into the tumour's mass, so ``P`` is pooled once."""

    def __init__(self, floor: float = 0.0, upsample: int = UPSAMPLE, cut: float = 0.0) -> None:
        super().__init__()
        for name, value in (("floor", floor), ("cut", cut)):
            if not 0 <= value < 1:
                raise BraincamError(f"the guide's {name} must be in [0, 1), got {value}")
        self.floor = float(floor)
        self.upsample = int(upsample)
        self.cut = float(cut)

    def cells(self, features: torch.Tensor) -> tuple[int, int]:
        """The gate's grid ``(kh, kw)`` for a feature map ``(N, C, h, w)``."""
        h, w = features.shape[-2:]
        return h * self.upsample, w * self.upsample

    def prior(self, probability: torch.Tensor, cells: tuple[int, int]) -> torch.Tensor:
        """``G`` ``(N, 1, kh, kw)`` on a gate grid of ``cells = (kh, kw)``."""
        probability = probability.float()
        if self.cut:
            probability = probability * (probability >= self.cut)
        share = F.adaptive_avg_pool2d(probability, cells)
        return self.floor + (1 - self.floor) * share

    def forward(self, features: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        if self.upsample > 1:
            features = F.interpolate(features, scale_factor=self.upsample, mode="nearest")
        return features * prior.to(features.dtype)

    def extra_repr(self) -> str:
        return f"floor={self.floor}, upsample={self.upsample}, cut={self.cut}"


class GuidedBackbone(nn.Module):
    """``x -> [f, M]`` (module docstring; ``(N, C + 1)``): ``net``'s last spatial features
    gated by the frozen ``segmenter``'s tumour probability at input side ``size`` and pooled,
    and the predicted tumour's mass ``M`` for :class:`EvidenceHead`."""

    def __init__(self, net: nn.Module, segmenter: nn.Module, size: int,
                 floor: float = 0.0, cut: float = 0.0) -> None:
        super().__init__()
        self.kind = spatial_kind(net)  # an unsupported network fails before anything else
        self.net = net
        self.segmenter = segmenter.requires_grad_(False).eval()
        self.gate = Gate(floor, cut=cut)
        self.size = int(size)

    @property
    def floor(self) -> float:
        return self.gate.floor

    @property
    def cut(self) -> float:
        return self.gate.cut

    def train(self, mode: bool = True) -> GuidedBackbone:
        """The classifier's mode; the segmenter stays in eval mode (it never trains)."""
        super().train(mode)
        self.segmenter.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``F``: ``net``'s last spatial feature map ``(N, C, h, w)``."""
        net = self.net
        if self.kind == "torchvision-resnet":
            x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            return net.layer4(net.layer3(net.layer2(net.layer1(x))))
        return net.forward_features(x)

    def tumour_probability(self, x: torch.Tensor) -> torch.Tensor:
        """``P(tumour)`` ``(N, 1, size, size)``, float32, without autograd: ``x`` (the
        classifier's normalised input) resized bilinearly to the segmenter's side."""
        with torch.no_grad():
            if tuple(x.shape[-2:]) != (self.size, self.size):
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                  align_corners=False, antialias=True)
            return torch.sigmoid(self.segmenter(x).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x), x)

    def pool(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``[f, M]`` from ``net``'s spatial features ``F`` of the input ``x``."""
        probability = self.tumour_probability(x)
        prior = self.gate.prior(probability, self.gate.cells(features))
        gated = self.gate(features, prior)
        area = self.gate.upsample**2  # gate cells per feature cell
        mass = prior.sum(dim=(2, 3)) / area
        pooled = gated.sum(dim=(2, 3)) / (area * mass.clamp(min=1.0)).to(gated.dtype)
        return torch.cat([pooled, mass.to(pooled.dtype)], dim=1)


class EvidenceHead(nn.Sequential):
    """A BraincamNet head (``Dropout, Linear[, MergeSubtypes]``, the same children under the
    same names) on ``[f, M]``: the Linear layer's output ``absent`` gains the evidence term
    ``-log clip(k^2 M, EPS, 1)`` (module docstring) before any later layer; ``absent=None``:
    no term."""

    def __init__(self, head: nn.Sequential, absent: int | None) -> None:
        super().__init__(*head)
        self.absent = absent

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled, mass = features[:, :-1], features[:, -1]
        out = self[1](self[0](pooled))
        if self.absent is not None:
            shift = torch.zeros_like(out)
            evidence = torch.clamp(mass.float() * UPSAMPLE**2, min=EPS, max=1.0)
            shift[:, self.absent] = -torch.log(evidence).to(out.dtype)
            out = out + shift
        for layer in list(self)[2:]:
            out = layer(out)
        return out

    def extra_repr(self) -> str:
        return f"absent={self.absent}"


def spatial_kind(net: nn.Module) -> str:
    """How :meth:`GuidedBackbone.features` reaches ``net``'s last spatial map:
    ``torchvision-resnet`` or ``timm``; BraincamError for a network whose pooled features are
    not a global average of a spatial map it can reach."""
    import torchvision

    if isinstance(net, torchvision.models.ResNet):
        return "torchvision-resnet"
    from timm.layers import SelectAdaptivePool2d

    pool = getattr(net, "global_pool", None)
    width = getattr(net, "head_hidden_size", None) or getattr(net, "num_features", None)
    if (hasattr(net, "forward_features") and isinstance(pool, SelectAdaptivePool2d)
            and pool.pool_type == "avg" and width == getattr(net, "num_features", None)):
        return "timm"
    raise BraincamError(
        f"--guide needs the backbone's last spatial feature map, which braincam cannot reach "
        f"in {type(net).__name__}; use resnet50, efficientnet_lite0 or another timm "
        "EfficientNet or ResNet"
    )


def is_guided(model: nn.Module) -> bool:
    """Whether ``model`` (a BraincamNet, or DDP around one) pools through a guide."""
    return isinstance(getattr(model, "backbone", None), GuidedBackbone)


def head_input_and_image_features(model: nn.Module,
                                   x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(what the head sees, the whole image's pooled features)`` of a BraincamNet in one
    pass. Plain: both are the backbone's pooled features. Guided: ``[f, M]`` and the plain
    mean of ``F`` over all feature cells (the ungated network's pooled features), which
    describe the whole image even where the gate passes nothing: ``f = 0`` for every image
    without predicted tumour, so it cannot tell a blank or non-MRI image from a brain."""
    backbone = model.backbone
    if isinstance(backbone, GuidedBackbone):
        spatial = backbone.features(x)
        return backbone.pool(spatial, x), spatial.mean(dim=(2, 3))
    features = backbone(x)
    return features, features


def feature_net(model: nn.Module) -> tuple[nn.Module, str]:
    """The plain backbone network of a BraincamNet and its module-name prefix:
    ``(model.backbone, "backbone.")``, or ``(model.backbone.net, "backbone.net.")`` when
    guided."""
    backbone = model.backbone
    if isinstance(backbone, GuidedBackbone):
        return backbone.net, "backbone.net."
    return backbone, "backbone."


def guide(model: nn.Module, segmenter: nn.Module, size: int, floor: float = 0.0,
          absent: int | None = None, cut: float = 0.0) -> nn.Module:
    """``model`` (a BraincamNet) with its backbone wrapped in a :class:`GuidedBackbone` and
    its head in an :class:`EvidenceHead`, in place; returns ``model``. ``absent``: the index of
    the no-tumour output of the head's Linear layer (:func:`absent_output`). Weights
    (``--weights``) are loaded before, into the plain backbone and head."""
    if is_guided(model):
        raise ValueError("the model is guided already")
    model.backbone = GuidedBackbone(model.backbone, segmenter, size, floor, cut)
    model.head = EvidenceHead(model.head, absent)
    return model


def absent_output(outputs: list[str]) -> int | None:
    """The index of ``no_tumor`` among the names of the head's Linear outputs (the classes,
    or the subtypes of a subtype head), None without one."""
    from braincam.labels import NO_TUMOR

    return outputs.index(NO_TUMOR) if NO_TUMOR in outputs else None


def guide_meta(model: nn.Module, source: str | Path) -> dict[str, Any]:
    """The checkpoint meta ``guide`` of a guided model: ``size``, ``floor``, ``source``, and
    ``cut`` when it is not 0 (files without it load with 0)."""
    backbone = model.backbone
    meta = {"size": backbone.size, "floor": backbone.floor, "source": str(source)}
    return meta | ({"cut": backbone.cut} if backbone.cut else {})
