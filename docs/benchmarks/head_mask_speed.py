"""The head mask's speed: its hole filling and component labelling, against scipy's.

``braincam.data.mask.fill_holes`` labels the False pixels once and keeps the regions that
touch the border (scipy's ``binary_fill_holes`` grows the outside in from the border one pixel
per pass); ``braincam.data.mask.label`` numbers 4-connected components as
``scipy.ndimage.label`` does, by OpenCV's ``connectedComponents``. Three variants of
``head_mask``, side by side in one process: both from scipy, braincam's filling with scipy's
labelling, both braincam's. For every ``STEP``-th image of Figshare, Br35H and both Sartaj
folders (as read by braincam): whether the head masks are identical, and the mean time of
``head_mask``. Then, with ``--cold``, the recipe's segmenter data (Figshare, Br35H, Sartaj
``Training/``, 192 px) preprocessed into an empty cache with the first and the last variant
(2 threads on a 2-core CPU).

Usage (from the repository root): python docs/benchmarks/head_mask_speed.py [--cold]
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
OURS = (mask_module.fill_holes, mask_module.label)
VARIANTS = {  # (hole filling, labelling)
    "scipy fill and label": (ndimage.binary_fill_holes, ndimage.label),
    "braincam fill, scipy label": (mask_module.fill_holes, ndimage.label),
    "braincam fill and label": OURS,
}


def use(variant: tuple) -> None:
    mask_module.fill_holes, mask_module.label = variant


def head_masks() -> None:
    records = load_dataset([FIGSHARE, BR35H, SARTAJ]).records[::STEP]
    seconds = dict.fromkeys(VARIANTS, 0.0)
    differ = 0
    for record in records:
        grey = read_grey(record.path)
        masks = []
        for name, variant in VARIANTS.items():
            use(variant)
            start = time.perf_counter()
            masks.append(mask_module.head_mask(grey))
            seconds[name] += time.perf_counter() - start
        differ += int(any(not np.array_equal(masks[0], m) for m in masks[1:]))
    use(OURS)
    print(f"{len(records)} images, {differ} head masks differ")
    for name, total in seconds.items():
        print(f"head_mask, {name}: {total / len(records) * 1000:.1f} ms an image")
    first, *_, last = seconds.values()
    print(f"speed-up of head_mask: {first / last:.2f}x")


def cold() -> None:
    records = load_dataset([FIGSHARE, BR35H, SARTAJ / "Training"]).records
    times = {}
    for name in (next(iter(VARIANTS)), "braincam fill and label"):
        use(VARIANTS[name])
        with tempfile.TemporaryDirectory() as cache:
            os.environ["BRAINCAM_CACHE"] = cache
            start = time.perf_counter()
            load_segmentation_data(records, PreprocessConfig(size=192), weak_labels=True)
            times[name] = time.perf_counter() - start
        print(f"{len(records)} images into an empty cache, {name}: {times[name]:.0f} s")
    use(OURS)
    first, last = times.values()
    print(f"speed-up of a first preprocessing: {first / last:.2f}x")


if __name__ == "__main__":
    head_masks()
    if "--cold" in sys.argv[1:]:
        cold()
