"""Ensembles: the mean of the members' probabilities, stored and evaluated like one run."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from braincam.data.preprocess import PreprocessCache, PreprocessConfig
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.evaluate import evaluate_run
from braincam.evaluate.ensemble import make_ensemble
from braincam.evaluate.predict import predict
from braincam.models import MeanProbability, load_checkpoint
from braincam.train import TrainConfig, train_run


def test_softmax_of_the_output_is_the_members_mean_probability():
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Flatten(), nn.Linear(12, 3)) for _ in range(3)]
    x = torch.randn(5, 3, 2, 2)
    expected = torch.stack([m(x).softmax(1) for m in members]).mean(0)
    got = MeanProbability(members)(x).softmax(1)
    torch.testing.assert_close(got, expected)
    # the ensemble's class can differ from every member's majority when one member is sure
    assert not torch.equal(got, members[0](x).softmax(1))


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two tiny binary runs on the same phantoms, seeds 0 and 1 (validation carves differ)."""
    base = tmp_path_factory.mktemp("ensemble")
    data = base / "phantoms"
    make_phantom_dataset(data, PhantomSpec(n_per_class=10, size=48, seed=2))
    config = TrainConfig(
        arch="test_resnet", weights="none", head_epochs=2, finetune_epochs=1, batch_size=8,
        preprocess=PreprocessConfig(size=32), device="cpu", val_fraction=0.3,
    )
    runs = []
    for seed in (0, 1):
        out = base / f"seed{seed}"
        train_run([data], dataclasses.replace(config, seed=seed), out, progress=False)
        evaluate_run(out, progress=False, n_boot=0)
        runs.append(out)
    return data, config, runs


def test_ensemble_run_predicts_the_mean_of_its_members(members, tmp_path):
    _, config, runs = members
    out = make_ensemble(runs, tmp_path / "ens", command="braincam ensemble ...").root
    model, meta = load_checkpoint(out / "model.safetensors")
    assert isinstance(model, MeanProbability) and len(model.members) == 2
    assert [m["seed"] for m in meta["members"]] == [0, 1]
    assert meta["classes"] == ["no_tumor", "tumor"]

    test = pd.read_csv(runs[0] / "split.csv").query("split == 'test'")
    cache = PreprocessCache()
    images = np.stack([cache.get(path, config.preprocess).image for path in test["path"]])
    device = torch.device("cpu")
    singles = [predict(load_checkpoint(r / "model.safetensors")[0], images, device, 16, False)
               for r in runs]
    together = predict(model, images, device, 16, False)
    np.testing.assert_allclose(together, np.mean(singles, axis=0), atol=1e-6)
    assert np.abs(singles[0] - singles[1]).max() > 1e-3  # the members do differ

    metrics = evaluate_run(out, progress=False, n_boot=0)
    assert metrics["test"]["n"] == len(test)
    assert [m["run"] for m in metrics["checkpoint"]["members"]] == [str(r.resolve()) for r in runs]
    written = pd.read_csv(out / "predictions.csv").set_index("path")["prob_tumor"]
    member_mean = np.mean([pd.read_csv(r / "predictions.csv").set_index("path")["prob_tumor"]
                           .loc[written.index] for r in runs], axis=0)
    np.testing.assert_allclose(written.to_numpy(), member_mean, atol=2e-6)


def test_common_split_trains_on_the_union_and_is_leak_free_only_for_all(members, tmp_path):
    _, _, runs = members
    out = make_ensemble(runs, tmp_path / "ens").root
    merged = pd.read_csv(out / "split.csv").set_index("path")
    splits = [pd.read_csv(r / "split.csv").set_index("path").loc[merged.index] for r in runs]
    any_train = (splits[0]["split"] == "train") | (splits[1]["split"] == "train")
    assert (splits[0]["split"] != splits[1]["split"]).any()  # the carves differ
    assert ((merged["split"] == "train") == any_train).all()
    assert ((merged["split"] == "test") == (splits[0]["split"] == "test")).all()
    both = splits[0]["leak_free"].astype(bool) & splits[1]["leak_free"].astype(bool)
    assert (merged["leak_free"].astype(bool) == both).all()


