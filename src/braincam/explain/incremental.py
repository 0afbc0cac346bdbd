"""Exact incremental inference for occlusion: recompute only what a window changes.

An occluded copy differs from its image only inside the window, so at every layer of a
convolutional network it differs only inside the window's *footprint*: the positions whose
receptive field meets the window. Krypton (Nakandala et al., SIGMOD 2019) computes only those
positions. Here the network is a chain of *units* (the stem, then each residual block); a unit
runs on a crop of its input: the unoccluded image's activation with the copy's changed patch
pasted in, cropped around the patch with the unit's halo. The patch the unit returns (the
footprint at its output) goes on to the next unit. Once crops would cover more than
``MAX_CROP_SHARE`` of a map, the remaining units run on whole maps (the unoccluded activation
with the patch pasted), then global pooling and the head.

Geometry, per axis: after a chain of convolutions, output position ``o`` reads input positions
``[o*J + lo, o*J + hi]`` (``J`` the total stride; padding counts as positions, so ``lo`` may be
negative). A convolution or pooling (kernel ``k``, stride ``s``, padding ``p``, dilation ``d``)
after a chain ``(J, lo, hi)`` gives::

    (J*s,  lo - p*J,  hi + ((k - 1)*d - p)*J)

and parallel branches (a residual shortcut) take the union. An output position whose reads
lie inside a crop that starts at a multiple of ``J`` (and reaches the map's border wherever the
reads do) has exactly its whole-map value: the same inputs and the same padding, so the maps
equal plain occlusion's up to float rounding.

A 32-px window on a 224-px efficientnet_lite0 input: the crops cover 3-37% of the maps of the
first eight blocks, which take ~87% of the network's CPU time; the rest runs on whole 14x14 and
7x7 maps. Networks this module cannot describe (squeeze-excitation is a global pooling inside a
block; TF "same" padding depends on the input size) raise :class:`Unsupported`, and occlusion
then evaluates whole occluded copies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from braincam.models.build import backbone_and_head, is_timm_efficientnet

MAX_CROP_SHARE = 0.5
"""A unit runs on crops while their area is at most this share of its input map."""

POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU, nn.LeakyReLU,
             nn.Sigmoid, nn.Identity, nn.Dropout)


class Unsupported(Exception):
    """The network has no exact incremental plan; evaluate whole occluded copies."""


@dataclass(frozen=True)
class Footprint:
    """Along one axis: output ``o`` reads input positions ``o*jump + lo .. o*jump + hi``."""

    jump: int = 1
    lo: int = 0
    hi: int = 0

    def then(self, kernel: int, stride: int, padding: int, dilation: int = 1) -> Footprint:
        """This chain followed by a convolution or pooling."""
        j = self.jump
        return Footprint(j * stride, self.lo - padding * j, self.hi + ((kernel - 1) * dilation
                                                                        - padding) * j)

    def union(self, other: Footprint) -> Footprint:
        if other.jump != self.jump:
            raise Unsupported("parallel branches with different strides")
        return Footprint(self.jump, min(self.lo, other.lo), max(self.hi, other.hi))

    def outputs(self, first: int, last: int, n_out: int) -> tuple[int, int]:
        """The output positions (first, last; clipped to ``n_out``) reading any of the input
        positions ``first..last``."""
        return max(0, -((self.hi - first) // self.jump)), min(n_out - 1,
                                                               (last - self.lo) // self.jump)

    def reads(self, first: int, last: int, n_in: int) -> tuple[int, int]:
        """The input positions (clipped to ``n_in``) that outputs ``first..last`` read."""
        return max(0, first * self.jump + self.lo), min(n_in - 1, last * self.jump + self.hi)


Footprint2 = tuple[Footprint, Footprint]  # (rows, columns)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def footprint(module: nn.Module, start: Footprint2 = (Footprint(), Footprint())) -> Footprint2:
    """``start`` followed by ``module`` (see the module docstring); raises :class:`Unsupported`
    for modules whose outputs are not a fixed local function of their inputs."""
    if type(module) is nn.Conv2d:  # not subclasses such as timm's dynamic-padding Conv2dSame
        if isinstance(module.padding, str):
            raise Unsupported("string padding")
        return _then(start, module.kernel_size, module.stride, module.padding, module.dilation)
    if isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
        if module.ceil_mode:
            raise Unsupported("ceil_mode pooling")
        dilation = getattr(module, "dilation", 1)
        return _then(start, module.kernel_size, module.stride, module.padding, dilation)
    if isinstance(module, POINTWISE):
        return start
    if isinstance(module, nn.Sequential):
        return _fold(start, list(module))
    return _block(module, start)


def _then(start: Footprint2, kernel, stride, padding, dilation) -> Footprint2:
    args = zip(start, _pair(kernel), _pair(stride), _pair(padding), _pair(dilation), strict=True)
    rows, cols = (f.then(k, s, p, d) for f, k, s, p, d in args)
    return rows, cols


def _fold(start: Footprint2, modules: Sequence[nn.Module]) -> Footprint2:
    for module in modules:
        start = footprint(module, start)
    return start


def _block(module: nn.Module, start: Footprint2) -> Footprint2:
    """Residual blocks: the main path's convolutions in order, united with the shortcut's."""
    from timm.layers import DropPath
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
    from torchvision.models.resnet import BasicBlock, Bottleneck

    if isinstance(module, DropPath):
        return start
    if isinstance(module, Bottleneck | BasicBlock):
        convs = [module.conv1, module.conv2] + ([module.conv3] if hasattr(module, "conv3") else [])
        main = _fold(start, convs)
        if module.downsample is None:
            return main
        short = footprint(module.downsample, start)
        return main[0].union(short[0]), main[1].union(short[1])
    if isinstance(module, DepthwiseSeparableConv | InvertedResidual):
        if not (isinstance(module.se, nn.Identity) and isinstance(module.aa, nn.Identity)):
            raise Unsupported("squeeze-excitation or anti-aliasing inside a block")
        if isinstance(module, DepthwiseSeparableConv):
            return _fold(start, [module.conv_dw, module.conv_pw])
        return _fold(start, [module.conv_pw, module.conv_dw, module.conv_pwl])
    raise Unsupported(f"no footprint for {type(module).__name__}")


def units(model: nn.Module) -> tuple[list[nn.Module], Callable[[Tensor], Tensor]]:
    """The model as a chain of units (stem, each block) and the ``finish`` that turns the last
    unit's output into logits: ``model(x) == finish(u_n(...u_1(x)))``."""
    import torchvision

    try:
        backbone, head = backbone_and_head(model)
    except TypeError as exc:
        raise Unsupported(str(exc)) from None

    if isinstance(backbone, torchvision.models.ResNet):
        stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        layers = [backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
        chain = [stem, *(block for layer in layers for block in layer)]

        def finish(features: Tensor) -> Tensor:
            return head(backbone.fc(torch.flatten(backbone.avgpool(features), 1)))

        return chain, finish
    if is_timm_efficientnet(backbone):
        stem = nn.Sequential(backbone.conv_stem, backbone.bn1)
        top = nn.Sequential(backbone.conv_head, backbone.bn2)
        chain = [stem, *(block for stage in backbone.blocks for block in stage), top]
        return chain, lambda features: head(backbone.forward_head(features))
    raise Unsupported(f"no unit chain for {type(backbone).__name__}")


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm into the convolution before it, in place: ``bn(conv(x))
    = conv'(x)`` with ``w' = w * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``
    (torch's ``fuse_conv_bn_eval``); the BatchNorm becomes its activation (timm's
    BatchNormAct2d) or an identity. On a CPU this halves the time of efficientnet_lite0's late
    blocks (one memory pass fewer per convolution). Pairs are a Conv2d registered right
    before a BatchNorm2d in the same parent, which is how the networks :func:`units` knows apply
    them; results equal the unfolded network's up to float rounding."""
    from timm.layers import BatchNormAct2d
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for parent in list(module.modules()):
        names = list(parent._modules)
        for conv_name, bn_name in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[conv_name], parent._modules[bn_name]
            if type(conv) is nn.Conv2d and type(bn) in (nn.BatchNorm2d, BatchNormAct2d):
                parent._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
                act = nn.Sequential(bn.drop, bn.act) if isinstance(bn, BatchNormAct2d) else None
                parent._modules[bn_name] = act or nn.Identity()
    return module


Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (end exclusive)


@dataclass(frozen=True)
class Level:
    """One unit run on crops: per window, where its crop starts on the unit's input, where the
    changed patch sits in that crop, and the output patch to keep."""

    unit: nn.Module
    crop: tuple[int, int]
    starts: list[tuple[int, int]]
    changed: list[Box]  # on the unit's input
    kept: list[Box]  # on the crop's output


@dataclass(frozen=True)
class Plan:
    """How to evaluate the occluded copies of one image size and window grid."""

    levels: list[Level]
    rest: list[nn.Module]  # units run on whole maps
    finish: Callable[[Tensor], Tensor]
    changed: list[Box]  # per window, on the input of the first whole-map unit


def plan(chain: list[nn.Module], finish: Callable[[Tensor], Tensor], sizes: list[tuple[int, int]],
         windows: list[Box]) -> Plan:
    """``sizes[i]`` is the (H, W) of unit ``i``'s input (``sizes[len(chain)]`` its output);
    ``windows`` the occluded boxes on the image."""
    changed, levels = list(windows), []
    for i, unit in enumerate(chain):
        (h_in, w_in), (h_out, w_out) = sizes[i], sizes[i + 1]
        rows, cols = footprint(unit)
        outs = [(*rows.outputs(y0, y1 - 1, h_out), *cols.outputs(x0, x1 - 1, w_out))
                for y0, y1, x0, x1 in changed]
        reads = [(*rows.reads(a, b, h_in), *cols.reads(c, d, w_in)) for a, b, c, d in outs]
        crop_h = _crop_size(max(b - a + 1 for a, b, _, _ in reads), h_in, rows.jump)
        crop_w = _crop_size(max(d - c + 1 for _, _, c, d in reads), w_in, cols.jump)
        if crop_h * crop_w > MAX_CROP_SHARE * h_in * w_in:
            return Plan(levels, chain[i:], finish, changed)
        starts = [(min(rows.jump * (a // rows.jump), h_in - crop_h),
                   min(cols.jump * (c // cols.jump), w_in - crop_w)) for a, _, c, _ in reads]
        kept = [(a - sy // rows.jump, b + 1 - sy // rows.jump,
                 c - sx // cols.jump, d + 1 - sx // cols.jump)
                for (a, b, c, d), (sy, sx) in zip(outs, starts, strict=True)]
        levels.append(Level(unit, (crop_h, crop_w), starts, changed, kept))
        changed = [(a, b + 1, c, d + 1) for a, b, c, d in outs]
    return Plan(levels, [], finish, changed)


def _crop_size(extent: int, size: int, jump: int) -> int:
    """The smallest crop >= ``extent + jump - 1`` (room for aligning its start down to a
    multiple of ``jump``) whose last start ``size - crop`` is a multiple of ``jump``."""
    need = extent + jump - 1
    if need >= size:
        return size
    return size - jump * ((size - need) // jump)


def run_plan(the_plan: Plan, bases: list[Tensor], patches: list[Tensor], images: list[int],
             windows: list[int], prepare: Callable[[Tensor], Tensor]) -> Tensor:
    """Logits of a batch of occluded copies: copy ``k`` is image ``images[k]`` with window
    ``windows[k]`` holding ``patches[k]``. ``bases[i]`` holds the unoccluded images' input to
    unit ``i`` (``bases[0]`` the images); ``prepare`` readies a batch for the units (memory
    format)."""
    for depth, level in enumerate(the_plan.levels):
        crop_h, crop_w = level.crop
        crops = []
        for img, win, patch in zip(images, windows, patches, strict=True):
            sy, sx = level.starts[win]
            y0, y1, x0, x1 = level.changed[win]
            crop = bases[depth][img, :, sy : sy + crop_h, sx : sx + crop_w].clone()
            crop[:, y0 - sy : y1 - sy, x0 - sx : x1 - sx] = patch
            crops.append(crop)
        out = level.unit(prepare(torch.stack(crops)))
        patches = [out[k, :, y0:y1, x0:x1]
                   for k, (y0, y1, x0, x1) in enumerate(level.kept[win] for win in windows)]
    whole = bases[len(the_plan.levels)][images].clone()
    for k, (win, patch) in enumerate(zip(windows, patches, strict=True)):
        y0, y1, x0, x1 = the_plan.changed[win]
        whole[k, :, y0:y1, x0:x1] = patch
    features = prepare(whole)
    for unit in the_plan.rest:
        features = unit(features)
    return the_plan.finish(features)
