"""Options that several commands share, each defined once.

The training options of ``train`` and ``run`` come from ``braincam.train.options``
(``TRAIN_OPTIONS``: default, help, panel, choices) through :func:`with_training_options`;
:func:`train_config` turns a command's parsed options into a ``TrainConfig``. Renamed options
keep their old spelling as a hidden alias for one release (:func:`merged`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from braincam.train.options import DATA, PANELS, RUNTIME, TRAIN_OPTIONS

DataDirs = Annotated[
    list[Path],
    typer.Argument(help="Dataset folder(s): ROOT/CLASS/ or ROOT/SPLIT/CLASS/.",
                   show_default=False),
]
ExtraData = Annotated[
    list[Path] | None,
    typer.Option("--data", help="Extra dataset folder scored cross-dataset (braincam run "
                 "also explains and audits it); repeatable.", rich_help_panel=DATA,
                 show_default=False),
]
ExtraAlias = Annotated[
    list[Path] | None, typer.Option("--extra", hidden=True, help="Old name of --data."),
]
Device = Annotated[
    str, typer.Option(help=TRAIN_OPTIONS["device"].help, rich_help_panel=RUNTIME),
]
Progress = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show progress bars.",
                       rich_help_panel=RUNTIME),
]


def given(ctx: typer.Context, name: str, sources: tuple[str, ...] = ("COMMANDLINE",)) -> bool:
    """Whether option ``name`` came from one of ``sources`` (by default the command line)
    rather than its default. The source is compared by name: Typer ships its own copy of
    click, whose ``ParameterSource`` is another class."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in sources


def merged(new: list[Any] | None, old: list[Any] | None) -> list[Any]:
    """The values of a renamed repeatable option and of its hidden old spelling, together."""
    return [*(new or []), *(old or [])]


def parse_methods(text: str) -> tuple[str, ...]:
    """``--methods "gradcam, ig"`` -> ``("gradcam", "ig")`` (order kept, repeats dropped)."""
    return tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))


def training_parameters(**defaults: Any) -> list[inspect.Parameter]:
    """One keyword parameter per training option, Typer-annotated (help, panel, enum
    choices); ``defaults`` replace a shared default for one command (``run`` splits
    ``dedup``)."""
    unknown = set(defaults) - set(TRAIN_OPTIONS)
    if unknown:
        raise ValueError(f"not training options: {', '.join(sorted(unknown))}")
    params = []
    for name, option in TRAIN_OPTIONS.items():
        decls = [option.switch] if option.switch else []
        info = typer.Option(*decls, help=option.help, rich_help_panel=option.panel)
        params.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[option.type, info],
            default=defaults.get(name, option.default),
        ))
    return params


def with_training_options(**defaults: Any) -> Callable[[Callable], Callable]:
    """Decorator: the command gets every training option after its own parameters; the
    function receives them through ``**options`` (read them with :func:`train_config`)."""

    def decorate(func: Callable) -> Callable:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        params = _panel_order([*own, *training_parameters(**defaults)])
        func.__signature__ = inspect.Signature(params, return_annotation=None)
        func.__annotations__ = {p.name: p.annotation for p in params}
        return func

    return decorate


def _panel_order(params: list[inspect.Parameter]) -> list[inspect.Parameter]:
    """Parameters grouped by help panel (``--help`` shows panels in the order of their first
    option): those without a panel first, then ``PANELS`` in order, a command's own panels
    before the last (runtime). All become keyword-only (Typer passes them by name), so that
    defaults may come in any order."""
    def panel(param: inspect.Parameter) -> str | None:
        infos = getattr(param.annotation, "__metadata__", ())
        return next((i.rich_help_panel for i in infos if hasattr(i, "rich_help_panel")), None)

    order = [None, *PANELS[:-1], *(panel(p) for p in params), PANELS[-1]]
    rank = {name: i for i, name in reversed(list(enumerate(order)))}
    return [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in sorted(params, key=lambda p: rank[panel(p)])]


def train_config(params: Mapping[str, Any]):  # -> TrainConfig
    """The ``TrainConfig`` of a command's parsed options (``ctx.params``): each training
    option sets its ``TrainConfig`` field, or its ``PreprocessConfig`` field; enum choices
    become their plain strings; other options are not training's."""
    from braincam.data.preprocess import PreprocessConfig
    from braincam.train import TrainConfig

    values = {name: _plain(params[name]) for name in TRAIN_OPTIONS if name in params}
    preprocess = {TRAIN_OPTIONS[name].preprocess: values.pop(name)
                  for name in list(values) if TRAIN_OPTIONS[name].preprocess}
    return TrainConfig(preprocess=PreprocessConfig(**preprocess), **values)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value
