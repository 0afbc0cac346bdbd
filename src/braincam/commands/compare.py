"""``braincam compare RUN... --out DIR``: the headline numbers of several runs in one table
and one plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    runs: Annotated[list[Path], typer.Argument(help="Run directories to compare.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for compare.csv, compare.json, compare.png.")
    ] = Path("compare"),
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing comparison in --out.")
    ] = False,
) -> None:
    """Compare runs side by side: accuracies, CAM energy and counterfactual rates.

    Accuracy (in-domain, leak-free, cross-dataset), background energy, energy in the tumour
    box and counterfactual rates of each run; where the audits had expert masks also the
    pointing game, the map's mask Dice, the energy-in-mask ratio and the tumour-removal vs
    control flip rates.
    """
    from rich.console import Console

    from braincam.pipeline import compare_runs, write_comparison
    from braincam.runs import check_outside_data, named_data_roots, prepare_output_dir

    comparison = compare_runs(runs)
    check_outside_data(out, named_data_roots(runs))
    folder = prepare_output_dir(out, force=force, marker="compare.json")
    files = write_comparison(comparison, folder)
    console = Console()
    console.print(comparison.to_table())
    if comparison.note:
        typer.echo(f"warning: {comparison.note}", err=True)
    console.print(f"wrote {', '.join(str(f) for f in files)}", highlight=False, soft_wrap=True)
