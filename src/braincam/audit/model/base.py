"""The check protocol of the model audit, in the style of Quantus's metric base class.

A check turns an :class:`AuditBatch` (images at the model's input resolution, their
head masks, labels, predictions and explanation maps) into per-image numbers
(:meth:`Check.evaluate`), then into a summary dataclass and a list of
:class:`~braincam.audit.findings.Finding` (:meth:`Check.summarise`). Summaries are
computed from the per-image numbers only (a check keeps no state in between), so the
per-image numbers are all a gallery or a re-summary of a subset needs.

Checks that need the model get it through a :class:`ModelHandle`, which hides the
input transform and the explanation method: tests can hand in a tiny CNN and
pytorch-grad-cam directly, :mod:`braincam.audit.model.run` wires
:func:`braincam.models.to_model_input` and :func:`braincam.explain.explain`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from braincam.audit.findings import Finding

ExplainFn = Callable[[Any, np.ndarray, np.ndarray, str], np.ndarray]
"""``explain(model, images_uint8 (N,S,S), targets (N,), method) -> maps (N,S,S) in [0, 1]``."""


@dataclass
class ModelHandle:
    """A classifier as the checks see it.

    ``to_input`` turns grey uint8 images (N,S,S) into the model's input tensor (on the
    model's device); ``explain`` computes maps for a (possibly modified) model;
    ``predict_fn``, when given, replaces the plain batched softmax of :meth:`predict`.
    """

    model: Any  # torch.nn.Module, in eval mode
    to_input: Callable[[np.ndarray], Any]
    explain: ExplainFn
    batch_size: int = 32
    predict_fn: Callable[[np.ndarray], np.ndarray] | None = None

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, C) for uint8 images (N, S, S), in batches, no grad."""
        import torch

        if self.predict_fn is not None:
            return self.predict_fn(images)
        out = []
        with torch.no_grad():
            for idx in batches(len(images), self.batch_size):
                logits = self.model(self.to_input(images[idx]))
                out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(out)


@dataclass(frozen=True)
class AuditSettings:
    """Sample sizes of the expensive checks (seeded subsets, per dataset and method) and
    their other knobs. With these defaults a gradcam audit of an efficientnet_lite0 run on
    394 Sartaj + 500 Figshare images at 224 px took 610 CPU-seconds (user + system) on the
    2-core development machine; deletion/insertion (84 forward passes per image) and the
    counterfactuals (5 per image) dominate."""

    faithfulness_images: int | None = 16  # deletion/insertion: 84 passes each; None = all
    road_images: int = 8  # ROAD's imputation solves a sparse system per image and percentile
    road_percentiles: tuple[int, ...] = (20, 40, 60, 80)
    sanity_images: int = 8  # one explanation pass per randomised layer group
    occlusion_images: int = 4  # one forward pass per occlusion window
    occlusion_window: int = 32  # px; with stride = window the windows tile the image:
    occlusion_stride: int = 32  # 49 passes per 224-px image (stride 16 would take 169)
    steps: int = 20  # deletion/insertion steps
    batch_size: int = 32
    seed: int = 0


@dataclass
class AuditBatch:
    """Everything a check may look at, all in model-input coordinates (S x S pixels).

    ``maps[method]`` explains class ``targets`` (the prediction, unless stated);
    ``tumor_masks`` marks the annotated tumour (box or mask) and is all False on images
    without an annotation; ``regions`` are extra named regions, (S,S) or (N,S,S), whose
    CAM energy is reported (e.g. a suspected marker corner). ``label_maps[method]`` explain
    the true class (localisation uses them where given); ``occlusion`` holds signed occlusion
    maps, NaN on images where occlusion was not run. ``expert_masks`` marks the expert tumour
    outline where one is known (all False elsewhere; the mask-based localisation and the
    mask-removal test with its control use it); ``group_labels`` name each image's finer
    class for breakdowns (e.g. ``glioma`` under a binary model's ``tumor``; default: the
    class names of ``labels``). ``map_grids[method]`` is the resolution the method's maps
    were computed at before resizing (the target layer's for a CAM), where known.
    """

    images: np.ndarray  # uint8 (N, S, S)
    head_masks: np.ndarray  # bool (N, S, S)
    labels: np.ndarray  # int (N,), index into classes
    classes: tuple[str, ...]
    probs: np.ndarray  # float (N, C) on the unaltered images
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (N, S, S)
    targets: np.ndarray | None = None  # int (N,), class the maps explain; None = prediction
    tumor_masks: np.ndarray | None = None  # bool (N, S, S)
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    handle: ModelHandle | None = None
    label_maps: dict[str, np.ndarray] = field(default_factory=dict)
    occlusion: np.ndarray | None = None  # (N, S, S)
    expert_masks: np.ndarray | None = None  # bool (N, S, S)
    group_labels: np.ndarray | None = None  # str (N,)
    map_grids: dict[str, tuple[int, int]] = field(default_factory=dict)  # method -> raw (h, w)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 3 or self.head_masks.shape != self.images.shape:
            raise ValueError("images and head_masks must both be (N, S, S)")
        if len(self.labels) != n or len(self.probs) != n:
            raise ValueError("labels and probs need one row per image")
        for method, maps in {**self.maps, **self.label_maps}.items():
            if maps.shape != self.images.shape:
                raise ValueError(f"maps[{method!r}] has shape {maps.shape}, "
                                 f"not {self.images.shape}")
        if self.expert_masks is not None and self.expert_masks.shape != self.images.shape:
            raise ValueError("expert_masks must be (N, S, S) like images")
        if self.targets is None:
            self.targets = self.preds

    def __len__(self) -> int:
        return len(self.images)

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def group_names(self) -> np.ndarray:
        """Each image's breakdown group: ``group_labels``, else its true class's name."""
        if self.group_labels is not None:
            return np.asarray(self.group_labels, dtype=object)
        return np.array([self.classes[i] for i in self.labels], dtype=object)

    @property
    def correct(self) -> np.ndarray:
        return self.preds == self.labels


