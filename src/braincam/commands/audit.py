"""``braincam audit RUN --data DATA... [--methods gradcam,...] [--out DIR]``: does the model
look at the tumour or at shortcuts? Attention, localisation, faithfulness, sanity and
counterfactual checks of a trained run, or (``braincam audit SPEC --data DATA --out DIR``) of
a model braincam did not train, described by a model spec (docs/foreign-models.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from braincam.commands.spec_options import SpecTask

MAX_FINDINGS_SHOWN = 8


def command(
    run: Annotated[Path, typer.Argument(help="Run directory written by `braincam train`, or a "
                                        "model spec (.yaml) of a model braincam did not train.")],
    data: Annotated[
        list[Path],
        typer.Option("--data", help="Dataset folder to audit on; repeat for several (images the "
                     "run trained or validated on are left out)."),
    ],
    methods: Annotated[
        str, typer.Option(help="Comma-separated explanation methods, e.g. gradcam,gradcam++ "
                          "(see `braincam explain --help`).")
    ] = "gradcam",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default RUN/audit). "
                                  "Required with a model spec, where it plays the run "
                                  "directory: the files go to OUT/audit.")
    ] = None,
    task: SpecTask = None,
    split: Annotated[
        str | None, typer.Option(help="Audit only this official split (e.g. test) of folders "
                                 "that have splits; others are audited whole.")
    ] = None,
    validation: Annotated[
        bool, typer.Option("--validation", help="Audit only the images of --data the run "
                           "validated on: choose settings on these, never on a test set.")
    ] = False,
    max_images: Annotated[
        int | None, typer.Option(help="At most this many images per dataset (seeded sample).")
    ] = None,
    faithfulness_images: Annotated[
        int, typer.Option(help="Images per dataset for the deletion/insertion curves.")
    ] = 16,
    road_images: Annotated[int, typer.Option(help="Images per dataset for ROAD.")] = 8,
    sanity_images: Annotated[
        int, typer.Option(help="Images per dataset for the randomisation sanity check.")
    ] = 8,
    occlusion_images: Annotated[
        int, typer.Option(help="Images per dataset for the occlusion summary.")
    ] = 4,
    occlusion_window: Annotated[
        int, typer.Option(help="Occlusion window side, px (the stride equals it).")
    ] = 32,
    segmenter: Annotated[
        Path | None, typer.Option(help="A `braincam segment` run: its predicted tumour masks "
                                  "are shown beside the expert masks in the report.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per inference batch.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of every sample and random baseline.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing audit.json in the output folder.")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show preprocessing progress.")
    ] = True,
) -> None:
    """Audit RUN's model; write audit.json and audit_images.csv and print the findings."""
    from braincam.audit.model.base import AuditSettings
    from braincam.audit.model.run import audit_model
    from braincam.commands.spec_options import spec_output
    from braincam.commands.training_options import parse_methods
    from braincam.errors import BraincamError
    from braincam.runs import AUDIT_IMAGES_CSV, AUDIT_JSON, RunDir

    if split is not None and split not in ("train", "val", "test"):
        raise BraincamError(f"--split must be train, val or test, got {split!r}")
    spec_out = spec_output(run, out, task=task)
    sizes = (faithfulness_images, road_images, sanity_images, occlusion_images)
    if min(sizes) < 0 or batch_size < 1 or occlusion_window < 1:
        raise BraincamError("image counts must be >= 0, --batch-size and --occlusion-window >= 1")
    settings = AuditSettings(
        faithfulness_images=faithfulness_images, road_images=road_images,
        sanity_images=sanity_images, occlusion_images=occlusion_images,
        occlusion_window=occlusion_window, occlusion_stride=occlusion_window,
        batch_size=batch_size, seed=seed,
    )
    method_list = list(parse_methods(methods))
    doc = audit_model(run, data, method_list, out, max_images, settings=settings,
                      device=device, force=force, progress=progress, segmenter=segmenter,
                      task=task, split=split, validation=validation)
    for line in summary_lines(doc):
        typer.echo(line)
    where = spec_out / "audit" if spec_out else out or RunDir(run).audit
    typer.echo(f"wrote {where / AUDIT_JSON} and {where / AUDIT_IMAGES_CSV}")


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """One line per dataset with the headline numbers, a line per skipped part, then the most
    severe findings."""
    lines = [f"{name}: {_headline(block)}" for name, block in doc["datasets"].items()]
    lines += [f"skipped {', '.join(s['methods'] + s['checks'])}: {s['reason']}"
              for s in doc.get("skipped", [])]
    findings = doc["findings"]
    counts = {s: sum(f["severity"] == s for f in findings) for s in ("critical", "warning")}
    lines.append(f"findings: {counts['critical']} critical, {counts['warning']} warning, "
                 f"{len(findings) - sum(counts.values())} info")
    lines += [f"  [{f['severity']}] {f['message']}" for f in findings[:MAX_FINDINGS_SHOWN]]
    if len(findings) > MAX_FINDINGS_SHOWN:
        lines.append(f"  ... {len(findings) - MAX_FINDINGS_SHOWN} more in audit.json")
    return lines


def _headline(block: dict[str, Any]) -> str:
    att, cf, sanity = block["attention"], block["counterfactual"], block["sanity"]
    parts = [f"n={block['n_images']}"]
    if block.get("accuracy") is not None:
        parts.append(f"acc {block['accuracy']:.3f}")
    if att.get("brain") is not None:
        methods = block.get("methods") or []
        kind = "CAM" if methods and methods[0] not in ("ig", "occlusion") else "map"
        parts.append(f"{kind} energy in brain {att['brain']:.0%} (uniform "
                     f"{att['uniform_brain']:.0%}), background {att['background']:.0%} "
                     f"(uniform {att['uniform_background']:.0%})")
    survival = cf.get("background_only_survival")
    if survival is not None:
        parts.append(f"background-only survival {survival:.0%} "
                     f"(chance <= {cf['background_only_baseline']:.0%})")
    mask = (block.get("localization") or {}).get("mask")
    if mask and mask.get("pointing_game") is not None:
        ceiling = mask.get("pointing_ceiling")
        reach = "" if ceiling is None else f", grid's ceiling {ceiling:.0%}"
        parts.append(f"pointing game in the expert mask {mask['pointing_game']:.0%} (chance "
                     f"{mask['pointing_chance']:.1%}{reach})")
    if cf.get("tumor_effect_prob_drop") is not None:
        parts.append(f"tumour removal minus control: P(tumour) drop "
                     f"{cf['tumor_effect_prob_drop']:.3f}")
    if cf.get("lesion_view_balanced_accuracy") is not None:
        parts.append(f"lesion views balanced accuracy {cf['lesion_view_balanced_accuracy']:.3f} "
                     f"(n={cf['n_lesion_view']})")
    if sanity.get("passed") is not None:
        parts.append("sanity " + ("passed" if sanity["passed"] else "FAILED"))
    return ", ".join(parts)
