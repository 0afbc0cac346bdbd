"""``torchrun --nproc_per_node=2 braincam segment``: two CPU processes (gloo) make the same
split and a complete run directory, whose held-out scores are those of the model it saves.
(Weights differ a little from one process: on the CPU each rank normalises BatchNorm over its own
slice of the batch, see braincam.distributed.wrap_ddp.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
from typer.testing import CliRunner

from braincam.cli import app
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset

ARGS = ["--epochs", "1", "--image-size", "32", "--weights", "none", "--batch-size", "8",
        "--val-fraction", "0.2", "--test-fraction", "0.25", "--device", "cpu", "--no-progress"]


def test_two_processes_segment_like_one(tmp_path, monkeypatch):
    data = make_phantom_dataset(tmp_path / "phantoms", PhantomSpec(n_per_class=8, size=48),
                                splits=("train",))
    one, two = tmp_path / "one", tmp_path / "two"
    result = CliRunner().invoke(app, ["segment", str(data), "--out", str(one), *ARGS])
    assert result.exit_code == 0, result.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "braincam", "segment", str(data), "--out", str(two), *ARGS],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("held-out mean Dice") == 1  # rank 0 alone reports
    split_one, split_two = pd.read_csv(one / "split.csv"), pd.read_csv(two / "split.csv")
    pd.testing.assert_frame_equal(split_one, split_two)
    m_one = json.loads((one / "metrics.json").read_text())
    m_two = json.loads((two / "metrics.json").read_text())
    assert m_two["world_size"] == 2 and m_one["world_size"] == 1
    assert m_two["n_tumour_images"] == m_one["n_tumour_images"]
    assert 0.0 <= m_two["mean_dice"] <= 1.0
    assert len(pd.read_csv(two / "history.csv")) == 1
    # every rank's share of the held-out images was scored by the saved model (rank 0's
    # BatchNorm statistics), as a later --evaluate of that model scores them
    held, scored = tmp_path / "held", tmp_path / "scored"
    for args in (["segment", str(two), "--held-out", "--out", str(held)],
                 ["segment", str(two), "--evaluate", str(held / "phantoms"), "--out",
                  str(scored), "--no-progress"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    own, again = (pd.read_csv(run / "per_image.csv").sort_values("path").reset_index(drop=True)
                  for run in (two, scored))
    assert len(own) == len(again) >= 4
    for column in ("predicted_share", "dice"):
        pd.testing.assert_series_equal(own[column], again[column], rtol=1e-5, atol=1e-6)

