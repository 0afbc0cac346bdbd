"""``braincam serve RUN``: a local web page (and ``POST /api/predict``) for a trained run."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Annotated

import typer

from braincam.commands.explain import METHOD_HELP
from braincam.errors import BraincamError


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
    max_megapixels: Annotated[
        float, typer.Option(help="Largest accepted image or slice, megapixels (bigger ones "
                            "get 413).")
    ] = 25.0,
    method: Annotated[str, typer.Option(help=f"Overlay method: {METHOD_HELP}")] = "gradcam",
    ood: Annotated[
        bool,
        typer.Option("--ood/--no-ood", help="Out-of-distribution and duplicate warnings "
                     "(calibrated at start on the run's training images, cached in RUN)."),
    ] = True,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Serve RUN's model on a local web page and a JSON API.

    Drop an image, DICOM file or NIfTI volume on the page and see the prediction,
    probabilities, warnings and the explanation overlay (with --segment, the predicted
    tumour's outline and area too).
    """
    import uvicorn

    import braincam
    from braincam.device import device_of
    from braincam.serve import ServeSettings, create_app

    limits = {"--max-upload-mb": max_upload_mb * (1 << 20),
              "--max-megapixels": max_megapixels * 1e6}
    for option, value in limits.items():
        if not (math.isfinite(value) and value >= 1):
            raise BraincamError(f"{option} must be a positive, finite number")
    settings = ServeSettings(max_upload=int(limits["--max-upload-mb"]), method=method,
                             max_pixels=int(limits["--max-megapixels"]))
    settings.validate()  # an unknown method
    if not 1 <= port <= 65535:
        raise BraincamError("--port must be between 1 and 65535")
    torch_device = device_of(device)  # an unknown or absent device: before the port is taken
    sock = _listen(host, port)  # before the slow start: a busy port is an error at once
    model = braincam.load(run, segment=segment, device=torch_device, ood=ood)
    if ood:
        _ = model.reference  # the out-of-distribution check: calibrated now, not on an upload
    app = create_app(model, settings)
    typer.echo(f"serving {run} on http://{_url_host(host)}:{port}/ (Ctrl+C stops)")
    if not _loopback(host):
        typer.echo(f"warning: listening on {host}: other computers can reach this page",
                   err=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def _loopback(host: str) -> bool:
    """Whether ``host`` names this computer only: ``localhost`` or an address of 127.0.0.0/8
    or ``::1``."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name
        return False


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``; an address that cannot be bound (in use, unknown
    host, no permission) is a one-line error."""
    try:
        return socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:  # socket.create_server appends the address to the reason
        reason = (exc.strerror or str(exc)).split(" (while attempting")[0]
        raise BraincamError(f"cannot listen on {_url_host(host)}:{port} ({reason})") from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
