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
batch freed (about 0.4 GB more peak memory for a 64-image batch of EfficientNet-Lite0).
:func:`bench_allocator` measures both settings side by side (``braincam bench allocator``).
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
KEPT_TOP = 1 << 30
TUNABLES = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Apply the module docstring's two ``mallopt`` settings to this process; True when set.

    Nothing is changed (False) off Linux's glibc, when ``LD_PRELOAD`` brings another allocator
    (jemalloc, tcmalloc), or when the user has tuned glibc's malloc already (``MALLOC_*_``
    variables or ``glibc.malloc`` in ``GLIBC_TUNABLES``)."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    if os.environ.get("LD_PRELOAD") or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if any(name in os.environ for name in TUNABLES):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEPT_TOP))


def _inference(keep: bool, arch: str, batch: int, image_size: int, batches: int,
               threads: int) -> dict[str, float]:
    """In a fresh process: images/s of ``batches`` inference batches of ``arch`` (one warm-up
    batch first), with the kernel's CPU seconds and minor page faults over the timed ones."""
    kept = keep_freed_memory() if keep else False
    import torch

    from braincam.evaluate.predict import forward_batches
    from braincam.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(arch, num_classes=2, weights="none").eval()
    model.to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (batch, image_size, image_size), dtype=torch.uint8)
    cpu = torch.device("cpu")
    forward_batches(model, images, cpu, batch)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(batches):
        forward_batches(model, images, cpu, batch)
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {"img_s": batch * batches / seconds, "sys_s": after.ru_stime - before.ru_stime,
            "minor_faults": after.ru_minflt - before.ru_minflt, "kept": kept,
            "peak_rss_mb": after.ru_maxrss / 1024}


def bench_allocator(arch: str = "efficientnet_lite0", batch: int = 64, image_size: int = 224,
                    batches: int = 3, repeats: int = 3, threads: int | None = None
                    ) -> dict[str, object]:
    """CPU inference images/s with glibc's defaults against :func:`keep_freed_memory`, each
    repeat a fresh process per setting, the two in turn; medians over ``repeats``, ``ratio``
    = kept over default (the median of the repeats' ratios)."""
    threads = threads or len(os.sched_getaffinity(0))
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(repeats):
        for keep in (False, True):
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                runs[keep].append(pool.submit(_inference, keep, arch, batch, image_size,
                                              batches, threads).result())
    if not all(r["kept"] for r in runs[True]):
        return {"arch": arch, "applies": False}

    def median(keep: bool, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[keep]), 2)

    ratios = [k["img_s"] / d["img_s"] for d, k in zip(runs[False], runs[True], strict=True)]
    return {
        "arch": arch, "batch": batch, "image_size": image_size, "batches": batches,
        "repeats": repeats, "threads": threads, "applies": True,
        "default_img_s": median(False, "img_s"), "kept_img_s": median(True, "img_s"),
        "ratio": round(statistics.median(ratios), 3),
        "default_sys_s": median(False, "sys_s"), "kept_sys_s": median(True, "sys_s"),
        "default_minor_faults": int(median(False, "minor_faults")),
        "kept_minor_faults": int(median(True, "minor_faults")),
        "default_peak_rss_mb": median(False, "peak_rss_mb"),
        "kept_peak_rss_mb": median(True, "peak_rss_mb"),
    }
