"""The ``braincam`` command line: a thin layer over the library.

Each command lives in ``braincam.commands.<name>`` and is registered here. A
:class:`~braincam.errors.BraincamError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import errno
import logging
import signal
import sys

import typer

from braincam.allocator import keep_freed_memory
from braincam.commands import (
    audit,
    audit_data,
    bench,
    compare,
    cv,
    demo,
    ensemble,
    evaluate,
    explain,
    info,
    predict,
    radiomics,
    report,
    run,
    segment,
    serve,
    train,
)
from braincam.errors import BraincamError
from braincam.runs import replacing

try:  # recent Typer vendors click: its usage errors are not click's classes
    from typer._click.exceptions import ClickException as UsageErrors
    from typer._click.exceptions import NoArgsIsHelpError
except ImportError:  # older Typer uses click itself
    from click import ClickException as UsageErrors
    from click.exceptions import NoArgsIsHelpError

INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C (128 + SIGINT)
RESUMES = {"run": "its finished stages", "cv": "its finished folds"}  # on the same command


def interrupted_message(command: str | None) -> str:
    """What Ctrl-C leaves: ``braincam run`` and ``cv`` resume when given the same command."""
    if command in RESUMES:
        return f"interrupted (the same braincam {command} command resumes from {RESUMES[command]})"
    return "interrupted"

app = typer.Typer(
    name="braincam",
    help="Train brain-MRI tumour classifiers, explain them, and audit them for shortcuts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # paragraphs reflow: a docstring line break is no help break
)
app.command("info")(info.command)
app.command("train")(train.command)
app.command("evaluate")(evaluate.command)
app.command("ensemble")(ensemble.command)
app.command("explain")(explain.command)
app.command("predict")(predict.command)
app.command("audit-data")(audit_data.command)
app.command("audit")(audit.command)
app.command("run")(run.command)
app.command("demo")(demo.command)
app.command("report")(report.command)
app.command("compare")(compare.command)
app.command("segment")(segment.command)
app.command("cv")(cv.command)
app.command("serve")(serve.command)
app.command("radiomics")(radiomics.command)
app.add_typer(bench.app, name="bench")


TORCHRUN_COMMANDS = ("train", "segment", "explain", "predict")
"""The commands that share their work between torchrun's processes; the others would run once
in each process, writing the same files."""


def _command(args: list[str]) -> str | None:
    """The command named on the command line (its first word that is not an option)."""
    return next((a for a in args if not a.startswith("-")), None)


def _check_torchrun(args: list[str]) -> None:
    """Under torchrun (``WORLD_SIZE`` > 1), a command of one process is a one-line error."""
    import os

    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return
    command = _command(args)
    if world > 1 and command is not None and command not in TORCHRUN_COMMANDS:
        raise BraincamError(f"braincam {command} runs in one process; start it without "
                            f"torchrun ({', '.join(TORCHRUN_COMMANDS)} run under torchrun)")


_ENVIRONMENT_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def main() -> None:
    """Entry point: run the app, turning known errors into one-line messages.

    Not Typer's standalone mode, which ends the process inside the app: a command must
    return normally (torchrun ranks shut their process group down first)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    keep_freed_memory()  # CPU batches reuse freed memory (braincam.allocator)
    # `kill` and `timeout` end a command through its cleanup, as Ctrl-C does
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        _check_torchrun(sys.argv[1:])
        # what --force replaces comes back unless the command succeeds; run and cv keep what
        # they finished, to resume from it
        with replacing(_command(sys.argv[1:]) not in RESUMES) as outcome:
            result = app(standalone_mode=False)
            code = result if isinstance(result, int) else 0
            outcome[0] = code == 0
        if code == INTERRUPTED:  # Typer turns Ctrl-C into this exit code
            typer.echo(interrupted_message(_command(sys.argv[1:])), err=True)
    except BraincamError as exc:
        typer.echo(f"error: {exc}", err=True)
        code = 2
    except NoArgsIsHelpError as exc:  # a command given nothing: its help
        exc.show()
        code = exc.exit_code
    except UsageErrors as exc:  # the option parser's: one line, like braincam's own errors
        typer.echo(f"error: {_usage_line(exc)}", err=True)
        code = exc.exit_code
    except OSError as exc:  # a folder it may not write, a full disk: the system's words
        if exc.errno not in _ENVIRONMENT_ERRORS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror}", err=True)
        code = 2
    except (typer.Abort, EOFError):
        code = 1
    except KeyboardInterrupt:
        typer.echo(interrupted_message(_command(sys.argv[1:])), err=True)
        code = INTERRUPTED
    signal.signal(signal.SIGTERM, previous)
    # a torchrun rank that left its process group skips the interpreter's teardown; the module
    # is looked up, not imported, so that commands without torch stay without it
    distributed = sys.modules.get("braincam.distributed")
    if distributed is not None:
        distributed.exit_process(code)
    sys.exit(code)


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM ends a command as Ctrl-C does, through its cleanup: without it the process
    would die with an old output still set aside (:func:`braincam.runs.replacing`)."""
    raise KeyboardInterrupt


def _usage_line(exc: Exception) -> str:
    """A usage error as one line, pointing at the command's ``--help``."""
    text = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    return f"{text} (see {ctx.command_path} --help)" if ctx is not None else text
