"""``train_config``: a command's parsed options become one ``TrainConfig``."""

from __future__ import annotations

import pytest

from braincam.cli import app
from braincam.commands.training_options import train_config


def test_options_named_like_fields_set_them_and_the_rest_is_ignored():
    params = {
        "task": "multiclass", "arch": "efficientnet_lite0", "weights": "none", "split": "dedup",
        "seed": 7, "image_size": 96, "crop": False, "standardize": "zscore-in-mask",
        "mask_background": True, "mask_skull": True, "finetune_epochs": 2, "attention_penalty": 5.0,
        "out": "/somewhere", "force": True, "extra": None,  # not training's
    }
    config = train_config(params)
    assert (config.task, config.arch, config.weights, config.split, config.seed) == (
        "multiclass", "efficientnet_lite0", "none", "dedup", 7)
    assert (config.finetune_epochs, config.attention_penalty) == (2, 5.0)
    assert config.head_epochs == 15  # not given: the dataclass default
    pre = config.preprocess
    assert (pre.size, pre.crop, pre.standardize, pre.mask_background, pre.mask_skull) == (
        96, False, "zscore-in-mask", True, True)


def test_train_and_run_commands_share_every_training_option():
    """Both commands spell each TrainConfig option the same way, so ``ctx.params`` carries it."""
    import dataclasses

    from braincam.train import TrainConfig

    def names(command: str) -> set[str]:
        import typer.main

        click_command = typer.main.get_command(app).commands[command]
        return {param.name for param in click_command.params}

    not_options = {"preprocess", "amp", "weight_decay"}
    wanted = {f.name for f in dataclasses.fields(TrainConfig)} - not_options
    wanted |= {"image_size", "crop", "standardize", "mask_background", "mask_skull"}
    assert wanted <= names("train")
    assert wanted <= names("run")


@pytest.mark.parametrize("command", ["train", "run"])
def test_command_defaults_are_the_config_defaults(command):
    """The options' defaults are spelled in the commands (importing TrainConfig would load torch
    for ``--help``): they must equal TrainConfig's (``run`` splits ``dedup`` by design)."""
    import typer.main

    from braincam.pipeline.options import default_train_config
    from braincam.train import TrainConfig

    config = default_train_config() if command == "run" else TrainConfig()
    params = {p.name: p.default for p in typer.main.get_command(app).commands[command].params}
    for name, value in vars(config).items():
        if name in params:
            assert params[name] == value, f"braincam {command} --{name.replace('_', '-')}"
    pre = config.preprocess
    assert (params["image_size"], params["crop"], params["standardize"],
            params["mask_background"], params["mask_skull"]) == (
        pre.size, pre.crop, pre.standardize, pre.mask_background, pre.mask_skull)
