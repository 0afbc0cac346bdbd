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
        typer.Argument(help="Dataset folders (ROOT/CLASS/ or ROOT/SPLIT/CLASS/)."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o",
                                      help="Folder for data_audit.json and figures.")],
    others: Annotated[
        list[Path] | None,
        typer.Option("--data", help="A folder a model trained on DATA will be scored on "
                     "(repeatable): only checked for copies of DATA's images."),
    ] = None,
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
    """Audit the images for shortcuts and leaks; write data_audit.json and figures to --out.

    Image properties, shortcut probes, duplicates and acquisition clusters; also
    properties.csv and PNG figures, and a printed summary.
    """
    from braincam.audit.data.run import FILES, audit_data
    from braincam.errors import BraincamError, check_seed
    from braincam.runs import (
        DATA_AUDIT_JSON,
        check_outside_data,
        no_empty_folder_on_failure,
        prepare_output_dir,
    )

    if task not in TASKS:
        raise BraincamError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if split not in SPLITS:
        raise BraincamError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if n_boot < 0:
        raise BraincamError(f"--n-boot must be >= 0, got {n_boot}")
    check_seed(seed)
    check_outside_data(out, [*data, *(others or ())])
    with no_empty_folder_on_failure(out):
        out = prepare_output_dir(out, force=force, marker=DATA_AUDIT_JSON,
                                 reads=[*data, *(others or ())], owned=FILES)
        audit = audit_data(data, task=task, split_strategy=split, out_dir=out, n_boot=n_boot,
                           seed=seed, others=others or ())
    typer.echo(audit.summary())
    typer.echo(f"wrote {out / DATA_AUDIT_JSON} and {len(audit.files) - 1} more files in {out}")
