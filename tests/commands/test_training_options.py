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

    not_options = {"preprocess", "amp", "weight_decay", "fold", "folds"}  # cv sets the folds
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


def _click_params(command: str) -> dict:
    import typer.main

    return {p.name: p for p in typer.main.get_command(app).commands[command].params}


def test_train_and_run_options_are_one_definition():
    """Every training option of ``train`` and ``run`` is built from TRAIN_OPTIONS: same flags,
    help, panel, choices and default (``run`` alone splits ``dedup``)."""
    from braincam.train.options import TRAIN_OPTIONS

    train, run = _click_params("train"), _click_params("run")
    for name, option in TRAIN_OPTIONS.items():
        a, b = train[name], run[name]
        assert a.opts == b.opts and a.secondary_opts == b.secondary_opts, name
        assert a.help == b.help == option.help, name
        assert a.rich_help_panel == b.rich_help_panel == option.panel, name
        assert _choices(a) == _choices(b), name
        assert a.default == option.default, name
        assert b.default == ("dedup" if name == "split" else option.default), name
    assert _choices(train["split"]) == ["official", "random", "dedup"]
    assert _choices(train["arch"]) is None  # any timm name


def _choices(param) -> list[str] | None:
    from enum import Enum

    kind = param.type_descriptor.annotation
    return [e.value for e in kind] if isinstance(kind, type) and issubclass(kind, Enum) else None


def test_train_config_fields_carry_their_option():
    """TrainConfig's defaults are the options' defaults (one definition), and the
    preprocessing options' defaults are PreprocessConfig's."""
    import dataclasses

    from braincam.data.preprocess import STANDARDIZE, PreprocessConfig
    from braincam.data.splits import STRATEGIES
    from braincam.models.build import DEFAULT_ARCH, DEFAULT_DROPOUT
    from braincam.train import TrainConfig
    from braincam.train.options import TRAIN_OPTIONS, SplitStrategy, Standardize

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name, option in TRAIN_OPTIONS.items():
        if option.preprocess:
            assert getattr(PreprocessConfig(), option.preprocess) == option.default, name
        else:
            assert fields[name].metadata["option"] is option, name
            assert fields[name].default == option.default, name
    assert tuple(SplitStrategy) == STRATEGIES and tuple(Standardize) == STANDARDIZE
    assert (TRAIN_OPTIONS["arch"].default, TRAIN_OPTIONS["dropout"].default) == (
        DEFAULT_ARCH, DEFAULT_DROPOUT)


def test_train_help_shows_panels_and_choices():
    from typer.testing import CliRunner

    # rich sizes the help from COLUMNS (CliRunner's terminal_width does not reach it)
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    text = result.output
    panels = ["Data and split", "Model", "Schedule", "Shortcut remedies", "Runtime"]
    positions = [text.index(f"─ {p} ") for p in panels]
    assert positions == sorted(positions)
    assert "official|random|dedup" in text and "gradcam|input-gradient" in text
    assert "--extra" not in text and "--data" in text  # the old name is a hidden alias
    assert "``" not in text


def test_enum_choices_reach_the_config_as_plain_strings():
    from braincam.train.options import SplitStrategy, Standardize, Task

    config = train_config({"task": Task.multiclass, "split": SplitStrategy.dedup,
                           "standardize": Standardize["zscore-in-mask"]})
    assert type(config.task) is str and config.task == "multiclass"
    assert type(config.split) is str and type(config.preprocess.standardize) is str


def test_old_option_spellings_are_hidden_aliases():
    from braincam.commands.training_options import merged

    for command in ("train", "run", "ensemble"):
        params = _click_params(command)
        assert params["extra"].opts == ["--data"] and not params["extra"].hidden
        assert params["extra_alias"].opts == ["--extra"] and params["extra_alias"].hidden
    explain = _click_params("explain")
    assert explain["methods"].opts == ["--methods"]
    assert explain["method"].opts == ["--method"] and explain["method"].hidden
    assert merged([1], [2]) == [1, 2] and merged(None, None) == []


def test_one_line_command_summaries():
    import typer.main

    for name, command in typer.main.get_command(app).commands.items():
        summary = (command.help or "").split("\n\n")[0]
        assert "\n" not in summary and "``" not in (command.help or ""), name


def test_help_builds_the_training_options_without_torch():
    """The options come from braincam.train.options, which loads neither torch nor OpenCV."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from braincam.cli import app; "
            "r = CliRunner().invoke(app, ['run', '--help']); assert r.exit_code == 0; "
            "print(sorted({'torch', 'cv2', 'sklearn'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
