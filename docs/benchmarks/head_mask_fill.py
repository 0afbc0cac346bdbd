"""Hole filling in the head mask: one labelling against ``scipy.ndimage.binary_fill_holes``.

``braincam.data.mask.fill_holes`` labels the False pixels once and keeps the regions that
touch the border; scipy grows the outside in from the border one pixel per pass. For every
``STEP``-th image of Figshare, Br35H and both Sartaj folders (as read by braincam): whether the
head masks are identical, and the mean time of ``head_mask`` with each fill. Then, with
``--cold``, the recipe's segmenter data (Figshare, Br35H, Sartaj ``Training/``, 192 px)
preprocessed into an empty cache with each fill, in one process (2 threads on a 2-core CPU).

Usage (from the repository root): python docs/benchmarks/head_mask_fill.py [--cold]
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import braincam.data.mask as mask_module
from braincam.data.imageio import read_grey
from braincam.data.preprocess import PreprocessConfig
from braincam.data.records import load_dataset
from braincam.data.segmentation import load_segmentation_data

DATA = Path("../shared/datasets")
FIGSHARE, BR35H = DATA / "figshare-cheng-t1ce", DATA / "br35h-no-tumor-sample"
SARTAJ = DATA / "sartaj-brain-tumor-mri"
STEP = 4
FILLS = {"scipy binary_fill_holes": ndimage.binary_fill_holes,
         "braincam fill_holes": mask_module.fill_holes}


def head_masks() -> None:
    records = load_dataset([FIGSHARE, BR35H, SARTAJ]).records[::STEP]
    seconds = dict.fromkeys(FILLS, 0.0)
    differ = 0
    for record in records:
        grey = read_grey(record.path)
        masks = []
        for name, fill in FILLS.items():
            mask_module.fill_holes = fill
            start = time.perf_counter()
            masks.append(mask_module.head_mask(grey))
            seconds[name] += time.perf_counter() - start
        differ += int(not np.array_equal(*masks))
    mask_module.fill_holes = FILLS["braincam fill_holes"]
    print(f"{len(records)} images, {differ} head masks differ")
    for name, total in seconds.items():
        print(f"head_mask with {name}: {total / len(records) * 1000:.1f} ms an image")
    scipy, ours = seconds.values()
    print(f"speed-up of head_mask: {scipy / ours:.2f}x")


def cold() -> None:
    records = load_dataset([FIGSHARE, BR35H, SARTAJ / "Training"]).records
    times = {}
    for name, fill in FILLS.items():
        mask_module.fill_holes = fill
        with tempfile.TemporaryDirectory() as cache:
            os.environ["BRAINCAM_CACHE"] = cache
            start = time.perf_counter()
            load_segmentation_data(records, PreprocessConfig(size=192), weak_labels=True)
            times[name] = time.perf_counter() - start
        print(f"{len(records)} images into an empty cache with {name}: {times[name]:.0f} s")
    mask_module.fill_holes = FILLS["braincam fill_holes"]
    scipy, ours = times.values()
    print(f"speed-up of a first preprocessing: {scipy / ours:.2f}x")


if __name__ == "__main__":
    head_masks()
    if "--cold" in sys.argv[1:]:
        cold()
