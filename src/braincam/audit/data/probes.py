"""Shortcut probes: small classifiers that see only one kind of image property.

Each probe is trained on the train split and scored on the test split. If a probe that sees
no anatomy (file geometry, pixels outside the head) predicts the class, a CNN can too, without
looking at a tumour.

========= =================================================================== ==============
probe     features                                                            model
========= =================================================================== ==============
geometry  width, height, aspect, bit depth, log file size, JPEG quality       gradient
          (0 when not JPEG), file format and colour mode (one-hot)            boosting
intensity mean, std, p1, p50, p99 and the 32-bin histogram of all pixels      logistic
background pixels outside the head only: their fraction, mean, std, p99,      logistic
          16-bin histogram, 16x16 thumbnail with the head zeroed, the frame
          band mean, and the head mask's bounding box
thumbnail the whole image as a 16x16 thumbnail (256 values)                   logistic
========= =================================================================== ==============

Logistic: ``StandardScaler`` + ``LogisticRegression(C=LOGISTIC_C)`` (L2). Gradient boosting:
``GradientBoostingClassifier`` (100 depth-3 trees; it learns step-like size/format rules, and
unlike the histogram variant needs no thread pool, which costs more than it saves on a few
thousand rows). Fixed seeds.
Scores: test ROC AUC (binary: of the positive class; multiclass: one-vs-rest macro) and balanced
accuracy, each with a 95% percentile bootstrap interval over test images
(:func:`braincam.evaluate.metrics.bootstrap_ci`). Where some test images copy (exactly or
nearly) a training image, the same scores over the others are ``leak_free``, and they judge
the probe (:attr:`ProbeResult.judged`) wherever they hold every class: a probe that memorises
a training image's file size or thumbnail scores its copies, which is a leak (reported as
one), not a property that tells the classes apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from braincam.audit.data.properties import ImageProperties
from braincam.evaluate.metrics import auc_rows, balanced_accuracy_rows, bootstrap_ci

LOGISTIC_C = 0.1
SEED = 0

PROBE_FEATURES = {
    "geometry": "width, height, aspect, bit depth, file size, JPEG quality, format, colour mode",
    "intensity": "intensity mean, std, p1, p50, p99 and 32-bin histogram",
    "background": "pixels outside the head: fraction, statistics, histogram, head-zeroed "
                  "thumbnail, frame band, head bounding box",
    "thumbnail": "16x16 thumbnail of the whole image",
}
# What a strong probe means, in plain words (completes "...on test: ").
PROBE_MEANING = {
    "geometry": "file properties alone (pixel size, file size in bytes, format, JPEG "
                "quality) predict the class; file size also follows what the image shows",
    "intensity": "the intensity histogram alone predicts the class (sequence, scanner or "
                 "brightness differ between classes)",
    "background": "pixels outside the head alone predict the class (markers, text, borders "
                  "or noise differ between classes)",
    "thumbnail": "a 16x16 thumbnail predicts the class (coarse layout, view or markers; "
                 "large tumours can show at this scale too)",
}


@dataclass
class ProbeResult:
    """One probe's test scores. ``test_auc`` is None when the test split lacks a class."""

    name: str
    features: str
    n_features: int
    model: str
    n_train: int
    n_test: int
    test_auc: float | None
    test_balanced_accuracy: float | None
    ci: dict[str, list[float] | None] = field(default_factory=dict)
    message: str = ""
    # the scores over the test images without a copy among the training images, as
    # {n_test, test_auc, test_balanced_accuracy, ci}; None where no test image has one
    leak_free: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def judged(self) -> tuple[float | None, list[float] | None, str]:
        """The AUC that judges the probe, its interval, and where it was scored: over the
        leak-free test images where they hold every class, else over all test images."""
        free = self.leak_free
        if free is not None and free["test_auc"] is not None:
            return free["test_auc"], free["ci"].get("test_auc"), "on leak-free test"
        where = "on test" if free is None else (
            "on test, copies of training images included (the leak-free test images lack a "
            "class)")
        return self.test_auc, self.ci.get("test_auc"), where

    def describe(self, strong: bool, levels: tuple[float, ...] = ()) -> str:
        """The plain-words sentence: the AUC with its interval and what it means. The AUC
        has 2 decimals, more where 2 would round it up to one of ``levels`` (the severity
        thresholds) that it stays below."""
        auc, auc_ci, where = self.judged
        if auc is None:
            return f"{self.name}-only probe could not be scored (test split lacks a class)"
        interval = f" [{auc_ci[0]:.2f}, {auc_ci[1]:.2f}]" if auc_ci else ""
        places = 2
        while places < 6 and any(auc < level <= float(f"{auc:.{places}f}") for level in levels):
            places += 1
        head = f"{self.name}-only probe reaches AUC {auc:.{places}f}{interval} {where}"
        if strong:
            return f"{head}: {PROBE_MEANING[self.name]}"
        return f"{head}: no strong {self.name} shortcut"


