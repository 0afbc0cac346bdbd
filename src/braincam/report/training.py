"""Training curves and a per-phase summary from history.csv."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from braincam.report.figures import training_curves
from braincam.report.sources import UNREADABLE, Part, read_csv_part
from braincam.runs import RunDir


@dataclass
class PhaseSummary:
    """One training phase: how long, and its best validation balanced accuracy."""

    phase: str
    epochs: int
    best_val_balanced_accuracy: Any
    best_epoch: Any
    last_val_loss: Any
    seconds: Any


@dataclass
class TrainingSection:
    part: Part
    curves: str | None = None
    phases: list[PhaseSummary] = field(default_factory=list)


def collect_training(run: RunDir) -> TrainingSection:
    part, history = read_csv_part(run, run.history, "training history")
    if history is None:
        return TrainingSection(part)
    if history.empty:
        return TrainingSection(Part(part.name, part.relpath, UNREADABLE, "no epochs recorded"))
    if "phase" not in history.columns:
        history = history.assign(phase="1")
    phases = [
        _phase(str(name), rows) for name, rows in history.groupby("phase", sort=False)
    ]
    return TrainingSection(part, training_curves(history), phases)


def _phase(name: str, rows: pd.DataFrame) -> PhaseSummary:
    best = bacc = last_loss = seconds = None
    if "val_balanced_accuracy" in rows.columns:
        scores = pd.to_numeric(rows["val_balanced_accuracy"], errors="coerce")
        if scores.notna().any():
            best_row = scores.idxmax()
            bacc = float(scores[best_row])
            if "epoch" in rows.columns:
                epoch = pd.to_numeric(rows["epoch"], errors="coerce")[best_row]
                best = int(epoch) if pd.notna(epoch) else None
    if "val_loss" in rows.columns:
        losses = pd.to_numeric(rows["val_loss"], errors="coerce").dropna()
        last_loss = float(losses.iloc[-1]) if len(losses) else None
    if "seconds" in rows.columns:
        seconds = float(pd.to_numeric(rows["seconds"], errors="coerce").sum())
    return PhaseSummary(name, len(rows), bacc, best, last_loss, seconds)
