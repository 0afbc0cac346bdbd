"""What the commands that take RUN do when RUN is a model spec (a .yaml file describing a
model braincam did not train): the output folder is ``--out``, never the spec's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SpecTask = Annotated[
    str | None, typer.Option(help="Model spec only: binary views a tumour-type model as "
                             "no_tumor/tumor (default: the spec's classes).")
]


def spec_output(run: Path, out: Path | None, **spec_only: object) -> Path | None:
    """``out`` when ``run`` is a model spec (required then); None for a run directory, where
    the options in ``spec_only`` (name -> value) must be unset."""
    from braincam.errors import BraincamError
    from braincam.models.foreign import is_spec

    if is_spec(run):
        if not run.is_file():
            raise BraincamError(f"{run}: no such model spec")
        if out is None:
            raise BraincamError(f"{run} is a model spec: pass --out DIR (nothing is written "
                                "next to a spec)")
        return out
    given = [name for name, value in spec_only.items() if value is not None]
    if given:
        raise BraincamError(f"--{given[0].replace('_', '-')} applies to a model spec only, "
                            f"and {run} is a run directory")
    return None
