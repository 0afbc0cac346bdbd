"""The report's opening paragraph: does the model's skill come from the tumour or a shortcut?

Read from the first block of ``audit/audit.json`` (its counterfactual accuracies, see
:mod:`braincam.audit.model.counterfactual`), ``metrics.json``'s test accuracy and the grouped
findings; the block is named in the text when there are several (a run's own data comes
first, a model spec's first ``--data`` folder). ``acc`` is the accuracy on the audited
images, ``chance`` ``1 / classes``; an accuracy change counts when it reaches :data:`DROP`
(15 points):

- shortcut: blanking the area outside the head costs >= DROP (``acc - head_only_accuracy``),
  or the background alone still beats chance by >= DROP (``background_only_accuracy``), or
  swapping intensity histograms between classes costs >= DROP;
- tumour: none of those, and inpainting the tumour costs >= DROP on the tumour images
  (``tumor_removal_original_accuracy - tumor_removal_accuracy``), or the head alone keeps
  the accuracy and the background alone is near chance, and, where tumours are annotated,
  the map's maximum falls in the tumour (its mask, else its box) on at least
  :data:`POINTING` of the tumour images (``localization``'s pointing game): a model that
  keeps its answer without the tumour (a guided one, which still marks the inpainted bed)
  must show where it looks;
- no skill: ``acc < chance +`` :data:`SKILL`, or the test balanced accuracy is below it too
  (a model that says one class for every image scores that class's share in accuracy, and
  chance in balanced accuracy); otherwise unclear, and no verdict without the counterfactual
  numbers.

Each piece of evidence gives the accuracy on the altered images with its flip rate beside it.
Critical findings are named after the evidence (up to :data:`MAX_NAMED`; the caller
lists the model audit's first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from braincam.audit.findings import Finding
from braincam.report.fmt import pct, scalar
from braincam.report.model_audit import per_dataset

DROP = 0.15
SKILL = 0.10
POINTING = 0.5  # the map points at the tumour on most tumour images
MAX_NAMED = 3
KINDS = ("shortcut", "tumour", "no_skill", "unclear", "none")


@dataclass
class Verdict:
    """``kind`` (one of :data:`KINDS`), the paragraph, and its evidence clauses."""

    kind: str
    text: str
    evidence: list[str] = field(default_factory=list)


def collect_verdict(
    metrics: dict[str, Any] | None, audit: dict[str, Any] | None, findings: list[Finding],
    ensemble: bool = False,
) -> Verdict:
    """The verdict of a run from its metrics, model audit and (grouped) findings; an
    ``ensemble`` has no audit of its own, so its verdict points at its members'."""
    critical = _named_critical(findings)
    blocks = per_dataset(audit) if audit else []
    cf = blocks[0][1].get("counterfactual") if blocks else None
    acc = _first(cf, "accuracy") if isinstance(cf, dict) else None
    acc = acc if acc is not None else scalar(blocks[0][1].get("accuracy")) if blocks else None
    if not isinstance(cf, dict) or acc is None:
        where = ("an ensemble has no model audit of its own (audit one of its members, and "
                 "read that member's report)" if ensemble else
                 "the model audit's counterfactual numbers are missing (run the model audit)")
        return Verdict("none", f"No verdict: {where}." + critical)
    classes = blocks[0][1].get("classes")
    chance = 1 / len(classes) if isinstance(classes, list) and classes else 0.5
    test = scalar(((metrics or {}).get("test") or {}).get("accuracy"))
    balanced = scalar(((metrics or {}).get("test") or {}).get("balanced_accuracy"))
    n = cf.get("n_images")
    of = f" of {blocks[0][0]}" if len(blocks) > 1 else ""  # which set the verdict reads
    opening = (f"test accuracy {_acc(test)} ({_acc(acc)} on the {n} audited images{of})"
               if test is not None and isinstance(n, int) else f"accuracy {_acc(acc)} on the "
               f"audited images{of}")
    if acc < chance + SKILL:
        return Verdict("no_skill", f"The model is near chance ({opening}; chance "
                       f"{_acc(chance)}): there is little skill to attribute." + critical)
    if balanced is not None and balanced < chance + SKILL:
        return Verdict("no_skill", f"The model is near chance: test balanced accuracy "
                       f"{_acc(balanced)} (chance {_acc(chance)}; {opening}, which the larger "
                       "class alone can give): there is little skill to attribute." + critical)
    shortcut = _shortcut_evidence(cf, acc, chance)
    if shortcut:
        return Verdict("shortcut", "The model's skill comes from a shortcut, not from the "
                       f"tumour: {opening}; " + "; ".join(shortcut) + "." + critical, shortcut)
    tumour = _tumour_evidence(cf, chance, blocks[0][1].get("localization"))
    if tumour:
        return Verdict("tumour", f"The model's skill comes from the head and the tumour: "
                       f"{opening}; " + "; ".join(tumour) + "." + critical, tumour)
    pointing = _pointing(blocks[0][1].get("localization"))
    where = (f", and the {pointing[2]} map's maximum falls in the tumour on only "
             f"{pct(pointing[0])} of the tumour images (chance {pct(pointing[1])})"
             if pointing is not None and pointing[0] < POINTING else "")
    return Verdict("unclear", f"No clear verdict: {opening}, and the counterfactuals move it "
                   f"by less than {DROP * 100:.0f} points either way{where}." + critical)


