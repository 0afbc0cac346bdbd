"""Host memory: glibc's allocator keeps freed memory for the next batch (no torch import).

glibc's ``malloc`` gives every request above its mmap threshold (128 KiB, rising to at most
32 MiB) a mapping of its own and unmaps it on ``free``. CPU inference frees and requests the
same large activation tensors batch after batch (the first feature map of EfficientNet-Lite0
for 64 images at 224 px is 103 MB), so each batch's memory comes back as fresh pages that the
kernel must fault in and zero: on a 2-core CPU the kernel's time matched the computation's.
:func:`keep_freed_memory` sets, with ``mallopt``,

    M_MMAP_MAX = 0               no request gets a mapping of its own: all come from the heap
    M_TRIM_THRESHOLD = 1 GiB     up to 1 GiB of free memory at the heap's top stays mapped

so freed tensors are reused in place. The cost is resident memory: the heap keeps what a
batch freed (0.6 GB more at the peak of the recommended recipe's classifier stage).
:func:`braincam.evaluate.bench.bench_allocator` measures both settings side by side
(``braincam bench allocator``).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
KEPT_TOP = 1 << 30
TUNABLES = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_TOP_PAD_")


def tunable() -> bool:
    """Whether :func:`keep_freed_memory` would change anything: Linux's glibc, no other allocator
    brought by ``LD_PRELOAD`` (jemalloc, tcmalloc), and no tuning of glibc's malloc by the user
    (``MALLOC_*_`` variables, or ``glibc.malloc`` in ``GLIBC_TUNABLES``)."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    if os.environ.get("LD_PRELOAD") or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    return not any(name in os.environ for name in TUNABLES)


def keep_freed_memory() -> bool:
    """Apply the module docstring's two ``mallopt`` settings to this process where
    :func:`tunable`; True when they are set."""
    if not tunable():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEPT_TOP))
