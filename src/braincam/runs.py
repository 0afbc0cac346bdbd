"""The run directory: its layout (file names are public contracts, see README)
and safe writing (atomic replace, no silent overwrite)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from braincam.errors import BraincamError, first_line

DATA_AUDIT_JSON = "data_audit.json"
"""The data audit's findings, in its output folder (``RUN/data_audit/`` or ``--out``)."""
AUDIT_JSON = "audit.json"
"""The model audit's findings, in its output folder (``RUN/audit/`` or ``--out``)."""
AUDIT_IMAGES_CSV = "audit_images.csv"
"""The model audit's per-image table, beside ``audit.json``."""
EXPLANATIONS_NPZ = "explanations.npz"
"""The maps of one ``braincam explain`` run, in its output folder."""
SKIPPED_CSV = "skipped.csv"
"""Files a stage could not read (path, reason), in the folder of that stage's output."""
CHECKPOINT_FORMAT = "braincam"
"""The ``format`` metadata of every ``model.safetensors`` braincam writes
(:mod:`braincam.models.checkpoint`)."""
OUTPUT_STAMP = ".braincam-output"
"""Written into every folder a command claims whole (train, segment, ensemble, radiomics):
the mark that lets ``--force`` replace that folder, and no folder of the user's."""


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory, and readers of its plain files (YAML, CSV, JSON).
    Every stage reads and writes through these; readers that build braincam types live in
    the layer that owns the type (e.g. ``braincam.data.preprocess.preprocess_config``)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def model(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def split(self) -> Path:
        return self.root / "split.csv"

    @property
    def skipped(self) -> Path:
        return self.root / SKIPPED_CSV

    @property
    def upweighted(self) -> Path:
        """Training images phase 1 got wrong, with ``--upweight-errors`` (train.reweight)."""
        return self.root / "upweighted.csv"

    @property
    def ood_reference(self) -> Path:
        """What new images are compared with (braincam.api.reference), built on first predict."""
        return self.root / "ood.safetensors"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def overlays(self) -> Path:
        """Segmentation runs: held-out images with expert and predicted outlines."""
        return self.root / "overlays"

    @property
    def per_image(self) -> Path:
        """A segment run's held-out images, one scored row each (``braincam segment``)."""
        return self.root / "per_image.csv"

    @property
    def guide(self) -> Path:
        """Classifier runs: the segmenter trained from ``--guide`` dataset folders."""
        return self.root / "guide"

    @property
    def guide_learnt(self) -> Path:
        """Guided classifier runs and their ensembles: the images the guiding segmenters
        trained or validated on (column ``path``), copied at training time, so that the run
        tells them apart without its guide runs."""
        return self.root / "guide_learnt.csv"

    @property
    def predictions(self) -> Path:
        """One row per evaluated image (``braincam evaluate``)."""
        return self.root / "predictions.csv"

    @property
    def data_audit(self) -> Path:
        return self.root / "data_audit"

    @property
    def data_audit_json(self) -> Path:
        return self.data_audit / DATA_AUDIT_JSON

    @property
    def explain(self) -> Path:
        return self.root / "explain"

    def explanations(self, method: str) -> Path:
        """The ``explanations.npz`` of one explanation method."""
        return self.explain / method / EXPLANATIONS_NPZ

    @property
    def audit(self) -> Path:
        return self.root / "audit"

    @property
    def audit_json(self) -> Path:
        return self.audit / AUDIT_JSON

    @property
    def audit_images(self) -> Path:
        return self.audit / AUDIT_IMAGES_CSV

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def stages(self) -> Path:
        """Marker files of finished pipeline stages (``braincam run`` resumes from them)."""
        return self.root / ".stages"

    @property
    def files(self) -> tuple[Path, ...]:
        """The outputs whose presence shows that a folder holds a run (or part of one)."""
        return (self.config, self.model, self.history, self.metrics, self.data_audit,
                self.explain, self.audit, self.report)

    def read_config(self) -> dict[str, Any]:
        """``config.yaml`` as a mapping; a missing or malformed file is a one-line error."""
        try:
            doc = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise BraincamError(
                f"{self.root}: cannot read config.yaml ({first_line(exc)})") from None
        if not isinstance(doc, dict):
            raise BraincamError(f"{self.config} is not a YAML mapping")
        return doc

    def data_roots(self) -> list[Path]:
        """The dataset folders the run was trained on (``config.yaml`` ``data``)."""
        roots = self.read_config().get("data")
        if not isinstance(roots, list) or not roots:
            raise BraincamError(f"{self.config} names no data folders (key 'data')")
        return [Path(r) for r in roots]

    def read_split(self):  # -> pandas.DataFrame
        """``split.csv`` (columns path, source, label, split, group, leak_free) with
        ``leak_free`` as booleans, whether the file spells them ``True`` or ``true``."""
        import pandas as pd

        try:
            table = pd.read_csv(self.split)
        except (OSError, ValueError) as exc:
            raise BraincamError(
                f"{self.root}: cannot read split.csv ({first_line(exc)})") from None
        missing = [c for c in ("path", "split") if c not in table.columns]
        if missing:
            raise BraincamError(f"{self.split} has no {' or '.join(missing)} column")
        table["path"] = table["path"].astype(str)
        if "leak_free" in table.columns:
            table["leak_free"] = true_flags(table["leak_free"])
        return table

    def split_paths(self, split: str) -> list[str]:
        """Paths ``split.csv`` lists under ``split`` (``all``: every path), in file order."""
        table = self.read_split()
        return table["path"].tolist() if split == "all" else table.loc[
            table["split"] == split, "path"].tolist()


@contextmanager
def no_empty_folder_on_failure(*paths: Path | str) -> Iterator[None]:
    """Those of ``paths`` that do not exist yet and are left empty when the block fails are
    removed: a command that fails leaves no empty output folder behind."""
    made = [Path(p) for p in paths if not Path(p).exists()]
    try:
        yield
    except BaseException:
        for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):  # inner first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def refuse_run_folder(path: Path | str) -> None:
    """Refuse ``path`` as the output of a command that writes files of its own (predictions,
    masks, scores) when it is a run or segmenter folder: their names would collide."""
    if (Path(path) / "model.safetensors").exists():
        raise BraincamError(f"{path} is a run or segmenter folder, whose own files would be "
                            "replaced: choose another output folder")


