"""A guided binary run's answers under other evidence rules, from one forward pass.

A guided classifier (:mod:`braincam.models.guided`) adds ``-log clip(k^2 M, 1e-6, 1)`` to its
``no_tumor`` logit, ``k^2 M`` the predicted tumour in gate cells: the sum of the segmenter's
probabilities at or above the run's ``--guide-cut``. This script keeps the head's logits and
swaps that mass for others, so it shows what the evidence term alone would change for a head
trained as it was (a head trained under another rule may differ):

- ``cut C``: the sum of the probabilities at or above C (the run's own cut reproduces its
  answers; the script checks this),
- ``rule``: the pixels the segmenter's own mask rule marks (its ``flip_average`` and
  ``threshold``, what ``braincam segment --predict`` and the audit show), in gate cells,
- ``rule and cut``: the smaller of the two.

Per rule: false alarms (tumour-free images called tumour), missed tumours, balanced accuracy
and AUC at P(tumour) >= 0.5.

Rows: ``--rows test`` the run's test rows (``predictions.csv``); ``--rows clean-val`` its
validation rows that its guide held out as test images (``split.csv`` against the guide's, the
run's ``guide/`` or the segment run of ``--guide``); ``--data FOLDER...`` dataset folders.

Usage (from the repository root):
    python docs/benchmarks/evidence_rule.py RUN (--rows test|clean-val | --data FOLDER...)
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

import braincam
from braincam.data.inputs import expand_inputs
from braincam.data.records import load_dataset
from braincam.labels import NO_TUMOR
from braincam.models.guided import EPS
from braincam.models.normalize import to_model_input
from braincam.models.segment import guide_members, load_segmenter

CUTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def rows_of(run: Path, rows: str | None, data: list[str] | None) -> pd.DataFrame:
    """``path`` and ``tumour`` (bool) of the images to score."""
    if data:
        records = load_dataset(data).records
        return pd.DataFrame({"path": [str(r.path) for r in records],
                             "tumour": [r.label != NO_TUMOR for r in records]})
    if rows == "test":
        table = pd.read_csv(run / "predictions.csv")
        table = table[table.split == "test"]
    else:
        table = pd.read_csv(run / "split.csv")
        source = braincam.load(run, ood=False, device="cpu").meta["guide"]["source"]
        guide = guide_members(source, run)[0]
        held = pd.read_csv(guide / "split.csv")
        table = table[(table.split == "val") & table.path.isin(held[held.split == "test"].path)]
    return pd.DataFrame({"path": table.path, "tumour": table.label != NO_TUMOR})


def evidence_inputs(run: Path, paths: list[str]) -> dict[str, np.ndarray]:
    """Per image: the head's logits before the evidence term, the mass at each cut, and the
    share of pixels the segmenter's mask rule marks (one pass, batches of 32)."""
    model = braincam.load(run, ood=False, device="cpu")
    net = model.net.eval()
    segmenter = load_segmenter(guide_members(model.meta["guide"]["source"], run), "cpu")
    _, preps = model._prepare(expand_inputs(paths), None)
    images = np.stack([p.image for p in preps])
    backbone, out = net.backbone, {"logits": [], "ruled": [], "prob": []}
    out |= {f"cut{c}": [] for c in CUTS}
    with torch.inference_mode():
        for lo in range(0, len(images), 32):
            x = to_model_input(torch.from_numpy(images[lo:lo + 32]))
            features = backbone(x)
            out["prob"].append(torch.softmax(net.head(features).float(), 1).numpy())
            out["logits"].append(net.head[1](net.head[0](features[:, :-1])).numpy())
            p = backbone.tumour_probability(x)
            cells = backbone.gate.cells(backbone.features(x))
            for c in CUTS:
                cut = p * (p >= c) if c else p
                out[f"cut{c}"].append(F.adaptive_avg_pool2d(cut, cells).sum((1, 2, 3)).numpy())
            marked = segmenter.predict(images[lo:lo + 32]) >= 0.5
            out["ruled"].append(marked.mean((1, 2)) * cells[0] * cells[1])
    return {k: np.concatenate(v) for k, v in out.items()} | {
        "absent": net.head.absent, "classes": model.classes, "cut": backbone.cut}


def tumour_probability(logits: np.ndarray, absent: int, evidence: np.ndarray) -> np.ndarray:
    """P(tumour) of a subtype head: the tumour outputs' logsumexp against ``no_tumor``."""
    z = torch.from_numpy(logits).double()
    z[:, absent] -= torch.log(torch.from_numpy(np.clip(evidence, EPS, 1.0)).double())
    rest = [i for i in range(z.shape[1]) if i != absent]
    return torch.sigmoid(torch.logsumexp(z[:, rest], 1) - z[:, absent]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--rows", choices=("test", "clean-val"))
    parser.add_argument("--data", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(2)
    table = rows_of(args.run, args.rows, args.data)
    found = evidence_inputs(args.run, table.path.tolist())
    y = table.tumour.to_numpy()
    own = tumour_probability(found["logits"], found["absent"], found[f"cut{found['cut']}"])
    tumour = found["prob"][:, found["classes"].index("tumor")]
    assert np.abs(own - tumour).max() < 1e-5, "the run's own cut does not reproduce its answers"
    rules = {f"cut {c}": found[f"cut{c}"] for c in CUTS}
    rules |= {"rule": found["ruled"],
              "rule and cut": np.minimum(found["ruled"], found[f"cut{found['cut']}"])}
    print(f"{args.run}: {len(y)} images, {int((~y).sum())} tumour-free")
    for name, evidence in rules.items():
        p = tumour_probability(found["logits"], found["absent"], evidence)
        called = p >= 0.5
        both = len(set(y)) > 1
        print(f"{name:13s} false alarms {int((called & ~y).sum()):3d}  missed "
              f"{int((~called & y).sum()):3d}  balanced accuracy "
              f"{balanced_accuracy_score(y, called) if both else float('nan'):.3f}  AUC "
              f"{roc_auc_score(y, p) if both else float('nan'):.3f}")


if __name__ == "__main__":
    main()
