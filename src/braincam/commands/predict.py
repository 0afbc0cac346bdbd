"""``braincam predict RUN INPUTS... --out DIR``: a trained run's answer for new images, DICOM
files and series, NIfTI volumes and folders of them, with warnings (see docs/predict.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    run: Annotated[Path, typer.Argument(help="Run directory written by `braincam train`.")],
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Image files, DICOM files or series folders, NIfTI volumes, folders."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    explain: Annotated[
        str | None,
        typer.Option("--explain", help="Also write overlays with this method (e.g. gradcam); "
                     "adds the CAM-outside-the-head warning."),
    ] = None,
    segment: Annotated[
        Path | None,
        typer.Option("--segment", help="Segmentation run (braincam segment): adds the "
                     "tumour_fraction column, masks/ and the tumour outline on overlays."),
    ] = None,
    every: Annotated[int, typer.Option(help="Every k-th slice of a volume or series.")] = 1,
    min_head: Annotated[
        float,
        typer.Option(help="NIfTI slices whose head covers less than this fraction are skipped "
                     "(0: all slices)."),
    ] = 0.1,
    ood: Annotated[
        bool,
        typer.Option("--ood/--no-ood", help="Out-of-distribution and duplicate warnings "
                     "(calibrated once on the run's training images, cached in RUN)."),
    ] = True,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Replace the predictions, overlays and masks of "
                                             "an earlier call in --out.")
    ] = False,
) -> None:
    """Predict new images, DICOM files and NIfTI volumes with RUN's model, with warnings.

    Writes predictions.csv (one row per image or slice, one per volume), skipped.csv,
    with --explain overlays/ and with --segment masks/ in --out. Runs under torchrun
    --nproc_per_node=N too: each process predicts a share.
    """
    from braincam import distributed
    from braincam.api import load
    from braincam.api.files import predict_files, prepare_predict_dir
    from braincam.data.inputs import SliceChoice
    from braincam.errors import BraincamError
    from braincam.explain import METHODS
    from braincam.runs import check_writable

    if explain is not None and explain not in METHODS:
        raise BraincamError(f"unknown method {explain!r}; choose one of {', '.join(METHODS)}")
    if batch_size < 1:
        raise BraincamError("--batch-size must be >= 1")
    choice = SliceChoice(every, min_head)  # checks both
    missing = [p for p in inputs if not p.exists()]
    if missing:
        what = "a link to nothing" if missing[0].is_symlink() else "no such file or folder"
        raise BraincamError(f"{missing[0]}: {what}")
    inputs = once(inputs)
    check_writable(out)  # before the model loads and calibrates
    ctx, torch_device = distributed.setup(device)
    model = load(run, segment=segment, device=torch_device, ood=ood)

    def make_room() -> None:  # once the inputs are found: a failed call deletes nothing
        if model.ood and ctx.is_main and not model.run.ood_reference.exists():
            typer.echo("calibrating the out-of-distribution check on the run's training "
                       "images (once per run; --no-ood skips it)", err=True)
        with distributed.main_first(ctx):  # rank 0 calibrates (cached in RUN), others read it
            _ = model.reference
            if ctx.is_main:
                prepare_predict_dir(out, force, run, inputs, segment)

    summary = predict_files(model, inputs, out, explain, choice,
                            batch_size, before_writing=make_room)
    distributed.shutdown()  # the other processes exit here
    typer.echo(
        f"predicted {summary.n_images} images/slices ({summary.n_volumes} volume"
        f"{'s' * (summary.n_volumes != 1)}) in "
        f"{summary.seconds:.1f} s; {summary.n_flagged} with warnings, "
        f"{len(summary.skipped)} skipped"
    )
    for skipped in summary.skipped:
        typer.echo(f"  skipped {skipped.path}: {skipped.reason}", err=True)
    typer.echo(f"wrote {summary.file}")
    if not summary.n_images and summary.skipped:  # a script must not carry on as if it worked
        raise BraincamError(f"none of the {len(summary.skipped)} inputs could be read "
                            f"({out / 'skipped.csv'})")


def once(inputs: list[Path]) -> list[Path]:
    """``inputs`` without those given twice (by the same path, or as a file of a folder also
    given): their rows would merge into one volume of twice the slices. Rank 0 warns."""
    import os

    from braincam.distributed import env_world

    folders = [Path(os.path.abspath(p)) for p in inputs if p.is_dir()]  # links kept as named
    kept: dict[Path, Path] = {}
    for given in inputs:
        where = Path(os.path.abspath(given))
        inside = next((f for f in folders if f != where and f in where.parents), None)
        if where in kept or inside is not None:
            if env_world()[0] == 0:
                typer.echo(f"warning: {given} is given more than once"
                           f"{f' (in {inside})' if inside else ''}; predicted once", err=True)
            continue
        kept[where] = given
    return list(kept.values())
