"""``braincam`` with a guided model's gate fed only the pixels its segmenter calls tumour.

A guided classifier (:mod:`braincam.models.guided`) gates its features by the segmenter's raw
``P(tumour)``, and its evidence term counts the predicted tumour's mass ``M`` as the sum of
those probabilities. Faint probabilities spread over a slice add up: a segmenter that gives
a blank slice ``P`` of 0.1-0.3 in many pixels hands the head more than one gate cell of
"tumour", and the evidence term no longer answers "no tumour". This script runs any
``braincam`` command with ``P`` replaced by ``P * [P >= CUT]`` inside every guided model
(environment ``GATE_CUT``, default 0.5, the segmenter's plain threshold), to measure what such
a cut would change. Training, cross-validation and audit all go through it; a model trained
with the cut must be audited with it.

Usage (from the repository root): GATE_CUT=0.5 python docs/benchmarks/gate_cut.py COMMAND ARGS...
"""

import os
import sys

import torch

import braincam.models.guided as guided
from braincam.cli import main

CUT = float(os.environ.get("GATE_CUT", "0.5"))
_raw_probability = guided.GuidedBackbone.tumour_probability


def cut_probability(self: guided.GuidedBackbone, x: torch.Tensor) -> torch.Tensor:
    """The segmenter's ``P(tumour)`` where it is at least ``CUT``, else 0."""
    p = _raw_probability(self, x)
    return p * (p >= CUT)


guided.GuidedBackbone.tumour_probability = cut_probability

if __name__ == "__main__":
    sys.argv = ["braincam", *sys.argv[1:]]
    main()
