"""Figures of the radiomics baseline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def top_feature_figure(table, features: Sequence[str], classes: Sequence[str], path: Path) -> None:
    """One box plot per feature: its distribution in each tumour type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from braincam.runs import atomic_save_figure

    cols = min(3, len(features))
    rows = -(-len(features) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), features, strict=False):
        ax.boxplot([table.loc[table["label"] == c, name].dropna() for c in classes],
                   tick_labels=list(classes), showfliers=False)
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel()[len(features):]:
        ax.axis("off")
    fig.tight_layout()
    atomic_save_figure(path, fig, dpi=90)
    plt.close(fig)
