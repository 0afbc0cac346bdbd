"""Binary cross-validation folds scored at a tumour threshold chosen on each fold's validation rows.

A binary run calls an image "tumour" when P(tumour) >= 0.5 (the argmax). This script asks what
a threshold chosen on the fold's own validation rows would give instead: for every fold of a
``braincam cv`` output, it predicts the ``split.csv`` rows marked ``val`` with the fold's model
(``braincam.load``), takes the threshold ``t`` that ``--tune-threshold`` would choose
(``braincam.train.threshold.validation_threshold``), and scores the fold's test
rows (``predictions.csv``) at 0.5 and at ``t``, all rows and the leak-free ones. No test row
enters the choice of ``t``. The validation probabilities are written beside this run's output
(``OUT/<cv name>/fold-<k>.csv``) and reused when present.

Usage: python fold_threshold.py OUT CV [CV ...]
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

import braincam
from braincam.evaluate.metrics import balanced_accuracy_rows
from braincam.train.threshold import validation_threshold


def balanced_accuracy(tumour: np.ndarray, called: np.ndarray) -> float:
    """Mean of the tumour recall and the tumour-free recall (boolean arrays)."""
    return float(balanced_accuracy_rows(tumour[None].astype(int), called[None].astype(int), 2)[0])


def validation_probabilities(fold: Path, target: Path) -> pd.DataFrame:
    if not target.exists():
        split = pd.read_csv(fold / "split.csv")
        val = split[split["split"] == "val"]
        model = braincam.load(fold, ood=False, device="cpu")
        preds = model.predict(list(val["path"]), batch_size=64)
        frame = pd.DataFrame({"path": val["path"], "label": val["label"],
                              "prob_no_tumor": [p.probabilities["no_tumor"] for p in preds]})
        frame.to_csv(target, index=False)
    return pd.read_csv(target)


def score(cv: Path, out: Path) -> pd.DataFrame:
    rows = []
    (out / cv.name).mkdir(parents=True, exist_ok=True)
    for fold in sorted(cv.glob("fold-*")):
        val = validation_probabilities(fold, out / cv.name / f"{fold.name}.csv")
        test = pd.read_csv(fold / "predictions.csv")
        t = validation_threshold((val["label"] != "no_tumor").to_numpy(),
                                 1 - val["prob_no_tumor"].to_numpy())
        tumour = (test["label"] != "no_tumor").to_numpy()
        p = 1 - test["prob_no_tumor"].to_numpy()
        free = test["leak_free"].to_numpy(bool)
        rows.append({"fold": fold.name, "t": t,
                     "test@0.5": balanced_accuracy(tumour, p >= 0.5),
                     "test@t": balanced_accuracy(tumour, p >= t),
                     "leak_free@0.5": balanced_accuracy(tumour[free], p[free] >= 0.5),
                     "leak_free@t": balanced_accuracy(tumour[free], p[free] >= t)})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    for name in sys.argv[2:]:
        table = score(Path(name), out)
        print(name)
        print(table.round(3).to_string(index=False))
        means = table.drop(columns="fold").agg(["mean", "std"]).round(3)
        print(means.to_string(), "\n")
