"""``braincam radiomics DATA... --out DIR``: radiomic features inside the tumour and a
transparent tumour-type baseline scored by grouped cross-validation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    data: Annotated[list[Path], typer.Argument(help="Dataset folders with tumour images.")],
    out: Annotated[Path, typer.Option("--out", "-o",
                                      help="Folder for features.csv and radiomics.json.")],
    masks: Annotated[
        str,
        typer.Option(help="expert (ROOT/masks/...) or the folder of a braincam segment run."),
    ] = "expert",
    cnn: Annotated[
        Path | None,
        typer.Option(help="A tumour-type classifier run to compare on its test images."),
    ] = None,
    standardize: Annotated[
        str, typer.Option(help="Intensity normalisation inside the head mask.")
    ] = "zscore-in-mask",
    bin_width: Annotated[
        float, typer.Option(help="Fixed grey-level bin width, in normalised units (0-1).")
    ] = 1 / 32,
    ring: Annotated[
        int | None,
        typer.Option(help="Width in pixels of the peritumoural ring (tumour dilated, minus the "
                     "tumour, inside the head); 0: no ring features. Default: 8.",
                     show_default=False),
    ] = None,
    families: Annotated[
        str | None,
        typer.Option(help="Comma-separated feature families: shape2D, firstorder, glcm, glrlm, "
                     "glszm, gldm, ngtdm, location (the ring gets the first-order and texture "
                     "ones). Default: all.", show_default=False),
    ] = None,
    folds: Annotated[int, typer.Option(help="Grouped cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the folds and the bootstrap.")] = 0,
    workers: Annotated[
        int | None, typer.Option(help="Parallel processes (default: one per CPU core).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
) -> None:
    """Compute radiomic features inside tumour masks and score a feature-based baseline."""
    from braincam.radiomics import RadiomicsConfig, radiomics_run

    optional: dict = {}  # left out: RadiomicsConfig's defaults (kept out of the CLI's imports)
    if ring is not None:
        optional["ring"] = ring
    if families is not None:
        optional["families"] = tuple(f.strip() for f in families.split(",") if f.strip())
    summary = radiomics_run(
        data, out,
        RadiomicsConfig(standardize=standardize, bin_width=bin_width, **optional),
        segment=None if masks == "expert" else Path(masks), cnn=cnn, folds=folds, seed=seed,
        workers=workers, force=force,
    )
    typer.echo(
        f"{summary['n_images']} images, {summary['n_features']} features "
        f"({summary['seconds_features']} s), {summary['n_skipped']} skipped, "
        f"{summary['n_groups']} groups, {summary['cv']['folds']}-fold grouped CV:"
    )
    for name, result in summary["cv"]["models"].items():
        m = result["metrics"]
        lo, hi = m["ci"]["accuracy"] or (float("nan"), float("nan"))
        typer.echo(
            f"  {name}: accuracy {m['accuracy']:.3f} [{lo:.3f}, {hi:.3f}], "
            f"balanced accuracy {m['balanced_accuracy']:.3f}"
        )
    if "cnn" in summary:
        c = summary["cnn"]
        typer.echo(
            f"  CNN on its {c['n']} test images: accuracy {c['cnn']['accuracy']:.3f} vs "
            f"radiomics {c['radiomics']['accuracy']:.3f}; radiomics right on "
            f"{c['radiomics_right_on_cnn_errors']} of the CNN's {c['cnn_errors']} errors"
        )
    typer.echo(f"written to {out}")
