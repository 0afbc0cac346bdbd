"""Image files -> a foreign model's own input, the way its training pipeline made it: PIL
decodes the file as RGB (or L for one channel), braincam's head crop when ``input.crop``,
PIL's ``input.resize`` filter to ``input.size`` (``area`` is PIL's box filter), then
``(x / scale - mean) / std`` in the spec's layout. Files PIL cannot open (DICOM, NIfTI), and
a frame or slice of one, go through :func:`braincam.data.imageio.read_grey`, grey replicated to
the channels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from braincam.data.imageio import read_grey, upright
from braincam.data.mask import head_mask
from braincam.data.preprocess import CROP_MARGIN, RESIZE, crop_box
from braincam.models.foreign.spec import InputSpec

FILTERS = {**RESIZE, "area": Image.Resampling.BOX}


def read_native(spec_input: InputSpec, path: Path | str, index: int | None = None) -> np.ndarray:
    """One file (``index``: its frame or slice) as float32 (H, W, C) or (C, H, W) per the
    layout (module docstring)."""
    mode = "RGB" if spec_input.channels == 3 else "L"
    image = _pil_image(path, mode) if index is None else None
    if image is None:
        grey = np.rint(read_grey(path, index=index) * 255).astype(np.uint8)
        image = Image.fromarray(grey, mode="L").convert(mode)
    if spec_input.crop:
        grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        image = image.crop(crop_box(head_mask(grey), margin=CROP_MARGIN))
    h, w = spec_input.size
    image = image.resize((w, h), FILTERS[spec_input.resize])
    values = np.asarray(image, dtype=np.float32).reshape(h, w, spec_input.channels)
    values = values / spec_input.scale
    if spec_input.mean is not None:
        values = values - np.asarray(spec_input.mean, np.float32)
    if spec_input.std is not None:
        values = values / np.asarray(spec_input.std, np.float32)
    return values if spec_input.layout == "NHWC" else values.transpose(2, 0, 1).copy()


def _pil_image(path: Path | str, mode: str) -> Image.Image | None:
    """The file decoded by PIL in ``mode``, or None when PIL cannot open it."""
    try:
        with Image.open(path) as im:
            return upright(im).convert(mode)
    except OSError:
        return None


def read_native_batch(spec_input: InputSpec, paths: Sequence[Path | str]) -> np.ndarray:
    """:func:`read_native` of every path, stacked (N, ...)."""
    return np.stack([read_native(spec_input, p) for p in paths])