@dataclass
class CheckOutput:
    """A check's output: its summary dataclass, its findings, and per-image columns
    (``per_image[method][column]`` is an (N,) array, or (N, K) for curves; NaN where a
    test does not apply; method ``""`` for method-free checks)."""

    summary: Any
    findings: list[Finding]
    per_image: dict[str, dict[str, np.ndarray]]


class Check(ABC):
    """Base class: ``check(batch)`` = preprocess -> evaluate -> summarise.

    Subclasses describe themselves (``name``: the key in ``audit.json``; ``title`` and
    ``description`` for the report; ``per_method``: one summary per explanation method, else
    one for the model; ``higher_is_better``: the direction of each headline number, keyed as in
    ``audit.json``; ``unprefixed_columns``: per-image columns keep their own names instead of
    ``<name>_<column>``) and implement :meth:`evaluate` (per-image numbers) and
    :meth:`summarise` (numbers + findings from the per-image numbers of one batch or of
    several batches concatenated). Report, ``compare`` and ``audit.json``'s layout read these
    attributes from :data:`CHECKS`, so a new check is one registered class.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    per_method: ClassVar[bool] = True
    higher_is_better: ClassVar[dict[str, bool]] = {}
    unprefixed_columns: ClassVar[bool] = False

    def __init__(self, settings: AuditSettings | None = None) -> None:
        self.settings = settings or AuditSettings()

    def __call__(self, batch: AuditBatch) -> CheckOutput:
        batch = self.preprocess(batch)
        per_image = self.evaluate(batch)
        summary, findings = self.summarise(batch, per_image)
        return CheckOutput(summary, findings, per_image)

    def preprocess(self, batch: AuditBatch) -> AuditBatch:
        """Hook to select images or add inputs; the default keeps the batch as it is."""
        return batch

    @abstractmethod
    def evaluate(self, batch: AuditBatch) -> dict[str, dict[str, np.ndarray]]:
        """Per-image numbers: ``{method: {column: (N,) array}}``."""

    @abstractmethod
    def summarise(
        self, batch: AuditBatch, per_image: dict[str, dict[str, np.ndarray]]
    ) -> tuple[Any, list[Finding]]:
        """Summary dataclass and findings."""


CHECKS: dict[str, type[Check]] = {}


def register(cls: type[Check]) -> type[Check]:
    """Class decorator: add a check to :data:`CHECKS` under its ``name``."""
    CHECKS[cls.name] = cls
    return cls


def batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    for start in range(0, n, max(1, size)):
        yield slice(start, min(start + size, n))


def nanmean(values: np.ndarray) -> float | None:
    """Mean ignoring NaN; None (JSON null) when nothing is left."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def paired_ratio(share: np.ndarray, chance: np.ndarray) -> float | None:
    """``mean(share) / mean(chance)`` over the images where both are defined (a map without
    positive evidence has no energy share): a share and its chance level on the same images.
    None when no image has both or the chance is 0."""
    share, chance = np.asarray(share, dtype=float), np.asarray(chance, dtype=float)
    both = ~np.isnan(share) & ~np.isnan(chance)
    if not both.any() or chance[both].mean() <= 0:
        return None
    return float(share[both].mean() / chance[both].mean())


def subsample(n: int, k: int | None, seed: int = 0) -> np.ndarray:
    """``k`` of ``range(n)`` chosen at random (seeded), sorted; all when ``k`` is None or >= n."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
