"""``braincam audit-data DATA... --out DIR``: look for shortcuts and leaks in the images
themselves, before any model is trained."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

TASKS = ("binary", "multiclass")
SPLITS = ("official", "dedup", "random")


def command(
    data: Annotated[
        list[Path],
        typer.Argument(help="Dataset folders (ROOT/<class>/ or ROOT/<split>/<class>/)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for data_audit.json and figures.")],
    task: Annotated[
        str, typer.Option(help="binary (tumour vs no tumour) or multiclass (tumour types).")
    ] = "binary",
    split: Annotated[
        str,
        typer.Option(
            help="official (Training/Testing folders), dedup (no duplicate crosses splits) "
            "or random (stratified)."
        ),
    ] = "official",
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing audit in --out.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the dedup/random split and bootstrap.")] = 0,
    n_boot: Annotated[
        int, typer.Option(help="Bootstrap resamples for the probes' 95% intervals (0: none).")
    ] = 1000,
) -> None:
    """Audit image properties, shortcut probes, duplicates and clusters; write data_audit.json,
    properties.csv and PNG figures to --out and print a summary."""
    from braincam.audit.data.run import JSON_NAME, audit_data
    from braincam.errors import BraincamError
    from braincam.runs import prepare_output_dir

    if task not in TASKS:
        raise BraincamError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if split not in SPLITS:
        raise BraincamError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if n_boot < 0:
        raise BraincamError(f"--n-boot must be >= 0, got {n_boot}")
    out = prepare_output_dir(out, force=force, marker=JSON_NAME)
    audit = audit_data(data, task=task, split_strategy=split, out_dir=out, n_boot=n_boot,
                       seed=seed)
    typer.echo(audit.summary())
    typer.echo(f"wrote {out / JSON_NAME} and {len(audit.files) - 1} more files in {out}")
