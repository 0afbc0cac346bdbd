"""What "unlike the training data" means for a run: ``RUN/ood.safetensors``
(``RunDir.ood_reference``).

Built once, lazily, on a run's first prediction from its ``split.csv`` training images, and
cached in the run directory. Features and properties use a seeded random sample of at most
``MAX_IMAGES`` of them; duplicates are looked up among all of them.

- **feature distance**: the model's pooled backbone features ``f`` (the input of its classifier
  head; for a segmentation-guided model the ungated network's, since its head sees nothing of
  an image without predicted tumour: a blank, a noise or a gradient image all give the same
  gated features). The training sample is split in two halves A and B (seeded); the mean
  ``mu`` and a Ledoit-Wolf shrunk covariance ``Sigma`` are fitted on A; the score of an image
  is the Mahalanobis distance ``d = sqrt((f - mu)^T Sigma^-1 (f - mu))`` and the threshold is the
  ``PERCENTILE``-th percentile of the held-out half B's scores, so about 1% of new images from
  the training distribution are flagged. ``ood_score = d / threshold`` (> 1: flagged).
- **properties**: head fraction of the model input and the mean and standard deviation of its
  in-head intensities (in [0, 1]); an image outside the whole range ``[min, max]`` of the
  training sample's values is flagged. (Percentile ranges such as ``[p0.5, p99.5]`` flagged a
  fifth of same-source test images: the head fraction is nearly constant after cropping to the
  head, so its narrow central range excludes ordinary images. The whole range catches what
  this check is for, e.g. a blank, inverted or non-MRI image.)
- **duplicates**: the 64-bit pHash (``braincam.data.hashing.phash``) of every training image's
  model input; a new model input within ``NEAR_DISTANCE`` bits is an exact or near
  duplicate. (Model inputs, not the original files, so arrays and DICOM/NIfTI slices compare
  alike; crop and resize keep near duplicates near.)
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from braincam.data.hashing import phash
from braincam.data.preprocess import PreprocessCache, PreprocessConfig
from braincam.errors import BraincamError, first_line
from braincam.evaluate.predict import forward_batches
from braincam.runs import RunDir

log = logging.getLogger(__name__)

MAX_IMAGES = 1500
MIN_IMAGES = 20  # fewer training images calibrate no threshold worth the name
PERCENTILE = 99.0
PROPERTY_RANGE = (0.0, 100.0)  # percentiles: the training sample's whole range
PROPERTIES = ("head_fraction", "head_mean", "head_std")
VERSION = 5  # 2: duplicates among all training images; 3: whole property range; 4: EXIF upright;
# 5: YBR DICOM converted once
GUIDED_FEATURES = "before the gate"  # meta "features" of a guided model's reference; a file
# without it was built on the gated features and is rebuilt


class TooFewImages(BraincamError):
    """The run has fewer than ``MIN_IMAGES`` training images: no reference can be built."""


@dataclass
class Reference:
    mean: np.ndarray  # (D,) float64 feature mean of half A
    precision: np.ndarray  # (D, D) inverse of the shrunk covariance of half A
    threshold: float  # PERCENTILE-th percentile of half B's Mahalanobis distances
    phashes: np.ndarray  # (N,) uint64 pHashes of the training model inputs
    paths: list[str]  # the N training images
    low: dict[str, float]  # per property, the training sample's minimum
    high: dict[str, float]  # per property, its maximum

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``features`` (N, D)."""
        centred = np.asarray(features, dtype=np.float64) - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, self.precision, centred), 0))