def _shortcut_evidence(cf: dict[str, Any], acc: float, chance: float) -> list[str]:
    out = []
    head = _first(cf, "head_only_accuracy")
    if head is not None and acc - head >= DROP:
        share = "all" if head < chance + SKILL else "part"
        out.append(f"with the area outside the head blanked, {_acc(head)}"
                   f"{_flips(cf, 'head_only_flip_rate')}: {share} of the model's above-chance "
                   "accuracy comes from outside the head")
    background = _first(cf, "background_only_accuracy")
    constant = _first(cf, "majority_share")  # one answer for every blank image
    if background is not None and background - max(chance, constant or 0.0) >= DROP:
        survival = _first(cf, "background_only_survival")
        kept = f" ({pct(survival)} of predictions unchanged)" if survival is not None else ""
        out.append(f"with the head replaced by background, still {_acc(background)}{kept}: the "
                   "background alone tells the class")
    swap = _first(cf, "intensity_swap_accuracy")
    if swap is not None and acc - swap >= DROP:
        out.append(f"with each image's intensity histogram matched to another class, "
                   f"{_acc(swap)}{_flips(cf, 'intensity_swap_flip_rate')}: the model reads "
                   "global intensity")
    return out


def _tumour_evidence(cf: dict[str, Any], chance: float, localization: Any) -> list[str]:
    before = _first(cf, "tumor_removal_original_accuracy")
    after = _first(cf, "tumor_removal_accuracy")
    if before is not None and after is not None and before - after >= DROP:
        return [f"with the tumour inpainted, accuracy on the tumour images falls from "
                f"{_acc(before)} to {_acc(after)}{_flips(cf, 'tumor_removal_flip_rate')}"]
    head, background = _first(cf, "head_only_accuracy"), _first(cf, "background_only_accuracy")
    if head is None or background is None or background - chance >= SKILL:
        return []
    out = [f"with the area outside the head blanked, {_acc(head)}"
           f"{_flips(cf, 'head_only_flip_rate')}; with the head replaced by background, "
           f"{_acc(background)} (chance {_acc(chance)})"]
    if before is None or after is None:  # no tumour annotations
        return out
    pointing = _pointing(localization)
    if pointing is None or pointing[0] < POINTING:
        return []
    return [*out, f"the {pointing[2]} map's maximum falls in the tumour on {pct(pointing[0])} "
            f"of the tumour images (chance {pct(pointing[1])}), though inpainting the tumour "
            f"moves their accuracy only from {_acc(before)} to {_acc(after)}"]


def _pointing(localization: Any) -> tuple[float, float, str] | None:
    """``(pointing game, its chance, method)`` against the masks, else the boxes."""
    if not isinstance(localization, dict):
        return None
    mask = localization.get("mask")
    where = mask if isinstance(mask, dict) and _first(mask, "pointing_game") is not None \
        else localization
    game, chance = _first(where, "pointing_game"), _first(where, "pointing_chance")
    method = localization.get("method")
    if game is None:
        return None
    return game, chance or 0.0, method if isinstance(method, str) else "explanation"


def _acc(value: float) -> str:
    """Accuracies with two decimals, as people quote them (0.62)."""
    return f"{value:.2f}"


def _flips(cf: dict[str, Any], key: str) -> str:
    rate = _first(cf, key)
    return f" (flip rate {pct(rate)})" if rate is not None else ""


def _first(values: dict[str, Any], key: str) -> float | None:
    return scalar(values.get(key))


def _named_critical(findings: list[Finding]) -> str:
    names = list(dict.fromkeys(f.check for f in findings if f.severity == "critical"))
    if not names:
        return ""
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return (f" Critical finding{'s' if len(names) > 1 else ''}: "
            f"{', '.join(names[:MAX_NAMED])}{more}.")