def test_members_must_agree(members, tmp_path):
    data, config, runs = members
    with pytest.raises(BraincamError, match="at least two runs"):
        make_ensemble(runs[:1], tmp_path / "one")
    with pytest.raises(BraincamError, match="is named twice"):
        make_ensemble([runs[0], f"{runs[0]}/."], tmp_path / "twice")
    assert not (tmp_path / "twice").exists()
    other = tmp_path / "bigger"
    train_run([data], dataclasses.replace(config, preprocess=PreprocessConfig(size=40)), other,
              progress=False)
    with pytest.raises(BraincamError, match="differ in preprocess"):
        make_ensemble([runs[0], other], tmp_path / "mixed")
    random_split = tmp_path / "random"
    train_run([data], dataclasses.replace(config, split="random", seed=5), random_split,
              progress=False)
    with pytest.raises(BraincamError, match="another test split"):
        make_ensemble([runs[0], random_split], tmp_path / "splits")
    ens = make_ensemble(runs, tmp_path / "ens").root
    with pytest.raises(BraincamError, match="itself an ensemble"):
        make_ensemble([ens, runs[0]], tmp_path / "nested")
    with pytest.raises(BraincamError, match="already holds a run"):
        make_ensemble(runs, tmp_path / "ens")
    assert not (tmp_path / "mixed").exists() and not (tmp_path / "splits").exists()


def test_a_segment_run_is_named_as_one(members, segmenter_run, tmp_path):
    _, _, runs = members
    with pytest.raises(BraincamError, match="is a segment run .* members are classifiers"):
        make_ensemble([runs[0], segmenter_run], tmp_path / "ens")


def test_force_never_deletes_a_member_or_the_folder_holding_them(members):
    _, _, runs = members
    for out in (runs[0], runs[0].parent):
        before = sorted(p.relative_to(out) for p in out.rglob("*"))
        with pytest.raises(BraincamError, match="which this command reads; --force would"):
            make_ensemble(runs, out, force=True)
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_its_data_is_never_an_output_and_a_wrong_extra_folder_stops_it_first(members,
                                                                              tmp_path):
    """``--out DATA --force`` keeps DATA whole; an output inside DATA (read back as images by
    the next training) or a missing ``--data`` folder stops before any file is written."""
    data, _, runs = members
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    with pytest.raises(BraincamError, match="lies inside the dataset folder"):
        make_ensemble(runs, data, force=True)
    with pytest.raises(BraincamError, match="lies inside the dataset folder"):
        make_ensemble(runs, data / "Testing" / "tumor" / "ens")
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    with pytest.raises(BraincamError, match="typo is not a directory"):
        make_ensemble(runs, tmp_path / "ens", extra=[tmp_path / "typo"])
    with pytest.raises(BraincamError, match="bb is not a directory"):  # a mistyped member
        make_ensemble([runs[0], tmp_path / "bb"], tmp_path / "ens")
    assert not (tmp_path / "ens").exists()


def test_members_of_one_test_split_but_other_training_images_are_told_so(members, tmp_path):
    import shutil

    _, _, runs = members
    changed = shutil.copytree(runs[1], tmp_path / "changed")
    with open(changed / "split.csv", "a") as fh:  # an image added to the data since
        fh.write(f"{tmp_path / 'added.png'},phantoms,tumor,train,999,False\n")
    with pytest.raises(BraincamError, match=r"trained on different images of the same folders "
                                            r"\(1 listed by one only\): the data changed"):
        make_ensemble([runs[0], changed], tmp_path / "ens")


def test_explain_and_audit_of_an_ensemble_name_a_member(members, tmp_path):
    data, _, runs = members
    ens = make_ensemble(runs, tmp_path / "ens").root
    for args in (["explain", str(ens)], ["audit", str(ens), "--data", str(data)]):
        result = subprocess.run([sys.executable, "-m", "braincam", *args], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"error: {ens} is an ensemble of 2 runs; explanations and audits need one model: "
            f"run them on a member (e.g. {runs[0].resolve()})"
        ]


def test_a_shared_split_seed_lets_random_split_runs_form_an_ensemble(members, tmp_path):
    data, config, _ = members
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"random{seed}"
        train_run([data], dataclasses.replace(config, split="random", seed=seed, split_seed=7),
                  out, progress=False)
        runs.append(out)
    splits = [pd.read_csv(r / "split.csv") for r in runs]
    pd.testing.assert_frame_equal(splits[0], splits[1])  # the same carve...
    weights = [load_checkpoint(r / "model.safetensors")[0].state_dict() for r in runs]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # ...not run
    model, _ = load_checkpoint(make_ensemble(runs, tmp_path / "ens").model)
    assert len(model.members) == 2
    other = tmp_path / "random-other"
    train_run([data], dataclasses.replace(config, split="random", seed=1), other, progress=False)
    assert not pd.read_csv(other / "split.csv").equals(splits[0])  # --seed alone moves the carve
