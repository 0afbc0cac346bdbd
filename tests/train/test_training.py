"""Training runs on small phantom datasets (timm's tiny test_resnet at 32 px keeps them fast)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
import yaml

from braincam.data.preprocess import PreprocessConfig
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.evaluate import evaluate_run
from braincam.models import build_model, load_checkpoint
from braincam.train import Batch, TrainConfig, class_weights, compute_loss, train_run
from braincam.train.loop import BestTracker, EpochRecord, weighted_cross_entropy

HISTORY_COLUMNS = [
    "phase", "epoch", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "lr",
    "seconds",
]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "phantoms"
    make_phantom_dataset(root, PhantomSpec(n_per_class=10, size=48, seed=1))
    (root / "Training" / "tumor" / "empty.png").write_bytes(b"")  # skipped, not fatal
    return root


def tiny(**changes) -> TrainConfig:
    base = TrainConfig(
        arch="test_resnet", weights="none", head_epochs=2, finetune_epochs=2, batch_size=8,
        preprocess=PreprocessConfig(size=32), device="cpu",
    )
    return dataclasses.replace(base, **changes)


def test_run_directory_holds_every_file(phantoms, tmp_path):
    config = tiny()
    result = train_run([phantoms], config, tmp_path / "run", progress=False, command="x")
    run = tmp_path / "run"
    doc = yaml.safe_load((run / "config.yaml").read_text())
    assert doc["data"] == [str(phantoms.resolve())]
    assert TrainConfig.from_dict(doc["train"]) == config
    assert {"torch", "timm", "python"} <= set(doc["versions"])
    history = pd.read_csv(run / "history.csv")
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["phase"].tolist() == ["head", "head", "finetune", "finetune"]
    split = pd.read_csv(run / "split.csv")
    assert len(split) == 40 and split["split"].value_counts()["test"] == 20
    skipped = pd.read_csv(run / "skipped.csv")
    assert skipped["path"].str.endswith("empty.png").tolist() == [True]
    model, meta = load_checkpoint(run / "model.safetensors")
    assert meta["arch"] == "test_resnet" and meta["classes"] == ["no_tumor", "tumor"]
    assert meta["task"] == "binary" and meta["preprocess"]["size"] == 32
    assert (meta["best"]["phase"], meta["best"]["epoch"]) == (
        result.best_phase, result.best_epoch
    )
    best = history[(history.phase == result.best_phase) & (history.epoch == result.best_epoch)]
    assert best["val_balanced_accuracy"].item() == history["val_balanced_accuracy"].max()
    assert result.counts["train"] + result.counts["val"] == 20


def test_same_seed_same_history_and_weights(phantoms, tmp_path):
    config = tiny(finetune_epochs=1)
    runs = [train_run([phantoms], config, tmp_path / name, progress=False) for name in "ab"]
    other = train_run([phantoms], tiny(finetune_epochs=1, seed=1), tmp_path / "c", progress=False)
    frames = [pd.read_csv(r.run_dir / "history.csv").drop(columns="seconds") for r in runs]
    pd.testing.assert_frame_equal(frames[0], frames[1])
    weights = [load_checkpoint(r.run_dir / "model.safetensors")[0].state_dict() for r in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    losses = pd.read_csv(other.run_dir / "history.csv")["train_loss"]
    assert not losses.equals(frames[0]["train_loss"])


def test_existing_run_directory_is_refused_without_force(phantoms, tmp_path):
    config = tiny(head_epochs=1, finetune_epochs=0)
    train_run([phantoms], config, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(BraincamError, match="already holds a run; pass --force"):
        train_run([phantoms], config, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "model.safetensors").stat().st_mtime_ns == before
    train_run([phantoms], config, tmp_path / "run", force=True, progress=False)
    mine = tmp_path / "documents"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(BraincamError, match="braincam did not write"):
        train_run([phantoms], config, mine, force=True, progress=False)
    assert (mine / "notes.txt").read_text() == "mine"


STATS = ("running_mean", "running_var", "num_batches_tracked")


def _changed(run_dir, config: TrainConfig) -> set[str]:
    """State-dict entries that training changed, against the model train_run starts from."""
    trained, _ = load_checkpoint(run_dir / "model.safetensors")
    torch.manual_seed(config.seed)
    initial = build_model(config.arch, 2, config.weights, dropout=config.dropout)
    after, before = trained.state_dict(), initial.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_finetuning_pretrained_changes_only_the_last_stages_with_frozen_statistics(
    phantoms, tmp_path
):
    config = tiny(arch="efficientnet_lite0", weights="imagenet", head_epochs=0,
                  finetune_epochs=1, finetune_stages=2)
    train_run([phantoms], config, tmp_path / "run", progress=False)
    changed = _changed(tmp_path / "run", config)
    stages = ("backbone.blocks.5.", "backbone.blocks.6.", "backbone.conv_head.", "backbone.bn2.",
              "head.1.")
    assert any(k.startswith("backbone.blocks.5.") and "conv" in k for k in changed)
    assert all(k.startswith(stages) for k in changed)
    assert not any(k.endswith(STATS) for k in changed)


def test_random_weights_finetune_with_batch_statistics(phantoms, tmp_path):
    config = tiny(head_epochs=0, finetune_epochs=1)
    result = train_run([phantoms], config, tmp_path / "run", progress=False)
    changed = _changed(tmp_path / "run", config)
    assert "backbone.bn1.running_mean" in changed  # statistics of a frozen stage adapt
    assert not any(k.startswith("backbone.layer1.") and k.endswith("weight")
                   and "bn" not in k for k in changed)  # its weights do not
    assert any(k.startswith("backbone.layer4.") and "conv" in k for k in changed)
    assert result.history[0].train_loss < 5  # no exploding activations


def test_custom_loss_sees_aligned_masks(phantoms, tmp_path):
    seen = []

    def loss_fn(model, batch: Batch, criterion, config):
        seen.append((tuple(batch.x.shape), tuple(batch.mask.shape), batch.mask.dtype))
        return compute_loss(model, batch, criterion, config)

    config = tiny(head_epochs=0, finetune_epochs=1, attention_penalty=0.5)
    train_run([phantoms], config, tmp_path / "run", progress=False, loss_fn=loss_fn)
    assert seen[0] == ((8, 3, 32, 32), (8, 32, 32), torch.bool)


def test_class_weights_balance_the_classes():
    weights = class_weights(torch.tensor([0, 0, 0, 1]), 2)
    torch.testing.assert_close(weights, torch.tensor([4 / 6, 2.0]))


def test_best_tracker_keeps_best_state_and_counts_stale_epochs():
    model = torch.nn.Linear(1, 1)
    tracker = BestTracker(model, ["weight"])

    def epoch(n: int, balanced: float, loss: float) -> None:
        model.weight.data.fill_(n)
        tracker.update(EpochRecord("head", n, 0.0, loss, balanced, balanced, 0.1, 0.0))

    epoch(1, 0.7, 0.5)
    epoch(2, 0.8, 0.6)  # better balanced accuracy wins despite a higher loss
    epoch(3, 0.8, 0.7)  # tie, higher loss: no improvement
    epoch(4, 0.6, 0.1)
    assert tracker.record.epoch == 2 and tracker.stale == 2
    tracker.restore()
    assert model.weight.item() == 2.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "tri"}, "--task"),
        ({"split": "shuffle"}, "--split"),
        ({"head_epochs": 0, "finetune_epochs": 0}, "at least one epoch"),
        ({"batch_size": 0}, "--batch-size"),
        ({"head_average": 0}, "--head-average must be >= 1"),
        ({"contrast_remap": 0.5, "augment": False}, "--contrast-remap augments phase 2"),
        ({"contrast_remap": 0.5, "finetune_epochs": 0}, "--contrast-remap augments phase 2"),
        ({"head_average": 3, "head_epochs": 0}, "--head-average N averages phase 1's heads"),
        ({"split": "dedup", "val_fraction": 0.5, "test_fraction": 0.5}, "add up to less than 1"),
        ({"val_fraction": 1.5}, "val fraction must be in"),
        ({"finetune_epochs": 1.5}, "--finetune-epochs must be a whole number, got 1.5"),
        ({"batch_size": True}, "--batch-size must be a whole number, got True"),
        ({"seed": -1}, r"--seed must be in \[0, 2\*\*32\), got -1"),
        ({"split_seed": 2**32}, "--split-seed must be in"),
        ({"mask_reward": float("inf")}, "--mask-reward must be a finite number, got inf"),
        ({"guide_views_weight": float("inf")}, "--guide-views-weight must be a finite number"),
    ],
)
def test_bad_options_are_one_line_errors(changes, message, phantoms, tmp_path):
    with pytest.raises(BraincamError, match=message):
        train_run([phantoms], tiny(**changes), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_config_round_trips_and_rejects_unknown_options():
    config = tiny(seed=3, augment=False)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert isinstance(TrainConfig.from_dict(config.to_dict()).preprocess, PreprocessConfig)
    with pytest.raises(BraincamError, match="unknown training option.*epochz"):
        TrainConfig.from_dict({**config.to_dict(), "epochz": 3})


def test_data_errors_leave_no_run_directory(tmp_path):
    from PIL import Image

    from braincam.data.synthetic import make_phantom_arrays

    root = tmp_path / "no-split"
    for item in make_phantom_arrays(PhantomSpec(n_per_class=3, size=48), splits=("test",)):
        (root / item.label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(item.phantom.image).save(root / item.label / f"{item.name}.png")
    with pytest.raises(BraincamError, match="no official split.*--split random"):
        train_run([root], tiny(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def typed_phantoms(tmp_path_factory):
    """The phantoms with their tumours filed as two types, alternately glioma / meningioma."""
    root = tmp_path_factory.mktemp("typed") / "phantoms"
    make_phantom_dataset(root, PhantomSpec(n_per_class=12, size=48, seed=2))
    for split in ("Training", "Testing"):
        for i, file in enumerate(sorted((root / split / "tumor").iterdir())):
            kind = root / split / ("glioma" if i % 2 else "meningioma")
            kind.mkdir(exist_ok=True)
            file.rename(kind / file.name)
        (root / split / "tumor").rmdir()
    (root / "boxes.csv").unlink()  # its paths name the old folder
    return root


@pytest.mark.filterwarnings("ignore:The least populated class")  # 6 images per type
@pytest.mark.parametrize("subtypes", [True, False])
def test_binary_model_learns_tumour_types_and_answers_tumor(
    typed_phantoms, tmp_path, monkeypatch, subtypes
):
    import braincam.data.splits as splits

    stratified_by = []
    make_split = splits.make_split
    monkeypatch.setattr(splits, "make_split",
                        lambda records, task, *a, **k: stratified_by.append(task) or make_split(
                            records, task, *a, **k))
    config = tiny(subtypes=subtypes)
    result = train_run([typed_phantoms], config, tmp_path / "run", progress=False)
    assert stratified_by == ["multiclass" if subtypes else "binary"]  # by the trained classes
    model, meta = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert result.classes == meta["classes"] == ["no_tumor", "tumor"]
    assert meta["subtypes"] == (["glioma", "meningioma", "no_tumor"] if subtypes else None)
    assert model.head[1].out_features == (3 if subtypes else 2)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2)
    assert model.merges_subtypes == subtypes
    metrics = evaluate_run(tmp_path / "run", device="cpu", n_boot=10, progress=False)
    assert metrics["classes"] == ["no_tumor", "tumor"]
    assert metrics["test"]["n"] == 24 and len(metrics["test"]["confusion_matrix"]) == 2


def test_average_weights_keeps_the_mean_of_the_second_half(phantoms, tmp_path, monkeypatch):
    import braincam.train.loop as loop

    snapshots = []

    class Recording(loop.AveragedModel):
        def update_parameters(self, model):
            snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            super().update_parameters(model)

    monkeypatch.setattr(loop, "AveragedModel", Recording)
    config = tiny(finetune_epochs=4, average_weights=True, patience=10, weights="imagenet",
                  arch="efficientnet_lite0")
    train_run([phantoms], config, tmp_path / "run", progress=False)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history.phase)[-5:] == ["finetune"] * 4 + ["average"]
    assert history.epoch.iloc[-1] == 2 and len(snapshots) == 2  # epochs 3 and 4
    model, _ = load_checkpoint(tmp_path / "run" / "model.safetensors")
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (snapshots[0][name] + snapshots[1][name]) / 2)
    assert not torch.equal(snapshots[0]["head.1.weight"], snapshots[1]["head.1.weight"])


def test_early_stopping_leaves_the_averaged_half_of_phase_2_whole(phantoms, tmp_path,
                                                                   monkeypatch):
    """--patience 1 with validation that never improves: phase 1 stops early, phase 2 runs
    its 4 epochs and averages the last 2 as --average-weights says."""
    import braincam.train.loop as loop

    first = loop.BestTracker.update

    def never_better(self, record):
        if self.score is None:
            first(self, record)
        else:
            self.stale += 1

    monkeypatch.setattr(loop.BestTracker, "update", never_better)
    config = tiny(head_epochs=3, finetune_epochs=4, average_weights=True, patience=1,
                  weights="imagenet", arch="efficientnet_lite0")
    train_run([phantoms], config, tmp_path / "run", progress=False)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(zip(history.phase, history.epoch, strict=True)) == [
        ("head", 1), ("head", 2), *[("finetune", k) for k in range(1, 5)], ("average", 2)]


def test_head_average_keeps_the_mean_of_heads_trained_in_turn(phantoms, tmp_path, monkeypatch):
    import braincam.train.loop as loop

    kept = []
    use = loop._use_head_average
    monkeypatch.setattr(loop, "_use_head_average",
                        lambda head, states, *a: kept.extend(states) or use(head, states, *a))
    config = tiny(head_epochs=3, finetune_epochs=0, patience=10, head_average=3)
    train_run([phantoms], config, tmp_path / "avg", progress=False)
    history = pd.read_csv(tmp_path / "avg" / "history.csv")
    assert history["phase"].tolist() == ["head"] * 3 + ["head-2"] * 3 + ["head-3"] * 3 + ["heads"]
    model, meta = load_checkpoint(tmp_path / "avg" / "model.safetensors")
    assert (meta["best"]["phase"], meta["best"]["epoch"]) == ("heads", 3)
    assert len(kept) == 3
    for name, value in model.head.state_dict().items():
        torch.testing.assert_close(value, sum(state[name] for state in kept) / 3)
        assert not torch.equal(kept[0][name], kept[1][name])
        assert not torch.equal(kept[1][name], kept[2][name])
    # the first head is the one a single-head run keeps
    train_run([phantoms], dataclasses.replace(config, head_average=1), tmp_path / "one",
              progress=False)
    one, _ = load_checkpoint(tmp_path / "one" / "model.safetensors")
    for name, value in one.head.state_dict().items():
        assert torch.equal(value, kept[0][name])


def test_an_averaged_linear_head_gives_the_mean_of_the_heads_logits():
    import braincam.train.loop as loop

    torch.manual_seed(0)
    heads = [torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(5, 2)).eval()
             for _ in range(3)]
    x, labels = torch.randn(12, 5), torch.arange(12) % 2
    with torch.inference_mode():
        mean_logits = torch.stack([head(x) for head in heads]).mean(0)
    states = [{k: v.clone() for k, v in head.state_dict().items()} for head in heads]
    val = loop.TrainData(torch.zeros(12, 4, 4), torch.zeros(12, 4, 4), labels)
    tracker = BestTracker(heads[0], [""])
    record = loop._use_head_average(heads[0], states, x, val, torch.nn.CrossEntropyLoss(),
                                    tracker)
    with torch.inference_mode():
        torch.testing.assert_close(heads[0](x), mean_logits)
    assert (record.phase, record.epoch, tracker.record) == ("heads", 3, record)
    expected = torch.nn.functional.cross_entropy(mean_logits, labels).item()
    assert record.val_loss == pytest.approx(expected, rel=1e-5)


def test_weights_are_not_averaged_when_batchnorm_learns_its_statistics(phantoms, tmp_path):
    config = tiny(finetune_epochs=4, average_weights=True)  # weights none: batch statistics
    train_run([phantoms], config, tmp_path / "run", progress=False)
    assert "average" not in set(pd.read_csv(tmp_path / "run" / "history.csv").phase)


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_phase_two_draws_phase_one_errors_as_often_as_asked(phantoms, tmp_path, monkeypatch):
    import braincam.train.loop as loop

    pools = []
    batches = loop.GlobalBatches
    monkeypatch.setattr(loop, "GlobalBatches",
                        lambda pool, *a, **k: pools.append(pool) or batches(pool, *a, **k))
    # one head epoch from random weights: the head gets many training images wrong
    config = tiny(upweight_errors=3, head_epochs=1)
    train_run([phantoms], config, tmp_path / "run", progress=False)
    listed = pd.read_csv(tmp_path / "run" / "upweighted.csv")
    assert list(listed.columns) == ["path", "label", "prob_label"]
    assert len(listed) > 0 and (listed.prob_label < 0.5).all()  # wrong: below a coin flip
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    train_paths = split.path[split.split == "train"].tolist()
    counts = torch.bincount(pools[0], minlength=len(train_paths)).tolist()
    assert {p for p, c in zip(train_paths, counts, strict=True) if c == 3} == set(listed.path)
    assert set(counts) == {1, 3}


def test_upweighting_is_off_by_default_and_needs_both_phases(phantoms, tmp_path):
    train_run([phantoms], tiny(), tmp_path / "off", progress=False)
    assert not (tmp_path / "off" / "upweighted.csv").exists()
    with pytest.raises(BraincamError, match="needs both phases"):
        train_run([phantoms], tiny(upweight_errors=2, head_epochs=0), tmp_path / "x",
                  progress=False)


def test_weighted_cross_entropy_is_the_class_weighted_loss_for_class_weights():
    logits, y = torch.randn(7, 3), torch.tensor([0, 2, 2, 1, 0, 2, 2])
    weight = class_weights(y, 3)
    torch.testing.assert_close(weighted_cross_entropy(logits, y, weight[y]),
                               torch.nn.functional.cross_entropy(logits, y, weight=weight))
    per_image = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0])  # two images count, 1:3
    losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(weighted_cross_entropy(logits, y, per_image),
                               (losses[0] + 3 * losses[6]) / 4)


@pytest.mark.parametrize("phase", ["head", "finetune"])
def test_both_phases_follow_the_per_image_loss_weights(phantoms, tmp_path, monkeypatch, phase):
    """Images of (nearly) no weight do not pull: with every no_tumor training image at weight
    1e-4 the model calls the training images tumour; with class-balanced weights it does
    not."""
    import braincam.train.run as run
    from braincam.train.loop import forward_all

    seen = []
    finetune = run.finetune
    monkeypatch.setattr(run, "finetune", lambda model, train, *a, **k: seen.append(train)
                        or finetune(model, train, *a, **k))
    epochs = {"head_epochs": 3, "finetune_epochs": 0} if phase == "head" else {
        "head_epochs": 0, "finetune_epochs": 3}  # frozen BatchNorm statistics: imagenet
    config = tiny(**epochs, weights="imagenet", arch="efficientnet_lite0", head_lr=0.01,
                  finetune_lr=0.01, val_fraction=0.0)  # no validation: the last epoch is kept

    def tumour_share(out: str) -> float:
        model, meta = load_checkpoint(tmp_path / out / "model.safetensors")
        logits = forward_all(model.eval(), seen[-1].images, torch.device("cpu"), 64)
        return float((logits.argmax(1) == meta["classes"].index("tumor")).float().mean())

    train_run([phantoms], config, tmp_path / "balanced", progress=False)
    balanced = tumour_share("balanced")
    loss_weights = run._loss_weights
    monkeypatch.setattr(run, "_loss_weights", lambda labels, *a: torch.where(
        labels == 0, 1e-4, loss_weights(labels, *a)))  # class 0 is no_tumor
    train_run([phantoms], config, tmp_path / "skewed", progress=False)
    assert tumour_share("skewed") == 1.0 > balanced


def test_a_model_that_cannot_take_the_image_size_fails_before_any_file(phantoms, tmp_path):
    """A ViT made for 224 px at --image-size 32: one line, and no run folder half written."""
    config = tiny(arch="vit_tiny_patch16_224")
    with pytest.raises(BraincamError, match=r"vit_tiny_patch16_224 cannot take 32 px images "
                                            r"\(.*\); use the --image-size it was made for"):
        train_run([phantoms], config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
