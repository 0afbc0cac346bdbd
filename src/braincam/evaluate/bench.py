"""``braincam bench allocator``: CPU inference with glibc's allocator defaults against
:func:`braincam.allocator.keep_freed_memory`.

The setting holds for a whole process and cannot be undone, so each contender runs in a fresh
process (``spawn``), the two in turn within each repeat: load on a shared machine falls on both
alike. Random weights and images (speed does not depend on them; nothing is downloaded), the
batches of :func:`braincam.evaluate.predict.forward_batches`, which the feature and prediction
passes use.
"""

from __future__ import annotations

import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from braincam.allocator import keep_freed_memory


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
    = kept over default (the median of the repeats' ratios). ``threads``: torch's intra-op
    threads in each process, by default this process's (``OMP_NUM_THREADS`` where set)."""
    import torch

    threads = threads or torch.get_num_threads()
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(repeats):
        for keep in (False, True):
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                runs[keep].append(pool.submit(_inference, keep, arch, batch, image_size,
                                              batches, threads).result())

    def median(keep: bool, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[keep]), 2)

    ratios = [k["img_s"] / d["img_s"] for d, k in zip(runs[False], runs[True], strict=True)]
    return {
        "arch": arch, "batch": batch, "image_size": image_size, "batches": batches,
        "repeats": repeats, "threads": threads,
        "kept": all(r["kept"] for r in runs[True]),
        "default_img_s": median(False, "img_s"), "kept_img_s": median(True, "img_s"),
        "ratio": round(statistics.median(ratios), 3),
        "default_sys_s": median(False, "sys_s"), "kept_sys_s": median(True, "sys_s"),
        "default_minor_faults": int(median(False, "minor_faults")),
        "kept_minor_faults": int(median(True, "minor_faults")),
        "default_peak_rss_mb": median(False, "peak_rss_mb"),
        "kept_peak_rss_mb": median(True, "peak_rss_mb"),
    }
