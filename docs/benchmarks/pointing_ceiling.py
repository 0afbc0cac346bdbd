"""The pointing game's ceiling on Figshare: how many expert masks a map of each grid can
point into at all.

Every Figshare slice is preprocessed as a classifier sees it (head crop, ``SIZE`` px); a mask
counts when it holds a pixel where a ``g x g`` map, resized to the input the way braincam
resizes CAMs, can peak (:func:`braincam.explain.grid.peak_pixels`). ``g`` = 7: a stride-32
CAM (EfficientNet's and ResNet's last stage at 224 px); 14: stride 16 (EfficientNet-Lite0's
``backbone.blocks.4``); 28: the guided classifier's gate. Printed per tumour-size third (cut
at the 1/3 and 2/3 quantiles of the slices' mask areas, as the audit cuts them) and per class.

Usage (from the repository root): python docs/benchmarks/pointing_ceiling.py [SIZE]
"""

import sys
from pathlib import Path

import numpy as np

from braincam.audit.model.localization import SIZES, size_thirds
from braincam.data.preprocess import PreprocessConfig
from braincam.data.records import load_dataset
from braincam.data.segmentation import load_segmentation_data
from braincam.explain.grid import peak_pixels

FIGSHARE = Path("../shared/datasets/figshare-cheng-t1ce")
GRIDS = (7, 14, 28)


def main(size: int) -> None:
    records = [r for r in load_dataset([FIGSHARE]).records if r.mask is not None]
    data = load_segmentation_data(records, PreprocessConfig(size=size))
    masks = data.masks.numpy().astype(bool)
    thirds = size_thirds(masks.reshape(len(masks), -1).mean(axis=1))
    labels = np.array([r.label for r in data.records])
    print(f"{len(masks)} Figshare slices at {size} px")
    for g in GRIDS:
        reach = peak_pixels((g, g), (size, size))
        hit = (masks & reach).any(axis=(1, 2))
        parts = [f"{k} {hit[thirds == k].mean():.3f}" for k in SIZES]
        parts += [f"{c} {hit[labels == c].mean():.3f}" for c in sorted(set(labels))]
        print(f"{g:2d} x {g:<2d} grid ({int(reach.sum())} px can peak): ceiling "
              f"{hit.mean():.3f} | " + ", ".join(parts))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 224)
