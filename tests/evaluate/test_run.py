import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from braincam.evaluate.run import (
    COMBINED,
    ExtraSet,
    ScoredSet,
    extra_rows,
    extra_sets,
    learnt_from,
    predictions_frame,
    significant,
)
from braincam.runs import RunDir


def test_significant_keeps_tiny_probabilities_apart():
    values = np.array([1.23456789e-9, 2e-9, 0.5, 0.123456789, 1.0])
    np.testing.assert_array_equal(significant(values), [1.23457e-9, 2e-9, 0.5, 0.123457, 1.0])


def test_auc_recomputed_from_predictions_matches_when_all_order_is_in_the_tail(tmp_path):
    """Every P(tumour) is below 1e-6: six decimals would tie them all at 0 (AUC 0.5)."""
    p_tumour = np.array([1e-9, 3e-9, 2e-8, 5e-8, 4e-7, 9e-7])
    y = np.array([0, 0, 1, 0, 1, 1])
    scored = ScoredSet("test", "test", [f"{i}.png" for i in range(6)], ["d"] * 6, y,
                       np.stack([1 - p_tumour, p_tumour], 1), None)
    path = tmp_path / "predictions.csv"
    predictions_frame([scored], ["no_tumor", "tumor"]).to_csv(path, index=False)
    again = pd.read_csv(path)["prob_tumor"].to_numpy()
    assert roc_auc_score(y, again) == roc_auc_score(y, p_tumour) == pytest.approx(8 / 9)


def _split_csv(run: RunDir, rows) -> None:
    run.root.mkdir(parents=True, exist_ok=True)
    lines = ["path,source,label,split,group,leak_free"]
    lines += [f"{path},src,tumor,{split},0,False" for path, split in rows]
    run.split.write_text("\n".join(lines) + "\n")


def test_learnt_from_lists_train_and_val_rows_of_the_run_and_its_guides(tmp_path, caplog):
    files = {name: tmp_path / f"{name}.png" for name in "abcdefg"}
    for path in files.values():
        path.write_bytes(b"x")
    files["g"].unlink()  # a listed file no longer there is left out
    run, named = RunDir(tmp_path / "clf"), RunDir(tmp_path / "seg")
    _split_csv(run, [(files["a"], "train"), (files["b"], "val"), (files["c"], "test"),
                     (files["g"], "train")])
    _split_csv(named, [(files["d"], "train"), (files["e"], "test")])
    named.model.write_bytes(b"")
    volume = tmp_path / "v.nii.gz"  # its slices 2 and 3 only: a volume's slices by their own
    volume.write_bytes(b"x")
    _split_csv(RunDir(run.guide), [(files["f"], "val"), (files["a"], "train"),
                                   (f"{volume}#2", "train"), (f"{volume}#3", "val"),
                                   (f"{volume}#4", "test")])
    data_folder = tmp_path / "masked-data"
    data_folder.mkdir()
    guided = {"guide": {"source": f"{named.root},{data_folder}"}}
    with caplog.at_level(logging.WARNING, logger="braincam.evaluate.run"):
        assert learnt_from(run, guided) == [(files[k], None) for k in "abdf"] + [
            (volume, 2), (volume, 3)]
    assert "1 of the 7 images" in caplog.text and "no longer at their paths" in caplog.text
    assert learnt_from(run, {}) == [(files[k], None) for k in "ab"]
    assert learnt_from(run, guided, own=False) == [(files[k], None) for k in "dfa"] + [
        (volume, 2), (volume, 3)]


def test_extra_sets_follow_each_set_with_its_leak_free_part_only_where_images_were_seen():
    def m(n):
        return {"n": n, "balanced_accuracy": 0.9}

    metrics = {"extra": {"fig": m(10), "br35h": m(5)}, "extra_seen": {"fig": 4, "br35h": 0},
               "extra_leak_free": {"fig": m(6), "br35h": m(5)}, "extra_combined": m(15),
               "extra_combined_leak_free": m(11)}
    assert extra_sets(metrics) == [
        ExtraSet("fig", False, 4, m(10)), ExtraSet("fig", True, 4, m(6)),
        ExtraSet("br35h", False, 0, m(5)),
        ExtraSet(COMBINED, False, 4, m(15)), ExtraSet(COMBINED, True, 4, m(11))]
    assert [r[:2] for r in extra_rows(metrics)] == [
        ("fig", "fig (another dataset)"),
        ("fig, leak-free", "fig without the 4 images the model learnt from"),
        ("br35h", "br35h (another dataset)"),
        ("other datasets pooled", "the other datasets pooled"),
        ("other datasets pooled, leak-free",
         "the other datasets pooled, without the 4 images the model learnt from")]
    every_image_seen = {"extra": {"fig": m(10)}, "extra_seen": {"fig": 10},
                        "extra_leak_free": {"fig": None}}
    assert extra_sets(every_image_seen)[1] == ExtraSet("fig", True, 10, None)
    assert len(extra_rows(every_image_seen)) == 1
    assert extra_sets({"extra": {"fig": m(3)}}) == [ExtraSet("fig", False, 0, m(3))]


def test_a_run_folder_it_cannot_write_stops_evaluate_before_scoring(tmp_path, monkeypatch):
    """Not after every image is scored, at the first figure it writes."""
    import errno
    import tempfile

    import braincam.models
    from braincam.data.preprocess import PreprocessConfig
    from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
    from braincam.errors import BraincamError
    from braincam.evaluate import evaluate_run
    from braincam.train import TrainConfig, train_run

    data = make_phantom_dataset(tmp_path / "p", PhantomSpec(n_per_class=12, size=48))
    config = TrainConfig(arch="test_resnet", weights="none", head_epochs=1, finetune_epochs=0,
                         batch_size=8, preprocess=PreprocessConfig(size=32), device="cpu")
    run = train_run([data], config, tmp_path / "run", progress=False).run_dir

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    loaded = []
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    monkeypatch.setattr(braincam.models, "load_checkpoint", lambda *a, **k: loaded.append(a))
    with pytest.raises(BraincamError, match="cannot write there"):
        evaluate_run(run, force=True, n_boot=0, progress=False)
    assert loaded == []
