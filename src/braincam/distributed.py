"""Several processes, one result: ``torchrun --nproc_per_node=N braincam train|explain ...``.

torchrun starts N copies of the command with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in the
environment. :func:`setup` joins them into a process group (``nccl`` on GPUs, each rank on
``cuda:LOCAL_RANK``; ``gloo`` on the CPU); without those variables everything here is the
single-process identity, so the same code path serves both.

How N processes reproduce the single-process run (within floating-point rounding):

- **Order.** Every rank draws the same global batches (:class:`GlobalBatches`: one permutation
  per epoch from a generator seeded with the run's seed) and takes its contiguous slice of each
  (:func:`rank_slice`). Augmentation parameters are drawn for the whole global batch on every
  rank from the same generator, so image ``i`` gets the same augmentation as in one process.
- **Gradient.** DDP averages gradients over ranks: ``g = (1/N) sum_r grad(a_r L_r)``. With
  ``a_r = N n_r / n`` (``n_r`` images of the global batch's ``n`` on rank ``r``, see
  :func:`shard_loss_scale`) a per-image mean ``L_r = mean_{i in r} l_i`` gives exactly the
  gradient of ``mean_i l_i``. The weighted cross-entropy ``sum_i w_i l_i / sum_i w_i``
  normalises by the global batch's weight sum ``G`` instead, so on rank ``r`` it is computed as
  ``(n / n_r) * sum_{i in r} w_i l_i / G`` (:class:`GlobalBatchCrossEntropy`), which the same
  ``a_r`` turns into the single-process term. A rank with an empty slice (a last batch smaller
  than N) runs one image with ``a_r = 0``: it still joins DDP's gradient all-reduce.
- **Inference.** Backbone features (phase 1), validation logits and explanations are computed
  on contiguous shards and gathered back in the original order (:func:`sharded_rows`).

Rank 0 alone writes files and shows progress; the others wait (:func:`main_first`), and a
failure of rank 0 inside such a block reaches them as the same one-line error, not a hang.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from braincam.errors import BraincamError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place among the ranks; the defaults describe a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    comm_device: torch.device = torch.device("cpu")  # where collectives' tensors live

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` without."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as exc:
        raise BraincamError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {exc}") \
            from None


def setup(device_name: str | torch.device = "auto") -> tuple[DistContext, torch.device]:
    """Join torchrun's process group (once per process) and pick this rank's device.

    Single process: ``(SINGLE, device_of(device_name))``. Under torchrun a CUDA device becomes
    ``cuda:LOCAL_RANK`` with the ``nccl`` backend; the CPU uses ``gloo``.
    """
    from braincam.device import device_of

    device = device_of(device_name)
    _, world, local = env_world()
    if world <= 1:
        return SINGLE, device
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise BraincamError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise BraincamError(f"torchrun needs a CPU or CUDA device, not {device}")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return current(), device


def current() -> DistContext:
    """The context of the initialised process group, or :data:`SINGLE`."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return SINGLE
    _, _, local = env_world()
    nccl = dist.get_backend() == "nccl"
    comm = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    return DistContext(dist.get_rank(), dist.get_world_size(), local, comm)


_left_group = False  # set by shutdown(): gloo's threads may abort this process's teardown


def shutdown() -> None:
    """Leave the process group (a no-op without one); a rank other than 0 then exits at once.

    The barrier first: a rank that tears its gloo connections down while a peer is still in a
    collective makes the peer abort. The exit: gloo's worker threads can outlive
    ``destroy_process_group`` and abort the interpreter's teardown ("terminate called without
    an active exception", about 1 run in 20 of the two-process test on a loaded CPU;
    pytorch/pytorch#65231), so the other ranks, whose work is done, skip that teardown."""
    global _left_group
    if not (dist.is_available() and dist.is_initialized()):
        return
    rank = dist.get_rank()
    dist.barrier()
    dist.destroy_process_group()
    _left_group = True
    if rank != 0:
        exit_process(0)


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``: ``sys.exit``, or, once :func:`shutdown` left a process
    group, ``os._exit`` after flushing logs and output, so the interpreter's teardown (which
    gloo's leftover threads can abort, on rank 0 as well: seen in a fresh-clone ``make test``,
    2026-11-27) never runs. Outputs are written before: nothing is lost."""
    if _left_group:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


@contextlib.contextmanager
def main_first(ctx: DistContext) -> Iterator[None]:
    """Rank 0 runs the block, then the other ranks do (they wait meanwhile): rank 0 fills a
    cache the others then read, or writes files (``if ctx.is_main:`` inside the block) the
    others must not start before. An exception on rank 0 is re-raised there and reaches the
    others as a BraincamError with its message."""
    if not ctx.enabled:
        yield
        return
    if not ctx.is_main:
        failure = _broadcast(None, ctx)
        if failure is not None:
            raise BraincamError(failure)
        yield
        return
    try:
        yield
    except BaseException as exc:
        message = (str(exc) if isinstance(exc, BraincamError)
                   else f"rank 0 failed: {type(exc).__name__}: {exc}".rstrip(": "))
        _broadcast(message, ctx)
        raise
    _broadcast(None, ctx)


def _broadcast(obj: Any, ctx: DistContext) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=ctx.comm_device)
    return box[0]


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (pickled: keep it small)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_objects(obj: Any, ctx: DistContext) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0; None on the other ranks."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_reduce_sum(value: Tensor, ctx: DistContext) -> Tensor:
    """The sum of ``value`` over the ranks, on ``value``'s device."""
    if not ctx.enabled:
        return value
    total = value.detach().to(ctx.comm_device, copy=True)
    dist.all_reduce(total)
    return total.to(value.device)


