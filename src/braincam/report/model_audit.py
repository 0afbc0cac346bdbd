"""Model audit results (attention, localisation, faithfulness, sanity, counterfactual)
as tables plus one plain sentence per headline number.

``audit/audit.json`` holds the checks once per dataset (``{"datasets": {"<dataset>":
{"attention": ...}}, "findings": [...]}``, see :mod:`braincam.audit.model.run`). A check
that is absent or null reads "not run".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from braincam.audit.model import CHECKS, Check
from braincam.report.figures import (
    Figure,
    deletion_insertion_curves,
    embed_figures,
    randomisation_curve,
)
from braincam.report.findings import ReportFinding, parse_findings
from braincam.report.fmt import flatten, label, num, pct, scalar
from braincam.report.sources import Part, read_json_part
from braincam.report.tables import Table
from braincam.runs import RunDir

# Blocks of a check that are shown as a table, a plot or per-method sentences, not as rows.
NESTED = ("by_class", "by_correctness", "by_method", "regions", "uniform_regions", "mask",
          "occlusion")
ATTENTION_COLUMNS = ("n", "brain", "rim", "background", "uniform_background")


@dataclass
class CheckView:
    """One check on one dataset (``dataset`` is None when the audit has a single one):
    sentences, the numbers as rows, and optionally a group table and a plot."""

    dataset: str | None
    sentences: list[str]
    rows: list[tuple[str, Any]]
    table: Table | None = None
    figure: str | None = None


@dataclass
class AuditCheck:
    key: str  # also the section's element id
    title: str
    about: str
    plot_caption: str = ""
    results: list[CheckView] = field(default_factory=list)


@dataclass
class ModelAuditSection:
    part: Part
    checks: list[AuditCheck]
    # a model spec's model and what was skipped, then one sentence per audited dataset
    datasets: list[str] = field(default_factory=list)
    findings: list[ReportFinding] = field(default_factory=list)
    dropped_findings: int = 0
    figures: list[Figure] = field(default_factory=list)


def _attention(c: dict[str, Any]) -> list[str]:
    out = []
    bg, uniform = scalar(c.get("background")), scalar(c.get("uniform_background"))
    if bg is not None:
        text = f"{pct(bg)} of CAM energy lies in the background outside the head"
        out.append(text + (f"; a uniform map would put {pct(uniform)} there." if uniform is not None
                           else "."))
    brain, rim = scalar(c.get("brain")), scalar(c.get("rim"))
    if brain is not None and rim is not None:
        out.append(f"{pct(brain)} lies inside the brain and {pct(rim)} on the skull rim.")
    return out


def _localization(c: dict[str, Any]) -> list[str]:
    out = []
    hit = scalar(c.get("pointing_game"))
    if hit is not None:
        out.append(f"The map's maximum falls inside the tumour box in {pct(hit)} of images "
                   "(pointing game).")
    energy, ratio = scalar(c.get("energy_in_box")), scalar(c.get("energy_in_box_ratio"))
    if energy is not None:
        text = f"{pct(energy)} of CAM energy lies inside the box"
        if ratio is not None:
            text += f", {num(ratio)} times the box's share of the image"
        out.append(text + ".")
    iou = scalar(c.get("iou"))
    if iou is not None:
        out.append(f"The thresholded map overlaps the box with IoU {num(iou)}.")
    mask = c.get("mask")
    if isinstance(mask, dict) and scalar(mask.get("pointing_game")) is not None:
        ceiling = scalar(mask.get("pointing_ceiling"))
        reach = ("" if ceiling is None else
                 f"; the map's grid can point into {pct(ceiling)} of the masks at most")
        out.append(f"Against the expert tumour masks: the maximum falls inside the mask in "
                   f"{pct(scalar(mask['pointing_game']))} of images (chance "
                   f"{pct(scalar(mask.get('pointing_chance')))}{reach}), with "
                   f"{num(mask.get('energy_in_mask_ratio'))} times the mask's share of the "
                   f"energy and top-k Dice {num(mask.get('dice'))}.")
    elif all(c.get(k) is None for k in ("pointing_game", "energy_in_box", "iou")):
        out.append("No tumour boxes were available, so localisation was not measured.")
    return out


def _faithfulness(c: dict[str, Any]) -> list[str]:
    out = []
    deletion, rnd = scalar(c.get("deletion_auc")), scalar(c.get("random_deletion_auc"))
    if deletion is not None:
        out.append(f"Deleting the most important pixels first gives a deletion AUC of "
                   f"{num(deletion)} (lower is better)"
                   + (f" against {num(rnd)} for a random map." if rnd is not None else "."))
    insertion, rnd = scalar(c.get("insertion_auc")), scalar(c.get("random_insertion_auc"))
    if insertion is not None:
        out.append(f"Inserting them first gives an insertion AUC of {num(insertion)} "
                   "(higher is better)"
                   + (f" against {num(rnd)} for a random map." if rnd is not None else "."))
    road = scalar(c.get("road"))
    if road is not None:
        out.append(f"ROAD score: {num(road)}.")
    return out


def _sanity(c: dict[str, Any]) -> list[str]:
    passed = c.get("passed")
    sim = c.get("similarity_after_randomization")
    sim_text = f" (similarity after randomisation: {num(sim)})" if sim is not None else ""
    if passed is True:
        return [f"The maps change when the model's weights are randomised{sim_text}: "
                "the method passes the sanity check."]
    if passed is False:
        return [f"The maps stay similar when the model's weights are randomised{sim_text}: "
                "the method fails the sanity check, so its maps say little about this model."]
    return []


def _counterfactual(c: dict[str, Any]) -> list[str]:
    out = []
    survive = scalar(c.get("background_only_survival"))
    if survive is not None:
        out.append(f"With the head replaced by background, {pct(survive)} of predictions stay "
                   "the same.")
    change = scalar(c.get("head_only_change"))
    if change is not None:
        out.append(f"Blanking the background changes the predicted probability by {num(change)} "
                   "on average.")
    swap = scalar(c.get("intensity_swap_flip_rate"))
    if swap is not None:
        out.append(f"Matching each image's intensity histogram to the other class flips "
                   f"{pct(swap)} of predictions.")
    flip, drop = scalar(c.get("tumor_removal_flip_rate")), scalar(c.get("tumor_removal_prob_drop"))
    if flip is not None:
        out.append(f"Inpainting the tumour flips {pct(flip)} of predictions"
                   + (f" and lowers the tumour probability by {num(drop)} on average."
                      if drop is not None else "."))
    effect = scalar(c.get("tumor_effect_prob_drop"))
    if effect is not None:
        out.append(f"Inpainting the expert tumour mask lowers the tumour probability by "
                   f"{num(c.get('mask_removal_prob_drop'))}, the same shape in tumour-free brain "
                   f"by {num(c.get('control_removal_prob_drop'))}: the tumour's own effect is "
                   f"{num(effect)} (flip rates {pct(scalar(c.get('mask_removal_flip_rate')))} "
                   f"and {pct(scalar(c.get('control_removal_flip_rate')))}).")
    views = scalar(c.get("lesion_view_balanced_accuracy"))
    if views is not None:
        out.append(f"Cut from the same {c.get('n_lesion_view')} slices, a view holding the tumour "
                   f"and a view of tumour-free brain, each enlarged to the input: the model finds "
                   f"the tumour in {pct(scalar(c.get('lesion_view_tumor_recall')))} of the tumour "
                   f"views and calls {pct(scalar(c.get('lesion_view_clear_recall')))} of the "
                   f"tumour-free views tumour-free (balanced accuracy {num(views)}, AUC "
                   f"{num(c.get('lesion_view_auc'))}).")
    return out


DESCRIBE: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "attention": _attention, "localization": _localization, "faithfulness": _faithfulness,
    "sanity": _sanity, "counterfactual": _counterfactual,
}
"""The sentences of a check's numbers; a registered check without an entry shows its table."""

