"""The JSON that ``POST /api/predict`` answers: ``predict``'s rows plus, per image or
slice, the grey model input and the explanation overlay (over the original image) as PNG
``data:`` URLs, so the page shows them without a second request and nothing is stored on
the server. With a segmenter each slice also has ``tumour_fraction`` and the overlay
outlines the predicted tumour."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from braincam.api import Explanation
from braincam.api.files import volume_rows
from braincam.explain.render import png_bytes
from braincam.serve.sniff import Upload


def data_url(pixels: np.ndarray) -> str:
    """``data:image/png;base64,...`` of a grey ``(H, W)`` or RGB ``(H, W, 3)`` uint8 image."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def response_json(upload: Upload, method: str, explanations: list[Explanation]
                  ) -> dict[str, Any]:
    """The answer for one upload (fields in docs/serve.md). ``rows`` are ``braincam predict
    --explain METHOD``'s rows, with the volume row after a volume's slices; ``focus`` is the
    index in ``slices`` of that row's slice (the highest tumour probability), else 0."""
    preds = [exp.prediction for exp in explanations]
    rows = volume_rows(preds)
    best = next((r.slice for r in rows if r.kind == "volume"), None)
    focus = next((i for i, p in enumerate(preds) if best is not None and p.slice == best), 0)
    slices = []
    for exp in explanations:
        pred = exp.prediction
        item: dict[str, Any] = {
            "slice": pred.slice,
            "label": pred.label,
            "probabilities": pred.probabilities,
            "ood_score": pred.ood_score,
            "warnings": pred.warnings,
            "image": data_url(pred.image),
            "overlay": data_url(exp.overlay),
        }
        if pred.tumour_fraction is not None:
            item["tumour_fraction"] = pred.tumour_fraction
        slices.append(item)
    return {
        "file": upload.name,
        "kind": upload.kind,
        "method": method,
        "classes": list(preds[0].probabilities),
        "rows": [row.to_row() for row in rows],
        "focus": focus,
        "slices": slices,
    }
