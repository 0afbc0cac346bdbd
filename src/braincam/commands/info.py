"""``braincam info``: versions, device, architectures and which weights work offline."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer


def command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show versions, the compute device, architectures and offline ImageNet weights."""
    facts = gather()
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if k != "platform")
    typer.echo(f"versions: {versions}")
    typer.echo(f"platform: {facts['versions']['platform']}")
    typer.echo(f"device: {facts['device']} ({facts['device_name']}); "
               f"CPU threads: {facts['cpu_threads']}")
    typer.echo(f"architectures: {', '.join(facts['architectures'])} "
               f"(or any of {facts['timm_models']} timm model names)")
    for arch, where in facts["offline_weights"].items():
        status = f"available offline ({where})" if where else (
            "not cached: downloaded on first use; offline use --weights none "
            "or --arch efficientnet_lite0"
        )
        typer.echo(f"ImageNet weights for {arch}: {status}")


def gather() -> dict[str, Any]:
    """The facts ``info`` prints, as a dict."""
    import timm
    import torch

    from braincam.device import resolve_device
    from braincam.models import KNOWN_ARCHS, offline_weights
    from braincam.models.weights import LITE_PACKAGES
    from braincam.runs import versions

    device = resolve_device("auto")
    if device.type == "cuda":
        count = torch.cuda.device_count()
        name = f"{torch.cuda.get_device_name(device)}, {count} GPU(s), CUDA {torch.version.cuda}"
    else:
        name = "no CUDA device"
    return {
        "versions": versions(),
        "device": str(device),
        "device_name": name,
        "cpu_threads": torch.get_num_threads(),
        "architectures": list(KNOWN_ARCHS),
        "timm_models": len(timm.list_models()),
        "offline_weights": {arch: offline_weights(arch)
                            for arch in dict.fromkeys([*KNOWN_ARCHS, *LITE_PACKAGES])},
    }
