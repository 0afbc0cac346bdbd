"""A segment run's Dice at its input side against Dice in the original image's pixels.

``metrics.json`` scores masks at the segmenter's input side (192 px by default): the expert
mask is cropped and resized onto the model input by nearest neighbour
(:func:`braincam.data.preprocess.mask_to_output`). Published results on Figshare score masks
at 512 px. This script scores the same predictions both ways, on the tumour slices of the rows
of ``split.csv`` marked ``val`` or ``test``, under the run's own mask rule (flip averaging and
threshold, as :meth:`braincam.models.segment.Segmenter.predict`):
  input side   Dice of ``P >= t`` against the resized expert mask
  original     Dice of ``uncrop(P) >= t`` (bilinear onto the crop box, 0 outside it, as
               ``braincam segment SEG --predict`` writes masks) against the expert mask itself

Usage (from the repository root): python docs/benchmarks/native_dice.py val|test RUN
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from braincam.data.preprocess import (
    PreprocessCache,
    PreprocessConfig,
    read_tumour_mask,
    tumour_mask,
    uncrop,
)
from braincam.data.records import load_dataset
from braincam.evaluate.segmentation import dice
from braincam.models.segment import load_segmenter

DATA = Path("../shared/datasets")
FIGSHARE, BR35H = DATA / "figshare-cheng-t1ce", DATA / "br35h-no-tumor-sample"


def _key(path: str | Path) -> str:
    """``dataset/class/file``: a row's image wherever the datasets lay when the run was made."""
    return "/".join(Path(path).parts[-3:])


def main(which: str, run: Path) -> None:
    split = pd.read_csv(run / "split.csv")
    rows = {_key(p) for p in split.loc[split["split"] == which, "path"]}
    records = [r for r in load_dataset([FIGSHARE, BR35H]).records
               if _key(r.path) in rows and r.mask is not None]
    seg = load_segmenter(run, "cpu")
    config, cache = PreprocessConfig(size=seg.size), PreprocessCache()
    preps = [cache.get(r, config) for r in records]
    images = np.stack([p.image for p in preps])
    prob = seg.probabilities(images)
    if seg.flip_average:
        prob = (prob + seg.probabilities(images[:, :, ::-1])[:, :, ::-1]) / 2
    t = seg.threshold
    scores = pd.DataFrame({
        "label": [r.label for r in records],
        "input side": [dice(p >= t, tumour_mask(r, prep))
                       for r, prep, p in zip(records, preps, prob, strict=True)],
        "original": [dice(uncrop(p, prep) >= t, read_tumour_mask(r.mask, prep.original_size))
                     for r, prep, p in zip(records, preps, prob, strict=True)],
    })
    print(f"{run}: {which} rows, {len(scores)} tumour slices, rule: flip average "
          f"{seg.flip_average}, threshold {t}")
    table = scores.groupby("label")[["input side", "original"]].mean()
    table.loc["all"] = scores[["input side", "original"]].mean()
    print(table.round(3).to_string())


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
