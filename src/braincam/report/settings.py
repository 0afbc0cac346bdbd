"""The bottom of the report: the exact command, library versions and run settings,
all from config.yaml, plus what built the report."""

from __future__ import annotations

import platform
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from braincam.report.fmt import flatten
from braincam.report.sources import Part, read_yaml_part
from braincam.runs import RunDir

COMMAND_KEYS = ("command", "argv", "cli")
VERSION_KEYS = ("versions", "environment")


@dataclass
class SettingsSection:
    part: Part
    command: str | None = None
    versions: list[tuple[str, Any]] = field(default_factory=list)
    settings: list[tuple[str, Any]] = field(default_factory=list)
    built: str = ""


def collect_settings(run: RunDir) -> SettingsSection:
    part, config = read_yaml_part(run, run.config, "run settings")
    built = (
        f"Report built {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by braincam "
        f"{_braincam_version()} on Python {platform.python_version()}."
    )
    section = SettingsSection(part, built=built)
    if config is None:
        return section
    rest = dict(config)
    for key in COMMAND_KEYS:
        if key in rest:
            value = rest.pop(key)
            if isinstance(value, list):
                section.command = shlex.join(map(str, value))
            elif value:
                section.command = str(value)
            break
    for key in VERSION_KEYS:
        if isinstance(rest.get(key), dict):
            section.versions = flatten(rest.pop(key))
            break
    section.settings = flatten(rest)
    return section


def _braincam_version() -> str:
    try:
        return metadata.version("braincam")
    except metadata.PackageNotFoundError:
        return "(not installed)"
