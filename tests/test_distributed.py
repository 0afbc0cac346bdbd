"""torchrun: two CPU processes (gloo) train and explain like one process; the sharding and
loss-scaling rules that make it so, checked in-process.

The torchrun runs use ``--dropout 0``: dropout masks are drawn per process and cannot match
one process's (augmentation is on: its parameters are drawn for the global batch on every
rank). Tolerances are floating-point ones (convolutions over 4 + 3 images instead of 7 round
differently): losses, metrics and parameters relative 1e-4, maps absolute 1e-4, probabilities
absolute 1e-5, accuracies and targets exactly equal. Measured: losses within 3e-7 relative,
parameters 3e-6, probabilities 3e-8; per-rank means without the loss scaling are off by ~1e-2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from braincam.cli import app
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.device import torch_threads
from braincam.distributed import (
    DistContext,
    GlobalBatchCrossEntropy,
    GlobalBatches,
    rank_slice,
    shard_loss_scale,
    shard_range,
)
from braincam.explain.io import load_explanations
from braincam.models import load_checkpoint

BATCH = 7
TRAIN_ARGS = [
    "--arch", "efficientnet_lite0", "--weights", "imagenet", "--image-size", "64",
    "--split", "random", "--head-epochs", "2", "--finetune-epochs", "2",
    "--batch-size", str(BATCH), "--dropout", "0", "--device", "cpu", "--no-progress",
]
EXPLAIN_ARGS = [
    "--split", "all", "--method", "gradcam", "--batch-size", "5", "--device", "cpu", "--no-progress"
]


def ranks(world: int) -> list[DistContext]:
    return [DistContext(rank=r, world_size=world) for r in range(world)]


def test_shards_partition_in_order():
    for n in range(12):
        for world in (1, 2, 3, 5):
            blocks = [list(shard_range(n, ctx)) for ctx in ranks(world)]
            assert [i for block in blocks for i in block] == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert [rank_slice(2, ctx) for ctx in ranks(3)] == [slice(0, 1), slice(1, 2), slice(2, 2)]


def test_global_batches_are_one_seeded_permutation_per_epoch():
    batches = GlobalBatches(11, 4, seed=3)
    first, second = list(batches), list(batches)
    assert [len(b) for b in first] == [4, 4, 3] and len(batches) == 3
    assert sorted(i for b in first for i in b) == list(range(11))
    assert first != second  # a new permutation each epoch...
    again = GlobalBatches(11, 4, seed=3)
    assert [list(again), list(again)] == [first, second]  # ...the same ones for every rank
    dropped = GlobalBatches(11, 4, seed=3, drop_last=True)
    assert [len(b) for b in dropped] == [4, 4] and len(dropped) == 2


def _rank_gradients(world: int, scaled: bool, x, y, mask, weight, model):
    """DDP's gradient in one process: the mean over ranks of grad(a_r * loss_r)."""
    total = [torch.zeros_like(p) for p in model.parameters()]
    reported = 0.0
    n = len(y)
    for ctx in ranks(world):
        part = rank_slice(n, ctx)
        n_local = part.stop - part.start
        part = part if n_local else slice(0, 1)
        if scaled:
            criterion = GlobalBatchCrossEntropy(weight[y], part)
            scale = shard_loss_scale(n, n_local, ctx)
        else:
            criterion, scale = torch.nn.CrossEntropyLoss(weight=weight), 1.0
        loss = _loss(model, x[part], y[part], mask[part], criterion)
        grads = torch.autograd.grad(loss * scale, list(model.parameters()))
        total = [t + g / world for t, g in zip(total, grads, strict=True)]
        reported += float(loss.detach()) * n_local
    return total, reported / n


def _loss(model, x, y, mask, criterion):
    """Cross-entropy plus a per-image mean term, like the attention penalty."""
    logits = model(x)
    penalty = (logits.softmax(1)[:, 0] * mask).mean()
    return criterion(logits, y) + 0.5 * penalty


@pytest.mark.parametrize("world", [2, 3, 6])  # 6 > batch: one rank gets an empty slice
def test_scaled_shard_losses_average_to_the_global_batch_gradient(world):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 2, 2, 1, 2])
    mask = torch.rand(5, dtype=torch.float64)
    weight = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    global_loss = _loss(model, x, y, mask, torch.nn.CrossEntropyLoss(weight=weight))
    expected = torch.autograd.grad(global_loss, list(model.parameters()))
    grads, reported = _rank_gradients(world, True, x, y, mask, weight, model)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert reported == pytest.approx(global_loss.item(), rel=1e-12)
    # the plain per-rank mean (no scaling) is not the global gradient: the scaling matters
    plain, _ = _rank_gradients(world, False, x, y, mask, weight, model)
    assert not all(torch.allclose(g, w) for g, w in zip(plain, expected, strict=True))


def test_global_batch_cross_entropy_in_one_process_is_the_weighted_mean():
    logits, y = torch.randn(6, 2), torch.tensor([0, 1, 1, 1, 0, 1])
    weight = torch.tensor([1.5, 0.75])
    got = GlobalBatchCrossEntropy(weight[y], slice(0, 6))(logits, y)
    torch.testing.assert_close(got, F.cross_entropy(logits, y, weight=weight))
    per_image = torch.tensor([2.0, 0.5, 1.0, 3.0, 0.25, 1.0])  # any weights, not by class
    got = GlobalBatchCrossEntropy(per_image, slice(0, 6))(logits, y)
    losses = [F.cross_entropy(logits[i:i + 1], y[i:i + 1]) for i in range(6)]
    want = sum(w * loss for w, loss in zip(per_image, losses, strict=True)) / per_image.sum()
    torch.testing.assert_close(got, want)