def probe_features(props: ImageProperties) -> dict[str, np.ndarray]:
    """Feature matrix (N, d) of each probe, from the measured properties."""
    t = props.table
    v = props.vectors
    geometry = np.column_stack([
        t["width"], t["height"], t["aspect"], t["bit_depth"], np.log(t["file_size"]),
        t["jpeg_quality"].fillna(0.0), _one_hot(t["format"]), _one_hot(t["mode"]),
    ])
    intensity = np.column_stack([t[["mean", "std", "p1", "p50", "p99"]], v["hist"]])
    background = np.column_stack([
        t[["background_fraction", "border_mean", "bg_mean", "bg_std", "bg_p99",
           "head_x0", "head_y0", "head_x1", "head_y1"]], v["bg_hist"], v["bg_thumb"],
    ])
    features = {"geometry": geometry, "intensity": intensity, "background": background,
                "thumbnail": v["thumb"]}
    return {name: np.nan_to_num(x.astype(np.float64)) for name, x in features.items()}


def run_probes(
    props: ImageProperties,
    y: np.ndarray,
    split: np.ndarray,
    n_classes: int,
    n_boot: int = 1000,
    leaked: np.ndarray | None = None,
) -> list[ProbeResult]:
    """Train every probe on ``split == "train"`` and score it on ``split == "test"``, and
    (``leak_free``) on those test images not ``leaked`` (bool per image: a copy among the
    training images).

    ``y``: class index per image (aligned with ``props.records``). Raises ValueError when the
    train split lacks a class (nothing to learn from).
    """
    from threadpoolctl import threadpool_limits

    train, test = split == "train", split == "test"
    free = None if leaked is None or not leaked[test].any() else ~leaked[test]
    if len(np.unique(y[train])) < n_classes:
        raise ValueError("the train split must contain every class to train the probes")
    results = []
    # One BLAS/OpenMP thread: on problems this small, thread start-up and spinning cost far
    # more than they save (30x slower on a busy 2-core machine).
    with threadpool_limits(1):
        for name, x in probe_features(props).items():
            model = _model(name)
            model.fit(x[train], y[train])
            prob = np.zeros((int(test.sum()), n_classes))
            prob[:, model.classes_] = model.predict_proba(x[test])
            result = _score(name, x.shape[1], model, y[test], prob, int(train.sum()), n_boot)
            if free is not None:
                scored = _score(name, x.shape[1], model, y[test][free], prob[free], 0, n_boot)
                result.leak_free = {key: getattr(scored, key) for key in (
                    "n_test", "test_auc", "test_balanced_accuracy", "ci")}
            results.append(result)
    return results


def _score(
    name: str, n_features: int, model: Any, y: np.ndarray, prob: np.ndarray, n_train: int,
    n_boot: int,
) -> ProbeResult:
    auc = balanced = None
    ci: dict[str, list[float] | None] = {"test_auc": None, "test_balanced_accuracy": None}
    if len(np.unique(y)) > 1:
        auc = float(auc_rows(y[None], prob[None])[0])
        balanced = float(balanced_accuracy_rows(y[None], prob.argmax(1)[None], prob.shape[1])[0])
        boot = bootstrap_ci(y, prob, n_boot=n_boot, seed=SEED)
        ci = {"test_auc": boot["auc"], "test_balanced_accuracy": boot["balanced_accuracy"]}
    return ProbeResult(name, PROBE_FEATURES[name], n_features, type(model[-1]).__name__,
                       n_train, len(y), auc, balanced, ci)


def _model(name: str) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "geometry":
        return make_pipeline(GradientBoostingClassifier(random_state=SEED))
    return make_pipeline(StandardScaler(), LogisticRegression(C=LOGISTIC_C, max_iter=2000))


def _one_hot(column: Sequence[str]) -> np.ndarray:
    values = np.asarray(column, dtype=str)
    levels = np.unique(values)
    return (values[:, None] == levels[None, :]).astype(np.float64)
