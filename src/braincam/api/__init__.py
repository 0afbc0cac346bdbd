"""The Python API: ``braincam.load(RUN)`` and the model's ``predict``, ``explain``, ``segment``.

::

    import braincam
    model = braincam.load("runs/bin", segment="runs/seg")  # segment: optional
    preds = model.predict(["scan.png", array, pil_image, "series_dir/", "vol.nii.gz"])
    exps = model.explain(preds_inputs, method="gradcam")
    masks = model.segment(preds_inputs)  # needs segment=

Inputs are expanded by :func:`braincam.data.inputs.expand_inputs` (a volume or DICOM series gives
one :class:`Prediction` per slice), preprocessed exactly as the run's training images were
(``PreprocessConfig`` from the checkpoint; files through the shared on-disk cache) and scored in
batches. Every prediction carries the warnings of :mod:`braincam.api.warnings`; the
out-of-distribution reference they need is built on first use and cached in the run
(:mod:`braincam.api.reference`). With a segmentation run (``braincam segment``) every
prediction also carries the predicted tumour (``P(tumour) >= THRESHOLD`` over the model input)
and its share of the model input, and overlays outline it.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from braincam.api.reference import Reference, TooFewImages, features_and_probs, run_reference
from braincam.api.warnings import cam_warning, image_warnings
from braincam.data.imageio import ImageReadError
from braincam.data.inputs import InputSlice, SliceChoice, expand_inputs, read_slice
from braincam.data.preprocess import (
    PreprocessCache,
    Preprocessed,
    preprocess,
    preprocess_config,
)
from braincam.data.records import SkippedFile
from braincam.errors import BraincamError
from braincam.models.guided import is_guided
from braincam.models.segment import THRESHOLD, Segmenter
from braincam.runs import RunDir

__all__ = ["Explanation", "Model", "Prediction", "SliceChoice", "TumourMask", "load"]

log = logging.getLogger(__name__)
T = TypeVar("T")

WORKERS = 4


@dataclass
class Prediction:
    """One slice or image. ``to_row()`` is its ``predictions.csv`` row."""

    path: str  # the input as given (file, folder, volume) or "<array N>"
    slice: int | None  # slice within a volume/series/multi-frame input; None for 2D
    probabilities: dict[str, float]  # class -> probability, the run's class order
    label: str  # predicted class
    warnings: list[str]
    image: np.ndarray  # the model input, uint8 (S, S)
    ood_score: float | None = None  # Mahalanobis distance / its threshold (> 1: flagged)
    kind: str = "image"  # image | slice | volume (the summary row of a volume)
    preprocessed: Preprocessed | None = field(default=None, repr=False)  # crop geometry
    # with a segmenter (load(..., segment=SEG)), else None:
    tumour: np.ndarray | None = field(default=None, repr=False)  # bool (S, S), P >= THRESHOLD
    tumour_fraction: float | None = None  # share of the model input's pixels in `tumour`
    tumour_probability: np.ndarray | None = field(default=None, repr=False)  # float32 (S, S)
    item: InputSlice | None = field(default=None, repr=False)  # the input slice predicted

    @staticmethod
    def columns(classes: Sequence[str], segmented: bool = False) -> list[str]:
        """The keys of :meth:`to_row` for a model of ``classes``, with a segmenter or not."""
        return ["path", "slice", "kind", "pred", *(f"prob_{c}" for c in classes), "ood_score",
                *(["tumour_fraction"] if segmented else []), "warnings"]

    def to_row(self) -> dict[str, object]:
        """The row in :meth:`columns`' order: ``path, slice, kind, pred, prob_<class>...,
        ood_score, [tumour_fraction,] warnings``
        (warnings joined by ``; ``; probabilities to 6 significant digits; ``tumour_fraction``,
        4 decimals, only when a segmenter was loaded)."""
        values: dict[str, object] = {
            "path": self.path, "slice": "" if self.slice is None else self.slice,
            "kind": self.kind, "pred": self.label,
            **{f"prob_{c}": float(f"{p:.6g}") for c, p in self.probabilities.items()},
            "ood_score": "" if self.ood_score is None else round(self.ood_score, 4),
            "tumour_fraction": self.tumour_fraction, "warnings": "; ".join(self.warnings),
        }
        return {key: values[key] for key in
                self.columns(list(self.probabilities), self.tumour_fraction is not None)}


@dataclass
class TumourMask:
    """A segmenter's answer for one image or slice (:meth:`Model.segment`)."""

    path: str  # as Prediction.path
    slice: int | None
    probability: np.ndarray = field(repr=False)  # float32 (S, S) P(tumour) over the model input
    mask: np.ndarray = field(repr=False)  # bool (H, W) in ORIGINAL image pixels, P >= THRESHOLD
    fraction: float  # share of the model input's pixels with P >= THRESHOLD (4 decimals)
    preprocessed: Preprocessed | None = field(default=None, repr=False)  # crop geometry


