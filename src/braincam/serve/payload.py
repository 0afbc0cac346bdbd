"""The JSON that ``POST /api/predict`` answers: ``predict``'s rows plus, per image or
slice, the grey model input and the explanation overlay as PNG ``data:`` URLs (the page
shows them without a second request and nothing is stored on the server)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from braincam.explain.render import png_bytes
from braincam.serve.sniff import Upload


def data_url(pixels: np.ndarray) -> str:
    """``data:image/png;base64,...`` of a grey ``(H, W)`` or RGB ``(H, W, 3)`` uint8 image."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def response_json(upload: Upload, method: str, explanations: list[Any]) -> dict[str, Any]:
    """The answer for one upload (fields in docs/serve.md)."""
    rows, slices = [], []
    for exp in explanations:
        pred = exp.prediction
        rows.append({**pred.to_row(), "path": upload.name})
        slices.append({
            "slice": pred.slice,
            "label": pred.label,
            "probabilities": dict(pred.probabilities),
            "warnings": list(pred.warnings),
            "image": data_url(pred.image),
            "overlay": data_url(exp.overlay),
        })
    return {
        "file": upload.name,
        "kind": upload.kind,
        "method": method,
        "classes": list(slices[0]["probabilities"]) if slices else [],
        "rows": rows,
        "slices": slices,
    }
