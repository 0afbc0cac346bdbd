"""The two training phases, early stopping and the (overridable) loss step."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, TensorDataset

from braincam.device import autocast, grad_scaler, pin_memory
from braincam.distributed import (
    SINGLE,
    DistContext,
    GlobalBatchCrossEntropy,
    GlobalBatches,
    all_reduce_sum,
    rank_slice,
    shard_loss_scale,
    sharded_rows,
    sync_buffers,
    wrap_ddp,
)
from braincam.evaluate.metrics import balanced_accuracy_rows
from braincam.evaluate.predict import forward_batches
from braincam.models.build import BraincamNet, finetune_modules
from braincam.models.normalize import normalize
from braincam.train.augment import AugmentConfig, augment
from braincam.train.config import TrainConfig
from braincam.train.features import backbone_features


@dataclass
class TrainData:
    """One split in memory: grey uint8 images (N, S, S), head masks (N, S, S), class indices,
    and tumour masks (N, S, S) bool, empty where an image has none (None: not loaded, only
    the mask reward needs them)."""

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    tumour: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Batch:
    """What the loss function sees: model input, labels, and the head masks (and tumour
    masks, when loaded) aligned with the (augmented) input -- for mask-aware losses."""

    x: torch.Tensor  # (B, 3, S, S) normalised model input
    y: torch.Tensor  # (B,) class indices
    mask: torch.Tensor  # (B, S, S) bool
    tumour: torch.Tensor | None = None  # (B, S, S) bool, empty where an image has no mask


@dataclass
class EpochRecord:
    """One row of ``history.csv``."""

    phase: str  # "head" | "finetune"
    epoch: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    val_balanced_accuracy: float | None
    lr: float
    seconds: float


LossFn = Callable[[nn.Module, Batch, nn.Module, TrainConfig], torch.Tensor]


def compute_loss(
    model: nn.Module, batch: Batch, criterion: nn.Module, config: TrainConfig
) -> torch.Tensor:
    """The phase-2 training loss: the criterion's cross-entropy of the logits, weighted per
    image (class-balanced unless the guide views weigh as their own group).

    This is the hook for mitigations: ``train_run(..., loss_fn=...)`` replaces it;
    :func:`braincam.train.mitigation.attention_loss` (``config.explains_in_loss``) adds the
    share of explanation energy outside ``batch.mask`` and the mask reward.
    """
    return criterion(model(batch.x), batch.y)


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Balanced class weights ``w_c = N / (K * N_c)`` (sklearn's "balanced"): every class
    contributes equally to the loss whatever its frequency."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    return len(labels) / (num_classes * counts)


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``sum_i w_i l_i / sum_i w_i``: cross-entropy weighted per image. With ``w_i`` the
    class weight of ``y_i`` it is ``F.cross_entropy(..., weight=class_weights)``."""
    per_image = F.cross_entropy(logits, labels, reduction="none")
    return (per_image * weights).sum() / weights.sum()


class BestTracker:
    """Keeps the best model state by validation (balanced accuracy, then lower loss), and
    counts epochs since the last improvement. Only the ``prefixes`` that training changes are
    copied; without validation data the latest epoch counts as the best."""

    def __init__(self, model: nn.Module, prefixes: Iterable[str]) -> None:
        self.model = model
        self.prefixes = tuple(prefixes)
        self.score: tuple[float, float] | None = None
        self.record: EpochRecord | None = None
        self.state: dict[str, torch.Tensor] = {}
        self.stale = 0

    def update(self, record: EpochRecord) -> None:
        score = (
            None
            if record.val_balanced_accuracy is None
            else (record.val_balanced_accuracy, -record.val_loss)
        )
        if score is None or self.score is None or score > self.score:
            self.score, self.record, self.stale = score, record, 0
            self.state = {
                k: v.detach().clone()
                for k, v in self.model.state_dict().items()
                if k.startswith(self.prefixes)
            }
        else:
            self.stale += 1

    def accept(self, record: EpochRecord) -> None:
        """Keep the model's current state as the best whatever its validation score (a
        weight average); later epochs must beat its score."""
        self.score = None
        self.update(record)

    def restore(self) -> None:
        if self.state:
            self.model.load_state_dict(self.state, strict=False)


