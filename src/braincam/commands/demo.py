"""``braincam demo``: a model right for the wrong reason, caught by the audits and fixed by a
remedy, on phantoms generated on the fly; offline, about a minute on a 2-core CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SHORTCUT_HELP = ("Shortcut planted on the no_tumor phantoms: marker (a white corner square), "
                 "contrast, size, brightness, duplicates, or none.")


def command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Demo folder: OUT/phantoms, the runs "
                           "OUT/shortcut and OUT/remedy, and OUT/compare.*")
    ] = Path("runs/demo"),
    shortcut: Annotated[str, typer.Option(help=SHORTCUT_HELP)] = "marker",
    n_per_class: Annotated[
        int, typer.Option(help="Phantoms per class in Training and in Testing.")
    ] = 100,
    phantom_size: Annotated[int, typer.Option(help="Phantom side in pixels.")] = 128,
    image_size: Annotated[int, typer.Option(help="Model input side in pixels.")] = 96,
    epochs: Annotated[int, typer.Option(help="Training epochs of each run.")] = 10,
    penalty: Annotated[
        float, typer.Option(help="The remedy's --attention-penalty; 0 skips the remedy run.")
    ] = 5.0,
    seed: Annotated[int, typer.Option(help="Seed of the phantoms and the split.")] = 1,
    train_seed: Annotated[int, typer.Option(help="Seed of the training.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Reuse OUT although it was made with other settings.")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars inside stages.")
    ] = False,
) -> None:
    """Train on phantoms with a planted shortcut, audit, retrain with a remedy, compare."""
    from rich.console import Console

    from braincam.data.synthetic import SHORTCUTS
    from braincam.errors import BraincamError
    from braincam.pipeline import DemoSettings, run_demo
    from braincam.pipeline.demo import demo_lines

    if shortcut != "none" and shortcut not in SHORTCUTS:
        raise BraincamError(f"--shortcut must be none or one of {', '.join(SHORTCUTS)}")
    if n_per_class < 4 or min(image_size, phantom_size) < 32 or epochs < 1 or penalty < 0:
        raise BraincamError("--n-per-class must be >= 4, --image-size and --phantom-size "
                            ">= 32, --epochs >= 1 and --penalty >= 0")
    settings = DemoSettings(
        shortcut=None if shortcut == "none" else shortcut, n_per_class=n_per_class,
        phantom_size=phantom_size, image_size=image_size, epochs=epochs, penalty=penalty,
        seed=seed, train_seed=train_seed, device=device,
        progress=progress,
    )
    console = Console()
    demo = run_demo(out, settings, force=force, console=console)
    console.rule("what the audits found", align="left", characters="=")
    for line in demo_lines(demo):
        console.print(line, highlight=False)
    if demo.comparison is not None:
        console.print(demo.comparison.to_table())
        console.print(f"comparison: {out / 'compare.png'}", highlight=False, soft_wrap=True)
