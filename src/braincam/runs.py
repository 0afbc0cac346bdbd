"""The run directory: its layout (file names are public contracts, see README)
and safe writing (atomic replace, no silent overwrite)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from braincam.errors import BraincamError


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory. Every stage reads and writes through these."""

    root: Path

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
        return self.root / "skipped.csv"

    @property
    def upweighted(self) -> Path:
        """Training images phase 1 got wrong, with ``--upweight-errors`` (train.reweight)."""
        return self.root / "upweighted.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def overlays(self) -> Path:
        """Segmentation runs: held-out images with expert and predicted outlines."""
        return self.root / "overlays"

    @property
    def data_audit(self) -> Path:
        return self.root / "data_audit"

    @property
    def explain(self) -> Path:
        return self.root / "explain"

    @property
    def audit(self) -> Path:
        return self.root / "audit"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def stages(self) -> Path:
        """Marker files of finished pipeline stages (``braincam run`` resumes from them)."""
        return self.root / ".stages"


def prepare_output_dir(path: Path, force: bool = False, marker: str | None = None) -> Path:
    """Create ``path`` for a new output; refuse to reuse a non-empty one unless ``force``.

    ``marker`` names a file whose presence shows the directory holds finished output;
    without it any non-empty directory counts.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BraincamError(f"{path} exists and is not a directory")
    occupied = path.exists() and (
        (path / marker).exists() if marker else any(path.iterdir())
    )
    if occupied and not force:
        raise BraincamError(f"{path} already holds a run; pass --force to overwrite it")
    if occupied and force and marker is None:
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` then rename: readers never see half a file."""
    path = Path(path)
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


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, default=_json_default)
    atomic_write_text(path, text + "\n")


def atomic_write_yaml(path: Path, obj: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def atomic_save_figure(path: Path, fig: Any, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (PNG unless the suffix says otherwise)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_csv(path: Path, frame: Any) -> None:
    """Write a pandas DataFrame atomically, without its index."""
    atomic_write_text(path, frame.to_csv(index=False))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


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
