"""Checkpoints: safetensors only (no pickle), with braincam's metadata.

A checkpoint is a ``.safetensors`` file holding the model's state dict. Its string metadata
holds ``format = "braincam"`` and every entry of ``meta`` JSON-encoded (``arch``,
``classes``, ``task``, ``preprocess``, ``dropout``, ``subtypes``...), so it can be read without
torch knowing anything about the run. ``subtypes`` (binary models trained on tumour types):
the head's outputs before :class:`braincam.models.build.MergeSubtypes` adds them into
``classes``. ``guide`` (segmentation-guided models, :mod:`braincam.models.guided`): ``size``,
``floor`` and (when not 0) ``cut`` of the gate and the ``source`` segmentation run (several,
comma-separated, for a mean of segmenters); the segmenter's weights are stored under
``backbone.segmenter.`` (a mean of several: ``backbone.segmenter.members.<i>.``,
:class:`braincam.models.unet.MeanProbability`).
``members`` (an ensemble, :mod:`braincam.models.ensemble`): each member's own meta, its
tensors stored under ``members.<i>.``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from braincam.errors import BraincamError, load_mismatch
from braincam.runs import CHECKPOINT_FORMAT, atomic_write_bytes

FORMAT = CHECKPOINT_FORMAT
REQUIRED_META = ("arch", "classes")


def save_checkpoint(model: nn.Module, path: Path, meta: dict[str, Any]) -> None:
    """Write ``model``'s state dict and ``meta`` (must include arch and classes) atomically."""
    save_tensors(model.state_dict(), path, meta)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, Any]) -> None:
    """Write ``tensors`` and ``meta`` (must include arch and classes) atomically."""
    from safetensors.torch import save

    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise ValueError(f"checkpoint meta lacks {', '.join(missing)}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {"format": FORMAT, **{k: json.dumps(v) for k, v in meta.items()}}
    atomic_write_bytes(Path(path), save(tensors, metadata=metadata))


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Tensors of a ``.safetensors`` file and its braincam meta (None for a plain file)."""
    from safetensors.torch import load_file

    meta = _read_meta_or_none(path)
    try:
        return load_file(str(path)), meta
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise BraincamError(f"{path} is not a readable .safetensors file ({exc})") from None


def read_meta(path: Path) -> dict[str, Any]:
    """The braincam meta of a checkpoint, without loading its tensors."""
    meta = _read_meta_or_none(path)
    if meta is None:
        raise BraincamError(f"{path} is not a braincam checkpoint (no braincam metadata)")
    return meta


def load_checkpoint(
    path: Path, expected_arch: str | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode on device, meta)`` from a braincam checkpoint; an ensemble's
    (meta ``members``) is a :class:`braincam.models.ensemble.MeanProbability`.

    ``expected_arch``: fail clearly when the checkpoint holds another architecture. Torch's
    random state is left as it was (the initialisation the file replaces draws from a fork).
    """
    from braincam.models.ensemble import MeanProbability, is_ensemble

    tensors, meta = read_tensors(path)
    if meta is None:
        raise BraincamError(f"{path} is not a braincam checkpoint (no braincam metadata)")
    check_classifier(meta, path)
    check_arch(meta, expected_arch, path)
    with torch.random.fork_rng(devices=[]):  # the file's weights replace the random ones
        if is_ensemble(meta):
            model: nn.Module = MeanProbability([
                _build({**meta, **m}, tensors, f"members.{i}.")
                for i, m in enumerate(meta["members"])
            ])
        else:
            model = _build(meta, tensors)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise BraincamError(f"{path} does not fit {meta['arch']}: {load_mismatch(exc)}") from None
    return model.to(device).eval(), meta


def _build(meta: dict[str, Any], tensors: dict[str, torch.Tensor], prefix: str = "") -> nn.Module:
    """The untrained model that a checkpoint's (or an ensemble member's) meta describes; a
    guided model's segmenter (one U-Net or several) takes the shape of its tensors (under
    ``prefix``)."""
    from braincam.labels import subtype_groups
    from braincam.models.build import DEFAULT_DROPOUT, build_model

    subtypes = meta.get("subtypes")
    model = build_model(
        meta["arch"], len(meta["classes"]), weights="none",
        dropout=meta.get("dropout", DEFAULT_DROPOUT),
        groups=subtype_groups(subtypes, meta["classes"]) if subtypes else None,
    )
    model.cam_layer = meta.get("cam_layer")
    if meta.get("guide"):  # its segmenter's weights are in the checkpoint
        from braincam.models.guided import absent_output, guide
        from braincam.models.unet import segmenter_like

        segmenter = segmenter_like(tensors, f"{prefix}backbone.segmenter.")
        guide(model, segmenter, meta["guide"]["size"], meta["guide"]["floor"],
              absent_output(list(subtypes or meta["classes"])), meta["guide"].get("cut", 0.0))
    return model


def check_classifier(meta: dict[str, Any], path: Path) -> None:
    """Fail in one line when the checkpoint is a segmenter: its run directory is one that
    ``braincam segment`` made, which the classifier commands cannot read."""
    from braincam.models.unet import SEGMENTER_ARCHS

    if meta.get("arch") in SEGMENTER_ARCHS:
        raise BraincamError(
            f"{path} holds a tumour segmenter (made by braincam segment), not a classifier; "
            "write its masks with braincam segment RUN --predict IMAGES, or guide a classifier "
            "with braincam train ... --guide RUN"
        )


def meta_task(meta: dict[str, Any], path: Path) -> str:
    """The checkpoint's task (``binary`` or ``multiclass``), which evaluation and the audit
    need; one line when a hand-made or damaged file lacks it."""
    if "task" not in meta:
        raise BraincamError(f"{path}: damaged braincam metadata: no 'task' (binary or "
                            "multiclass)")
    return meta["task"]


def check_arch(meta: dict[str, Any], arch: str | None, path: Path) -> None:
    if arch is not None and meta["arch"] != arch:
        raise BraincamError(
            f"{path} holds a {meta['arch']} model, not {arch}; use --arch {meta['arch']} "
            f"or a checkpoint trained with {arch}"
        )


def _read_meta_or_none(path: Path) -> dict[str, Any] | None:
    from safetensors import safe_open

    path = Path(path)
    if not path.parent.is_dir():
        raise BraincamError(f"{path.parent} is not a directory (a run directory was expected)")
    if not path.is_file():
        raise BraincamError(f"{path.parent} holds no {path.name}: not a trained run directory")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises several types for a damaged header
        raise BraincamError(f"{path} is not a readable .safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        return None
    meta = {}
    for key, value in metadata.items():
        if key != "format":
            try:
                meta[key] = json.loads(value)
            except json.JSONDecodeError:
                raise BraincamError(f"{path}: damaged braincam metadata: {key!r} is not "
                                    "JSON") from None
    problem = meta_problem(meta)
    if problem:
        raise BraincamError(f"{path}: damaged braincam metadata: {problem}")
    return meta


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's decoded meta (entries every reader relies on, and
    the types of those present), or None: a hand-edited or foreign file gets one line instead
    of a KeyError deep inside a command."""
    from braincam.models.unet import SEGMENTER_ARCHS

    checks = [
        (isinstance(meta.get("arch"), str), "'arch' must be a model name"),
        (_strings(meta.get("classes")), "'classes' must be a list of class names"),
        ("task" not in meta or isinstance(meta["task"], str), "'task' must be a name"),
        ("dropout" not in meta or _number(meta["dropout"]), "'dropout' must be a number"),
        (not meta.get("subtypes") or _strings(meta["subtypes"]),
         "'subtypes' must be a list of class names"),
        ("preprocess" not in meta or isinstance(meta["preprocess"], dict),
         "'preprocess' must be an object"),
        (("size" not in meta and meta.get("arch") not in SEGMENTER_ARCHS)
         or (isinstance(meta.get("size"), int) and meta["size"] > 0),
         "'size' must be a whole number of pixels (a segmenter needs it)"),
        (not meta.get("guide") or (isinstance(meta["guide"], dict)
                                   and isinstance(meta["guide"].get("size"), int)
                                   and _number(meta["guide"].get("floor"))),
         "'guide' must hold a whole 'size' and a number 'floor'"),
        ("members" not in meta or (isinstance(meta["members"], list) and bool(meta["members"])
                                   and all(isinstance(m, dict) for m in meta["members"])),
         "'members' must be a list of member entries"),
    ]
    return next((message for ok, message in checks if not ok), None)