def fit_head(
    model: BraincamNet,
    train: TrainData,
    val: TrainData,
    weights: torch.Tensor,
    criterion: nn.Module,
    config: TrainConfig,
    device: torch.device,
    tracker: BestTracker,
    progress: bool = False,
    ctx: DistContext = SINGLE,
) -> tuple[list[EpochRecord], torch.Tensor | None]:
    """Phase 1: backbone features of train and val computed once (eval mode, no
    augmentation), then ``head_epochs`` of the head alone on them, minimising
    :func:`weighted_cross_entropy` with ``weights`` (one per training image); ``criterion``
    scores validation. With ``head_average`` N > 1, N heads train in turn (phases ``head``,
    ``head-2``, ...; each starts from a fresh initialisation, its batch order and dropout
    continue torch's and the batch generator's draws) and their mean is kept
    (:func:`_use_head_average`). Under torchrun the features are computed in shares and
    all-gathered; every rank then trains the same heads.

    Returns the history and the kept head's logits on the training images (None without
    phase 1): the errors of this low-capacity model are what :mod:`braincam.train.reweight`
    upweights."""
    if config.head_epochs == 0:
        return [], None
    model.to(device, memory_format=torch.channels_last).eval()
    batch = max(config.batch_size, 64)
    train_x, val_x = (
        backbone_features(model.backbone, part.images, device, batch, ctx, progress).to(device)
        if len(part) else None
        for part in (train, val)
    )
    head = model.head
    weights = weights.to(device)
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=config.head_lr, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)

    def epoch_step(epoch: int) -> tuple[float, torch.Tensor | None, float]:
        head.train()
        total = 0.0
        for idx in torch.randperm(len(train), generator=generator).split(config.batch_size):
            rows = idx.to(device)
            loss = weighted_cross_entropy(head(train_x[rows]), train.labels[idx].to(device),
                                          weights[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        head.eval()
        with torch.inference_mode():
            val_logits = head(val_x).float().cpu() if val_x is not None else None
        return total / len(train), val_logits, config.head_lr

    history = run_epochs("head", config.head_epochs, epoch_step, val, criterion, tracker,
                         config.patience, progress)
    tracker.restore()
    if config.head_average > 1:
        kept = [{k: v.detach().clone() for k, v in head.state_dict().items()}]
        for n in range(2, config.head_average + 1):
            for layer in head.modules():  # a fresh initialisation from torch's random state
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
            optimizer = torch.optim.AdamW(
                head.parameters(), lr=config.head_lr, weight_decay=config.weight_decay
            )
            own = BestTracker(model, ["head."])
            history += run_epochs(f"head-{n}", config.head_epochs, epoch_step, val, criterion,
                                  own, config.patience, progress)
            own.restore()
            kept.append({k: v.detach().clone() for k, v in head.state_dict().items()})
        history.append(_use_head_average(head, kept, val_x, val, criterion, tracker))
        if progress:
            _report(history[-1])
    head.eval()
    with torch.inference_mode():
        train_logits = head(train_x).float().cpu()
    return history, train_logits


def finetune(
    model: BraincamNet,
    train: TrainData,
    val: TrainData,
    weights: torch.Tensor,
    criterion: nn.Module,
    config: TrainConfig,
    device: torch.device,
    tracker: BestTracker,
    loss_fn: LossFn = compute_loss,
    progress: bool = False,
    ctx: DistContext = SINGLE,
    compile: bool = False,
    pool: torch.Tensor | None = None,
) -> list[EpochRecord]:
    """Phase 2: the last stage(s) and the head at ``finetune_lr`` with a cosine schedule, on
    augmented batches, starting from the best state so far; early stopping counts afresh.
    The loss function's criterion is the batch's cross-entropy weighted by ``weights`` (one
    per training image; :class:`braincam.distributed.GlobalBatchCrossEntropy`); ``criterion``
    scores validation. ``compile``: the training forward/backward goes through
    ``torch.compile``. ``pool``: the training indices an epoch draws, repeats allowed
    (:mod:`braincam.train.reweight`); None: each image once.

    ``config.average_weights``: the final model is the mean of the weights after each epoch
    of the second half of the phase (``epoch > finetune_epochs // 2``; torch's
    ``AveragedModel``, as in SWA, Izmailov et al. 2018), not the best epoch on validation:
    averaging finds flatter minima that generalise better under domain shift (SWAD, Cha et
    al. 2021), and spares the choice of one epoch by a validation score that jumps from epoch
    to epoch. Only with frozen BatchNorm statistics (learned weights): with batch statistics
    (``--weights none``) averaged weights would need statistics recomputed for them (SWA's
    ``update_bn``); such runs keep the best epoch.

    Under torchrun the model is wrapped in DistributedDataParallel and each rank trains on
    its slice of the single-process global batches, augmented identically, with its loss
    scaled so that the averaged gradient is the global batch's
    (:mod:`braincam.distributed`); only dropout masks differ from one process.
    With an attention penalty or a mask reward the kept state is the best phase-2 epoch's,
    whatever phase 1 scored: validation data share the training data's shortcuts, so the
    unpenalised phase-1 model would often win on them.

    BatchNorm statistics stay frozen when the weights were learned (``imagenet`` or a file);
    with random weights (``none``) they are meaningless (mean 0, variance 1 make activations
    explode through the frozen stages), so every BatchNorm normalises with batch statistics.
    """
    if config.finetune_epochs == 0:
        return []
    tracker.restore()
    tracker.stale = 0
    if config.explains_in_loss:
        tracker.score = None  # keep a penalised state: phase 1 had no penalty to obey
    frozen_stats = pretrained(config)
    params = set_trainable(model, finetune_modules(model, config.finetune_stages) + ["head"])
    optimizer = torch.optim.AdamW(
        params, lr=config.finetune_lr, weight_decay=config.weight_decay, foreach=True
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.finetune_epochs)
    scaler = grad_scaler(device, config.amp)
    loader = DataLoader(
        TensorDataset(*(t for t in (train.images, train.labels, weights.float(), train.masks,
                                    train.tumour) if t is not None)),
        # batch statistics need more than one image per batch
        batch_sampler=GlobalBatches(len(train) if pool is None else pool, config.batch_size,
                                    config.seed,
                                    drop_last=not frozen_stats and len(train) > config.batch_size),
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,  # no new worker processes every epoch
        pin_memory=pin_memory(device),
    )
    aug_generator = torch.Generator().manual_seed(config.seed + 1)
    aug_config = AugmentConfig(remap=config.contrast_remap)
    model.to(device, memory_format=torch.channels_last)
    net = wrap_ddp(model, device, ctx, batch_statistics=not frozen_stats)
    step_model = torch.compile(net) if compile else net

    def epoch_step(epoch: int) -> tuple[float, torch.Tensor | None, float]:
        net.train()
        if frozen_stats:
            freeze_batchnorm(model)
        lr = optimizer.param_groups[0]["lr"]
        total, seen = torch.zeros((), device=device), 0
        batches = loader
        if progress:
            from tqdm import tqdm

            batches = tqdm(loader, desc=f"finetune {epoch}", unit="batch", leave=False)
        for images, labels, image_weights, *rest in batches:
            images = images.to(device, non_blocking=True).unsqueeze(1).float() / 255
            labels = labels.to(device, non_blocking=True)
            image_weights = image_weights.to(device, non_blocking=True)
            # head mask first, then the tumour mask if loaded: augmented together
            masks = torch.stack(rest, dim=1).to(device, non_blocking=True)
            if config.augment:  # the global batch on every rank: one process's parameters
                images, masks = augment(images, masks, aug_generator, aug_config)
            n = len(labels)
            part = rank_slice(n, ctx)
            n_local = part.stop - part.start
            part = part if n_local else slice(0, 1)  # one image at loss scale 0 joins DDP
            step_criterion = GlobalBatchCrossEntropy(image_weights, part)
            x = normalize(images[part]).contiguous(memory_format=torch.channels_last)
            tumour = masks[part, 1] if masks.shape[1] > 1 else None
            batch = Batch(x, labels[part], masks[part, 0], tumour)
            with autocast(device, enabled=config.amp):
                loss = loss_fn(step_model, batch, step_criterion, config)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss * shard_loss_scale(n, n_local, ctx)).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.detach().float() * n_local
            seen += n
        schedule.step()
        val_logits = validation_logits(model, val, config, device, ctx)
        if average is not None and epoch > config.finetune_epochs // 2:
            average.update_parameters(model)
        return all_reduce_sum(total, ctx).item() / seen, val_logits, lr

    # averaged weights need statistics of their own when BatchNorm learns them: not done
    average = AveragedModel(model) if config.average_weights and frozen_stats else None
    # an average of the second half needs that half: no early stop before it is done
    patience = config.finetune_epochs if average is not None else config.patience
    history = run_epochs("finetune", config.finetune_epochs, epoch_step, val, criterion,
                         tracker, patience, progress)
    if average is not None and int(average.n_averaged):
        history.append(_use_average(model, average, val, criterion, config, device, tracker, ctx))
    return history


def _use_average(
    model: BraincamNet, average: AveragedModel, val: TrainData, criterion: nn.Module,
    config: TrainConfig, device: torch.device, tracker: BestTracker, ctx: DistContext,
) -> EpochRecord:
    """Make the weight average the model and the kept state, whatever validation says (the
    validation images share the training data's acquisition, the shift it is meant for is
    elsewhere); its history row is phase ``average``, epoch = number of epochs averaged."""
    start = time.perf_counter()
    model.load_state_dict(average.module.state_dict())
    val_logits = validation_logits(model, val, config, device, ctx)
    record = _record("average", int(average.n_averaged), float("nan"), val_logits, val,
                     criterion, 0.0, start)
    tracker.accept(record)
    return record


def _use_head_average(
    head: nn.Module, kept: list[dict[str, torch.Tensor]], val_x: torch.Tensor | None,
    val: TrainData, criterion: nn.Module, tracker: BestTracker,
) -> EpochRecord:
    """Make the mean of the ``kept`` heads' weights the head and the kept state, whatever
    validation says: for a linear head ``W_bar f + b_bar = mean_k (W_k f + b_k)``, the mean
    of the heads' logits, whose spread over seeds it removes; its history row is phase
    ``heads``, epoch = the number of heads."""
    start = time.perf_counter()
    head.load_state_dict({k: torch.stack([state[k] for state in kept]).mean(0)
                          for k in kept[0]})
    head.eval()
    with torch.inference_mode():
        val_logits = head(val_x).float().cpu() if val_x is not None else None
    record = _record("heads", len(kept), float("nan"), val_logits, val, criterion, 0.0, start)
    tracker.accept(record)
    return record


def run_epochs(
    phase: str,
    n_epochs: int,
    epoch_step: Callable[[int], tuple[float, torch.Tensor | None, float]],
    val: TrainData,
    criterion: nn.Module,
    tracker: BestTracker,
    patience: int,
    progress: bool,
) -> list[EpochRecord]:
    """The epoch loop both phases share: ``epoch_step(epoch)`` trains one epoch and returns
    (mean training loss, validation logits or None, learning rate); each epoch becomes a
    history row, the tracker keeps the best state, and ``patience`` epochs without a better
    one stop the phase."""
    history = []
    for epoch in range(1, n_epochs + 1):
        start = time.perf_counter()
        train_loss, val_logits, lr = epoch_step(epoch)
        record = _record(phase, epoch, train_loss, val_logits, val, criterion, lr, start)
        history.append(record)
        tracker.update(record)
        if progress:
            _report(record)
        if tracker.stale >= patience:
            break
    return history


def forward_all(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    device: torch.device,
    batch_size: int,
    ctx: DistContext = SINGLE,
    progress: bool = False,
    desc: str = "predict",
) -> torch.Tensor:
    """:func:`braincam.evaluate.predict.forward_batches` over all ``images``; under torchrun
    each rank computes a share and every rank receives all rows, in order."""
    return sharded_rows(
        lambda idx: forward_batches(fn, images[idx], device, batch_size, progress, desc),
        len(images), ctx,
    )


def validation_logits(
    model: nn.Module, val: TrainData, config: TrainConfig, device: torch.device, ctx: DistContext
) -> torch.Tensor | None:
    """The model's logits on the validation images, in eval mode (None without validation)."""
    model.eval()
    if not len(val):
        return None
    sync_buffers(model, ctx)  # every share scored by the model rank 0 keeps
    return forward_all(model, val.images, device, max(config.batch_size, 64), ctx)


def pretrained(config: TrainConfig) -> bool:
    """Whether the backbone starts from learned weights (ImageNet or a checkpoint file)."""
    return config.weights != "none"


def set_trainable(model: nn.Module, names: list[str]) -> list[nn.Parameter]:
    """Freeze every parameter except those of the modules ``names``; returns the trainable
    parameters. BatchNorm affine weights inside those modules train (a frozen zero-initialised
    gamma, as timm gives the last BN of each residual block, would block its branch for good);
    BatchNorm statistics stay frozen (:func:`freeze_batchnorm`)."""
    model.requires_grad_(False)
    for name in names:
        model.get_submodule(name).requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm in eval mode: running statistics stay the pretrained ones (small batches of
    MRI slices would give noisy estimates)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _record(
    phase: str,
    epoch: int,
    train_loss: float,
    val_logits: torch.Tensor | None,
    val: TrainData,
    criterion: nn.Module,
    lr: float,
    start: float,
) -> EpochRecord:
    """An epoch's history row; the validation loss is ``criterion``'s class-weighted
    cross-entropy (classes weighed as in the classifier's own training images)."""
    if val_logits is None:
        val_loss = accuracy = balanced = None
    else:
        weight = getattr(criterion, "weight", None)
        weight = None if weight is None else weight.cpu()
        val_loss = float(F.cross_entropy(val_logits, val.labels, weight=weight))
        pred = val_logits.argmax(1).numpy()
        y = val.labels.numpy()
        accuracy = float((pred == y).mean())
        balanced = float(balanced_accuracy_rows(y[None], pred[None], val_logits.shape[1])[0])
    seconds = time.perf_counter() - start
    return EpochRecord(phase, epoch, float(train_loss), val_loss, accuracy, balanced, lr, seconds)


def _report(record: EpochRecord) -> None:
    """One line per epoch, printed above the progress bars."""
    from tqdm import tqdm

    val = (
        f"val loss {record.val_loss:.4f}, acc {record.val_accuracy:.3f}, "
        f"bal.acc {record.val_balanced_accuracy:.3f}"
        if record.val_loss is not None else "no validation"
    )
    tqdm.write(f"{record.phase} epoch {record.epoch}: train loss {record.train_loss:.4f}; "
               f"{val} ({record.seconds:.0f} s)")


def history_frame(records: list[EpochRecord]):  # -> pandas.DataFrame
    """``history.csv`` as a DataFrame (columns in :class:`EpochRecord` order)."""
    import pandas as pd

    return pd.DataFrame([vars(r) for r in records], columns=list(EpochRecord.__annotations__))

