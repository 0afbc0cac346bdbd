"""What a guided classifier answers for a slice with nothing on it.

A guided model (:mod:`braincam.models.guided`) answers "no tumour" through its evidence term
when its segmenter predicts less than one gate cell of tumour; the mass counts raw
probabilities, so faint ones spread over a whole slice can silence the term. This script feeds
each run's model uniform slices of the given grey levels (0-255, at the run's input side) and
prints, per level, the segmenter's mean and largest ``P(tumour)``, the evidence ``k^2 M`` in
gate cells after the run's ``--guide-cut``, and the model's ``P(tumour)`` (one minus its
``no_tumor`` probability).

Usage (from the repository root): python docs/benchmarks/flat_slice.py RUN... [--levels 0,20]
"""

import sys
from pathlib import Path

import numpy as np
import torch

from braincam.models.checkpoint import load_checkpoint
from braincam.models.guided import UPSAMPLE, is_guided
from braincam.models.normalize import to_model_input


def flat_slices(run: Path, levels: list[int]) -> list[dict[str, float]]:
    """The figures above for one run, one row per grey level (the model loaded once)."""
    model, meta = load_checkpoint(run / "model.safetensors")
    if not is_guided(model):
        raise SystemExit(f"{run} is not a guided run")
    side = int(meta["preprocess"]["size"])
    x = to_model_input(np.stack([np.full((side, side), v, np.uint8) for v in levels]))
    backbone = model.backbone
    with torch.no_grad():
        p = backbone.tumour_probability(x).flatten(1)
        features = backbone(x)
        probs = torch.softmax(model.head(features), dim=1)
    absent = meta["classes"].index("no_tumor")
    return [{"mean_p": float(p[i].mean()), "max_p": float(p[i].max()),
             "evidence_cells": float(features[i, -1]) * UPSAMPLE**2,
             "p_tumour": 1 - float(probs[i, absent])} for i in range(len(levels))]


def main(argv: list[str]) -> None:
    levels = [0, 20]
    if "--levels" in argv:
        at = argv.index("--levels")
        levels = [int(v) for v in argv[at + 1].split(",")]
        argv = argv[:at] + argv[at + 2:]
    for run in map(Path, argv):
        for level, row in zip(levels, flat_slices(run, levels), strict=True):
            print(f"{run.name} grey {level}: " + ", ".join(
                f"{k} {v:.2e}" if k.endswith("_p") else f"{k} {v:.3f}" for k, v in row.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
