"""Reading a run's files without ever failing: each part is present, missing or broken.

A run may be in progress or have stages skipped, so every reader returns a
:class:`Part` saying what happened plus the data (or ``None``). The report
shows what exists and says what is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from braincam.runs import RunDir

OK = "ok"
NOT_RUN = "not run"
UNREADABLE = "unreadable"
NOT_APPLICABLE = "does not apply"  # a stage this kind of run never has (``detail``: why)


@dataclass(frozen=True)
class Part:
    """One file of the run as the report found it.

    ``status`` is ``ok``, ``not run`` (the file is absent), ``unreadable`` (present but not
    parseable, or of the wrong shape; ``detail`` says why) or ``does not apply`` (a stage
    this kind of run never has, such as an ensemble's training history; ``detail`` says why).
    """

    name: str
    relpath: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def note(self) -> str:
        """One sentence for the report, e.g. ``Model audit: not run (audit/audit.json ...)``."""
        name = self.name[:1].upper() + self.name[1:]
        if self.status == NOT_RUN:
            return f"{name}: not run ({self.relpath} is missing)."
        if self.status == UNREADABLE:
            return f"{name}: {self.relpath} could not be read ({self.detail})."
        if self.status == NOT_APPLICABLE:
            return f"{name}: does not apply ({self.detail})."
        return f"{name}: {self.relpath}."

    def not_applicable(self, why: str) -> Part:
        """This part, marked as one this kind of run never has, where its file is absent."""
        return Part(self.name, self.relpath, NOT_APPLICABLE, why) if self.status == NOT_RUN \
            else self


def read_json_part(run: RunDir, path: Path, name: str) -> tuple[Part, dict[str, Any] | None]:
    """A JSON object file of ``run`` (a ``RunDir`` path); anything but a JSON object counts as
    unreadable."""
    return _read(run, path, name, load_json_object)


def read_yaml_part(run: RunDir, path: Path, name: str) -> tuple[Part, dict[str, Any] | None]:
    """A YAML mapping file (config.yaml)."""
    return _read(run, path, name, _load_yaml)


def read_csv_part(run: RunDir, path: Path, name: str) -> tuple[Part, pd.DataFrame | None]:
    """A CSV file with a header row; an empty file (no columns) counts as unreadable."""
    return _read(run, path, name, pd.read_csv)


def _read(run: RunDir, path: Path, name: str, loader: Any) -> tuple[Part, Any]:
    relpath = path.relative_to(run.root).as_posix()
    if not path.is_file():
        return Part(name, relpath, NOT_RUN), None
    try:
        data = loader(path)
    except Exception as exc:  # any parse error is reported, never raised
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Part(name, relpath, UNREADABLE, reason[:200]), None
    return Part(name, relpath, OK), data


def load_json_object(path: Path) -> dict[str, Any]:
    """A JSON object file; ValueError when it holds anything else or is not JSON."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {type(data).__name__}")
    return data


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"expected a YAML mapping, found {type(data).__name__}")
    return data
