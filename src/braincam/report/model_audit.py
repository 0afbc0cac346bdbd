"""Model audit results (attention, localisation, faithfulness, sanity, counterfactual)
as tables plus one plain sentence per headline number.

``audit/audit.json`` holds the checks either at the top level or once per dataset
(``{"<dataset>": {"attention": ...}}``); both are read. A check that is absent or
null reads "not run".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
NESTED = ("by_class", "by_correctness", "by_method", "regions", "uniform_regions")
ATTENTION_COLUMNS = ("n", "brain", "rim", "background", "uniform_background")


@dataclass
class CheckResult:
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
    results: list[CheckResult] = field(default_factory=list)


@dataclass
class ModelAuditSection:
    part: Part
    checks: list[AuditCheck]
    datasets: list[str] = field(default_factory=list)  # one sentence per audited dataset
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
    if all(c.get(k) is None for k in ("pointing_game", "energy_in_box", "iou")):
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
    return out


CHECKS: tuple[tuple[str, str, str, Callable[[dict[str, Any]], list[str]]], ...] = (
    ("attention", "Attention",
     "Share of the CAM's energy inside the brain, on the skull rim and in the background.",
     _attention),
    ("localization", "Localisation",
     "Whether the map points at the tumour, where tumour boxes are known.", _localization),
    ("faithfulness", "Faithfulness",
     "Whether removing the pixels the map ranks highest changes the prediction most.",
     _faithfulness),
    ("sanity", "Sanity check",
     "Whether the maps depend on the trained weights (Adebayo et al., 2018).", _sanity),
    ("counterfactual", "Counterfactuals",
     "How predictions change when the head, background, intensities or tumour are altered.",
     _counterfactual),
)

PLOT_CAPTIONS = {
    "faithfulness": "Score of the explained class as the pixels the map ranks highest are "
                    "deleted (a faithful map makes it fall fast) or inserted into a blurred "
                    "image (rise fast).",
    "sanity": "Similarity between the trained model's maps and the maps after randomising its "
              "layers from the top down to the one named; it should fall towards 0.",
}


def collect_model_audit(run: RunDir) -> ModelAuditSection:
    part, audit = read_json_part(run.root, "audit/audit.json", "model audit")
    checks = [AuditCheck(key, title, about, PLOT_CAPTIONS.get(key, ""))
              for key, title, about, _ in CHECKS]
    figures = embed_figures(sorted(run.audit.glob("*.png")))
    section = ModelAuditSection(part, checks, figures=figures)
    if audit is None:
        return section
    blocks = per_dataset(audit)
    for dataset, results in blocks:
        section.datasets.append(_dataset_sentence(dataset, results))
        for check, (_, _, _, describe) in zip(checks, CHECKS, strict=True):
            values = results.get(check.key)
            if isinstance(values, dict):
                check.results.append(_result(check.key, dataset, values, describe))
    # several datasets: the top-level list holds them all; else each block's own list
    if isinstance(audit.get("findings"), list) or not blocks:
        _add_findings(section, audit.get("findings"), "model audit")
    else:
        for dataset, results in blocks:
            _add_findings(section, results.get("findings"), f"model audit, {dataset}")
    return section


def _result(key: str, dataset: str | None, values: dict[str, Any],
            describe: Callable[[dict[str, Any]], list[str]]) -> CheckResult:
    """Sentences, rows of the plain numbers (lists and per-group/per-method blocks left
    out: they become the table, the plot or per-method sentences) for one check."""
    own = {k: v for k, v in values.items() if k not in NESTED}
    rows = [(name, v) for name, v in flatten(own) if not isinstance(v, list)]
    by_method = values.get("by_method")
    if isinstance(by_method, dict) and by_method:
        sentences = _sentences(describe, by_method)
    else:
        sentences = _sentences(describe, values)
    result = CheckResult(dataset, sentences, rows)
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


def _dataset_sentence(dataset: str | None, results: dict[str, Any]) -> str:
    name = dataset or results.get("dataset") or "the audited images"
    text = f"{name}: {num(results.get('n_images'))} images audited"
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
    direct = describe(values)
    if direct or not any(isinstance(v, dict) for v in values.values()):
        return direct
    return [f"{method}: {text}" for method, sub in values.items() if isinstance(sub, dict)
            for text in describe(sub)]


def _add_findings(section: ModelAuditSection, raw: Any, source: str) -> None:
    found, dropped = parse_findings(raw, source)
    section.findings.extend(found)
    section.dropped_findings += dropped


def per_dataset(audit: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """``[(None, audit)]`` for a single-dataset audit, else ``[(name, results), ...]``."""
    if _has_checks(audit):
        return [(None, audit)]
    nested = audit.get("datasets") if isinstance(audit.get("datasets"), dict) else audit
    return [(str(k), v) for k, v in nested.items() if isinstance(v, dict) and _has_checks(v)]


def _has_checks(values: dict[str, Any]) -> bool:
    return any(key in values for key, *_ in CHECKS)
