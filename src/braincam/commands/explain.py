"""``braincam explain RUN [IMAGES...]``: maps of a trained run's model for image files, a
dataset folder, or (by default) the run's own test split. RUN may be a model spec (a model
braincam did not train, docs/foreign-models.md) with ``--out DIR`` playing the run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from braincam.commands.spec_options import SpecTask

if TYPE_CHECKING:
    from braincam.explain.files import ImageItem

METHOD_HELP = (
    "gradcam, gradcam++, xgradcam, hirescam, layercam (gradient CAMs); scorecam, ablationcam, "
    "eigencam (pytorch-grad-cam, slow except eigencam); ig (integrated gradients); occlusion."
)


def command(
    run: Annotated[Path, typer.Argument(help="Run directory written by `braincam train`, or a "
                                        "model spec (.yaml) of a model braincam did not train.")],
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Image files to explain (default: --data, else the run's split)."),
    ] = None,
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="Dataset folder(s) to explain instead; repeatable."),
    ] = None,
    split: Annotated[
        str,
        typer.Option(help="train, val, test or all: which images of the run's split.csv (or "
                     "of --data's split folders; class-folder datasets are used whole)."),
    ] = "test",
    methods: Annotated[
        str | None, typer.Option(help="Explanation methods, comma-separated (default gradcam): "
                                 + METHOD_HELP, show_default=False)
    ] = None,
    method: Annotated[
        str | None, typer.Option("--method", hidden=True, help="Old name of --methods.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default "
                                  "RUN/explain/METHOD; with several methods OUT/METHOD). "
                                  "Required with a model spec, where it plays the run "
                                  "directory: the files go to OUT/explain/METHOD.")
    ] = None,
    task: SpecTask = None,
    layer: Annotated[
        str | None,
        typer.Option(help="CAM target layer (module name); default per architecture."),
    ] = None,
    target: Annotated[
        str, typer.Option(help="Class explained: pred (prediction), label (true class) or a "
                          "class name.")
    ] = "pred",
    batch_size: Annotated[int, typer.Option(help="Images per explanation batch.")] = 16,
    overlays: Annotated[
        bool, typer.Option("--overlays/--no-overlays", help="Write overlay PNGs.")
    ] = True,
    window: Annotated[
        int | None, typer.Option(help="Occlusion window side, px  [default: 32, or the model "
                                 "input's side where smaller]", show_default=False),
    ] = None,
    stride: Annotated[
        int | None, typer.Option(help="Occlusion stride, px  [default: 16, or the window where "
                                 "smaller]", show_default=False),
    ] = None,
    fill: Annotated[str, typer.Option(help="Occlusion fill: zero, mean or blur.")] = "zero",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing explanations in --out.")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")
    ] = True,
) -> None:
    """Explain RUN's model: explanations.npz, overlay PNGs and skipped.csv per method.

    Runs under torchrun --nproc_per_node=N too: each process explains a share.
    """
    import torch

    from braincam import distributed
    from braincam.commands.spec_options import spec_output
    from braincam.commands.training_options import parse_methods
    from braincam.data.preprocess import preprocess_config
    from braincam.errors import BraincamError
    from braincam.explain import METHODS, find_layer
    from braincam.explain.files import OVERLAY_DIR, explain_files, target_indices
    from braincam.models import load_checkpoint, read_meta, require_single_model
    from braincam.runs import (
        EXPLANATIONS_NPZ,
        SKIPPED_CSV,
        RunDir,
        check_outside_data,
        named_data_roots,
        no_empty_folder_on_failure,
        prepare_output_dir,
    )

    chosen = parse_methods(",".join(m for m in (methods, method) if m)) or ("gradcam",)
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise BraincamError(f"unknown method {unknown[0]!r}; choose one of {', '.join(METHODS)}")
    if batch_size < 1:
        raise BraincamError("--batch-size must be >= 1")
    spec_out = spec_output(run, out, task=task)
    if spec_out is not None and not (images or data):
        raise BraincamError("a model spec has no split of its own; give IMAGES or --data")
    if spec_out is None:
        rundir = RunDir(Path(run))
        if not rundir.model.is_file():
            raise BraincamError(f"{run} holds no model.safetensors; train a model there first")
        require_single_model(read_meta(rundir.model), run)
    ctx, torch_device = distributed.setup(device)
    if spec_out is not None:  # OUT plays the run directory
        rundir = RunDir(spec_out)
    else:
        model, meta = load_checkpoint(rundir.model, device=torch_device)
        prep = preprocess_config(meta)
        classes, task_name = meta["classes"], meta.get("task", "multiclass")
        if layer:
            find_layer(model, layer)  # before any folder is made
    unread: list = []  # IMAGES that cannot be read, listed in every method's skipped.csv
    items = _items(rundir, images or [], data or [], split, unread)
    out_dirs = {name: rundir.explain / name if spec_out is not None or out is None
                else out / name if len(chosen) > 1 else out for name in chosen}
    own = named_data_roots([rundir.root]) if spec_out is None else []
    for out_dir in out_dirs.values():  # every method's folder, before any is written
        check_outside_data(out_dir, [*(data or []), *own])
        if (out_dir / EXPLANATIONS_NPZ).exists() and not force:
            raise BraincamError(f"{out_dir} already holds {EXPLANATIONS_NPZ}; pass --force to "
                                "overwrite it")
    foreign = _load_spec(run, task) if spec_out is not None else None
    adapters = ({name: _spec_model(foreign, name, torch_device) for name in chosen}
                if foreign is not None else {})  # each method's check before any file
    if adapters and layer:  # the spec's layer names, checked as given, then inside the adapter
        nets = [getattr(net, "net", None) for net, *_ in adapters.values()]
        for inner in (n for n in nets if isinstance(n, torch.nn.Module)):
            find_layer(inner, layer)
        layer = f"net.{layer}"
    if adapters:
        _, _, classes, task_name = next(iter(adapters.values()))
    target_indices(items, target, list(classes), task_name)  # a bad --target: before any file
    if "occlusion" in chosen:  # so are bad occlusion options
        _occlusion(window, stride, fill, (adapters["occlusion"][1] if adapters else prep).size)
    summaries = []
    with no_empty_folder_on_failure(*{d.parent for d in out_dirs.values()}, *out_dirs.values()):
        for name, out_dir in out_dirs.items():
            if spec_out is not None:
                model, prep, classes, task_name = adapters[name]
            with distributed.main_first(ctx):
                if ctx.is_main:
                    prepare_output_dir(out_dir, force=force, marker=EXPLANATIONS_NPZ,
                                       reads=[run, *(images or []), *(data or [])],
                                       owned=(EXPLANATIONS_NPZ, SKIPPED_CSV, OVERLAY_DIR))
            summaries.append((name, explain_files(
                model, items, prep, list(classes), task_name, out_dir, method=name,
                layer=layer, target=target, batch_size=batch_size, overlays=overlays,
                options=_occlusion(window, stride, fill, prep.size),
                progress=progress, unread=unread,
            )))
    distributed.shutdown()  # the other processes exit here
    for name, summary in summaries:
        typer.echo(
            f"explained {summary.n_explained} images with {name} in {summary.seconds:.1f} s; "
            f"{summary.n_overlays} overlays, {len(summary.skipped)} skipped"
        )
        for skipped in summary.skipped:
            typer.echo(f"  skipped {skipped.path}: {skipped.reason}", err=True)
        typer.echo(f"wrote {summary.file}")


def _load_spec(spec: Path, task: str | None):
    """The model of a spec, loaded and checked once for every method."""
    from braincam.models.foreign import load_foreign, load_spec

    return load_foreign(load_spec(spec), task)


def _spec_model(foreign, method: str, device):
    """A model spec's adapter for ``method`` on ``device`` (BraincamError when the method
    cannot run on it), its preprocessing, classes and task."""
    net = foreign.for_method(method).to(device)
    return net, foreign.preprocess_config(), foreign.classes, foreign.task


def _items(run, images: list[Path], data: list[Path], split: str,
           unread: list) -> list[ImageItem]:
    """What to explain: IMAGES (each slice of a volume or series, as ``braincam predict``
    reads them), else --data (by folder split), else the run's split.csv. Files that cannot be
    read go to ``unread``."""
    from braincam.data.inputs import expand_inputs
    from braincam.data.records import load_dataset
    from braincam.errors import BraincamError
    from braincam.explain.files import ImageItem

    if split not in ("train", "val", "test", "all"):
        raise BraincamError("--split must be train, val, test or all")
    if images:
        if data:
            raise BraincamError("give image files or --data, not both")
        slices = expand_inputs(images, skipped=unread)
        if not slices:
            raise BraincamError(f"no input could be read (first: {unread[0].path}: "
                                f"{unread[0].reason})")
        return [ImageItem(s.file.absolute(), slice=s.index) for s in slices]
    if data:
        dataset = load_dataset(data)
        unread += _unread_images(dataset.skipped, data, split)
        records = dataset.records
        if split != "all":
            records = [r for r in records if r.split in (split, None)]
        if not records:
            raise BraincamError(f"no {split} images in {', '.join(map(str, data))}")
    else:
        records = _run_split_records(run, split)
    return [ImageItem.of(r) for r in records]


def _unread_images(skipped: list, roots: list[Path], split: str) -> list:
    """The entries of ``skipped`` (a dataset's) that are images of ``split`` left out: not
    mask files (their image is kept without the mask), nor files of another split folder."""
    import os

    from braincam.data.records import MASKS_DIR, split_name

    out = []
    for entry in skipped:
        for root in roots:
            parts = Path(os.path.relpath(os.path.abspath(entry.path), os.path.abspath(root))).parts
            if parts[0] == "..":
                continue
            mask = parts[0].lower() == MASKS_DIR
            folder = split_name(parts[0]) if len(parts) > 1 else None
            if not mask and (split == "all" or folder in (split, None)):
                out.append(entry)
            break
    return out


def _run_split_records(run, split: str) -> list:
    """The records of the run's data roots (config.yaml) listed in its split.csv under
    ``split`` (every listed image for ``all``)."""
    from braincam.data.records import records_at
    from braincam.errors import BraincamError

    paths = run.split_paths(split)
    if not paths:
        raise BraincamError(f"{run.split} lists no {split} images; give IMAGES or --data")
    return records_at(run.data_roots(), paths, run.split)


def _occlusion(window: int | None, stride: int | None, fill: str, side: int):
    """The occlusion options as given, the defaults cut to a small model input's side;
    BraincamError for a window, stride or fill that occlusion would refuse."""
    from braincam.explain import ExplainOptions
    from braincam.explain.occlusion import check_fill, check_window

    default = ExplainOptions()
    window = window if window is not None else min(default.window, side)
    stride = stride if stride is not None else min(default.stride, window)
    check_window(side, side, window, stride)
    check_fill(fill)
    return ExplainOptions(window=window, stride=stride, fill=fill)
