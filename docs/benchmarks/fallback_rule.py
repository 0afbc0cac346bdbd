"""Are the tumours a segmenter misses faint, or absent from its output? A fallback mask rule.

For one ``braincam segment`` run, on its ``split.csv`` ``val`` and ``test`` images (tumour
images with a mask and tumour-free images), at the run's own mask rule: how many tumour images
get no pixel marked, and the peak probability on them. Then the fallback rule: where the run's
rule marks nothing and the peak probability reaches ``t2``, mark the pixels at or above half
the peak (``t2`` of 0.3, 0.2, 0.1, 0.05, or no fallback), scored by ``all_image_dice`` (the
score a run chooses its rule by), mean Dice per class, detection rate and the share of
tumour-free images marked. The rule would be chosen on ``val``; ``test`` is the run's held-out
groups.

Usage: python fallback_rule.py RUN
"""

import sys

import numpy as np
import torch
from segment_scales import score_line, split_sets  # docs/benchmarks

from braincam.models.segment import load_segmenter

FALLBACKS = (None, 0.3, 0.2, 0.1, 0.05)


def main(run: str) -> None:
    torch.set_num_threads(2)
    seg = load_segmenter(run, "cpu")
    threshold, flip = seg.meta["threshold"], seg.meta["flip_average"]
    for which, images, truth, labels in split_sets(run, seg):
        prob = seg.probabilities(images)
        if flip:
            prob = (prob + seg.probabilities(images[:, :, ::-1].copy())[:, :, ::-1]) / 2
        marked = prob >= threshold
        peak = prob.reshape(len(prob), -1).max(1)
        unmarked = truth.reshape(len(truth), -1).any(1) & ~marked.reshape(len(prob), -1).any(1)
        missed = peak[unmarked] if unmarked.any() else np.zeros(1)
        print(f"{which}: {int(unmarked.sum())} of {len(labels)} images are tumours with nothing "
              f"marked; their peak probability: median {np.median(missed):.3f}, max "
              f"{missed.max():.3f}, {int((peak[unmarked] < 0.05).sum())} below 0.05")
        for t2 in FALLBACKS:
            pred = marked.copy()
            if t2 is not None:
                for i in np.flatnonzero(~marked.reshape(len(prob), -1).any(1) & (peak >= t2)):
                    pred[i] = prob[i] >= peak[i] / 2
            print(f"{which} fallback {t2}: {score_line(pred, truth, labels)}", flush=True)

if __name__ == "__main__":
    main(sys.argv[1])
