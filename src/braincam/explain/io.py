"""``explanations.npz``: the maps of one ``braincam explain`` run, self-describing.

Arrays (row ``n`` = image ``paths[n]``):

- ``maps`` float32 (N, S, S): normalised maps in [0, 1] at model-input size;
- ``raw`` float32 (N, h, w): maps before normalisation (layer resolution for CAMs);
- ``targets`` int64 (N,): class index explained; ``probs`` float32 (N, C);
- ``paths`` str (N,); ``crops`` int64 (N, 4) ``(x0, y0, x1, y1)`` and ``original_sizes``
  int64 (N, 2) ``(width, height)``: the preprocessing crop, to map ``maps`` back onto the
  original images;
- ``method``, ``layer`` (``""`` when none) and ``classes`` (C,) str.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braincam.errors import BraincamError
from braincam.runs import atomic_write_bytes, read_npz

_ARRAYS = ("maps", "raw", "targets", "probs", "paths", "crops", "original_sizes", "classes")


@dataclass
class ExplanationSet:
    maps: np.ndarray  # float32 (N, S, S) in [0, 1]
    raw: np.ndarray  # float32 (N, h, w)
    targets: np.ndarray  # int64 (N,)
    probs: np.ndarray  # float32 (N, C)
    paths: list[str]
    crops: np.ndarray  # int64 (N, 4)
    original_sizes: np.ndarray  # int64 (N, 2)
    method: str
    layer: str | None
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def save_explanations(path: Path, exp: ExplanationSet) -> None:
    """Write ``exp`` as an uncompressed ``.npz`` (float maps hardly compress), atomically."""
    buf = io.BytesIO()
    np.savez(
        buf,
        maps=exp.maps.astype(np.float32), raw=exp.raw.astype(np.float32),
        targets=exp.targets.astype(np.int64), probs=exp.probs.astype(np.float32),
        paths=np.array(exp.paths, dtype=str), crops=exp.crops.astype(np.int64),
        original_sizes=exp.original_sizes.astype(np.int64),
        method=np.array(exp.method), layer=np.array(exp.layer or ""),
        classes=np.array(exp.classes, dtype=str),
    )
    atomic_write_bytes(path, buf.getvalue())


def load_explanations(path: Path) -> ExplanationSet:
    """Read a file written by :func:`save_explanations`; BraincamError when unreadable."""
    try:
        names = (*_ARRAYS, "method", "layer")
        data = read_npz(path, names)
        arrays = {name: data[name] for name in names}
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise BraincamError(f"{path}: not a readable explanations file ({exc})") from None
    return ExplanationSet(
        maps=arrays["maps"], raw=arrays["raw"], targets=arrays["targets"],
        probs=arrays["probs"], paths=arrays["paths"].tolist(), crops=arrays["crops"],
        original_sizes=arrays["original_sizes"], method=str(arrays["method"]),
        layer=str(arrays["layer"]) or None, classes=arrays["classes"].tolist(),
    )
