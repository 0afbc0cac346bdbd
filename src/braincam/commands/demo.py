"""``braincam demo``: the whole pipeline on phantoms generated on the fly, with a planted
shortcut the audits should catch; offline, a few minutes on a laptop CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SHORTCUT_HELP = ("Shortcut planted on the no_tumor phantoms: marker (a white corner square), "
                 "contrast, size, brightness, duplicates, or none.")


def command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run directory; the phantoms go to OUT/phantoms.")
    ] = Path("runs/demo"),
    shortcut: Annotated[str, typer.Option(help=SHORTCUT_HELP)] = "marker",
    n_per_class: Annotated[
        int, typer.Option(help="Phantoms per class in Training and in Testing.")
    ] = 40,
    image_size: Annotated[int, typer.Option(help="Phantom and model input side in pixels.")] = 64,
    head_epochs: Annotated[int, typer.Option(help="Phase 1 (head) epochs.")] = 4,
    finetune_epochs: Annotated[int, typer.Option(help="Phase 2 (fine-tuning) epochs.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the phantoms, split and training.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Reuse OUT although it was made with other settings.")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars inside stages.")
    ] = True,
) -> None:
    """Run the pipeline on phantoms with a planted shortcut and show what the audits found."""
    from rich.console import Console

    from braincam.data.synthetic import SHORTCUTS
    from braincam.errors import BraincamError
    from braincam.pipeline import DemoSettings, print_summary, run_demo
    from braincam.pipeline.demo import demo_lines

    if shortcut != "none" and shortcut not in SHORTCUTS:
        raise BraincamError(f"--shortcut must be none or one of {', '.join(SHORTCUTS)}")
    if n_per_class < 4 or image_size < 32:
        raise BraincamError("--n-per-class must be >= 4 and --image-size >= 32")
    settings = DemoSettings(
        shortcut=None if shortcut == "none" else shortcut, n_per_class=n_per_class,
        image_size=image_size, head_epochs=head_epochs, finetune_epochs=finetune_epochs,
        seed=seed, device=device, progress=progress,
    )
    console = Console()
    demo = run_demo(out, settings, force=force, console=console)
    print_summary(demo.pipeline, console, findings=False)
    console.rule("what the audits found", align="left")
    for line in demo_lines(demo):
        console.print(line, highlight=False)
