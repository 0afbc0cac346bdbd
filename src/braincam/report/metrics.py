"""Test metrics with confidence intervals, the leak-free and cross-dataset comparison,
per-class scores, the confusion matrix and the evaluation's own plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braincam.evaluate.run import extra_rows
from braincam.report.figures import Figure, embed_figures, embed_image_file
from braincam.report.fmt import interval, num, scalar, with_ci
from braincam.report.sources import Part, read_json_part
from braincam.runs import RunDir, json_object


@dataclass
class MetricRow:
    """One evaluation set: point estimates and 95% bootstrap intervals."""

    name: str
    phrase: str  # how a sentence names the set, e.g. "the leak-free test subset"
    n: Any
    accuracy: Any
    accuracy_ci: Any
    balanced_accuracy: Any
    balanced_accuracy_ci: Any
    auc: Any
    auc_ci: Any
    ece: Any
    only_class: str | None = None  # the one class the set holds, if so
    n_groups: Any = None  # groups of copies (metrics.json n_groups)
    balanced_accuracy_groups_ci: Any = None  # the group bootstrap's interval (ci_groups)


@dataclass
class ClassRow:
    name: str
    precision: Any
    recall: Any
    f1: Any
    support: Any


@dataclass
class MetricsSection:
    part: Part
    task: str = ""
    classes: list[str] = field(default_factory=list)
    rows: list[MetricRow] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)
    per_class: list[ClassRow] = field(default_factory=list)
    confusion: list[list[Any]] | None = None
    figures: list[Figure] = field(default_factory=list)
    n_boot: int = 0  # bootstrap resamples behind the intervals (0: none)
    spec: bool = False  # a model spec's evaluation: its training data is unknown


def collect_metrics(run: RunDir) -> MetricsSection:
    part, metrics = read_json_part(run, run.metrics, "evaluation")
    section = MetricsSection(part)
    if metrics is None:
        section.figures = embed_figures(sorted(run.root.glob("*.png")))
        return section
    section.figures = _figures(run, metrics.get("figures"))
    section.task = str(metrics.get("task") or "")
    section.classes = [str(c) for c in metrics.get("classes") or []]
    n_boot = metrics.get("n_boot")
    section.n_boot = n_boot if isinstance(n_boot, int) and not isinstance(n_boot, bool) else 0
    section.spec = isinstance(metrics.get("model"), dict)
    test = json_object(metrics.get("test"))
    leak_free = json_object(metrics.get("test_leak_free"))
    if test:
        section.rows.append(_row("test set", "the whole test set", test))
    if leak_free:
        section.rows.append(_row("test, leak-free subset", "the leak-free test subset", leak_free))
    for name, description, values in extra_rows(metrics):
        if section.spec:  # none of a spec's sets is known to be another source
            description = f"{name} (a --data folder)"
        section.rows.append(_row(name, description, values))
    section.sentences = _comparison(section.rows)
    per_class = json_object(test.get("per_class"))
    section.per_class = [
        ClassRow(str(cls), v.get("precision"), v.get("recall"), v.get("f1"), v.get("support"))
        for cls, v in per_class.items()
        if isinstance(v, dict)
    ]
    matrix = test.get("confusion_matrix")
    if isinstance(matrix, list) and all(isinstance(r, list) for r in matrix) and matrix:
        section.confusion = matrix
    return section


def _figures(run: RunDir, listed: Any) -> list[Figure]:
    """The plots metrics.json lists (``{set: {"confusion": file, "roc": file}}``), captioned
    "<set>: confusion matrix"; every PNG in the run folder when it lists none."""
    if not isinstance(listed, dict):
        return embed_figures(sorted(run.root.glob("*.png")))
    figures = []
    for name, files in listed.items():
        for kind, caption in (("confusion", "confusion matrix"), ("roc", "ROC curve")):
            file = files.get(kind) if isinstance(files, dict) else None
            if not isinstance(file, str):
                continue
            uri = embed_image_file(run.root / Path(file).name, max_side=560)
            if uri is not None:
                figures.append(Figure(f"{name}: {caption}", uri))
    return figures


def _row(name: str, phrase: str, m: dict[str, Any]) -> MetricRow:
    ci = json_object(m.get("ci"))
    return MetricRow(
        name=name,
        phrase=phrase,
        n=m.get("n"),
        accuracy=m.get("accuracy"),
        accuracy_ci=ci.get("accuracy"),
        balanced_accuracy=m.get("balanced_accuracy"),
        balanced_accuracy_ci=ci.get("balanced_accuracy"),
        auc=m.get("auc"),
        auc_ci=ci.get("auc"),
        ece=m.get("ece"),
        only_class=_only_class(m),
        n_groups=m.get("n_groups"),
        balanced_accuracy_groups_ci=json_object(m.get("ci_groups")).get("balanced_accuracy"),
    )


def _by_groups(row: MetricRow) -> str:
    """`` ([lo, hi] resampling its G groups of copies)`` where the set's images fall into fewer
    groups than images and the group bootstrap gave an interval; else nothing."""
    bounds = interval(row.balanced_accuracy_groups_ci)
    n, groups = scalar(row.n), scalar(row.n_groups)
    if not bounds or n is None or groups is None or groups >= n:
        return ""
    return f" ({bounds} resampling its {num(row.n_groups)} groups of copies)"


def _only_class(m: dict[str, Any]) -> str | None:
    """The class of a set that holds one class only: its balanced accuracy is that class's
    recall, which a two-class figure cannot be compared with."""
    per_class = json_object(m.get("per_class"))
    present = [name for name, row in per_class.items()
               if isinstance(row, dict) and scalar(row.get("support"))]
    return present[0] if len(present) == 1 else None


def _comparison(rows: list[MetricRow]) -> list[str]:
    """Plain sentences comparing balanced accuracy of each set against the whole test set.

    Balanced accuracy = mean per-class recall: it does not reward predicting the
    majority class, so it compares sets with different class mixes fairly.
    """
    if not rows:
        return []
    base = rows[0]
    base_value = None if base.only_class else scalar(base.balanced_accuracy)
    sentences = []
    if base_value is not None:
        sentences.append(
            f"Balanced accuracy on {base.phrase} (n = {num(base.n)}) is "
            f"{with_ci(base_value, base.balanced_accuracy_ci)}{_by_groups(base)}."
        )
    for row in rows[1:] if base_value is not None else rows:
        value = scalar(row.balanced_accuracy)
        if value is None:
            auc = scalar(row.auc)
            if row.accuracy is not None:
                sentences.append(
                    f"On {row.phrase} (n = {num(row.n)}) accuracy is "
                    f"{with_ci(row.accuracy, row.accuracy_ci)}"
                    + ("." if auc is None else f" and AUC {num(auc)}.")
                )
            continue
        if row.only_class is not None:
            sentences.append(
                f"{row.phrase[0].upper()}{row.phrase[1:]} (n = {num(row.n)}) holds "
                f"{row.only_class} images only: its recall of them is "
                f"{with_ci(value, row.balanced_accuracy_ci)}, not comparable with a "
                "balanced accuracy.")
            continue
        text = (  # "it": the balanced accuracy of the first sentence, where there is one
            f"On {row.phrase} (n = {num(row.n)}) it is " if base_value is not None else
            f"Balanced accuracy on {row.phrase} (n = {num(row.n)}) is "
        ) + with_ci(value, row.balanced_accuracy_ci) + _by_groups(row)
        if base_value is not None:
            diff = value - base_value
            if abs(diff) < 0.0005:
                text += ", the same"
            else:
                text += f", {num(abs(diff))} {'lower' if diff < 0 else 'higher'}"
        sentences.append(text + ".")
    return sentences

