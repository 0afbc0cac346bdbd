"""The model spec: a YAML file that describes a classifier braincam did not train.

```yaml
format: onnx            # onnx | torch | torchscript
path: model.onnx        # relative to the spec file
module: net.py:ConvNet  # torch only: a .py file (relative) or importable module, and a callable
input:                  # returning an nn.Module; the state dict at `path` is loaded into it
  size: [128, 128]      # height, width
  resize: bilinear      # nearest | bilinear (default) | bicubic | area | lanczos
  channels: 3           # 1 or 3
  layout: NHWC          # NCHW (default) or NHWC
  scale: 255            # pixel values are divided by this (default 255)
  mean: [0.5, 0.5, 0.5] # optional, per channel, after scaling
  std: [0.5, 0.5, 0.5]  # optional
  crop: false           # braincam's head crop first (default false)
output: probabilities   # logits | probabilities | sigmoid
classes: [glioma, meningioma, no_tumor, pituitary]
target_layer: conv3     # optional CAM layer (default: the last convolution)
```

:func:`load_spec` checks every field it can without the model and raises a one-line
:class:`~braincam.errors.BraincamError` naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braincam.errors import BraincamError, first_line
from braincam.labels import NO_TUMOR, TUMOR, normalise_label

FORMATS = ("onnx", "torch", "torchscript")
OUTPUTS = ("logits", "probabilities", "sigmoid")
LAYOUTS = ("NCHW", "NHWC")
RESIZES = ("nearest", "bilinear", "bicubic", "area", "lanczos")
SPEC_SUFFIXES = (".yaml", ".yml")
_TOP = ("format", "path", "module", "input", "output", "classes", "target_layer")
_INPUT = ("size", "resize", "channels", "layout", "scale", "mean", "std", "crop")


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the model's input: ``(x / scale - mean) / std`` per channel."""

    size: tuple[int, int]  # height, width
    resize: str = "bilinear"
    channels: int = 3
    layout: str = "NCHW"
    scale: float = 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec file; ``path`` and a ``.py`` ``module`` are resolved against ``file``."""

    file: Path
    format: str
    path: Path
    input: InputSpec
    output: str
    classes: tuple[str, ...]  # canonical labels (braincam.labels), in the model's output order
    module: str | None = None
    target_layer: str | None = None

    @property
    def task(self) -> str:
        """``binary`` for ``[no_tumor, tumor]`` models, else ``multiclass``."""
        return "binary" if set(self.classes) == {NO_TUMOR, TUMOR} else "multiclass"


def is_spec(path: Path | str) -> bool:
    """A model spec is a YAML file; a run is a directory."""
    path = Path(path)
    return path.suffix.lower() in SPEC_SUFFIXES and not path.is_dir()


def load_spec(file: Path | str) -> ModelSpec:
    """Parse and check ``file`` (see the module docstring)."""
    import yaml

    file = Path(file)
    try:
        doc = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BraincamError(f"{file}: cannot read the model spec ({first_line(exc)})") from None
    return parse_spec(doc, file)


def parse_spec(doc: Any, file: Path) -> ModelSpec:
    """A :class:`ModelSpec` from the YAML document ``doc`` of ``file``."""
    if not isinstance(doc, dict):
        raise BraincamError(f"{file}: a model spec is a mapping of fields ({', '.join(_TOP)})")
    _known(doc, _TOP, file, "")
    fmt = _choice(doc, "format", FORMATS, file, None)
    if "path" not in doc or not isinstance(doc["path"], str):
        raise BraincamError(f"{file}: field 'path' (the model file, relative to the spec) is "
                            "required")
    path = (file.resolve().parent / doc["path"]).resolve()  # a linked spec: its real folder
    if not path.is_file():
        raise BraincamError(f"{file}: field 'path': no file {path}")
    module = doc.get("module")
    if fmt == "torch" and not isinstance(module, str):
        raise BraincamError(f"{file}: field 'module' (file.py:callable or package.module:callable)"
                            " is required for format torch")
    if fmt != "torch" and module is not None:
        raise BraincamError(f"{file}: field 'module' is only for format torch")
    if module is not None and ":" not in module:
        raise BraincamError(f"{file}: field 'module' must be 'file.py:callable' or "
                            f"'package.module:callable', got {module!r}")
    raw_input = doc.get("input")
    if not isinstance(raw_input, dict):
        raise BraincamError(f"{file}: field 'input' (a mapping with at least 'size') is required")
    classes = _classes(doc.get("classes"), file)
    target = doc.get("target_layer")
    if target is not None and (not isinstance(target, str) or not target.strip()):
        raise BraincamError(f"{file}: field 'target_layer' must be a module name")
    return ModelSpec(file=file.resolve(), format=fmt, path=path, input=_input(raw_input, file),
                     output=_choice(doc, "output", OUTPUTS, file, "logits"),
                     classes=classes, module=module, target_layer=target)


def _input(doc: dict[str, Any], file: Path) -> InputSpec:
    _known(doc, _INPUT, file, "input.")
    size = doc.get("size")
    if isinstance(size, int):
        size = [size, size]
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and v >= 8 for v in size)):
        raise BraincamError(f"{file}: field 'input.size' must be [height, width] in pixels (>= 8)")
    channels = doc.get("channels", 3)
    if isinstance(channels, bool) or channels not in (1, 3):
        raise BraincamError(f"{file}: field 'input.channels' must be 1 or 3, got {channels!r}")
    scale = doc.get("scale", 255)
    if not _number(scale) or not math.isfinite(scale) or scale <= 0:
        raise BraincamError(f"{file}: field 'input.scale' must be a positive number")
    crop = doc.get("crop", False)
    if not isinstance(crop, bool):
        raise BraincamError(f"{file}: field 'input.crop' must be true or false")
    mean, std = (_per_channel(doc.get(k), channels, f"input.{k}", file) for k in ("mean", "std"))
    if std is not None and min(std) <= 0:
        raise BraincamError(f"{file}: field 'input.std' must be positive")
    return InputSpec(
        size=(size[0], size[1]), resize=_choice(doc, "resize", RESIZES, file, "bilinear", "input."),
        channels=channels, layout=_choice(doc, "layout", LAYOUTS, file, "NCHW", "input."),
        scale=float(scale), mean=mean, std=std, crop=crop,
    )


def _per_channel(value: Any, channels: int, name: str, file: Path) -> tuple[float, ...] | None:
    if value is None:
        return None
    if _number(value):
        value = [value] * channels
    if (not isinstance(value, list) or len(value) != channels
            or not all(_number(v) and math.isfinite(v) for v in value)):
        raise BraincamError(f"{file}: field '{name}' must be a finite number or {channels} "
                            "finite numbers (one per channel)")
    return tuple(float(v) for v in value)


def _number(value: Any) -> bool:
    """An int or float, not a YAML boolean (``true`` is an int to Python)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _classes(value: Any, file: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) < 2:
        raise BraincamError(f"{file}: field 'classes' must list the model's output classes in "
                            "order (at least two)")
    names = []
    for item in value:
        name = normalise_label(str(item))
        if name is None:
            raise BraincamError(f"{file}: field 'classes': {item!r} is not a class braincam "
                                "knows (glioma, meningioma, pituitary, no_tumor, tumor)")
        names.append(name)
    if len(set(names)) != len(names):
        raise BraincamError(f"{file}: field 'classes' names a class twice: {value}")
    return tuple(names)


def _choice(doc: dict[str, Any], key: str, allowed: tuple[str, ...], file: Path,
            default: str | None, prefix: str = "") -> str:
    value = doc.get(key, default)
    if value is None:
        raise BraincamError(f"{file}: field '{prefix}{key}' is required ({' | '.join(allowed)})")
    if value not in allowed:
        raise BraincamError(f"{file}: field '{prefix}{key}' must be one of "
                            f"{' | '.join(allowed)}, got {value!r}")
    return value


def _known(doc: dict[str, Any], fields: tuple[str, ...], file: Path, prefix: str) -> None:
    unknown = [str(k) for k in doc if k not in fields]
    if unknown:
        raise BraincamError(f"{file}: unknown field '{prefix}{unknown[0]}' (known: "
                            f"{', '.join(prefix + f for f in fields)})")
