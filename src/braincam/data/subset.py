"""A run's held-out images as dataset folders of links (``braincam segment SEG --held-out``).

A segmenter's figures come from the patient groups it held out. Audits, evaluations and
radiomics that lean on it (``--segmenter``, ``--guide``, ``--masks``) stay honest only on those
same images. :func:`link_split` writes, for each dataset root of a run (``config.yaml``
``data``), ``OUT/<root folder name>/`` holding links to the images of one ``split.csv`` split
under their relative paths, their masks (``masks/...png``) and their ``boxes.csv`` rows, so
every braincam command reads it as that dataset cut down to those rows, under the same source
name. Links are symbolic; where the file system refuses one, the file is copied.
``boxes.csv`` is written anew from the boxes the loader attached (columns ``file,label,cx,cy,w,h``,
``file`` relative to the root). ``--unseen-by RUN`` also leaves out the images that duplicate
one RUN (a classifier) or its guide trained or validated on: held out from a segmenter is not
held out from a classifier trained on a dataset that copies the segmenter's (Sartaj's Training
tumours are Figshare slices).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from braincam.data.hashing import ImageRef, duplicates_of
from braincam.data.records import BOXES_FILE, key_file, records_at, source_names
from braincam.errors import BraincamError
from braincam.runs import RunDir, atomic_write_text

BOX_HEADER = ("file", "label", "cx", "cy", "w", "h")


def link_split(run: RunDir, out: Path, split: str = "test",
               unseen_by: Sequence[ImageRef] = ()) -> dict[str, int]:
    """Link the image files of ``split`` (with masks and box rows) into ``out/<source>/`` (the
    root's name, ``_`` appended for a second root of that name: ``ImageRecord.source``);
    returns the number of files per source (a volume is one). ``out`` must exist. Masks
    and boxes are the ones the dataset loader attaches to those images (:func:`records_at`).
    Images that duplicate one of ``unseen_by`` (bytes or pHash, :func:`duplicates_of`; e.g. the
    images a classifier learnt from) are left out, and a volume with such a slice whole."""
    keys = run.split_paths(split)
    if unseen_by and keys:  # a volume with any slice seen is left out whole
        seen = duplicates_of([key_file(k) for k in keys], unseen_by)
        gone = {key_file(k)[0] for k, s in zip(keys, seen, strict=True) if s}
        keys = [k for k in keys if key_file(k)[0] not in gone]
    files = list(dict.fromkeys(str(key_file(k)[0]) for k in keys))  # a volume's file once
    if not files:
        raise BraincamError(f"{run.split} lists no {split} images"
                            + (" that the other run did not learn from" if unseen_by else ""))
    resolved = list(dict.fromkeys(r.resolve() for r in run.data_roots()))
    roots = dict(zip(source_names(resolved), resolved, strict=True))  # by source name
    boxes: dict[str, list[list[object]]] = {}
    counts: dict[str, int] = {}
    wanted, linked = set(files), set()
    for record in records_at(list(roots.values()), keys, run.split):
        if str(record.path) not in wanted or str(record.path) in linked:
            continue
        linked.add(str(record.path))
        root = roots[record.source]
        dest = out / record.source
        for source in (record.path, record.mask):
            if source is not None:
                _link(source, dest / source.relative_to(root))
        if record.box is not None:
            box = record.box
            boxes.setdefault(record.source, []).append([
                record.path.relative_to(root).as_posix(), record.label,
                box.cx, box.cy, box.w, box.h])
        counts[record.source] = counts.get(record.source, 0) + 1
    for name, rows in boxes.items():
        buf = io.StringIO()  # csv quotes a file name holding a comma or a quote
        csv.writer(buf, lineterminator="\n").writerows([BOX_HEADER, *rows])
        atomic_write_text(out / name / BOXES_FILE, buf.getvalue())
    return counts


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(target, link)
    except OSError:
        shutil.copy2(target, link)
