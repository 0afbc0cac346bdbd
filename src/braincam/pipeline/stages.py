"""Stage markers: what makes ``braincam run`` resumable.

Each finished stage writes ``RUN/.stages/<stage>.json`` holding a *fingerprint*: the SHA-256
of the canonical JSON (sorted keys) of everything that decides the stage's output -- its
options, the fingerprints of the stages it reads from, and the listing of the data files it
reads (relative path, size, mtime in ns), and of a ``--guide`` segment run its model file's
size and mtime. A stage whose marker holds the fingerprint it would have now, whose outputs
all exist and none of whose input stages ran again in this command, is skipped; any changed
input gives a new fingerprint, and since a stage's fingerprint includes those of its inputs,
everything downstream is redone too: with ``--force`` only, since that replaces finished work
(``check_run_dir``).

A stage's marker is removed before the stage starts and written after it finished, so an
interrupted stage (Ctrl-C, kill) is never taken as done. The marker also lists the outputs the
stage writes only sometimes (a figure per scored set, the tumour examples) that it wrote:
they too must exist for the stage to be skipped. It stamps the stage's files (size and
modification time): a file another command wrote since (``braincam evaluate RUN --force``)
makes the stage run again, with ``--force`` only, since that replaces the other command's
work.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from braincam.data.hashing import json_digest
from braincam.data.records import data_listing
from braincam.runs import RunDir, atomic_write_json

MARKER_VERSION = 1


@dataclass(frozen=True)
class StageMarker:
    """The content of ``RUN/.stages/<stage>.json``."""

    stage: str
    fingerprint: str
    inputs: dict[str, Any]  # what was hashed (data listings as their own fingerprints)
    seconds: float
    finished: str  # ISO time, UTC
    version: int = MARKER_VERSION
    produced: tuple[str, ...] = ()  # its outputs written only sometimes, relative to the run
    stamps: dict[str, list[int]] = field(default_factory=dict)  # its files: [size, mtime_ns]


def fingerprint(inputs: Any) -> str:
    """SHA-256 hex digest of ``inputs`` as canonical JSON (sorted keys, no spaces)."""
    return json_digest(inputs)


def data_fingerprint(roots: list[Path]) -> dict[str, str]:
    """Absolute root -> fingerprint of its :func:`data_listing` (a changed, added, removed or
    touched file changes it)."""
    return {str(Path(r).resolve()): fingerprint(data_listing(r)) for r in roots}


def model_fingerprint(runs: list[Path]) -> dict[str, list[int]]:
    """Absolute run folder -> ``[size, mtime_ns]`` of its ``model.safetensors``: a run trained
    again has another model file, while its reports and other files may change freely."""
    out = {}
    for run in runs:
        model = RunDir(Path(run).resolve()).model
        try:
            stat = model.stat()
            out[str(model.parent)] = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            out[str(model.parent)] = [-1, -1]
    return out


def marker_path(run: RunDir, stage: str) -> Path:
    return run.stages / f"{stage}.json"


def read_marker(run: RunDir, stage: str) -> StageMarker | None:
    """The stage's marker, or None when it is absent or unreadable (then the stage reruns)."""
    try:
        doc = json.loads(marker_path(run, stage).read_text(encoding="utf-8"))
        marker = StageMarker(**{**doc, "produced": tuple(doc.get("produced") or ()),
                                "stamps": dict(doc.get("stamps") or {})})
    except (OSError, ValueError, TypeError):
        return None
    return marker if marker.version == MARKER_VERSION else None


def write_marker(run: RunDir, stage: str, key: str, inputs: dict[str, Any],
                 seconds: float, produced: tuple[str, ...] = (),
                 stamps: dict[str, list[int]] | None = None) -> StageMarker:
    marker = StageMarker(stage, key, inputs, round(seconds, 3),
                         datetime.now(UTC).isoformat(timespec="seconds"), produced=produced,
                         stamps=stamps or {})
    atomic_write_json(marker_path(run, stage), asdict(marker))
    return marker


def file_stamps(run: RunDir, paths: list[Path]) -> dict[str, list[int]]:
    """``[size, mtime_ns]`` of each of ``paths`` that is a file, by its path in the run."""
    out = {}
    for path in paths:
        if path.is_file():
            stat = path.stat()
            out[str(path.relative_to(run.root))] = [stat.st_size, stat.st_mtime_ns]
    return out


def rewritten(run: RunDir, marker: StageMarker) -> list[str]:
    """The stage's files (relative paths) that are there but not as the stage left them:
    another command wrote them since (a missing one is for the existence check)."""
    now = file_stamps(run, [run.root / p for p in marker.stamps])
    return [p for p, stamp in marker.stamps.items() if p in now and now[p] != list(stamp)]


def clear_marker(run: RunDir, stage: str) -> None:
    marker_path(run, stage).unlink(missing_ok=True)
