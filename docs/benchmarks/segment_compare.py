"""Segment runs of one split side by side, on its validation or held-out rows.

For each run (``braincam segment`` output directories made with the same records and seed, so
the same ``split.csv``), on the Figshare and Br35H rows of ``split.csv`` marked ``val`` or
``test``:
  dice                 mean Dice of the tumour slices, and per class
  det / fpr            detection rate (Dice > 0.5); share of tumour-free images with a pixel
  missed               share of tumour slices with Dice < 0.1; of those, the share with
                       predicted pixels elsewhere, and their median maximum probability
  glioma missed s/m/l  missed share of gliomas by thirds of mask area
  removed_any          share of removed copies (tumour inpainted) with any tumour pixel
  control_dice         Dice on the control copies (same shape inpainted elsewhere)
  sartaj_no_tumor      share of Sartaj Training ``no_tumor`` images (none a copy of a Figshare
                       or Br35H image) with any pixel, and with more than 0.5% of the image

Usage: python segment_compare.py val|test RUN [RUN ...]
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from braincam.data.hashing import duplicates_of
from braincam.data.preprocess import PreprocessCache, PreprocessConfig
from braincam.data.records import load_dataset
from braincam.data.regions import make_pairs
from braincam.data.segmentation import load_segmentation_data
from braincam.evaluate.segmentation import counterfactual_metrics, dice, segmentation_metrics
from braincam.models.segment import load_segmenter

DATA = Path("../shared/datasets")
FIGSHARE, BR35H = DATA / "figshare-cheng-t1ce", DATA / "br35h-no-tumor-sample"
SARTAJ = DATA / "sartaj-brain-tumor-mri"


def main(which: str, runs: list[str]) -> None:
    split = pd.read_csv(Path(runs[0]) / "split.csv")
    rows = set(split.loc[split["split"] == which, "path"])
    records = [r for r in load_dataset([FIGSHARE, BR35H]).records if str(r.path) in rows]
    config = PreprocessConfig(size=160)
    data = load_segmentation_data(records, config)
    images, truth = data.images.numpy(), data.masks.numpy()
    labels = np.array([r.label for r in data.records])
    pairs = make_pairs(images, data.heads.numpy(), truth, 0)
    sartaj = [r for r in load_dataset([SARTAJ]).records
              if r.split == "train" and r.label == "no_tumor"]
    others = [r.path for r in load_dataset([FIGSHARE, BR35H]).records]
    sartaj = [r for r, copy in zip(sartaj, duplicates_of([r.path for r in sartaj], others),
                                   strict=True) if not copy]
    sartaj_images, _, _ = PreprocessCache().load(sartaj, config)
    tumour = truth.reshape(len(truth), -1).any(1)
    area = truth.reshape(len(truth), -1).mean(1)
    gliomas = labels == "glioma"
    thirds = np.quantile(area[gliomas], [1 / 3, 2 / 3])
    for run in runs:
        seg = load_segmenter(run, "cpu")
        prob = seg.predict(images)
        pred = prob >= 0.5
        m = segmentation_metrics(pred, truth, list(labels), [r.source for r in data.records])
        c = counterfactual_metrics(seg.predict(pairs.removed) >= 0.5,
                                   seg.predict(pairs.control) >= 0.5, pred[pairs.source],
                                   truth[pairs.source])
        dices = np.array([dice(p, t) for p, t in zip(pred, truth, strict=True)])
        missed = tumour & (dices < 0.1)
        elsewhere = missed & pred.reshape(len(pred), -1).any(1)
        peak = prob.reshape(len(prob), -1).max(1)
        by_size = [missed[gliomas & (area > lo) & (area <= hi)].mean()
                   for lo, hi in zip([-1, *thirds], [*thirds, 2], strict=True)]
        marked = (seg.predict(sartaj_images) >= 0.5).reshape(len(sartaj_images), -1)
        per_class = ", ".join(f"{k} {v:.3f}" for k, v in m["per_class_dice"].items())
        print(f"{run} ({which}): dice {m['mean_dice']:.3f} ({per_class}), "
              f"det {m['detection_rate']:.3f}, fpr {m['false_positive_rate']:.3f}, "
              f"missed {missed[tumour].mean():.3f} (elsewhere {elsewhere.sum()}/{missed.sum()}, "
              f"median peak {np.median(peak[missed]) if missed.any() else float('nan'):.2f}), "
              f"glioma missed s/m/l {' / '.join(f'{v:.2f}' for v in by_size)}, "
              f"removed_any {c['removed_any_rate']:.3f}, control_dice {c['control_dice']:.3f}, "
              f"sartaj_no_tumor {marked.any(1).mean():.3f} "
              f"(> 0.5%: {(marked.mean(1) > 0.005).mean():.3f}, n={len(marked)})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