@dataclass
class Explanation:
    prediction: Prediction
    map: np.ndarray  # (S, S) float32 in [0, 1] over the model input
    overlay: np.ndarray  # RGB uint8 on the original image (map, head outline, tumour outline)
    method: str
    item: InputSlice | None = field(default=None, repr=False)  # the input slice explained


def _serialised(method: Callable[..., T]) -> Callable[..., T]:
    """``method`` run under its model's lock (see :class:`Model`)."""

    @functools.wraps(method)
    def locked(self: Model, *args: object, **kwargs: object) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class Model:
    """A trained run ready for new images (see :func:`load`). One model may be shared by
    threads: its calls take turns (a lock), since Grad-CAM and the feature hook hook the
    network, and one call's hooks must not see another call's forward pass."""

    def __init__(self, run: RunDir, net: torch.nn.Module, meta: dict, device: torch.device,
                 ood: bool = True, segmenter: Segmenter | None = None) -> None:
        self.run = run
        self.net = net
        self.meta = meta
        self.device = device
        self.classes: list[str] = list(meta["classes"])
        self.config = preprocess_config(meta)
        self.ood = ood
        self.segmenter = segmenter  # braincam segment's U-Net (load(..., segment=SEG)) or None
        self._reference: Reference | None = None
        self._cache = PreprocessCache()
        self._lock = threading.RLock()

    @property
    def reference(self) -> Reference | None:
        """The run's out-of-distribution reference (built and cached on first use). A run
        with too few training images to calibrate it gets a warning, and no such check."""
        with self._lock:
            if self.ood and self._reference is None:
                try:
                    self._reference = run_reference(self.run, self.net, self.config,
                                                    self.device)
                except TooFewImages as exc:
                    log.warning("%s: %s; predictions carry no out-of-distribution or "
                                "duplicate warning", self.run.root, exc)
                    self.ood = False
            return self._reference if self.ood else None

    def predict(self, inputs: object, batch_size: int = 32, choice: SliceChoice | None = None,
                skipped: list[SkippedFile] | None = None) -> list[Prediction]:
        """One :class:`Prediction` per image or slice of ``inputs``. Unreadable inputs raise
        ``ImageReadError``, or, when a ``skipped`` list is given, are appended to it."""
        return self.predict_slices(expand_inputs(inputs, choice, skipped), batch_size, skipped)

    @_serialised
    def predict_slices(self, slices: Sequence[InputSlice], batch_size: int = 32,
                       skipped: list[SkippedFile] | None = None) -> list[Prediction]:
        """:meth:`predict` of already expanded inputs."""
        _check_batch(batch_size)
        items, preps = self._prepare(list(slices), skipped)
        if not items:
            return []
        images = np.stack([p.image for p in preps])
        features, probs = features_and_probs(self.net, images, self.device, batch_size)
        return self._predictions(items, preps, probs, features)

    def explain(self, inputs: object, method: str = "gradcam", layer: str | None = None,
                batch_size: int = 16, choice: SliceChoice | None = None,
                skipped: list[SkippedFile] | None = None) -> list[Explanation]:
        """Predictions plus a map of the predicted class per image (``braincam.explain``
        methods); a CAM lying mostly outside the head adds a warning. With a segmenter the
        overlay also outlines the predicted tumour (magenta)."""
        return self.explain_slices(expand_inputs(inputs, choice, skipped), method, layer,
                                   batch_size, skipped)

    @_serialised
    def explain_slices(self, slices: Sequence[InputSlice], method: str = "gradcam",
                       layer: str | None = None, batch_size: int = 16,
                       skipped: list[SkippedFile] | None = None) -> list[Explanation]:
        """:meth:`explain` of already expanded inputs."""
        from braincam.evaluate.segmentation import original_mask
        from braincam.explain import explain
        from braincam.explain.render import overlay_original

        _check_batch(batch_size)
        if layer is not None and method in ("ig", "occlusion"):
            raise BraincamError(f"layer names a CAM's layer; {method} attributes the input "
                                "pixels, it has none")
        items, preps = self._prepare(list(slices), skipped)
        out: list[Explanation] = []
        for lo in range(0, len(items), batch_size):
            chunk, chunk_preps = items[lo: lo + batch_size], preps[lo: lo + batch_size]
            images = np.stack([p.image for p in chunk_preps])
            with _FeatureHook(self.net.backbone) as hook:
                cam = explain(self.net, images, method=method, layer=layer)
            maps = cam.maps.float().cpu().numpy()
            probs = cam.probs.float().cpu().numpy()
            features = None if is_guided(self.net) else hook.features  # guided: gated ones
            if self.ood and (features is None or len(features) != len(chunk)):
                features, _ = features_and_probs(self.net, images, self.device)  # ig, occlusion
            preds = self._predictions(chunk, chunk_preps, probs, features)
            for item, prep, pred, cam_map in zip(chunk, chunk_preps, preds, maps, strict=True):
                pred.warnings += cam_warning(cam_map, prep.mask)
                tumour = None if pred.tumour_probability is None else \
                    original_mask(pred.tumour_probability, prep)
                overlay = overlay_original(read_slice(item), cam_map, prep, tumour=tumour)
                out.append(Explanation(pred, cam_map, overlay, method, item))
        return out

    def segment(self, inputs: object, choice: SliceChoice | None = None,
                skipped: list[SkippedFile] | None = None) -> list[TumourMask]:
        """The segmenter's tumour per image or slice of ``inputs`` (the inputs of
        :meth:`predict`); needs ``braincam.load(RUN, segment=SEG)``."""
        return self.segment_slices(expand_inputs(inputs, choice, skipped), skipped)

    @_serialised
    def segment_slices(self, slices: Sequence[InputSlice],
                       skipped: list[SkippedFile] | None = None) -> list[TumourMask]:
        """:meth:`segment` of already expanded inputs."""
        if self.segmenter is None:
            raise BraincamError("no segmentation run loaded: pass segment=SEG to braincam.load")
        from braincam.evaluate.segmentation import original_mask, tumour_fraction

        items, preps = self._prepare(list(slices), skipped)
        if not items:
            return []
        probs = self.segmenter.predict(np.stack([p.image for p in preps]))
        return [TumourMask(item.name, item.slice, prob, original_mask(prob, prep),
                           tumour_fraction(prob), prep)
                for item, prep, prob in zip(items, preps, probs, strict=True)]

    def _prepare(self, items: list[InputSlice], skipped: list[SkippedFile] | None
                 ) -> tuple[list[InputSlice], list[Preprocessed]]:
        if len(items) == 1:  # starting threads would cost more than one cache hit
            results = [self._preprocess(items[0])]
        else:
            with ThreadPoolExecutor(WORKERS) as pool:
                results = list(pool.map(self._preprocess, items))
        kept: list[tuple[InputSlice, Preprocessed]] = []
        for item, result in zip(items, results, strict=True):
            if isinstance(result, ImageReadError):
                if skipped is None:
                    raise result
                where = item.name if item.slice is None else f"{item.name}#{item.slice}"
                skipped.append(SkippedFile(Path(where), str(result).split(": ", 1)[-1]))
            else:
                kept.append((item, result))
        return [k[0] for k in kept], [k[1] for k in kept]

    def _preprocess(self, item: InputSlice) -> Preprocessed | ImageReadError:
        try:
            if item.array is not None:
                return preprocess(item.array, self.config)
            return self._cache.get(item.file, self.config, item.index)
        except ImageReadError as exc:
            return exc

    def _predictions(self, items: Sequence[InputSlice], preps: Sequence[Preprocessed],
                     probs: np.ndarray, features: np.ndarray | None) -> list[Prediction]:
        from braincam.evaluate.segmentation import tumour_fraction

        ref = self.reference
        scores = ref.distance(features) / ref.threshold if ref is not None else None
        tumour = None
        if self.segmenter is not None:
            tumour = self.segmenter.predict(np.stack([p.image for p in preps]))
        out = []
        for i, (item, prep) in enumerate(zip(items, preps, strict=True)):
            score = None if scores is None else float(scores[i])
            pred = Prediction(
                path=item.name, slice=item.slice,
                probabilities={c: float(p) for c, p in zip(self.classes, probs[i], strict=True)},
                label=self.classes[int(np.argmax(probs[i]))],
                warnings=image_warnings(prep, score, ref),
                image=prep.image, ood_score=score,
                kind="slice" if item.volume else "image", preprocessed=prep, item=item,
            )
            if tumour is not None:
                pred.tumour_probability = tumour[i]
                pred.tumour = tumour[i] >= THRESHOLD
                pred.tumour_fraction = tumour_fraction(tumour[i])
            out.append(pred)
        return out


