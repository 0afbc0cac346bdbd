"""``braincam predict``'s output folder: ``predictions.csv``, ``skipped.csv``, with an
explanation method ``overlays/NNNN_<name>[_s<slice>].png`` and, with a segmenter,
``masks/NNNN_<name>[_s<slice>].png`` (the predicted tumour, 0/255, original size) and per NIfTI
volume ``masks/NNNN_<name>.nii.gz`` (its slices' masks on the volume's voxel grid).

``predictions.csv`` has one row per image or slice (:meth:`braincam.api.Prediction.to_row`:
``path, slice, kind, pred, prob_<class>..., ood_score, [tumour_fraction,] warnings``) and,
after the slices of each volume, DICOM series or multi-frame file, one ``kind = volume`` row:
the slice with the highest tumour probability (``P(tumor)``, or ``1 - P(no_tumor)`` for tumour
types), its probabilities, prediction and warnings. Slices are scored in chunks of ``CHUNK`` so
a large folder never sits in memory whole.

Under torchrun (:mod:`braincam.distributed`) every process expands the inputs the same way and
predicts a contiguous share of the slices (writing its overlays and masks, named by the global
slice position); rank 0 gathers the rows in order and alone writes ``predictions.csv``,
``skipped.csv`` and the mask volumes, the same files one process writes.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from braincam.api import Model, Prediction
from braincam.data.inputs import SliceChoice, expand_inputs
from braincam.data.records import SkippedFile, write_skipped_csv
from braincam.errors import BraincamError
from braincam.labels import NO_TUMOR, TUMOR
from braincam.runs import (
    atomic_write_text,
    check_outside_data,
    prepare_output_dir,
    refuse_run_folder,
)

PREDICTIONS = "predictions.csv"
OVERLAY_DIR = "overlays"
MASK_DIR = "masks"
SKIPPED = "skipped.csv"
OWNED = (PREDICTIONS, SKIPPED, OVERLAY_DIR, MASK_DIR)  # what a call writes into its folder
CHUNK = 256


@dataclass
class PredictSummary:
    file: Path  # predictions.csv
    n_images: int  # images and slices predicted
    n_volumes: int
    n_flagged: int  # images/slices with at least one warning
    skipped: list[SkippedFile]
    seconds: float


def prepare_predict_dir(out: Path, force: bool, run: Path, inputs: Sequence[Path],
                        segment: Path | None = None) -> Path:
    """``out`` ready for a call's files (:data:`OWNED`). Refused: ``out`` is the run itself or
    any other run or segmenter folder (its own predictions.csv, skipped.csv and overlays would
    be replaced), lies inside an input folder, or is the folder of an input file (the next
    call on that folder would read its overlays as scans). With ``force``, the files of an
    earlier call go first, so none is left beside the new ones; the folder's other files
    stay."""
    where = Path(out).resolve()
    refuse_run_folder(out)
    check_outside_data(out, [p for p in inputs if Path(p).is_dir()])
    beside = next((p for p in inputs if Path(p).is_file() and where in  # link or target
                   (Path(p).absolute().parent.resolve(), Path(p).resolve().parent)), None)
    if beside is not None:
        raise BraincamError(f"{out} holds the input {beside}: a later call on that folder would "
                            "read the overlays as scans; choose another output folder")
    reads = [*inputs, run, *([segment] if segment is not None else [])]
    return prepare_output_dir(out, force=force, marker=PREDICTIONS, reads=reads, owned=OWNED)


def tumour_probability(pred: Prediction) -> float:
    """``P(tumor)`` of a binary model, ``1 - P(no_tumor)`` of a tumour-type model; a model of
    tumour types only (no ``no_tumor`` class: every slice is a tumour to it) gets the
    probability of its answer, so a volume row shows its most confident slice."""
    if TUMOR in pred.probabilities:
        return pred.probabilities[TUMOR]
    if NO_TUMOR in pred.probabilities:
        return 1.0 - pred.probabilities[NO_TUMOR]
    return max(pred.probabilities.values())


def volume_rows(preds: Sequence[Prediction]) -> list[Prediction]:
    """``preds`` with a ``volume`` row after the last slice of each multi-slice input."""
    out: list[Prediction] = []
    for i, pred in enumerate(preds):
        out.append(pred)
        last = i + 1 == len(preds) or preds[i + 1].path != pred.path
        if pred.kind == "slice" and last:
            slices = [p for p in preds if p.path == pred.path and p.kind == "slice"]
            best = max(slices, key=tumour_probability)
            out.append(replace(best, kind="volume", warnings=list(best.warnings)))
    return out


def predict_files(model: Model, inputs: Sequence[Path | str], out_dir: Path,
                  explain: str | None = None, choice: SliceChoice | None = None,
                  batch_size: int = 32,
                  before_writing: Callable[[], object] | None = None) -> PredictSummary:
    """Predict (and with ``explain``, explain) ``inputs`` into ``out_dir`` (module docstring).
    ``before_writing`` runs (on every process) once the inputs are found and before the first
    file is written: where the caller makes room in ``out_dir``, so that inputs that fail
    (none found, a bad option) leave an earlier call's files in place."""
    from braincam.distributed import current, gather_objects, main_first, shard_range
    from braincam.evaluate.segmentation import original_mask, write_mask
    from braincam.explain.render import write_png

    start = time.perf_counter()
    ctx = current()
    skipped: list[SkippedFile] = []
    slices = expand_inputs(list(inputs), choice, skipped)
    if before_writing is not None:
        before_writing()
    share = shard_range(len(slices), ctx)
    if not ctx.is_main:  # each rank expands the inputs; rank 0 reports what that skipped
        skipped = []
    preds: list[Prediction] = []
    slice_masks: list[tuple[int, str, int, Path, str]] = []  # index, input, slice, file, mask
    for lo in range(share.start, share.stop, CHUNK):
        chunk = slices[lo: min(lo + CHUNK, share.stop)]
        position = {id(item): lo + k for k, item in enumerate(chunk)}
        if explain is None:
            done = model.predict_slices(chunk, batch_size, skipped)
        else:
            exps = model.explain_slices(chunk, explain, batch_size=batch_size, skipped=skipped)
            for exp in exps:
                name = overlay_name(position[id(exp.item)], exp.prediction)
                write_png(Path(out_dir) / OVERLAY_DIR / name, exp.overlay)
            done = [exp.prediction for exp in exps]
        for pred in done:
            if pred.tumour_probability is not None and pred.preprocessed is not None:
                index = position[id(pred.item)]
                name = overlay_name(index, pred)
                write_mask(Path(out_dir) / MASK_DIR / name,
                           original_mask(pred.tumour_probability, pred.preprocessed))
                if pred.item is not None and pred.item.volume and pred.item.file is not None:
                    slice_masks.append((index, pred.path, pred.slice, pred.item.file, name))
        preds += done
    light = [replace(p, image=p.image[:0], preprocessed=None, tumour=None,  # rows only
                     tumour_probability=None, item=None) for p in preds]
    shares = gather_objects((light, skipped, slice_masks), ctx)
    file = Path(out_dir) / PREDICTIONS
    rows: list[Prediction] = []
    with main_first(ctx):  # the other ranks return once rank 0 has written
        if ctx.is_main:
            preds = [p for rank_preds, _, _ in shares for p in rank_preds]
            skipped = [s for _, rank_skipped, _ in shares for s in rank_skipped]
            rows = volume_rows(preds)
            write_predictions_csv(rows, file, Prediction.columns(
                model.classes, model.segmenter is not None))
            write_skipped_csv(skipped, Path(out_dir) / SKIPPED)
            write_mask_volumes([m for *_, rank_masks in shares for m in rank_masks],
                               Path(out_dir) / MASK_DIR)
    return PredictSummary(
        file, len(preds), sum(r.kind == "volume" for r in rows),
        sum(bool(p.warnings) for p in preds), skipped, time.perf_counter() - start,
    )


