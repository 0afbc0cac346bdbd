"""Example images for the report's "Where is the tumour?" section: ``tumour_examples.npz``.

Per dataset and per group (the images' finer class, ``AuditBatch.group_names``), up to
:data:`PER_GROUP` images with an expert mask, drawn at random (seeded), are kept with their
model-input image, expert mask, the first method's map (explaining the true class where the
audit computed that, as localisation does) and, when the audit was given a segmentation run,
the predicted tumour mask. The file is a compressed ``.npz`` of numeric and unicode arrays
(no pickle): ``images`` uint8 (K,S,S), ``masks`` bool (K,S,S), ``maps`` float16 (K,S,S),
``predicted`` bool (K,S,S) or absent, and ``paths``, ``datasets``, ``groups``, ``labels``,
``preds`` (K,) strings, ``method`` (a 0-d string).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braincam.audit.model.base import AuditBatch
from braincam.runs import atomic_write_bytes, read_npz

EXAMPLES_FILE = "tumour_examples.npz"
PER_GROUP = 3


@dataclass
class TumourExamples:
    """Rows of ``tumour_examples.npz`` (module docstring)."""

    method: str
    images: np.ndarray
    masks: np.ndarray
    maps: np.ndarray
    paths: np.ndarray
    datasets: np.ndarray
    groups: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    predicted: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def save(self, path: Path) -> None:
        """Write atomically as a compressed npz (masks and dark background compress well)."""
        arrays = {k: np.asarray(v) for k, v in vars(self).items() if v is not None}
        arrays["maps"] = arrays["maps"].astype(np.float16)
        for key in ("paths", "datasets", "groups", "labels", "preds", "method"):
            arrays[key] = arrays[key].astype(str)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> TumourExamples:
        """Read a file written by :meth:`save` (ValueError/OSError when it is not one)."""
        arrays = read_npz(path)
        arrays["method"] = str(arrays["method"])
        arrays["maps"] = arrays["maps"].astype(np.float32)
        try:
            return cls(**arrays)
        except TypeError as exc:
            raise ValueError(f"{path}: not a tumour-examples file ({exc})") from None

    @classmethod
    def concat(cls, parts: list[TumourExamples]) -> TumourExamples:
        """The rows of several datasets in one (the first part's method)."""
        fields = ("images", "masks", "maps", "paths", "datasets", "groups", "labels", "preds")
        joined = {f: np.concatenate([getattr(p, f) for p in parts]) for f in fields}
        predicted = None
        if all(p.predicted is not None for p in parts):
            predicted = np.concatenate([p.predicted for p in parts])
        return cls(parts[0].method, predicted=predicted, **joined)


def select_examples(batch: AuditBatch, per_group: int = PER_GROUP, seed: int = 0) -> np.ndarray:
    """Indices of up to ``per_group`` images with an expert mask per group, seeded, in
    order of group name then index."""
    if batch.expert_masks is None:
        return np.zeros(0, dtype=int)
    has = batch.expert_masks.any(axis=(1, 2))
    groups = batch.group_names
    rng = np.random.default_rng(seed)
    chosen = []
    for group in sorted(set(groups[has])):
        members = np.flatnonzero(has & (groups == group))
        chosen += sorted(rng.choice(members, size=min(per_group, members.size), replace=False))
    return np.array(chosen, dtype=int)


def tumour_examples(
    dataset: str, paths: list[str], batch: AuditBatch, method: str, idx: np.ndarray,
    predicted: np.ndarray | None = None,
) -> TumourExamples:
    """The rows ``idx`` of one dataset's batch; ``predicted``: their predicted masks."""
    maps = batch.label_maps.get(method, batch.maps[method])
    return TumourExamples(
        method=method,
        images=batch.images[idx],
        masks=batch.expert_masks[idx],
        maps=maps[idx],
        paths=np.array(paths, dtype=str)[idx] if len(idx) else np.zeros(0, str),
        datasets=np.full(len(idx), dataset, dtype=object),
        groups=batch.group_names[idx],
        labels=np.array([batch.classes[i] for i in batch.labels[idx]], dtype=object),
        preds=np.array([batch.classes[i] for i in batch.preds[idx]], dtype=object),
        predicted=predicted,
    )
