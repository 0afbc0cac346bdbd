"""``braincam evaluate RUN [--data EXTRA ...]``: metrics of a trained run on its test split,
the leak-free part of it and extra (cross-dataset) folders; ``braincam evaluate SPEC --data
DATA --out DIR``: metrics of a model braincam did not train (docs/foreign-models.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from braincam.commands.spec_options import SpecTask


def command(
    run: Annotated[Path, typer.Argument(help="Run directory written by `braincam train`, or a "
                                        "model spec (.yaml) of a model braincam did not train.")],
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data",
            help="Extra dataset folder scored as a whole (cross-dataset); repeat for several.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default RUN; required "
                                  "with a model spec).")
    ] = None,
    task: SpecTask = None,
    split: Annotated[
        str | None, typer.Option(help="Model spec only: score only this official split of "
                                 "the --data folders (e.g. test).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing metrics.json.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per inference batch.")] = 64,
    n_boot: Annotated[
        int, typer.Option(help="Bootstrap resamples for the 95% intervals (0: none).")
    ] = 1000,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = True,
) -> None:
    """Score RUN's model; write metrics.json, predictions.csv and confusion/ROC figures."""
    from braincam.commands.spec_options import spec_output
    from braincam.errors import BraincamError
    from braincam.evaluate import evaluate_run
    from braincam.evaluate.foreign import evaluate_spec

    if batch_size < 1:
        raise BraincamError(f"--batch-size must be >= 1, got {batch_size}")
    if n_boot < 0:
        raise BraincamError(f"--n-boot must be >= 0, got {n_boot}")
    spec_out = spec_output(run, out, task=task, split=split)
    if spec_out is not None:
        metrics = evaluate_spec(
            run, data or [], spec_out, task=task, split=split, force=force, device=device,
            batch_size=batch_size, n_boot=n_boot, progress=progress,
        )
    else:
        metrics = evaluate_run(
            run, data or [], force=force, device=device, batch_size=batch_size, n_boot=n_boot,
            progress=progress, out_dir=out,
        )
    for line in metrics_lines(metrics):
        typer.echo(line)
    typer.echo(f"wrote {(spec_out or out or run) / 'metrics.json'}")


def score_text(value: float | None) -> str:
    """A score as printed on the command line: three decimals, ``-`` when missing."""
    return "-" if value is None else f"{value:.3f}"


def metrics_lines(metrics: dict[str, Any]) -> list[str]:
    """One line per evaluated set: n, accuracy, balanced accuracy and AUC with intervals."""
    from braincam.evaluate.run import extra_rows

    sets = [("test", metrics.get("test")), ("test (leak-free)", metrics.get("test_leak_free"))]
    sets += [(name, m) for name, _, m in extra_rows(metrics)]
    return [f"{name}: {_summary(m)}" for name, m in sets if m]


def _summary(m: dict[str, Any]) -> str:
    parts = [f"n={m['n']}"]
    for key, label in (("accuracy", "acc"), ("balanced_accuracy", "bal.acc"), ("auc", "AUC")):
        if m.get(key) is None:
            continue
        ci = m.get("ci", {}).get(key)
        interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        parts.append(f"{label} {m[key]:.3f}{interval}")
    grouped = (m.get("ci_groups") or {}).get("balanced_accuracy")
    if grouped and m.get("n_groups", m["n"]) < m["n"]:  # the interval copies do not narrow
        parts.append(f"bal.acc [{grouped[0]:.3f}, {grouped[1]:.3f}] over {m['n_groups']} "
                     "groups")
    present = [c for c, row in m.get("per_class", {}).items() if row.get("support")]
    if len(present) == 1:  # balanced accuracy is then that class's recall
        parts.append(f"{present[0]} images only")
    return ", ".join(parts)
