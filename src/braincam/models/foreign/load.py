"""Load a model spec's network and check it against the spec before any work starts.

- ``torch``: ``module`` (``file.py:callable``, relative to the spec, or
  ``package.module:callable``) is called with no arguments and must return an ``nn.Module``;
  the state dict at ``path`` is loaded into it (``torch.load(weights_only=True)``, strict).
- ``torchscript``: ``torch.jit.load``.
- ``onnx``: onnxruntime runs every prediction (the black-box checks); onnx2torch converts the
  graph for the gradient methods, accepted when its probabilities on seeded random images
  equal onnxruntime's within :data:`CONVERSION_TOLERANCE` (else the gradient methods are skipped
  and :class:`Capabilities` says why). A graph of ``output: probabilities`` that ends with a
  softmax is explained through that softmax's input (:func:`logits_before_softmax`).

Checks, each a one-line :class:`~braincam.errors.BraincamError` naming the spec field: the
module imports and builds, the weights load, the network accepts the spec's input shape
(``input.size``, ``input.channels``, ``input.layout``), its output has one column per class
(``classes``; one column for a binary ``sigmoid``) and ``target_layer`` names a layer.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from braincam.errors import BraincamError, first_line
from braincam.labels import NO_TUMOR, TUMOR, subtype_groups
from braincam.models.foreign.net import ForeignNet, OnnxRuntimeNet
from braincam.models.foreign.spec import ModelSpec

log = logging.getLogger(__name__)

CONVERSION_TOLERANCE = 1e-4  # max |p_onnx2torch - p_onnxruntime| on the check images
CHECK_IMAGES = 4  # seeded random images for the shape and conversion checks
BINARY = [NO_TUMOR, TUMOR]


@dataclass
class Capabilities:
    """What the audit can run: ``gradients`` (IG, sanity, the CAM family through autograd),
    ``cams`` (a forward hook on the CAM layer fires), with the reason when not;
    ``conversion_max_diff``: ONNX only, onnx2torch vs onnxruntime on the check images."""

    gradients: bool
    cams: bool
    reason: str | None = None
    conversion_max_diff: float | None = None


@dataclass
class ForeignModel:
    """A loaded spec: ``net`` for gradients and explanations, ``black_box`` for predictions
    (the same module except for ONNX, where it runs onnxruntime)."""

    spec: ModelSpec
    net: ForeignNet
    black_box: ForeignNet
    classes: tuple[str, ...]
    task: str
    capabilities: Capabilities
    layer: str | None = None  # CAM layer in ``net`` (``net.<name>``), None without CAMs

    def preprocess_config(self):  # -> braincam.data.preprocess.PreprocessConfig
        """braincam's preprocessing for this model's explanations and audit: grey, the spec's
        size, head crop and resize filter (square inputs only)."""
        from braincam.data.preprocess import PreprocessConfig

        h, w = self.spec.input.size
        if h != w:
            raise BraincamError(f"{self.spec.file}: field 'input.size': explanations and the "
                                f"audit need a square input, got {h} x {w}")
        return PreprocessConfig(size=h, crop=self.spec.input.crop, resize=self.spec.input.resize)

    def for_method(self, method: str) -> ForeignNet:
        """The module that explains with ``method`` (``occlusion`` runs on any model, ``ig``
        needs gradients, the CAM family also a layer hook); BraincamError with the reason."""
        caps = self.capabilities
        if method == "occlusion":
            return self.net
        if not caps.gradients or (method != "ig" and not caps.cams):
            raise BraincamError(f"{method} cannot run on {self.spec.file.name}: {caps.reason}; "
                                "occlusion can" + ("" if not caps.gradients else ", and ig"))
        return self.net

    def to_json(self) -> dict[str, Any]:
        """The ``model`` block of audit.json / metrics.json."""
        caps = self.capabilities
        return {
            "spec": str(self.spec.file), "format": self.spec.format, "path": str(self.spec.path),
            "classes": list(self.classes), "model_classes": list(self.spec.classes),
            "task": self.task, "target_layer": self.layer, "gradients": caps.gradients,
            "cams": caps.cams, "skipped_reason": caps.reason,
            "conversion_max_diff": caps.conversion_max_diff,
        }


def load_foreign(spec: ModelSpec, task: str | None = None) -> ForeignModel:
    """Load and check ``spec``'s network; ``task="binary"`` views a multi-class tumour-type
    model as ``[no_tumor, tumor]`` (the tumour types' probabilities summed)."""
    task = task or spec.task
    groups, classes = None, spec.classes
    if task == "binary" and spec.task != "binary":
        if NO_TUMOR not in spec.classes:
            raise BraincamError(f"{spec.file}: field 'classes' has no no_tumor class, so the "
                                "model has no binary view")
        groups, classes = subtype_groups(spec.classes, BINARY), tuple(BINARY)
    elif task == "multiclass" and spec.task == "binary":
        raise BraincamError(f"{spec.file}: field 'classes' names a binary model "
                            f"({', '.join(spec.classes)}), which has no multiclass view; "
                            "use --task binary")
    elif task not in ("binary", "multiclass"):
        raise BraincamError(f"unknown task {task!r}; choose binary or multiclass")
    native = _native_input(spec, CHECK_IMAGES)
    if spec.format == "onnx":
        onnx_net = _load_onnx(spec)
        _check_onnx_shape(spec, onnx_net.input_shape)
        black_box = ForeignNet(onnx_net, spec.input, spec.output, groups)
        _check_outputs(spec, onnx_net, native)
        net, caps = _convert_onnx(spec, black_box, native, groups)
    else:
        module = _load_torch(spec) if spec.format == "torch" else _load_torchscript(spec)
        module.eval()
        _check_outputs(spec, module, native)
        net = ForeignNet(module, spec.input, spec.output, groups)
        black_box, caps = net, Capabilities(gradients=True, cams=True)
    layer = _cam_layer(spec, net, native, caps) if caps.gradients else None
    if spec.target_layer is not None and not caps.gradients:
        log.warning("%s: target_layer %r is not used: the model gives no gradients, so no CAM "
                    "is made (%s)", spec.file, spec.target_layer, caps.reason)
    net.default_layer = layer
    return ForeignModel(spec, net.eval(), black_box.eval(), tuple(classes), task, caps, layer)


def _native_input(spec: ModelSpec, n: int) -> torch.Tensor:
    """``n`` seeded random images as the network's input."""
    h, w = spec.input.size
    grey = torch.from_numpy(np.random.default_rng(0).random((n, 1, h, w), dtype=np.float32))
    net = ForeignNet(nn.Identity(), spec.input, "logits")
    from braincam.models.normalize import normalize

    return net.to_native(normalize(grey.expand(-1, 3, -1, -1)))


def _load_torch(spec: ModelSpec) -> nn.Module:
    target, _, name = spec.module.rpartition(":")
    try:
        if target.endswith(".py"):
            file = (spec.file.parent / target).resolve()
            unique = hashlib.sha1(str(file).encode()).hexdigest()[:12]  # one name per file
            module_spec = importlib.util.spec_from_file_location(
                f"braincam_spec_{file.stem}_{unique}", file)
            if module_spec is None or module_spec.loader is None or not file.is_file():
                raise ImportError(f"no file {file}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module  # dataclasses and pickling look it up
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                if sys.modules.get(module_spec.name) is module:
                    del sys.modules[module_spec.name]
                raise
        else:
            module = importlib.import_module(target)
    except Exception as exc:  # any error of foreign code is the spec's 'module' failing
        raise BraincamError(f"{spec.file}: field 'module': cannot import {target} "
                            f"({_first_line(exc)})") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise BraincamError(f"{spec.file}: field 'module': {target} has no callable {name!r}")
    try:
        net = factory()
    except Exception as exc:
        raise BraincamError(f"{spec.file}: field 'module': {name}() failed "
                            f"({_first_line(exc)})") from None
    if not isinstance(net, nn.Module):
        raise BraincamError(f"{spec.file}: field 'module': {name}() returned "
                            f"{type(net).__name__}, not a torch.nn.Module")
    try:
        state = torch.load(spec.path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BraincamError(f"{spec.file}: field 'path': {spec.path.name} is not a state "
                            f"dict torch.load(weights_only=True) reads ({_first_line(exc)})"
                            ) from None
    if not isinstance(state, dict):
        raise BraincamError(f"{spec.file}: field 'path': {spec.path.name} holds a "
                            f"{type(state).__name__}, not a state dict")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BraincamError(f"{spec.file}: field 'module': {name}() does not match the state "
                            f"dict at 'path' ({_mismatch(exc)})") from None
    return net


def _load_onnx(spec: ModelSpec) -> OnnxRuntimeNet:
    try:
        return OnnxRuntimeNet(str(spec.path))
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise BraincamError(f"{spec.file}: field 'path': {spec.path.name} is not an ONNX model "
                            f"onnxruntime can run ({_first_line(exc)})") from None


def _load_torchscript(spec: ModelSpec) -> nn.Module:
    import warnings

    try:
        with warnings.catch_warnings():  # torch deprecates jit.load; the user's file is one
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated",
                                    category=FutureWarning)
            return torch.jit.load(str(spec.path), map_location="cpu")
    except Exception as exc:
        raise BraincamError(f"{spec.file}: field 'path': {spec.path.name} is not a TorchScript "
                            f"model ({_first_line(exc)})") from None


def _check_onnx_shape(spec: ModelSpec, shape: list[Any]) -> None:
    """The ONNX graph's declared input shape against the spec's (symbolic dims match anything)."""
    h, w = spec.input.size
    c = spec.input.channels
    want = [h, w, c] if spec.input.layout == "NHWC" else [c, h, w]
    got = shape[1:]
    if len(got) != 3:
        raise BraincamError(f"{spec.file}: field 'input.size': the model takes a "
                            f"{len(shape)}-dimensional input {shape}, not an image batch")
    if all(not isinstance(g, int) or g == v for g, v in zip(got, want, strict=True)):
        return
    other = [c, h, w] if spec.input.layout == "NHWC" else [h, w, c]
    if all(not isinstance(g, int) or g == v for g, v in zip(got, other, strict=True)):
        name = "input.layout"
    else:
        channel_dim = 2 if spec.input.layout == "NHWC" else 0
        sizes_ok = all(not isinstance(g, int) or g == v
                       for i, (g, v) in enumerate(zip(got, want, strict=True)) if i != channel_dim)
        name = "input.channels" if sizes_ok else "input.size"
    raise BraincamError(f"{spec.file}: field '{name}': the model takes input {shape}, the spec "
                        f"gives [N, {', '.join(map(str, want))}] ({spec.input.layout})")


def _check_outputs(spec: ModelSpec, module: nn.Module, native: torch.Tensor) -> None:
    """The network accepts the spec's input and gives one column per class."""
    try:
        with torch.no_grad():
            out = module(native)
    except Exception as exc:
        raise BraincamError(f"{spec.file}: field 'input.size': the model rejects a "
                            f"{list(native.shape)} input given by input.size/channels/layout "
                            f"({_first_line(exc)})") from None
    if not isinstance(out, torch.Tensor):
        raise BraincamError(f"{spec.file}: field 'output': the model returns "
                            f"{type(out).__name__}, not a tensor")
    columns = out.reshape(len(out), -1).shape[1] if out.ndim and out.numel() else 0  # [N]: 1
    allowed = {len(spec.classes)} | ({1} if spec.output == "sigmoid" and
                                      len(spec.classes) == 2 else set())
    if out.ndim < 1 or out.shape[0] != len(native) or columns not in allowed:
        raise BraincamError(f"{spec.file}: field 'classes': the model gives output "
                            f"{list(out.shape)}, the spec lists {len(spec.classes)} classes")


def _convert_onnx(spec: ModelSpec, black_box: ForeignNet, native: torch.Tensor,
                  groups) -> tuple[ForeignNet, Capabilities]:
    """onnx2torch's conversion, accepted when it agrees with onnxruntime (module docstring);
    otherwise the onnxruntime module with gradients off."""
    try:
        import onnx
        from onnx2torch import convert

        module, output = convert(onnx.load(str(spec.path))).eval(), spec.output
        if output == "probabilities" and (cut := logits_before_softmax(module)) is not None:
            module, output = cut, "logits"
        converted = ForeignNet(module, spec.input, output, groups)
        with torch.no_grad():
            diff = conversion_difference(converted, black_box, native)
    except Exception as exc:  # onnx2torch lacks many operators; any failure means "no gradients"
        reason = f"onnx2torch cannot convert the model ({_first_line(exc)})"
        log.warning("%s: %s; gradient methods are skipped", spec.path.name, reason)
        return black_box, Capabilities(False, False, reason)
    if not diff <= CONVERSION_TOLERANCE:
        reason = (f"onnx2torch's conversion differs from onnxruntime by {diff:.2g} in "
                  f"probability (tolerance {CONVERSION_TOLERANCE:g})")
        log.warning("%s: %s; gradient methods are skipped", spec.path.name, reason)
        return black_box, Capabilities(False, False, reason, diff)
    return converted, Capabilities(True, True, None, diff)


def logits_before_softmax(module: nn.Module) -> nn.Module | None:
    """A copy of the converted graph ``module`` whose output is the input ``z`` of the softmax
    over the classes that ends it; None when it ends otherwise. ``softmax(z)`` is the model's
    own probability, so predictions do not change (the conversion check compares them), but a
    gradient map then explains ``z_c``, not ``log p_c``, whose gradient ``e_c - p`` vanishes
    as ``p_c`` reaches 1: a confident image no longer gets an empty map."""
    import copy

    from torch.fx import GraphModule

    if not isinstance(module, GraphModule):
        return None
    cut = copy.deepcopy(module)
    output = next(node for node in cut.graph.nodes if node.op == "output")
    last = output.args[0]
    softmax = cut.get_submodule(last.target) if getattr(last, "op", None) == "call_module" \
        else None
    if not isinstance(softmax, nn.Softmax) or softmax.dim not in (1, -1):
        return None
    output.args = (last.args[0],)
    cut.graph.eliminate_dead_code()
    cut.delete_all_unused_submodules()
    cut.recompile()
    return cut


def conversion_difference(converted: ForeignNet, reference: ForeignNet,
                          native: torch.Tensor) -> float:
    """Max absolute difference of the two modules' class probabilities on ``native``."""
    p = torch.softmax(converted.from_native(native), dim=1)
    q = torch.softmax(reference.from_native(native), dim=1)
    return float((p - q).abs().max())


def _cam_layer(spec: ModelSpec, net: ForeignNet, native: torch.Tensor,
               caps: Capabilities) -> str | None:
    """``net.<target_layer>`` (or the last convolution); CAMs are turned off, with the reason,
    when a forward hook cannot be set on it or does not fire (TorchScript)."""
    layers = dict(net.net.named_modules())
    name = spec.target_layer
    if name is not None and name not in layers:
        convs = [n for n, m in layers.items() if _is_conv(m)][-3:]
        raise BraincamError(f"{spec.file}: field 'target_layer': no layer {name!r} in the model "
                            f"(last convolutions: {', '.join(convs) or 'none'})")
    if name is None:
        convs = [n for n, m in layers.items() if _is_conv(m)]
        if not convs:
            caps.cams, caps.reason = False, "no convolution to take CAMs from; set target_layer"
            return None
        name = convs[-1]
    fired: list[tuple[int, ...] | None] = []  # the shape of the layer's output

    def seen(module: nn.Module, inputs: object, output: object) -> None:
        fired.append(tuple(output.shape) if isinstance(output, torch.Tensor) else None)

    try:
        handle = layers[name].register_forward_hook(seen)
    except RuntimeError:  # TorchScript: "register_forward_hook is not supported"
        handle = None
    if handle is not None:
        try:
            with torch.no_grad():
                net.net(native[:1])
        finally:
            handle.remove()
    if not fired:
        caps.cams = False
        caps.reason = (f"no forward hook fires on {name!r} (a TorchScript model runs its "
                       "layers inside its compiled graph), so the CAM family is skipped")
        return None
    if spec.target_layer is not None and (fired[0] is None or len(fired[0]) != 4):
        raise BraincamError(f"{spec.file}: field 'target_layer': layer {name!r} outputs "
                            f"{'no tensor' if fired[0] is None else f'shape {list(fired[0])}'}"
                            ", not a feature map (N, K, h, w); name a convolutional layer")
    return f"net.{name}"


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) or getattr(module, "original_name", None) == "Conv2d"


def _mismatch(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _first_line(exc: Exception) -> str:
    """The first sentence of the first line of an error (torch's run on for lines)."""
    return first_line(exc).split(". ")[0][:300]
