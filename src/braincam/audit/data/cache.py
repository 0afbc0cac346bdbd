"""On-disk cache of image properties, keyed by file content hash.

One npz under the braincam cache directory (``$BRAINCAM_CACHE`` or ``~/.cache/braincam``,
see :func:`braincam.data.hashing.cache_root`), named with ``VERSION`` (bump it when a property
changes: old entries are then never read). Like the pHash store it is read whole, merged with
whatever another process wrote meanwhile, and replaced atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braincam.data.hashing import cache_root
from braincam.runs import atomic_write_bytes, read_npz

VERSION = 3  # bump when a property or the decoding changes: old entries are then never read


class PropertyStore:
    """Property rows by content hash: scalars (float64), texts (str), vectors (float32) and the
    pHash (uint64)."""

    def __init__(
        self,
        cache_dir: Path | str | None,
        scalars: tuple[str, ...],
        texts: tuple[str, ...],
        vectors: dict[str, int],
    ) -> None:
        self.path = cache_root(cache_dir) / f"audit-properties-v{VERSION}.npz"
        self.scalars, self.texts, self.vectors = scalars, texts, vectors
        self.columns = _read(self.path, self._names())
        self.index = {key: i for i, key in enumerate(self.columns.get("keys", []))}
        self.new: dict[str, dict[str, Any]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.index or key in self.new

    def add(self, key: str, row: dict[str, Any]) -> None:
        self.new[key] = row

    def rows(self, keys: list[str]) -> tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray]:
        """(table of scalars and texts, vectors by name, pHashes) for ``keys``, in order."""
        self._fold_new()
        if not self.columns:  # nothing measured, nothing cached
            return (pd.DataFrame(columns=list(self.scalars + self.texts)),
                    {n: np.zeros((0, size), np.float32) for n, size in self.vectors.items()},
                    np.zeros(0, np.uint64))
        at = np.array([self.index[k] for k in keys], dtype=np.int64)
        table = pd.DataFrame({name: self.columns[name][at] for name in self.scalars + self.texts})
        vectors = {name: self.columns[name][at] for name in self.vectors}
        return table, vectors, self.columns["phash"][at]

    def save(self) -> None:
        """Write new rows (merged with the file's current content); a no-op without new rows."""
        if not self.new:
            return
        self._fold_new()
        on_disk = _read(self.path, self._names())
        if len(on_disk.get("keys", [])):
            missing = ~np.isin(on_disk["keys"], self.columns["keys"])
            self.columns = {n: np.concatenate([self.columns[n], on_disk[n][missing]])
                            for n in self.columns}
        buf = io.BytesIO()
        np.savez(buf, **self.columns)
        atomic_write_bytes(self.path, buf.getvalue())

    def _names(self) -> tuple[str, ...]:
        return ("keys", "phash", *self.scalars, *self.texts, *self.vectors)

    def _fold_new(self) -> None:
        """Append pending rows to the column arrays."""
        if not self.new:
            return
        rows = list(self.new.values())
        fresh = {
            "keys": np.array(list(self.new), dtype="U40"),
            "phash": np.array([r["phash"] for r in rows], dtype=np.uint64),
            **{n: np.array([r[n] for r in rows], dtype=np.float64) for n in self.scalars},
            **{n: np.array([r[n] for r in rows], dtype="U16") for n in self.texts},
            **{n: np.stack([r[n] for r in rows]).astype(np.float32).reshape(len(rows), size)
               for n, size in self.vectors.items()},
        }
        if self.columns:
            fresh = {n: np.concatenate([self.columns[n], fresh[n]]) for n in fresh}
        self.columns = fresh
        self.index = {key: i for i, key in enumerate(self.columns["keys"].tolist())}
        self.new = {}


def _read(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The stored columns, or {} when the file is missing, unreadable or of another layout."""
    try:
        data = read_npz(path)
    except (OSError, ValueError, EOFError):
        return {}
    return data if set(data) == set(names) else {}