PLOT_CAPTIONS = {
    "faithfulness": "Score of the explained class as the pixels the map ranks highest are "
                    "deleted (a faithful map makes it fall fast) or inserted into a blurred "
                    "image (rise fast).",
    "sanity": "Similarity between the trained model's maps and the maps after randomising its "
              "layers from the top down to the one named; it should fall towards 0.",
}


def collect_model_audit(run: RunDir) -> ModelAuditSection:
    part, audit = read_json_part(run, run.audit_json, "model audit")
    checks = [AuditCheck(key, check.title, _about(check), PLOT_CAPTIONS.get(key, ""))
              for key, check in CHECKS.items()]
    figures = embed_figures(sorted(run.audit.glob("*.png")))
    section = ModelAuditSection(part, checks, figures=figures)
    if audit is None:
        return section
    section.datasets += _model_sentences(audit)
    blocks = per_dataset(audit)
    for dataset, results in blocks:
        section.datasets.append(_dataset_sentence(dataset, results))
        for check in checks:
            values = results.get(check.key)
            if isinstance(values, dict):
                describe = DESCRIBE.get(check.key, lambda _: [])
                check.results.append(_result(check.key, dataset, values, describe))
    _add_findings(section, audit.get("findings"), "model audit")  # every dataset's
    return section


