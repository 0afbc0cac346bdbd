"""Label names: the one place that knows what a class is called.

Folder names in public brain-MRI datasets vary (``glioma_tumor``, ``notumor``,
``no``, ``yes``...). :func:`normalise_label` maps them onto the canonical names
below; :func:`task_label` and :func:`task_classes` map those onto a task.
"""

from __future__ import annotations

from collections.abc import Iterable

GLIOMA = "glioma"
MENINGIOMA = "meningioma"
PITUITARY = "pituitary"
NO_TUMOR = "no_tumor"
TUMOR = "tumor"
CANONICAL = (GLIOMA, MENINGIOMA, PITUITARY, NO_TUMOR, TUMOR)
TASKS = ("binary", "multiclass")

_ALIASES = {
    "glioma": GLIOMA, "gliomatumor": GLIOMA, "gliomatumour": GLIOMA, "gliomas": GLIOMA,
    "meningioma": MENINGIOMA, "meningiomatumor": MENINGIOMA, "meningiomatumour": MENINGIOMA,
    "meningiomas": MENINGIOMA,
    "pituitary": PITUITARY, "pituitarytumor": PITUITARY, "pituitarytumour": PITUITARY,
    "pituitaryadenoma": PITUITARY,
    "notumor": NO_TUMOR, "notumour": NO_TUMOR, "no": NO_TUMOR, "normal": NO_TUMOR,
    "healthy": NO_TUMOR, "negative": NO_TUMOR,
    "tumor": TUMOR, "tumour": TUMOR, "yes": TUMOR, "positive": TUMOR,
}


def normalise_label(name: str) -> str | None:
    """Canonical class name for a folder name, or None when it is not a known class.

    Case, separators (``_ - space``) and a ``tumor``/``tumour`` suffix are ignored:
    ``glioma_tumor`` -> ``glioma``, ``no-tumor`` -> ``no_tumor``, ``yes`` -> ``tumor``.
    """
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return _ALIASES.get(key)


def task_label(label: str, task: str) -> str:
    """The class a canonical label belongs to under ``task``.

    ``binary``: every tumour type becomes ``tumor``; ``multiclass`` keeps the label.
    """
    check_task(task)
    if task == "binary":
        return NO_TUMOR if label == NO_TUMOR else TUMOR
    return label


def task_classes(labels: Iterable[str], task: str) -> list[str]:
    """Ordered class list for a task. Binary is always ``[no_tumor, tumor]`` so that
    index 1 is the positive (tumour) class; multiclass is the sorted labels present."""
    check_task(task)
    if task == "binary":
        return [NO_TUMOR, TUMOR]
    present = sorted({task_label(lab, task) for lab in labels})
    if TUMOR in present and len(present) > 1:
        raise ValueError(
            "multiclass task needs tumour types; a folder is labelled only 'tumor'. "
            "Use --task binary."
        )
    return present


def training_classes(labels: Iterable[str], task: str, subtypes: bool) -> list[str]:
    """The classes a model is trained on: the task's, or -- binary with ``subtypes`` -- every
    canonical label present (``glioma, meningioma, no_tumor, pituitary``...), which the model's
    head adds back into the two task classes (:func:`subtype_groups`)."""
    classes = task_classes(labels, task)
    if task != "binary" or not subtypes:
        return classes
    present = sorted(set(labels))
    return present if len(present) > len(classes) else classes


def subtype_groups(subtypes: Iterable[str], classes: list[str]) -> list[int]:
    """Index in the binary ``classes`` of each subtype: ``[glioma, no_tumor]`` -> ``[1, 0]``."""
    return [classes.index(task_label(label, "binary")) for label in subtypes]


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
