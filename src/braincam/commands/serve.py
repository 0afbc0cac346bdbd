"""``braincam serve RUN``: a local web page (and ``POST /api/predict``) for a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from braincam.commands.explain import METHOD_HELP


def command(
    run: Annotated[Path, typer.Argument(help="Run directory written by `braincam train`.")],
    segment: Annotated[
        Path | None,
        typer.Option(help="Segmentation run (braincam segment): the overlay also outlines "
                     "the predicted tumour (magenta) and the page shows its area."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; the default answers this computer only.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_upload_mb: Annotated[
        float, typer.Option(help="Largest accepted upload, MiB (bigger ones get 413).")
    ] = 64.0,
    method: Annotated[str, typer.Option(help=f"Overlay method: {METHOD_HELP}")] = "gradcam",
) -> None:
    """Serve RUN's model on a local web page and a JSON API.

    Drop an image, DICOM file or NIfTI volume on the page and see the prediction,
    probabilities, warnings and the explanation overlay (with --segment, the predicted
    tumour's outline and area too).
    """
    import uvicorn

    import braincam
    from braincam.errors import BraincamError
    from braincam.explain import METHODS
    from braincam.serve import ServeSettings, create_app

    if method not in METHODS:
        raise BraincamError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if max_upload_mb <= 0:
        raise BraincamError("--max-upload-mb must be > 0")
    if not 1 <= port <= 65535:
        raise BraincamError("--port must be between 1 and 65535")
    model = braincam.load(run, segment=segment)
    _ = model.reference  # the out-of-distribution check: calibrated now, not on an upload
    settings = ServeSettings(max_upload=int(max_upload_mb * (1 << 20)), method=method)
    app = create_app(model, settings)
    typer.echo(f"serving {run} on http://{_url_host(host)}:{port}/ (Ctrl+C stops)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: listening on {host}: other computers can reach this page",
                   err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