def _about(check: type[Check]) -> str:
    """The check's description and the direction of its headline numbers."""
    directions = [f"{label(key)}: {'higher' if better else 'lower'} is better"
                  for key, better in check.higher_is_better.items()]
    return check.description + (f" ({'; '.join(directions)}.)" if directions else "")


def _result(key: str, dataset: str | None, values: dict[str, Any],
            describe: Callable[[dict[str, Any]], list[str]]) -> CheckView:
    """Sentences, rows of the plain numbers (lists and per-group/per-method blocks left
    out: they become the table, the plot or per-method sentences) for one check."""
    own = {k: v for k, v in values.items() if k not in NESTED}
    rows = [(name, v) for name, v in flatten(own) if not isinstance(v, list)]
    by_method = values.get("by_method")
    if isinstance(by_method, dict) and by_method:
        sentences = _sentences(describe, by_method)
    else:
        sentences = _sentences(describe, values)
    result = CheckView(dataset, sentences, rows)
    if key == "attention":
        result.table = _attention_table(values)
    elif key == "faithfulness":
        result.figure = deletion_insertion_curves(
            {"deletion": values.get("deletion_curve"), "insertion": values.get("insertion_curve")}
        )
    elif key == "sanity" and isinstance(values.get("layers"), list):
        result.figure = randomisation_curve(
            values["layers"], {"Spearman": values.get("spearman"), "SSIM": values.get("ssim")}
        )
    return result


def _attention_table(values: dict[str, Any]) -> Table | None:
    """Energy shares per image group: all images, each true class, correct / incorrect."""
    groups = [("all images", {**values, "n": values.get("n_images")})]
    for key, prefix in (("by_class", "class "), ("by_correctness", "")):
        block = values.get(key)
        if isinstance(block, dict):
            groups += [(f"{prefix}{name}", v) for name, v in block.items() if isinstance(v, dict)]
    if len(groups) == 1:
        return None
    return Table([label(c) for c in ATTENTION_COLUMNS],
                 [(name, [g.get(c) for c in ATTENTION_COLUMNS]) for name, g in groups],
                 "images")


def _model_sentences(audit: dict[str, Any]) -> list[str]:
    """A model spec's model (format, file, classes, how gradients were had) and each skipped
    part of the audit with its reason."""
    out = []
    model = audit.get("model")
    if isinstance(model, dict):
        text = (f"Model from the spec {model.get('spec')}: {model.get('format')} file "
                f"{model.get('path')}, classes {', '.join(map(str, model.get('classes') or []))}")
        diff = model.get("conversion_max_diff")
        if model.get("gradients") and isinstance(diff, int | float):
            text += (f"; gradient methods ran on onnx2torch's conversion (largest probability "
                     f"difference from onnxruntime {diff:.1e})")
        out.append(text + ".")
    for entry in audit.get("skipped") or []:
        if isinstance(entry, dict):
            parts = [*(entry.get("methods") or []), *(entry.get("checks") or [])]
            out.append(f"Skipped {', '.join(map(str, parts))}: {entry.get('reason')}.")
    return out


def _dataset_sentence(dataset: str | None, results: dict[str, Any]) -> str:
    name = dataset or results.get("dataset") or "the audited images"
    text = f"{name}: {num(results.get('n_images'))} images audited"
    if results.get("n_seen"):  # copies of training images under other paths
        text += (f" ({num(results['n_seen'])} of them copies of images the model or its guide "
                 "learnt from)")
    if results.get("accuracy") is not None:
        text += f", accuracy {num(results['accuracy'])}"
    methods = results.get("methods")
    if isinstance(methods, list) and methods:
        text += f"; explained with {', '.join(map(str, methods))}"
    return text + "."


def _sentences(describe: Callable[[dict[str, Any]], list[str]], values: dict[str, Any]
               ) -> list[str]:
    """Sentences for a check's numbers; when they are given per method
    (``{"gradcam": {...}, ...}``), one set per method, prefixed with its name."""
    from braincam.explain import METHODS

    if values and set(values) <= set(METHODS) and all(
            isinstance(v, dict) for v in values.values()):  # by method, not a check's keys
        return [f"{method}: {text}" for method, sub in values.items()
                for text in describe(sub)]
    return describe(values)


def _add_findings(section: ModelAuditSection, raw: Any, source: str) -> None:
    found, dropped = parse_findings(raw, source)
    section.findings.extend(found)
    section.dropped_findings += dropped


def per_dataset(audit: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """``[(name, results), ...]`` of the ``datasets`` blocks that hold checks."""
    nested = audit.get("datasets") if isinstance(audit.get("datasets"), dict) else {}
    return [(str(k), v) for k, v in nested.items() if isinstance(v, dict) and _has_checks(v)]


def _has_checks(values: dict[str, Any]) -> bool:
    return any(key in values for key in CHECKS)
