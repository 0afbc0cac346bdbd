"""Content and perceptual hashes, and duplicate groups: the one place that hashes images.

- ``content_hash``: sha1 of the file bytes; equal only for byte-identical files.
- ``perceptual_hashes``: 64-bit pHash (``imagehash.phash``: 32x32 Lanczos thumbnail of the grey
  image -> 2-D DCT -> top-left 8x8 coefficients compared with their median), packed into a
  ``uint64`` with the first bit as the most significant (same order as ``str(imagehash)``).
  Robust to re-encoding, resizing and mild intensity changes.
- ``duplicate_groups``: connected components of exact pairs (same content hash) and near pairs
  (pHash Hamming distance <= ``max_distance``).
- ``duplicates_of``: which images (files, or slices of volumes) of one list share a duplicate
  group with an image of another (an evaluation set against the images a model learnt from).

Default threshold ``NEAR_DISTANCE = 4`` bits (of 64), chosen on the Sartaj data (distances are
even in practice: each hash has 32 bits above the median set). Nearest Training neighbour of
each of the 394 Testing images: distance 0 for 257 (88 byte-identical, the rest re-encoded or
resized), 2 for 2, 4 for 3, 6 for 9, 8 for 6, then 10-20 for the rest. Inspected pairs at <= 4
are the same image (or an adjacent slice of the same scan); at 6-8 they mix resized copies with
different patients in the same view. Within Training, chaining at <= 4 keeps groups small
(largest 10 images, 2367 groups for 3264 images) while <= 6 chains unrelated sagittal slices
into groups of 60 and <= 8 into one of 625. So 4 keeps precision; a few resized copies at 6-8
bits are missed.

pHashes of files are computed from the full decoded original and cached on disk by content hash
(``<cache>/phash-v3.npz``, also filled by ``PreprocessCache.load``), so hashing a dataset a second
time reads only file bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from braincam.data.imageio import ImageReadError, read_grey
from braincam.runs import atomic_write_bytes, read_npz

NEAR_DISTANCE = 4
_PHASH_FILE = "phash-v3.npz"  # v2: EXIF Orientation applied; v3: YBR DICOM converted once
_BLOCK_ROWS = 1024


def content_hash_bytes(data: bytes) -> str:
    """sha1 hex digest of ``data``."""
    return hashlib.sha1(data).hexdigest()


def json_digest(value: Any) -> str:
    """SHA-256 hex digest of ``value`` as canonical JSON (sorted keys, no spaces; other types
    as their ``str``): equal values, equal digests, in any process."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_hash(path: Path | str) -> str:
    """sha1 hex digest of the file's bytes."""
    return content_hash_bytes(Path(path).read_bytes())


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """The braincam cache directory: ``cache_dir``, else ``$BRAINCAM_CACHE``, else
    ``~/.cache/braincam`` (made by the first write into it)."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("BRAINCAM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "braincam"


def phash(grey: np.ndarray) -> int:
    """64-bit pHash of one grey image (float in [0, 1] or uint8), as an unsigned int."""
    grey = np.asarray(grey)
    u8 = grey if grey.dtype == np.uint8 else np.clip(np.rint(grey * 255.0), 0, 255).astype(np.uint8)
    bits = imagehash.phash(Image.fromarray(u8)).hash.ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def perceptual_hashes(
    items: Sequence[np.ndarray | Path | str | tuple[Path | str, int]],
    cache_dir: Path | str | None = None,
    workers: int | None = None,
    file_hashes: Mapping[str, str] | None = None,
    unreadable: list[int] | None = None,
) -> np.ndarray:
    """pHash of each item (a grey array, an image path decoded with ``read_grey``, or a
    ``(path, k)`` pair for slice or frame ``k`` of a volume or multi-frame file) as a ``uint64``
    array. Files are looked up in the on-disk cache by content hash first (a slice by the hash
    the preprocessing cache gives it, ``sha1("<file hash>#<k>")``); ``file_hashes`` (path as
    ``str`` -> :func:`content_hash`) spares reading again the files a caller has hashed. A
    file that cannot be decoded raises ``ImageReadError``, or, given an ``unreadable`` list,
    has its index appended there and hash 0 (not cached)."""
    out = np.zeros(len(items), dtype=np.uint64)
    files = {i: (item, None) if isinstance(item, Path | str) else item
             for i, item in enumerate(items)
             if isinstance(item, Path | str) or isinstance(item, tuple)}
    for i, item in enumerate(items):
        if i not in files:
            out[i] = phash(item)
    if not files:
        return out
    store = ContentStore(cache_root(cache_dir) / _PHASH_FILE)
    known = file_hashes or {}
    hashes = {p: known.get(p) or content_hash(p)
              for p in dict.fromkeys(str(f) for f, _ in files.values())}
    keys = {i: slice_hash(hashes[str(path)], k) for i, (path, k) in files.items()}
    misses = [i for i in files if keys[i] not in store.values]

    def one(i: int) -> int | None:
        try:
            return phash(read_grey(files[i][0], index=files[i][1]))
        except ImageReadError:
            if unreadable is None:
                raise
            return None

    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        values = dict(zip(misses, pool.map(one, misses), strict=True))
    failed = sorted(i for i, value in values.items() if value is None)
    store.values.update((keys[i], value) for i, value in values.items() if value is not None)
    for i in files:
        out[i] = 0 if i in values and values[i] is None else store.values[keys[i]]
    if unreadable is not None:
        unreadable += failed
    if len(failed) < len(misses):
        store.save()
    return out


def slice_hash(file_hash: str, index: int | None) -> str:
    """The content hash of a file (``index`` None) or of its slice or frame ``index``, by
    which every cache keys it: ``sha1("<file hash>#<index>")``."""
    return file_hash if index is None else content_hash_bytes(f"{file_hash}#{index}".encode())


def remember_phashes(values: Mapping[str, int], cache_dir: Path | str | None = None) -> None:
    """Add pHashes computed elsewhere (by content hash) to the on-disk cache, e.g. by
    ``PreprocessCache.load`` from the images it decodes anyway."""
    if values:
        store = ContentStore(cache_root(cache_dir) / _PHASH_FILE)
        store.values.update(values)
        store.save()


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


def near_pairs(phashes: np.ndarray, max_distance: int = NEAR_DISTANCE) -> np.ndarray:
    """Near-duplicate pairs as an int64 array of rows ``(i, j, distance)`` with ``i < j`` and
    pHash Hamming distance <= ``max_distance``.

    Distances are computed in blocks of rows (vectorised XOR + popcount): 7000 images take
    49 M comparisons, well under a second.
    """
    hashes = np.asarray(phashes, dtype=np.uint64)
    found = []
    for start in range(0, len(hashes), _BLOCK_ROWS):
        block = hamming(hashes[start:start + _BLOCK_ROWS, None], hashes[None, :])
        rows, cols = np.nonzero(block <= max_distance)
        keep = rows + start < cols
        rows, cols = rows[keep], cols[keep]
        found.append(np.stack([rows + start, cols, block[rows, cols]], axis=1))
    return np.concatenate(found).astype(np.int64) if found else np.zeros((0, 3), np.int64)


def duplicate_groups(
    content_hashes: Sequence[str],
    phashes: np.ndarray | None = None,
    max_distance: int = NEAR_DISTANCE,
    without_phash: Sequence[int] = (),
) -> np.ndarray:
    """Group id per image: images share a group when linked by a chain of exact duplicates
    (equal content hash) or near duplicates (pHash Hamming distance <= ``max_distance``; not
    used when ``phashes`` is None or ``max_distance < 0``, nor for the images at indices
    ``without_phash``, which could not be decoded). The groups are the connected
    components of that graph; ids are 0..G-1 in order of first appearance, so a singleton is a
    group of its own.
    """
    n = len(content_hashes)
    first: dict[str, int] = {}
    edges = [(first.setdefault(h, i), i) for i, h in enumerate(content_hashes)]
    pairs = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if phashes is not None and max_distance >= 0:
        if np.shape(phashes) != (n,):
            raise ValueError(f"{np.shape(phashes)} perceptual hashes for {n} content hashes")
        hashed = np.setdiff1d(np.arange(n), np.asarray(without_phash, dtype=np.int64))
        near = hashed[near_pairs(np.asarray(phashes)[hashed], max_distance)[:, :2]]
        pairs = np.concatenate([pairs, near.reshape(-1, 2)])
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first_index, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first_index))
    return rank[inverse].astype(np.int64)


ImageRef = Path | str | tuple[Path | str, int | None]  # a file, or (file, slice or frame k)


def duplicates_of(
    images: Sequence[ImageRef], reference: Sequence[ImageRef],
    max_distance: int = NEAR_DISTANCE, apart: bool = False,
) -> np.ndarray:
    """Bool per image of ``images``: it shares a :func:`duplicate_groups` group (a chain of
    byte-identical or near pairs) with some image of ``reference``; with ``apart``, with
    another image than itself (one of ``images`` that is also in ``reference``). An image is a
    file or a ``(file, k)`` pair (:attr:`braincam.data.records.ImageRecord.image`), so a slice
    of a volume is compared by its own content hash (:func:`slice_hash`: equal for the same
    slice of byte-identical files) and its own pHash, not by its file's. An image that cannot
    be decoded is compared by its bytes alone."""
    items = [(i, None) if isinstance(i, Path | str) else i for i in (*images, *reference)]
    if not images or not reference:
        return np.zeros(len(images), dtype=bool)
    files = {str(f): content_hash(f) for f in dict.fromkeys(str(f) for f, _ in items)}
    unreadable: list[int] = []  # compared by their bytes alone
    phashes = perceptual_hashes(items, file_hashes=files, unreadable=unreadable)
    groups = duplicate_groups([slice_hash(files[str(f)], k) for f, k in items], phashes,
                              max_distance, without_phash=unreadable)
    n = len(images)
    if not apart:
        return np.isin(groups[:n], groups[n:])
    members: dict[int, set[tuple[str, int | None]]] = {}  # group -> its reference images
    for group, (file, k) in zip(groups[n:], items[n:], strict=True):
        members.setdefault(int(group), set()).add((os.path.realpath(file), k))
    return np.array([bool(members.get(int(g), set()) - {(os.path.realpath(f), k)})
                     for g, (f, k) in zip(groups[:n], items[:n], strict=True)], dtype=bool)


class ContentStore:
    """uint64 values by file content hash in one npz file (read whole, merged, replaced
    atomically): the pHash store, and the tumour-mask emptiness flags of ``records``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, int] = {}
        try:
            data = read_npz(path)
            self.values = dict(zip(data["keys"].tolist(), data["values"].tolist(), strict=True))
        except (OSError, KeyError, ValueError, EOFError):
            self.values = {}

    def save(self) -> None:
        """Merge with entries another process wrote meanwhile, then replace the file."""
        merged = ContentStore(self.path).values | self.values
        buf = io.BytesIO()
        np.savez(
            buf,
            keys=np.array(list(merged), dtype="U40"),
            values=np.array(list(merged.values()), dtype=np.uint64),
        )
        atomic_write_bytes(self.path, buf.getvalue())
