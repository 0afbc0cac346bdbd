"""The device: one place decides where tensors live and which autocast to use."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from braincam.errors import BraincamError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch lists every device type it knows
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was asked for but no MPS device is available")
    return device


def device_of(name: str | torch.device) -> torch.device:
    """:func:`braincam.device.resolve_device` with its errors as one-line BraincamErrors."""
    if isinstance(name, torch.device):
        return name
    try:
        return resolve_device(name)
    except (ValueError, RuntimeError) as exc:
        raise BraincamError(str(exc)) from None


def cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, as oneDNN reports it):
    without it, bf16 autocast on a CPU is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(device: torch.device, cpu: bool = False) -> torch.dtype | None:
    """bf16 on GPUs that support it, fp16 on other GPUs; on a CPU none, unless ``cpu`` asks
    for bf16 and the CPU computes it natively (:func:`cpu_bf16`). Only training asks: a
    U-Net training step runs about 1.1x faster so on a 2-core AVX512-BF16 CPU
    (``braincam bench segment --no-reference-amp``), while inference and explanations keep
    fp32 on a CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu and cpu_bf16() else None


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True, cpu: bool = False) -> Iterator[None]:
    """Mixed precision in :func:`amp_dtype`'s type; a no-op where that is none."""
    dtype = amp_dtype(device, cpu)
    if not enabled or dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A loss scaler for :func:`autocast` with the same ``enabled``: active only where that
    computes in fp16 (bf16 and fp32 keep fp32's exponent range and need no scaling)."""
    return torch.amp.GradScaler(device.type, enabled=enabled and amp_dtype(device) == torch.float16)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch's intra-op thread count set to ``n`` inside the block, restored on exit (several
    processes sharing a small CPU run far slower with two spinning threads each)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pin_memory(device: torch.device) -> bool:
    """Pinned host memory only helps host-to-GPU copies."""
    return device.type == "cuda"


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call of ``fn``, the device's queue drained before and after
    (CUDA kernels run asynchronously; without the syncs a timer measures only the launch)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                warmups: int = 1, iters: int = 1) -> dict[str, list[float]]:
    """Seconds of each contender per repeat, for benchmarks measured side by side: ``warmups``
    untimed calls of each (allocator, kernel choice, caches), then ``repeats`` rounds in which
    every contender in turn makes ``iters`` :func:`timed` calls (their sum is the round's
    figure). Interleaving makes load on a shared machine fall on all contenders alike."""
    for fn in contenders.values():
        for _ in range(warmups):
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            seconds[name].append(sum(timed(fn, device) for _ in range(iters)))
    return seconds


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over repeats of each repeat's ratio (load that drifts between repeats
    cancels), to 3 decimals."""
    return round(statistics.median(a / b for a, b in zip(numerator, denominator, strict=True)), 3)
