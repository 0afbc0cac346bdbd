"""Confusion-matrix and ROC figures (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from braincam.runs import atomic_save_figure


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str,
                     path: Path) -> None:
    """Counts with row-normalised shading (rows = true class, so the diagonal is recall)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix, dtype=float)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    side = 1.2 + 0.9 * len(classes)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    fig.tight_layout()
    atomic_save_figure(path, fig, dpi=110)
    plt.close(fig)


def roc_figure(y: np.ndarray, prob: np.ndarray, classes: Sequence[str], title: str,
               path: Path) -> bool:
    """ROC curve(s): binary, the positive class (index 1); multiclass, one-vs-rest per class
    present. Returns False (and writes nothing) when no curve is defined."""
    from sklearn.metrics import roc_auc_score, roc_curve

    targets = [1] if len(classes) == 2 else range(len(classes))
    curves = [c for c in targets if 0 < (y == c).sum() < len(y)]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for c in curves:
        fpr, tpr, _ = roc_curve(y == c, prob[:, c])
        auc = roc_auc_score(y == c, prob[:, c])
        ax.plot(fpr, tpr, label=f"{classes[c]} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    atomic_save_figure(path, fig, dpi=110)
    plt.close(fig)
    return True