def refuse_occupied(path: Path | str, force: bool) -> None:
    """Refuse an occupied ``path`` unless ``force``, and with ``force`` one braincam did not
    write, as :func:`prepare_output_dir` will: a command calls it before its slow steps, so a
    taken name fails in seconds, not after them."""
    path = Path(path)
    check_folders(path)
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise taken(path, "a run")
        check_replaceable(path)


def taken(path: Path, what: str) -> BraincamError:
    """The error for an output folder that already holds ``what``, without ``--force``."""
    return BraincamError(f"{path} already holds {what}; pass --force to overwrite it")


def braincam_wrote(path: Path) -> bool:
    """Whether a command claimed the folder ``path`` whole: it holds :data:`OUTPUT_STAMP`, or
    a ``model.safetensors`` with braincam's metadata (a run or segmenter saved before the
    stamp existed; any other file of that name, a downloaded model's, is no mark)."""
    from safetensors import safe_open

    if (path / OUTPUT_STAMP).is_file():
        return True
    try:
        with safe_open(str(path / "model.safetensors"), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == CHECKPOINT_FORMAT
    except Exception:  # missing, or not a safetensors file: several exception types
        return False


def check_replaceable(path: Path) -> None:
    """Stop unless braincam wrote (:func:`braincam_wrote`) the folder ``path`` that
    ``--force`` would replace whole: ``--out ~/Documents --force`` must not erase the
    documents."""
    if path.is_symlink():
        raise BraincamError(f"{path} is a link: --force replaces a folder, not a link to one; "
                            "give the folder itself")
    if not braincam_wrote(path):
        raise BraincamError(f"{path} holds files braincam did not write (it has no "
                            f"{OUTPUT_STAMP}), and --force replaces only braincam's own output "
                            "folders: choose another output folder")


def prepare_output_dir(path: Path, force: bool = False, marker: str | None = None,
                       reads: Iterable[Path | str] = (), owned: Iterable[str] = ()) -> Path:
    """Create ``path`` for a new output; refuse to reuse a non-empty one unless ``force``.

    ``marker`` names a file whose presence shows the directory holds finished output;
    without it any non-empty directory counts, ``force`` deletes the directory first where
    braincam wrote it (:func:`check_replaceable`), and the new one gets :data:`OUTPUT_STAMP`.
    With a marker the folder may hold other files, and ``force`` deletes only ``owned``, and
    only where the marker shows an earlier call: the names (glob patterns) of what the command
    writes there, so that no file of that call is left beside the new ones. Where the marker
    is absent but one of ``owned`` is there (another command's ``skipped.csv`` in a run
    folder), the command would replace it: refused without ``force``. Nothing is
    deleted while it is, or holds, one of ``reads``, the files and folders the command reads
    (its data, the runs it combines): ``--out DATA --force`` must not erase DATA.
    """
    path, owned = Path(path), tuple(owned)
    check_folders(path)
    occupied = path.exists() and (
        (path / marker).exists() if marker else any(path.iterdir())
    )
    if occupied and not force:
        what = marker or "a run"  # the finished output, where the caller names it
        raise taken(path, what)
    if marker is not None and path.is_dir() and not occupied and not force:
        clash = next((p.name for pattern in owned for p in sorted(path.glob(pattern))), None)
        if clash is not None:
            raise BraincamError(f"{path} holds {clash}, which this command would replace; pass "
                                "--force to replace it, or choose another output folder")
    reads = list(reads)
    if occupied and force and marker is None:
        check_spares(path, reads)
        check_replaceable(path)
        discard(path)
    if occupied and force and marker is not None:
        for pattern in owned:
            for earlier in sorted(path.glob(pattern)):
                check_spares(earlier, reads)
                discard(earlier)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BraincamError(f"{path}: cannot create the output folder "
                            f"({exc.strerror or exc})") from None
    if marker is None:
        (path / OUTPUT_STAMP).write_text("written by braincam: --force may replace this folder\n",
                                         encoding="utf-8")
    return path


# (set aside, its place) while one command runs; (None, place): a scratch folder of the command
_replaced: list[tuple[Path | None, Path]] | None = None
_carried: list[Path] = []  # parts of a new output that came from the old one (carried())


@contextmanager
def replacing(active: bool = True) -> Iterator[list[bool]]:
    """Around one command (the CLI's): what ``--force`` replaces (:func:`prepare_output_dir`)
    is set aside beside itself, not deleted, until the command ends. Set ``outcome[0] = True``
    on success: the set-aside outputs are then deleted; otherwise (an error, Ctrl-C) the new,
    partial outputs are removed and the old ones put back, so an interrupted ``--force``
    loses no finished work. Outside such a block, or with ``active`` False (commands that
    resume from what they finished: their finished parts must stay), ``--force`` deletes at
    once."""
    global _replaced
    outcome, _replaced = [False], [] if active else None
    _carried.clear()
    try:
        yield outcome
    finally:
        pending, _replaced = _replaced or [], None
        for aside, place in reversed(pending):
            if aside is None:  # scratch: gone after a success, removed after a failure
                if not outcome[0] and (place.exists() or place.is_symlink()):
                    _remove(place)
            elif outcome[0]:
                _remove(aside)
            else:
                _put_back(aside, place)


def scratch(path: Path) -> None:
    """Inside :func:`replacing`: ``path``, a folder the command builds beside its output and
    moves into place once complete (``braincam segment``'s ``.OUT.new``), is removed when the
    command fails or is interrupted, not left behind. Call it before the folder is prepared."""
    if _replaced is not None:
        _replaced.append((None, Path(path)))


def carried(path: Path) -> None:
    """Inside :func:`replacing`: ``path``, in a new output, came from the old output set aside
    for it (``braincam train --force`` carries a finished guide segmenter into the new run):
    if the command fails it goes back into the old output, not out with the new one."""
    if _replaced is not None:
        _carried.append(Path(path))


def discard(path: Path) -> None:
    """Delete ``path``, or inside :func:`replacing` move it to ``.<name>.replaced`` beside
    itself, to come back if the command fails. A ``.<name>.replaced`` already there is the
    finished output of a command that was killed before it could put it back: refused, for
    the user to keep or delete, rather than deleted."""
    if _replaced is None:
        _remove(path)
        return
    aside = path.with_name(f".{path.name}.replaced")
    if aside.exists() or aside.is_symlink():
        raise BraincamError(f"{aside} holds the output of a command killed while replacing "
                            f"{path}: move it back to {path.name}, or delete it, and run again")
    os.replace(path, aside)
    _replaced.append((aside, path))


def _put_back(aside: Path, place: Path) -> None:
    """``aside`` back to ``place``, in place of the partial output there, with what the new
    output had carried from it (:func:`carried`)."""
    if place.exists() or place.is_symlink():
        for part in _carried:
            if place in part.parents and (part.exists() or part.is_symlink()):
                target = aside / part.relative_to(place)
                if not (target.exists() or target.is_symlink()):
                    os.replace(part, target)
        _remove(place)
    os.replace(aside, place)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def check_writable(path: Path | str) -> None:
    """A one-line error, before any slow step, when ``path`` cannot be made: its nearest
    existing folder takes no new folder (tried, then removed: permission bits do not bind
    root, and a read-only or virtual file system refuses anyone)."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    check_folders(folder)
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".braincam-"))
    except OSError as exc:
        raise BraincamError(f"{path}: cannot write there ({folder}: "
                            f"{exc.strerror or exc})") from None


def check_spares(out: Path | str, reads: Iterable[Path | str], deletes: bool = True) -> None:
    """Stop when the output folder ``out`` is, or holds, one of ``reads`` (what the command
    reads: its data, the runs it combines or is guided by): replacing ``out`` would lose it
    (``deletes``: the command's ``--force`` replaces the folder), or its outputs would land
    among its inputs."""
    root = Path(out).resolve()
    why = "--force would delete it" if deletes else "its outputs would land among its inputs"
    for read in reads:
        if root == Path(read).resolve() or root in Path(read).resolve().parents:
            what = "is" if root == Path(read).resolve() else "holds"
            raise BraincamError(f"{out} {what} {read}, which this command reads; {why}: choose "
                                "another output folder")


def check_outside_data(out: Path | str, roots: Iterable[Path | str]) -> None:
    """Stop when the output folder ``out`` lies inside a dataset folder of ``roots``: the
    loader would read its files (figures, a run's own folders) as images of that dataset."""
    where = Path(out).resolve()
    for root in roots:
        if Path(root).resolve() in (where, *where.parents):
            raise BraincamError(f"{out} lies inside the dataset folder {root}: its files would "
                                "be read as images; choose an output folder outside it")


def named_data_roots(run_dirs: Iterable[Path | str]) -> list[Path]:
    """The dataset folders that the ``config.yaml`` of each of ``run_dirs`` names, where it
    names any (a model spec's folder names none): an output inside one would be read as
    images by the next command on that data."""
    roots: list[Path] = []
    for run in run_dirs:
        try:
            roots += RunDir(Path(run)).data_roots()
        except BraincamError:
            pass
    return roots


def check_dataset_folders(out: Path | str, roots: Iterable[Path | str]) -> None:
    """Before a command trains or writes anything: each of ``roots`` (dataset folders it
    reads) is a folder, and ``out`` neither lies inside one (:func:`check_outside_data`) nor
    is or holds one (:func:`check_spares`), so that a mistyped ``--data`` costs no training
    and ``--out`` with ``--force`` deletes no data."""
    roots = list(roots)
    missing = next((r for r in roots if not Path(r).is_dir()), None)
    if missing is not None:
        raise BraincamError(f"{missing} is not a directory (a dataset folder was expected)")
    check_outside_data(out, roots)
    check_spares(out, roots)


def make_folder(path: Path) -> Path:
    """``path`` as a folder, made with its parents; a file in the way is a one-line error."""
    check_folders(Path(path))
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def check_folders(path: Path) -> None:
    """A one-line error when ``path`` or a folder above it exists as a file."""
    for folder in (path, *path.parents):
        if folder.exists() and not folder.is_dir():
            raise BraincamError(f"{folder} exists and is not a directory")


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` then rename: readers never see half a file.
    A file where a folder of the path should be (a cache folder set to a file) is a one-line
    error."""
    path = Path(path)
    check_folders(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_NPY_HEADER_LOCK = threading.Lock()


def read_npz(path: Path, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (no pickles), each read whole: all of them, or those of
    ``names`` the file holds. One thread at a time: numpy parses each array's header with
    ``ast.literal_eval``, and CPython 3.11's AST constructor can raise a spurious
    ``SystemError`` ("AST constructor recursion depth mismatch", python/cpython#106905) when
    threads parse at once. Raises ``OSError`` for a file it cannot open, ``EOFError`` for an
    empty one and ``ValueError`` for any other file that is not an intact ``.npz`` (a
    truncated or damaged archive included: ``zipfile.BadZipFile`` becomes ``ValueError``)."""
    with _NPY_HEADER_LOCK:
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError(f"{path}: not an .npz archive")
            with data:
                wanted = data.files if names is None else [n for n in names if n in data.files]
                return {name: data[name] for name in wanted}
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{path}: damaged .npz archive ({exc})") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, default=_json_default)
    atomic_write_text(path, text + "\n")


class _Dumper(yaml.SafeDumper):
    """``yaml.safe_dump`` that writes tuples (settings such as decoder widths) as lists."""


_Dumper.add_representer(tuple, yaml.SafeDumper.represent_list)


def atomic_write_yaml(path: Path, obj: Any) -> None:
    atomic_write_text(path, yaml.dump(obj, Dumper=_Dumper, sort_keys=False))


def as_written(obj: Any) -> Any:
    """``obj`` as a YAML file written by :func:`atomic_write_yaml` reads back (tuples as
    lists): to compare settings in memory with those a run's ``config.yaml`` holds."""
    return yaml.safe_load(yaml.dump(obj, Dumper=_Dumper))


def atomic_save_figure(path: Path, fig: Any, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (PNG unless the suffix says otherwise)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_csv(path: Path, frame: Any) -> None:
    """Write a pandas DataFrame atomically, without its index."""
    atomic_write_text(path, frame.to_csv(index=False))


def true_flags(column):  # pandas.Series -> pandas.Series of bool
    """A CSV column of booleans (``leak_free`` of split.csv and predictions.csv) as bools,
    whether the file spells them ``True`` or ``true``; anything else is False."""
    return column.astype(str).str.lower() == "true"


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def json_object(value: Any) -> dict[str, Any]:
    """``value`` where a JSON file read back holds the object it should there, else empty: a
    hand-edited file may hold anything, and its readers take a wrong shape as missing."""
    return value if isinstance(value, dict) else {}


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays and paths in JSON."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def versions() -> dict[str, str]:
    """Versions of Python, braincam and the libraries that decide the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("braincam", "torch", "torchvision", "timm", "numpy", "scikit-learn"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out