def write_mask_volumes(slice_masks: Sequence[tuple[int, str, int, Path, str]],
                       folder: Path) -> None:
    """Per NIfTI input, its slices' masks (PNG files in ``folder``) as one mask volume on the
    input's voxel grid, ``NNNN_<name>.nii.gz`` (``NNNN``: its first predicted slice's
    position; :func:`braincam.data.nifti.write_mask_volume`)."""
    import cv2

    from braincam.data.nifti import is_nifti_file, write_mask_volume

    volumes: dict[str, list[tuple[int, str, int, Path, str]]] = {}
    for entry in sorted(slice_masks):
        volumes.setdefault(entry[1], []).append(entry)
    for entries in volumes.values():
        _, _, _, source, name = entries[0]
        if not is_nifti_file(source):
            continue
        masks = {k: cv2.imread(str(folder / mask), cv2.IMREAD_GRAYSCALE) > 0
                 for _, _, k, _, mask in entries}
        write_mask_volume(source, masks, folder / f"{name.rsplit('_s', 1)[0]}.nii.gz")


def overlay_name(index: int, pred: Prediction) -> str:
    """``0007_scan.png``, ``0012_vol_s40.png`` (index: the position among all images and
    slices of the inputs, skipped ones included, so names do not depend on sharding)."""
    stem = Path(pred.path).name.removesuffix(".gz").rsplit(".", 1)[0] or "image"
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    return f"{index:04d}_{stem}{'' if pred.slice is None else f'_s{pred.slice}'}.png"


def write_predictions_csv(rows: Sequence[Prediction], path: Path,
                          columns: Sequence[str] | None = None) -> None:
    """``predictions.csv`` (module docstring), written atomically; ``columns``
    (:meth:`Prediction.columns`) give the header when no image could be read."""
    buf = io.StringIO()
    table = [r.to_row() for r in rows]
    writer = csv.DictWriter(buf, fieldnames=list(table[0]) if table else list(columns or ["path"]),
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    atomic_write_text(path, buf.getvalue())
