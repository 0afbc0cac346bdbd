"""``braincam segment`` and ``braincam bench segment``: their option defaults are the
training's own (``SegmentConfig``), so the CLI, the Python API and a recipe's guide (trained
from ``SegmentConfig()``) train the same segmenter."""

from __future__ import annotations

import typer.main

from braincam.cli import app
from braincam.models.unet import DECODER_CHANNELS
from braincam.train.segment import SegmentConfig

RENAMED = {"image_size": "size"}


def defaults(*path: str) -> dict[str, object]:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return {p.name: p.default for p in command.params}


def test_segment_defaults_are_segment_configs():
    config, params = SegmentConfig(), defaults("segment")
    shared = [n for n in params if hasattr(config, RENAMED.get(n, n))]
    assert {"epochs", "image_size", "batch_size", "lr", "amp", "seed"} <= set(shared)
    for name in shared:
        expected = getattr(config, RENAMED.get(name, name))
        if name == "decoder_channels":  # None on the command line: the config's widths
            assert params[name] is None and expected == DECODER_CHANNELS
        else:
            assert params[name] == expected, f"braincam segment --{name.replace('_', '-')}"


def test_bench_segment_measures_the_default_segmenter():
    config, params = SegmentConfig(), defaults("bench", "segment")
    assert (params["batch"], params["image_size"], params["encoder"], params["amp"]) == (
        config.batch_size, config.size, config.encoder, config.amp)
