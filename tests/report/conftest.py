"""Shared by the report tests (fixture ``kit``): a small hand-written run directory that
follows the run-file schemas (src/braincam/runs.py and the stage modules), and a reader of
the report's HTML (element ids, images, text of an element, tag balance).

Numbers are chosen so their rendering is predictable (3 significant digits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from braincam.explain.files import OVERLAY_DIR, overlay_name
from braincam.explain.io import ExplanationSet, save_explanations

CLASSES = ["no_tumor", "tumor"]
SIZE = 24  # model-input side of the fake maps


def metric(n, acc, bacc, auc, ci_acc, ci_bacc, ci_auc, cm, ece=0.0412):
    return {
        "n": n, "accuracy": acc, "balanced_accuracy": bacc, "auc": auc,
        "per_class": {
            "no_tumor": {"precision": 0.9512, "recall": 0.8873, "f1": 0.9181, "support": 100},
            "tumor": {"precision": 0.9634, "recall": 0.9861, "f1": 0.9746, "support": 294},
        },
        "confusion_matrix": cm, "ece": ece,
        "ci": {"accuracy": ci_acc, "balanced_accuracy": ci_bacc, "auc": ci_auc},
    }


TEST = metric(394, 0.97345, 0.9367, 0.99123, [0.9512, 0.9889], [0.9, 0.96], [0.982, 0.997],
              [[89, 11], [4, 290]])
LEAK_FREE = metric(120, 0.9, 0.87654, 0.95, [0.85, 0.94], [0.81, 0.92], [0.9, 0.98],
                   [[40, 8], [4, 68]])
EXTRA = metric(500, 0.612, None, None, [0.57, 0.65], None, None, [[306, 194], [0, 0]])

DATA_FINDINGS = [
    {"severity": "info", "check": "clusters", "value": 0.31, "threshold": 0.3,
     "message": "Image clusters partly follow the labels."},
    {"severity": "warning", "check": "duplicates", "value": 57, "threshold": 0,
     "message": "57 test images have a duplicate in train."},
    {"severity": "critical", "check": "probe_geometry", "value": 0.97, "threshold": 0.8,
     "message": "geometry-only probe reaches AUC 0.97 [0.95, 0.99] on test: image size alone "
                "predicts the class"},
]
MODEL_FINDINGS = [
    {"severity": "warning", "check": "attention", "value": 0.41, "threshold": 0.35,
     "message": "41% of CAM energy lies outside the brain; a uniform map would put 35% there"},
    {"severity": "critical", "check": "sanity", "value": 0.92, "threshold": 0.5,
     "message": "gradcam maps barely change when the model is randomised"},
    {"severity": "info", "check": "faithfulness", "value": 0.2, "threshold": None,
     "message": "Deletion beats a random map."},
]
AUDIT = {
    "dataset": "sartaj", "n_images": 16, "accuracy": 0.8125, "methods": ["gradcam"],
    "attention": {"method": "gradcam", "n_images": 16, "brain": 0.5234, "rim": 0.0666,
                  "background": 0.41, "uniform_background": 0.35,
                  "by_class": {"no_tumor": {"n": 6, "brain": 0.3, "rim": 0.1, "background": 0.6,
                                            "uniform_background": 0.35}},
                  "by_correctness": {"incorrect": {"n": 2, "brain": 0.2, "rim": 0.1,
                                                   "background": 0.7,
                                                   "uniform_background": 0.35}}},
    "localization": {"pointing_game": 0.8125, "energy_in_box": 0.4321,
                     "energy_in_box_ratio": 3.14159, "iou": 0.2876},
    "faithfulness": {"deletion_auc": 0.1234, "insertion_auc": 0.7654, "random_deletion_auc": 0.4,
                     "random_insertion_auc": 0.5, "road": 0.0789,
                     "deletion_curve": [0.9, 0.3, 0.1, 0.05],
                     "insertion_curve": [0.1, 0.6, 0.8, 0.9]},
    "sanity": {"passed": False, "similarity_after_randomization": 0.92,
               "layers": ["head", "blocks.6", "blocks.5"], "spearman": [0.99, 0.95, 0.92],
               "ssim": [0.9, 0.85, 0.8]},
    "counterfactual": {"background_only_survival": 0.875, "head_only_change": 0.0321,
                       "intensity_swap_flip_rate": 0.25, "tumor_removal_flip_rate": 0.125,
                       "tumor_removal_prob_drop": 0.3333},
    "findings": MODEL_FINDINGS,
}
DATA_AUDIT = {
    "n_images": 3264,
    "probes": [
        {"name": "geometry", "features": ["width", "height", "aspect"], "test_auc": 0.97123,
         "test_balanced_accuracy": 0.912, "ci": {"test_auc": [0.951, 0.9876],
                                                 "test_balanced_accuracy": [0.88, 0.94]},
         "leak_free": {"n_test": 300, "test_auc": 0.8531, "test_balanced_accuracy": 0.8,
                       "ci": {"test_auc": [0.81, 0.89], "test_balanced_accuracy": None}}},
        {"name": "thumbnail", "features": "16x16 thumbnail", "test_auc": 0.66,
         "test_balanced_accuracy": 0.6, "ci": [0.6, 0.72]},
    ],
    "duplicates": {"exact_groups": 41, "near_groups": 12, "test_images_with_train_duplicate": 57,
                   "per_class_test_with_train_duplicate": {"no_tumor": 45, "tumor": 12},
                   "label_conflicts": [["a.jpg", "b.jpg"]]},
    "properties": {
        "width": {"auc": 0.9876, "ks": 0.9, "p_value": 1e-12, "class": "tumor",
                  "higher_in": "no_tumor", "per_class": {"no_tumor": {"p50": 512.0},
                                                         "tumor": {"p50": 256.0}}},
        "mean": {"auc": 0.61, "ks": 0.2, "p_value": 0.01, "class": "tumor", "higher_in": "tumor",
                 "per_class": {"no_tumor": {"p50": 0.25}, "tumor": {"p50": 0.3}}},
        "format": {"per_class": {"no_tumor": {"JPEG": 500}, "tumor": {"JPEG": 2764}}},
    },
    "counts": {"train": {"no_tumor": 395, "tumor": 2475}, "test": {"no_tumor": 105,
                                                                     "tumor": 289}},
    "clusters": {"k": 2, "silhouette": 0.4567, "silhouette_by_k": {"2": 0.4567, "3": 0.31},
                 "crosstab": {"cluster 0": {"no_tumor": 400, "tumor": 100},
                              "cluster 1": {"no_tumor": 100, "tumor": 2664}},
                 "cramers_v": 0.3141, "cramers_v_source": None},
    "findings": DATA_FINDINGS,
}
HISTORY = (
    "phase,epoch,train_loss,val_loss,val_accuracy,val_balanced_accuracy,lr,seconds\n"
    "1,1,0.9,0.8,0.6,0.55,0.001,2.5\n"
    "1,2,0.7,0.65,0.7,0.68,0.001,2.5\n"
    "2,1,0.5,0.45,0.8,0.79,0.0001,10\n"
    "2,2,0.4,0.41,0.85,0.8321,0.0001,10\n"
    "2,3,0.35,0.43,0.84,0.81,0.0001,10.25\n"
)
CONFIG = {
    "command": "braincam train /data/sartaj --task binary --arch efficientnet_lite0 --out run",
    "created": "2025-01-01T00:00:00+00:00",
    "data": ["/data/sartaj"],
    "train": {"task": "binary", "arch": "efficientnet_lite0", "lr": 0.00012345, "seed": 0,
              "preprocess": {"size": 224, "standardize": "none"}},
    "device": "cpu",
    "versions": {"python": "3.11.2", "torch": "2.14.1", "braincam": "0.1.0"},
}
# Gallery images: (label, pred, background share); overlays are written for all but the last.
GALLERY = [
    ("tumor", "tumor", 0.9), ("tumor", "tumor", 0.1), ("tumor", "tumor", 0.5),
    ("tumor", "tumor", 0.7), ("tumor", "tumor", 0.3), ("tumor", "no_tumor", 0.6),
    ("no_tumor", "no_tumor", 0.2), ("no_tumor", "tumor", 0.8),
]


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def disc(size: int, value: int = 200) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    return np.where(inside, value, 10).astype(np.uint8)


def write_explanations(run: Path, images_dir: Path) -> list[Path]:
    """Images on disk, explain/gradcam/explanations.npz, overlays for all but the last."""
    paths = []
    for i, (label, _, _) in enumerate(GALLERY):
        path = images_dir / label / f"img{i}.png"
        png(path, disc(32, 120 + 10 * i))
        paths.append(path)
    n = len(paths)
    maps = np.zeros((n, SIZE, SIZE), np.float32)
    maps[:, 4:12, 4:12] = 1.0
    predicted = np.array([CLASSES.index(pred) for _, pred, _ in GALLERY])
    probs = np.where(np.arange(2) == predicted[:, None], 0.75, 0.25).astype(np.float32)
    exp = ExplanationSet(
        maps=maps, raw=maps[:, ::4, ::4].copy(), targets=predicted.astype(np.int64),
        probs=probs, paths=[str(p) for p in paths],
        crops=np.tile(np.array([2, 2, 30, 30], np.int64), (n, 1)),
        original_sizes=np.tile(np.array([32, 32], np.int64), (n, 1)),
        method="gradcam", layer="blocks.6", classes=CLASSES,
    )
    folder = run / "explain" / "gradcam"
    save_explanations(folder / "explanations.npz", exp)
    for i, path in enumerate(paths[:-1]):
        rgb = np.stack([disc(32, 100 + 10 * i)] * 3, axis=-1)
        rgb[..., 0] = 255  # reddish: tells explain's overlays from the ones the report draws
        png(folder / OVERLAY_DIR / overlay_name(i, path), rgb)
    return paths


def make_fake_run(root: Path) -> Path:
    """A complete run under ``root/run`` (images under ``root/images``)."""
    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    (run / "history.csv").write_text(HISTORY)
    split_rows = ["path,source,label,split,group,leak_free"]
    for i in range(12):
        split = ("train", "train", "val", "test")[i % 4]
        label = CLASSES[i % 2]
        split_rows.append(f"/d/x{i}.jpg,sartaj,{label},{split},{i},{str(i != 3).lower()}")
    (run / "split.csv").write_text("\n".join(split_rows) + "\n")
    (run / "skipped.csv").write_text("path,reason\n/d/broken.jpg,not an image (truncated JPEG)\n")
    metrics = {
        "task": "binary", "classes": CLASSES, "test": TEST, "test_leak_free": LEAK_FREE,
        "extra": {"br35h-no-tumor-sample": EXTRA},
        "figures": {"test": {"confusion": "confusion_test.png", "roc": "roc_test.png"}},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    png(run / "confusion_test.png", disc(40))
    png(run / "roc_test.png", disc(40, 90))
    (run / "data_audit").mkdir()
    (run / "data_audit" / "data_audit.json").write_text(json.dumps(DATA_AUDIT))
    png(run / "data_audit" / "probe_auc.png", disc(40, 150))
    paths = write_explanations(run, root / "images")
    (run / "audit").mkdir()
    (run / "audit" / "audit.json").write_text(json.dumps(
        {"datasets": {"sartaj": AUDIT}, "findings": AUDIT["findings"]}))
    rows = ["path,label,pred,background,method"]
    rows += [f"{p},{label},{pred},{bg},gradcam"
             for p, (label, pred, bg) in zip(paths, GALLERY, strict=True)]
    (run / "audit" / "per_image.csv").write_text("\n".join(rows) + "\n")
    return run




SEGMENT_METRICS = {
    "n_tumour_images": 5, "n_tumour_free_images": 4, "mean_dice": 0.6543, "mean_iou": 0.5432,
    "all_image_dice": 0.7123, "per_class_dice": {"glioma": 0.4, "meningioma": 0.9},
    "detection_rate": 0.6, "false_positive_rate": 0.25,
    "false_positive_rate_by_source": {"br35h": 0.0, "sartaj": 0.5},
    "threshold": 0.4, "flip_average": True,
    "decision": {"flip_average": True, "threshold": 0.4, "chosen_by": "validation all_image_dice",
                 "candidates": [
                     {"flip_average": False, "threshold": 0.5, "val_score": 0.81, "val_dice": 0.7},
                     {"flip_average": True, "threshold": 0.4, "val_score": 0.83, "val_dice": 0.72},
                 ]},
    "weak": None, "counterfactual": {"n_pairs": 3, "removed_any_rate": 0.6667},
    "best_epoch": 2, "epochs": 2, "train_seconds": 12.5, "device": "cpu",
}
# glioma: Dice 0.1, 0.6, 0.7 -> 3 images, 2 detected; meningioma 0.9, 0.95 -> 2 of 2; the
# tumour image without a mask and the tumour-free image are left out of the class table
SEGMENT_PER_IMAGE = [
    ("g1", "glioma", True, 0.1), ("g2", "glioma", True, 0.6), ("g3", "glioma", True, 0.7),
    ("m1", "meningioma", True, 0.9), ("m2", "meningioma", True, 0.95),
    ("w1", "glioma", False, None), ("n1", "no_tumor", True, 0.0),
]


def make_segment_run(root: Path, overlays: bool = True) -> Path:
    """A segment run folder (docs/segment.md "Files in SEG") with known numbers."""
    root.mkdir()
    (root / "metrics.json").write_text(json.dumps(SEGMENT_METRICS))
    (root / "config.yaml").write_text(yaml.safe_dump({
        "command": "braincam segment DATA --out SEG --epochs 2", "data": ["DATA"],
        "segment": {"size": 64, "epochs": 2}}))
    pd.DataFrame([{"path": f"/d/{label}/{name}.png", "source": "d", "label": label,
                   "mask": mask, "dice": dice, "iou": dice, "tumour_share": 0.1,
                   "predicted_share": 0.1} for name, label, mask, dice in SEGMENT_PER_IMAGE]
                 ).to_csv(root / "per_image.csv", index=False)
    pd.DataFrame({"epoch": [1, 2], "lr": [1e-3, 5e-4], "train_loss": [0.9, 0.5],
                  "val_dice": [0.5, 0.7], "val_false_positive_rate": [0.3, 0.1],
                  "val_score": [0.55, 0.75], "seconds": [6.0, 6.5],
                  "train_images_per_second": [10.0, 11.0]}).to_csv(root / "history.csv",
                                                                    index=False)
    pd.DataFrame({"path": ["/d/glioma/g1.png", "/d/no_tumor/n1.png"], "source": ["d", "d"],
                  "label": ["glioma", "no_tumor"], "split": ["train", "test"],
                  "group": ["a", "b"], "leak_free": [True, True]}
                 ).to_csv(root / "split.csv", index=False)
    if overlays:
        (root / "overlays").mkdir()
        for name in ("no_tumor_image (4)_dice0.00", "glioma_g3_dice0.70", "glioma_g1_dice0.10"):
            picture = Image.fromarray(np.full((8, 8, 3), 90, np.uint8))
            picture.save(root / "overlays" / f"{name}.png")
    return root


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


@dataclass
class Page:
    ids: list[str] = field(default_factory=list)
    images: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    text_by_id: dict[str, str] = field(default_factory=dict)
    severities_by_id: dict[str, list[str]] = field(default_factory=dict)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.stack: list[tuple[str, str | None]] = []  # (tag, id)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.page.ids.append(attrs["id"])
        if tag == "img":
            self.page.images.append(attrs)
        if "data-severity" in attrs:
            for _, open_id in self.stack:
                if open_id:
                    self.page.severities_by_id.setdefault(open_id, []).append(
                        attrs["data-severity"])
        self._space()
        if tag not in VOID:
            self.stack.append((tag, attrs.get("id")))

    def handle_endtag(self, tag):
        self._space()
        if tag in VOID:
            return
        if not self.stack or self.stack[-1][0] != tag:
            open_tag = self.stack[-1][0] if self.stack else None
            self.page.errors.append(f"</{tag}> closes <{open_tag}>")
            return
        self.stack.pop()

    def handle_data(self, data):
        for _, open_id in self.stack:
            if open_id:
                self.page.text_by_id[open_id] = self.page.text_by_id.get(open_id, "") + data

    def _space(self):
        """Tags separate words (table cells, list items), as a browser shows them."""
        self.handle_data(" ")


def parse(html: str) -> Page:
    parser = _Parser()
    parser.feed(html)
    parser.close()
    if parser.stack:
        parser.page.errors.append(f"unclosed: {[t for t, _ in parser.stack]}")
    return parser.page


def text(page: Page, element_id: str) -> str:
    """The element's text with whitespace collapsed."""
    return " ".join(page.text_by_id.get(element_id, "").split())


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers above, for test modules (pytest runs with --import-mode=importlib, so
    test modules cannot import this file)."""
    return SimpleNamespace(make_fake_run=make_fake_run, make_segment_run=make_segment_run,
                           parse=parse, text=text, CONFIG=CONFIG, GALLERY=GALLERY)