def shard_range(n: int, ctx: DistContext) -> range:
    """Rank ``r``'s contiguous block of ``range(n)``: ``n // N`` items, one more for the first
    ``n % N`` ranks (``torch.tensor_split``'s rule); blocks in rank order give ``range(n)``."""
    base, extra = divmod(n, ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return range(start, start + base + (ctx.rank < extra))


def rank_slice(n: int, ctx: DistContext) -> slice:
    """This rank's part of a global batch of ``n`` images (:func:`shard_range`)."""
    part = shard_range(n, ctx)
    return slice(part.start, part.stop)


def sharded_rows(compute: Callable[[Tensor | slice], Tensor], n: int, ctx: DistContext) -> Tensor:
    """``compute(indices)`` (one row per index) for all of ``range(n)``, each rank computing
    ``ceil(n / N)`` rows and all-gathering: every rank gets the ``n`` rows in order. Short
    blocks are padded with the last index, so every rank computes (and sends) equal shapes.
    One process computes ``compute(slice(None))`` (a view, no copy of the inputs)."""
    if not ctx.enabled:
        return compute(slice(None))
    chunk = math.ceil(n / ctx.world_size)
    indices = torch.arange(ctx.rank * chunk, (ctx.rank + 1) * chunk).clamp_max(n - 1)
    local = compute(indices)
    parts = [torch.empty_like(local, device=ctx.comm_device) for _ in range(ctx.world_size)]
    dist.all_gather(parts, local.to(ctx.comm_device).contiguous())
    return torch.cat(parts)[:n].to(local.device)


class GlobalBatches:
    """The batch order of one process: per epoch, the ``pool`` of indices (``n``: ``0..n-1``;
    a tensor may repeat indices, :func:`braincam.train.reweight.upsampled_pool`) shuffled by
    ``torch.randperm`` from a generator seeded once with ``seed``, cut into batches of
    ``batch_size`` (a short last batch dropped when ``drop_last``). Every rank iterates the
    same global batches (a DataLoader ``batch_sampler``) and trains on its
    :func:`rank_slice` of each."""

    def __init__(
        self, pool: int | Tensor, batch_size: int, seed: int, drop_last: bool = False
    ) -> None:
        self.pool = torch.arange(pool) if isinstance(pool, int) else pool
        self.n, self.batch_size, self.drop_last = len(self.pool), batch_size, drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.pool[torch.randperm(self.n, generator=self.generator)]
        for batch in order.split(self.batch_size):
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield batch.tolist()

    def __len__(self) -> int:
        whole, rest = divmod(self.n, self.batch_size)
        return whole + (rest > 0 and not self.drop_last)


def shard_loss_scale(n_global: int, n_local: int, ctx: DistContext) -> float:
    """``a_r = N n_r / n``: the factor on rank ``r``'s loss before backward, so that DDP's
    average of the ranks' gradients is the gradient of the global batch's mean loss."""
    return ctx.world_size * n_local / n_global


class GlobalBatchCrossEntropy(nn.Module):
    """Rank ``r``'s share of the global batch's weighted cross-entropy, scaled so that
    :func:`shard_loss_scale` applies to it like to a per-image mean::

        (n / n_r) * sum_{i in r} w_i l_i / G,   G = sum_{i in global batch} w_i

    ``weights``: the loss weight of every image of the global batch (class-balanced weights
    ``w_{y_i}``, or any per-image weights); ``part``: rank ``r``'s slice of it. In one
    process (``part`` the whole batch) this is the ordinary weighted mean."""

    def __init__(self, weights: Tensor, part: slice) -> None:
        super().__init__()
        self.local = weights[part]
        n_local = max(len(self.local), 1)
        self.factor = len(weights) / (n_local * weights.sum())  # a tensor: no sync

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        per_image = F.cross_entropy(logits, labels, reduction="none")
        return (per_image * self.local).sum() * self.factor


def sync_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, before the ranks share
    out inference. On the CPU each rank's statistics follow its own slice of the batches, and
    DDP copies rank 0's only at a training forward: without this, the other ranks' shares of
    validation and held-out images would be scored by a model other than the one rank 0
    saves. Every rank must call it."""
    if not ctx.enabled:
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


class NetDDP(nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that answers for the network it wraps: ``arch``,
    ``get_submodule("backbone.bn2")`` and other attributes resolve on the network, so loss
    functions written for the plain model (hooks on a named layer, ``default_target_layer``)
    work unchanged while the forward pass goes through DDP."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)

    def get_submodule(self, target: str) -> nn.Module:
        return self.module.get_submodule(target)


def wrap_ddp(model: nn.Module, device: torch.device, ctx: DistContext,
             batch_statistics: bool) -> nn.Module:
    """``model`` for training under ``ctx``: itself in one process, else a :class:`NetDDP`.

    With batch-statistics BatchNorm (random weights), CUDA ranks switch to SyncBatchNorm
    (timm's converter, which knows timm's BatchNormAct), so statistics span the global batch;
    gloo has no SyncBatchNorm, so on the CPU each rank normalises its own slice (a warning says
    so) and rank 0's running statistics are copied to the others at every training forward,
    and by :func:`sync_buffers` before the ranks share out inference."""
    if not ctx.enabled:
        return model
    if batch_statistics:
        if device.type == "cuda":
            from timm.layers import convert_sync_batchnorm

            model = convert_sync_batchnorm(model)  # the same root module, children swapped
        else:
            log.warning(
                "BatchNorm statistics come from each process's slice of the batch "
                "(SyncBatchNorm needs CUDA); results differ from one process"
            )
    return NetDDP(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=batch_statistics,  # frozen statistics need no per-step copy
    )
