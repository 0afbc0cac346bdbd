"""A run's held-out images as dataset folders of links (``braincam segment SEG --held-out``).

A segmenter's figures come from the patient groups it held out. Audits, evaluations and
radiomics that lean on it (``--segmenter``, ``--guide``, ``--masks``) stay honest only on those
same images. :func:`link_split` writes, for each dataset root of a run (``config.yaml``
``data``), ``OUT/<root folder name>/`` holding links to the images of one ``split.csv`` split
under their relative paths, their masks (``masks/...png``) and their ``boxes.csv`` rows, so
every braincam command reads it as that dataset cut down to those rows, under the same source
name. Links are symbolic; where the file system refuses one, the file is copied.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

from braincam.data.records import BOXES_FILE, MASKS_DIR
from braincam.errors import BraincamError
from braincam.runs import RunDir, atomic_write_text


def link_split(run: RunDir, out: Path, split: str = "test") -> dict[str, int]:
    """Link the images of ``split`` (with masks and box rows) into ``out/<root name>/``;
    returns the number of images per root name. ``out`` must exist."""
    paths = [Path(p) for p in run.split_paths(split)]
    if not paths:
        raise BraincamError(f"{run.split} lists no {split} images")
    counts = {}
    for root in (r.resolve() for r in run.data_roots()):
        rel = list(dict.fromkeys(p.relative_to(root) for p in paths if p.is_relative_to(root)))
        if not rel:
            continue
        dest = out / root.name
        for image in rel:
            for part in (image, Path(MASKS_DIR) / image.with_suffix(".png")):
                if (root / part).is_file():
                    _link(root / part, dest / part)
        if (root / BOXES_FILE).is_file():
            _write_box_rows(root / BOXES_FILE, dest / BOXES_FILE, {p.as_posix() for p in rel})
        counts[root.name] = len(rel)
    return counts


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(target, link)
    except OSError:
        shutil.copy2(target, link)


def _write_box_rows(source: Path, dest: Path, files: set[str]) -> None:
    """The rows of ``source`` (a ``boxes.csv``) whose ``file`` is in ``files``, header kept."""
    with source.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [row for row in reader if row.get("file") in files]
        fields = reader.fieldnames or []
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest, text.getvalue())