class _FeatureHook:
    """Keeps the first output of ``module`` (the pooled backbone features) seen in the block."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.features: np.ndarray | None = None

    def __enter__(self) -> _FeatureHook:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def _hook(self, module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
        if self.features is None:
            self.features = output.detach().float().cpu().numpy()


def _check_batch(batch_size: int) -> None:
    if not isinstance(batch_size, int | np.integer) or isinstance(batch_size, bool):
        raise BraincamError(f"batch_size must be a whole number, got {batch_size!r}")
    if batch_size < 1:
        raise BraincamError(f"batch_size must be >= 1, got {batch_size}")


def load(run: Path | str, segment: Path | str | None = None,
         device: str | torch.device = "auto", ood: bool = True) -> Model:
    """A run's trained model for new images. ``ood=False`` skips the out-of-distribution and
    duplicate warnings (and the one-off calibration on the training images they need).
    ``segment``: a ``braincam segment`` run, loaded on the same device; predictions then carry
    the predicted tumour, overlays outline it and :meth:`Model.segment` works."""
    from braincam.device import device_of
    from braincam.models import load_checkpoint, read_meta, require_single_model
    from braincam.models.segment import check_preprocess, load_segmenter

    if not isinstance(run, str | os.PathLike):
        raise BraincamError(f"run must be a run folder's path, got {type(run).__name__}")
    rundir = RunDir(Path(os.path.abspath(run)))  # a later os.chdir must not lose it
    if rundir.root.is_file():
        raise BraincamError(f"{run} is a file; braincam.load takes a run folder (a model spec "
                            "is audited with braincam audit SPEC)")
    if not rundir.model.is_file():
        raise BraincamError(f"{run} holds no model.safetensors; train a model there first")
    run_meta = read_meta(rundir.model)
    require_single_model(run_meta, run)
    if segment is not None:
        segment = os.path.abspath(segment)
    if segment is not None and not RunDir(Path(segment)).model.is_file():
        raise BraincamError(f"{segment} holds no model.safetensors; train a segmenter there "
                            "with braincam segment")
    torch_device = device_of(device)
    segmenter = None
    if segment is not None:  # its masks must line up with the model's inputs
        segmenter = load_segmenter(segment, torch_device)
        check_preprocess(segmenter.meta, preprocess_config(run_meta), segment)
    net, meta = load_checkpoint(rundir.model, device=torch_device)
    return Model(rundir, net, meta, torch_device, ood=ood, segmenter=segmenter)