# --- torchrun -----------------------------------------------------------------------------


def torchrun(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=2 -m braincam ARGS``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "braincam", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def in_process(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One phantom dataset trained by one process and by two; the one-process model explained
    by one process and by two."""
    tmp = tmp_path_factory.mktemp("ddp")
    data = make_phantom_dataset(tmp / "phantoms", PhantomSpec(n_per_class=6, size=64, seed=2))
    cache = str(tmp_path_factory.getbasetemp() / "braincam-cache")
    env = {**os.environ, "BRAINCAM_CACHE": cache, "OMP_NUM_THREADS": "1"}
    one, two = tmp / "one", tmp / "two"
    compiled = []
    with pytest.MonkeyPatch.context() as mp, torch_threads(1):  # like the workers: two
        mp.setenv("BRAINCAM_CACHE", cache)  # spinning threads on a busy machine made a 0.5 s
        # epoch take 20 s. --compile with torch.compile stubbed (compiling takes minutes on a
        # CPU): the same numbers, and a record of what phase 2 would compile
        mp.setattr(torch, "compile", lambda module: compiled.append(module) or module)
        in_process("train", str(data), "--out", str(one), *TRAIN_ARGS, "--compile")
        in_process("explain", str(one), "--out", str(tmp / "explain1"), *EXPLAIN_ARGS)
    trained = torchrun("train", str(data), "--out", str(two), *TRAIN_ARGS, env=env)
    explained = torchrun("explain", str(one), "--out", str(tmp / "explain2"), *EXPLAIN_ARGS,
                         env=env)
    return {"one": one, "two": two, "explain": [tmp / "explain1", tmp / "explain2"],
            "train_stdout": trained.stdout, "explain_stdout": explained.stdout,
            "compiled": compiled}


def test_compile_flag_compiles_the_phase2_training_step(runs):
    assert [type(m).__name__ for m in runs["compiled"]] == ["BraincamNet"]
    doc = yaml.safe_load((runs["one"] / "config.yaml").read_text())
    assert "--compile" in doc["command"].split()


def test_two_processes_train_like_one(runs):
    one, two = runs["one"], runs["two"]
    assert runs["train_stdout"].count("wrote ") == 1  # process 0 alone reports and evaluates
    docs = [yaml.safe_load((run / "config.yaml").read_text()) for run in (one, two)]
    assert [d["world_size"] for d in docs] == [1, 2]
    assert docs[0]["train"] == docs[1]["train"]
    split = pd.read_csv(one / "split.csv")
    assert split.equals(pd.read_csv(two / "split.csv"))
    n_train = (split["split"] == "train").sum()
    assert n_train % BATCH == 1  # the last global batch leaves rank 1 an empty slice
    history = [pd.read_csv(run / "history.csv").drop(columns="seconds") for run in (one, two)]
    assert history[0]["phase"].tolist() == ["head"] * 2 + ["finetune"] * 2 + ["average"]
    epochs = history[0][history[0]["phase"] != "average"]
    assert epochs["val_loss"].diff().abs().min() > 1e-2  # every epoch moves the model
    pd.testing.assert_frame_equal(history[0], history[1], check_exact=False, rtol=1e-4)
    weights = [load_checkpoint(run / "model.safetensors")[0].state_dict() for run in (one, two)]
    for key, value in weights[0].items():
        # gloo sums gradients in another order; Adam's 1/sqrt(v) magnifies that in a few
        # near-zero-gradient weights (seen: 2.7e-5 in 1 of 75264)
        torch.testing.assert_close(weights[1][key], value, rtol=1e-3, atol=1e-4)
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (one, two)]
    assert _numbers(metrics[0]) == pytest.approx(_numbers(metrics[1]), rel=1e-4, abs=1e-6)


def _numbers(tree) -> list[float]:
    """The numeric leaves of a JSON document, in order."""
    if isinstance(tree, dict):
        return [v for key in sorted(tree) for v in _numbers(tree[key])]
    if isinstance(tree, list):
        return [v for item in tree for v in _numbers(item)]
    return [float(tree)] if isinstance(tree, int | float) and not isinstance(tree, bool) else []


def test_two_processes_explain_like_one(runs):
    assert runs["explain_stdout"].count("wrote ") == 1
    folders = runs["explain"]
    exps = [load_explanations(folder / "explanations.npz") for folder in folders]
    assert exps[0].paths == exps[1].paths and len(exps[0]) == 24
    assert np.array_equal(exps[0].targets, exps[1].targets)
    assert np.array_equal(exps[0].crops, exps[1].crops) and exps[0].layer == exps[1].layer
    np.testing.assert_allclose(exps[1].probs, exps[0].probs, atol=1e-5)
    np.testing.assert_allclose(exps[1].maps, exps[0].maps, atol=1e-4)
    overlays = [sorted(p.name for p in (folder / "overlays").iterdir()) for folder in folders]
    assert overlays[0] == overlays[1] and len(overlays[0]) == len(exps[0])


@pytest.mark.parametrize("left_group", [False, True])
def test_exit_skips_the_teardown_only_after_leaving_a_process_group(left_group):
    """After shutdown() the process ends by os._exit (flushed, exit code kept), so no teardown
    code runs -- gloo's leftover threads can abort it; otherwise a normal sys.exit."""
    script = (
        "import atexit, braincam.distributed as d\n"
        "atexit.register(lambda: print('teardown ran'))\n"
        f"d._left_group = {left_group}\n"
        "print('output', flush=False)\n"
        "d.exit_process(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 3
    assert done.stdout.splitlines() == (["output"] if left_group else ["output", "teardown ran"])
