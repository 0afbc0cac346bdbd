import pytest

from braincam.labels import (
    normalise_label,
    subtype_groups,
    task_classes,
    task_label,
    training_classes,
)


@pytest.mark.parametrize(
    ("folder", "label"),
    [
        ("glioma_tumor", "glioma"),
        ("Glioma", "glioma"),
        ("meningioma_tumor", "meningioma"),
        ("pituitary_tumor", "pituitary"),
        ("notumor", "no_tumor"),
        ("no-tumor", "no_tumor"),
        ("no_tumor", "no_tumor"),
        ("no", "no_tumor"),
        ("yes", "tumor"),
        ("Tumour", "tumor"),
        ("glioma-tumour", "glioma"),
        ("Meningioma Tumour", "meningioma"),
        ("pituitary_tumour", "pituitary"),
        ("masks", None),
        ("Training", None),
    ],
)
def test_normalise_label(folder, label):
    assert normalise_label(folder) == label


def test_binary_task_maps_every_tumour_type_to_tumor():
    assert [task_label(x, "binary") for x in ("glioma", "no_tumor", "pituitary", "tumor")] == [
        "tumor",
        "no_tumor",
        "tumor",
        "tumor",
    ]
    assert task_classes(["glioma"], "binary") == ["no_tumor", "tumor"]


def test_multiclass_classes_are_sorted_present_labels():
    labels = ["pituitary", "glioma", "no_tumor", "glioma"]
    assert task_classes(labels, "multiclass") == ["glioma", "no_tumor", "pituitary"]


def test_multiclass_refuses_generic_tumor_folder():
    with pytest.raises(ValueError, match="binary"):
        task_classes(["tumor", "no_tumor"], "multiclass")


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        task_label("glioma", "segmentation")


def test_binary_training_classes_are_the_subtypes_present():
    labels = ["pituitary", "no_tumor", "glioma", "glioma"]
    subtypes = training_classes(labels, "binary", subtypes=True)
    assert subtypes == ["glioma", "no_tumor", "pituitary"]
    assert subtype_groups(subtypes, ["no_tumor", "tumor"]) == [1, 0, 1]
    assert training_classes(labels, "binary", subtypes=False) == ["no_tumor", "tumor"]
    assert training_classes(labels, "multiclass", subtypes=True) == subtypes
    # yes/no data, or a single tumour type, has no subtypes to learn
    assert training_classes(["tumor", "no_tumor"], "binary", True) == ["no_tumor", "tumor"]
    assert training_classes(["glioma", "no_tumor"], "binary", True) == ["no_tumor", "tumor"]