def image_properties(images: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Per model input (uint8 (N, S, S), head masks bool): head fraction, in-head mean and SD."""
    values = images.astype(np.float32) / 255.0
    out = {name: np.zeros(len(images)) for name in PROPERTIES}
    for i, (image, mask) in enumerate(zip(values, masks, strict=True)):
        head = image[mask] if mask.any() else image.ravel()
        out["head_fraction"][i] = mask.mean()
        out["head_mean"][i] = head.mean()
        out["head_std"][i] = head.std()
    return out


def features_and_probs(model: torch.nn.Module, images: np.ndarray, device: torch.device,
                       batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The whole image's pooled backbone features (N, D) and class probabilities (N, C) from
    one forward pass (:func:`braincam.models.guided.head_input_and_image_features`: for a
    guided model, the ungated network's features, not the gated ones its head sees)."""
    from braincam.explain.base import eval_mode
    from braincam.models.guided import head_input_and_image_features

    def both(x: torch.Tensor) -> torch.Tensor:
        head_input, features = head_input_and_image_features(model, x)
        probs = torch.softmax(model.head(head_input).float(), dim=1)
        return torch.cat([features.float(), probs], dim=1)

    with eval_mode(model):  # a caller's model.train() must not change the answer
        out = forward_batches(both, images, device, batch_size).numpy()
    width = out.shape[1] - model.num_classes
    return out[:, :width], out[:, width:]


def build_reference(model: torch.nn.Module, images: np.ndarray, masks: np.ndarray,
                    paths: list[str], device: torch.device, seed: int = 0,
                    max_images: int = MAX_IMAGES) -> Reference:
    """The reference of the training images (module docstring); needs ``MIN_IMAGES`` of them
    (else ``TooFewImages``)."""
    from sklearn.covariance import LedoitWolf

    if len(images) < MIN_IMAGES:
        raise TooFewImages(f"need at least {MIN_IMAGES} training images to calibrate the "
                           f"out-of-distribution check, the run has {len(images)}")
    hashes = np.array([phash(im) for im in images], dtype=np.uint64)
    if len(images) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(images), max_images, replace=False))
        images, masks = images[keep], masks[keep]
    features, _ = features_and_probs(model, images, device)
    order = np.random.default_rng(seed).permutation(len(images))
    half_a, half_b = order[: len(order) // 2], order[len(order) // 2:]
    fit = LedoitWolf().fit(features[half_a].astype(np.float64))
    partial = Reference(fit.location_, fit.precision_, 0.0, np.zeros(0, np.uint64), [], {}, {})
    threshold = float(np.percentile(partial.distance(features[half_b]), PERCENTILE))
    props = image_properties(images, masks)
    return Reference(
        mean=fit.location_, precision=fit.precision_, threshold=threshold,
        phashes=hashes, paths=list(paths),
        low={k: float(np.percentile(v, PROPERTY_RANGE[0])) for k, v in props.items()},
        high={k: float(np.percentile(v, PROPERTY_RANGE[1])) for k, v in props.items()},
    )


def save_reference(ref: Reference, path: Path) -> None:
    from safetensors.numpy import save

    from braincam.runs import atomic_write_bytes

    tensors = {
        "mean": ref.mean, "precision": ref.precision,
        "phashes": ref.phashes.view(np.int64),  # safetensors has no uint64 for numpy
    }
    meta = {"version": str(VERSION), "features": GUIDED_FEATURES, "threshold": repr(ref.threshold),
            "paths": json.dumps(ref.paths), "low": json.dumps(ref.low),
            "high": json.dumps(ref.high)}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_reference(path: Path, guided: bool = False) -> Reference | None:
    """The cached reference, or None when absent, unreadable or of another version, or, for a
    guided model (``guided``), built on the gated features."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            if meta.get("version") != str(VERSION) or (
                    guided and meta.get("features") != GUIDED_FEATURES):
                return None
            return Reference(
                mean=fh.get_tensor("mean"), precision=fh.get_tensor("precision"),
                threshold=float(meta["threshold"]),
                phashes=fh.get_tensor("phashes").view(np.uint64),
                paths=json.loads(meta["paths"]), low=json.loads(meta["low"]),
                high=json.loads(meta["high"]),
            )
    except (OSError, KeyError, ValueError, SafetensorError):
        return None


def run_reference(run: RunDir, model: torch.nn.Module, config: PreprocessConfig,
                  device: torch.device) -> Reference:
    """``RUN/ood.safetensors``, built from the run's training images when absent."""
    from braincam.models.guided import is_guided

    file = run.ood_reference
    ref = load_reference(file, is_guided(model))
    if ref is not None:
        return ref
    from braincam.data.records import without_skipped

    records, wanted = _training_records(run)
    log.info("calibrating the out-of-distribution check on %d training images", len(records))
    images, masks, skipped = PreprocessCache().load(records, config)
    paths = [r.key for r in without_skipped(records, skipped)]
    ref = build_reference(model, images, masks, paths, device)
    if len(paths) < wanted:  # a partial reference serves this process only
        log.warning("%s: %d of the run's %d training images cannot be read where they were; "
                    "the out-of-distribution check is calibrated on the others until they are "
                    "back (or pass --no-ood)", run.root, wanted - len(paths), wanted)
        return ref
    try:
        save_reference(ref, file)
    except OSError as exc:  # a read-only run: the reference serves this process only
        log.warning("%s: cannot keep the out-of-distribution reference (%s); it is "
                    "calibrated again next time", file, exc.strerror or exc)
    return ref


def _training_records(run: RunDir) -> tuple[list, int]:
    """The run's training images (split.csv rows with split ``train``) found as records, and
    how many split.csv lists."""
    import yaml

    from braincam.data.records import load_dataset

    try:
        roots = yaml.safe_load(run.config.read_text())["data"]
        with open(run.split, newline="", encoding="utf-8") as fh:
            paths = [row["path"] for row in csv.DictReader(fh) if row["split"] == "train"]
    except (OSError, KeyError, TypeError, csv.Error, yaml.YAMLError) as exc:
        raise BraincamError(
            f"{run.root}: cannot read config.yaml/split.csv to calibrate the "
            f"out-of-distribution check ({first_line(exc)}); pass --no-ood (Python: ood=False) "
            "to skip it"
        ) from None
    wanted = set(paths)
    try:
        records = [r for r in load_dataset(roots).records if r.key in wanted]
    except BraincamError as exc:  # the training data moved or went away
        raise BraincamError(f"cannot calibrate the out-of-distribution check on the run's "
                            f"training images ({exc}); pass --no-ood (Python: ood=False) to skip "
                            f"it") from None
    if not records:
        raise BraincamError(f"{run.split}: none of its training images can be found to "
                            "calibrate the out-of-distribution check; pass --no-ood (Python: "
                            "ood=False) to skip it")
    return records, len(wanted)
