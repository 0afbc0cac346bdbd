"""The data audit's figures: per-class property histograms and the probe AUC chart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braincam.audit.data.probes import ProbeResult
from braincam.runs import atomic_save_figure

MAX_PANELS = 8


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_property_histograms(
    path: Path,
    table: pd.DataFrame,
    labels: Sequence[str],
    classes: Sequence[str],
    separation: dict[str, dict[str, Any]],
) -> None:
    """Overlaid per-class histograms (density) of the ``MAX_PANELS`` most separating numeric
    properties, each titled with its AUC."""
    plt = _pyplot()
    ranked = sorted((n for n, s in separation.items() if s.get("auc") is not None),
                    key=lambda n: -separation[n]["auc"])[:MAX_PANELS]
    cols = 4
    rows = max(1, -(-len(ranked) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    labels = np.asarray(labels)
    for ax in axes.ravel()[len(ranked):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), ranked, strict=False):
        values = table[name].to_numpy(np.float64)
        finite = np.isfinite(values)
        lo, hi = np.min(values[finite]), np.max(values[finite])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
        for c in classes:
            ax.hist(values[finite & (labels == c)], bins=bins, density=True, histtype="step",
                    label=c)
        ax.set_title(f"{name} (AUC {separation[name]['auc']:.2f})", fontsize=9)
        ax.tick_params(labelsize=7)
    axes.ravel()[0].legend(fontsize=7)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.08, top=0.9, wspace=0.3, hspace=0.5)
    atomic_save_figure(path, fig, dpi=100)
    plt.close(fig)


def save_probe_chart(path: Path, probes: Sequence[ProbeResult], warning_auc: float) -> None:
    """Test AUC per probe with its 95% interval; dashed lines at chance (0.5) and at the
    warning level."""
    plt = _pyplot()
    scored = [p for p in probes if p.test_auc is not None]
    fig, ax = plt.subplots(figsize=(5, 3))
    aucs = np.array([p.test_auc for p in scored])
    ci = [p.ci.get("test_auc") or [p.test_auc, p.test_auc] for p in scored]
    # a percentile interval need not hold its point estimate (few resamples): no bar below 0
    err = np.clip(np.array([[a - c[0] for a, c in zip(aucs, ci, strict=True)],
                            [c[1] - a for a, c in zip(aucs, ci, strict=True)]]).reshape(2, -1),
                  0, None)
    colours = ["tab:red" if a >= warning_auc else "tab:blue" for a in aucs]
    ax.bar([p.name for p in scored], aucs, yerr=err, color=colours, capsize=4)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.axhline(warning_auc, color="tab:red", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test AUC")
    ax.set_title("shortcut probes (red: above the warning level)", fontsize=9)
    fig.tight_layout()
    atomic_save_figure(path, fig, dpi=100)
    plt.close(fig)
