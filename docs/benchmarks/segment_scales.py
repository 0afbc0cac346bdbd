"""A segment run's masks with multi-scale test-time augmentation, on its own split.

For one ``braincam segment`` run: its images of ``split.csv`` ``val`` and ``test`` (tumour
images with a mask and tumour-free images), each predicted with the network's input resized to
160, 192, 224 and 256 px (``Segmenter.size``; probabilities resized back), each scale
flip-averaged; then for sets of scales the mean probability at thresholds 0.4 and 0.5:
``all_image_dice`` (the score a run chooses its rule by), mean Dice of the tumour images (per
class), the detection rate, and the share of tumour-free images with a predicted pixel. Rules
are chosen on ``val``; ``test`` is the run's held-out groups.

Usage: python segment_scales.py RUN
"""

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from braincam.data.preprocess import preprocess_config
from braincam.data.records import load_dataset
from braincam.data.segmentation import load_segmentation_data
from braincam.evaluate.segmentation import segmentation_metrics
from braincam.models.segment import Segmenter, load_segmenter
from braincam.runs import RunDir

SCALES = (160, 192, 224, 256)
SETS = ((192,), (224,), (192, 224), (160, 192, 224), (192, 224, 256))


def split_sets(run: str, seg: Segmenter) -> Iterator[tuple[str, np.ndarray, np.ndarray, list]]:
    """``(which, images, masks, labels)`` of the run's ``val`` and then ``test`` rows of
    ``split.csv``: tumour images with a mask and tumour-free images, as the segmenter sees them."""
    where = pd.read_csv(Path(run) / "split.csv").set_index("path")["split"].to_dict()
    records = load_dataset(RunDir(Path(run)).data_roots()).records
    data = load_segmentation_data(records, preprocess_config(seg.meta), weak_labels=True)
    part = np.array([where.get(str(r.path), "") for r in data.records])
    for which in ("val", "test"):
        rows = np.flatnonzero((part == which) & ~data.weak.numpy())
        yield (which, data.images[rows].numpy(), data.masks[rows].numpy(),
               [data.records[i].label for i in rows])


def score_line(pred: np.ndarray, truth: np.ndarray, labels: list) -> str:
    """``all_image_dice``, mean Dice (per class) and the share of tumour-free images marked."""
    m = segmentation_metrics(pred, truth, labels, labels)
    per_class = " / ".join(f"{v:.3f}" for v in m["per_class_dice"].values())
    return (f"all_image_dice {m['all_image_dice']:.4f}, Dice {m['mean_dice']:.4f} ({per_class}), "
            f"detection {m['detection_rate']:.3f}, tumour-free marked "
            f"{m['false_positive_rate']:.3f}")


def main(run: str) -> None:
    torch.set_num_threads(2)
    seg = load_segmenter(run, "cpu")
    own = seg.size
    for which, images, truth, labels in split_sets(run, seg):
        prob = {}
        for size in SCALES:
            seg.size = size
            prob[size] = (seg.probabilities(images)
                          + seg.probabilities(images[:, :, ::-1].copy())[:, :, ::-1]) / 2
        seg.size = own
        for sizes in SETS:
            mean = np.mean([prob[s] for s in sizes], axis=0)
            for threshold in (0.4, 0.5):
                print(f"{which} {'+'.join(map(str, sizes))} at {threshold}: "
                      f"{score_line(mean >= threshold, truth, labels)}", flush=True)

if __name__ == "__main__":
    main(sys.argv[1])
