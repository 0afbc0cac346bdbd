"""``braincam run``: the tiny pipeline through the command line, resumed, and refused."""

from __future__ import annotations

import pytest
import typer
import yaml
from typer.testing import CliRunner

from braincam.commands import run
from braincam.data.synthetic import PhantomSpec, make_phantom_dataset
from braincam.errors import BraincamError
from braincam.pipeline import STAGES
from braincam.pipeline.options import GUIDE_TRAINING_DEFAULTS, RECIPE_DEFAULTS

TINY = [
    "--arch", "resnet10t", "--weights", "none", "--image-size", "32", "--head-epochs", "1",
    "--finetune-epochs", "1", "--batch-size", "8", "--explain-cap", "4", "--n-boot", "20",
    "--device", "cpu", "--no-progress", "--plain",
]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("data") / "phantoms",
                                PhantomSpec(n_per_class=8, size=48, seed=2))


def invoke(*args: str):
    app = typer.Typer()
    app.command("run")(run.command)
    app.command("unused")(lambda: None)  # keeps "run" a subcommand, as in braincam.cli
    return CliRunner().invoke(app, ["run", *args])


def test_run_resume_and_refusal(phantoms, tmp_path):
    out = tmp_path / "run"
    first = invoke(str(phantoms), "--out", str(out), *TINY)
    assert first.exit_code == 0, first.output
    for i, name in enumerate(STAGES, 1):
        assert f"[{i}/6] {name}: done in" in first.output
        assert (out / ".stages" / f"{name}.json").is_file()
    assert "stages: 6 ran, 0 skipped" in first.output
    assert "test, leak-free" in first.output and "top findings:" in first.output
    assert f"report: {out / 'report.html'}" in first.output.replace("\n", "")
    doc = yaml.safe_load((out / "config.yaml").read_text())
    assert doc["command"].startswith("braincam run ") and "--split dedup" in doc["command"]
    assert doc["train"]["split"] == "dedup" and doc["train"]["arch"] == "resnet10t"

    again = invoke(str(phantoms), "--out", str(out), *TINY)
    assert again.exit_code == 0, again.output
    assert again.output.count(": done, skipped") == 6
    assert "stages: 0 ran, 6 skipped" in again.output

    other = invoke(str(phantoms), "--out", str(out), *TINY, "--methods", "gradcam,hirescam")
    assert isinstance(other.exception, BraincamError)
    assert "methods" in str(other.exception) and "--force" in str(other.exception)


def test_bad_options_are_one_line_errors(phantoms, tmp_path):
    bad = invoke(str(phantoms), "--out", str(tmp_path / "r"), *TINY, "--methods", "gradcam,foo")
    assert isinstance(bad.exception, BraincamError) and "unknown: foo" in str(bad.exception)
    bad = invoke(str(phantoms), "--out", str(tmp_path / "r"), *TINY, "--explain-cap", "0")
    assert isinstance(bad.exception, BraincamError) and "--explain-cap" in str(bad.exception)
    assert not (tmp_path / "r").exists()


def test_every_option_has_help():
    import click

    app = typer.Typer()
    app.command("run")(run.command)
    app.command("unused")(lambda: None)
    group = typer.main.get_command(app)
    params = group.get_command(click.Context(group), "run").params
    # by param_type_name: Typer's parameters are classes of its own copy of click
    options = [p for p in params if p.param_type_name == "option"]
    assert len(options) > 40 and [p.name for p in options if not p.help] == []
    assert {"--extra", "--methods", "--split", "--force", "--mask-background"} <= {
        opt for p in params for opt in p.opts}
    split = next(p for p in params if p.name == "split")
    assert split.default == "dedup"
    # the help texts name the recipe's cut and heads, literals of their own: they follow
    # RECIPE_DEFAULTS
    helps = {p.name: " ".join(p.help.split()) for p in options}
    cut = f"--guide-cut {RECIPE_DEFAULTS['guide_cut']}"
    assert cut in helps["plain"] and f"braincam run uses {RECIPE_DEFAULTS['guide_cut']}" in helps[
        "guide_cut"]
    heads = RECIPE_DEFAULTS["head_average"]
    assert f"--head-average {heads}" in helps["plain"]
    assert f"braincam run uses {heads} unless given" in helps["head_average"]
    epochs, blocks = (GUIDE_TRAINING_DEFAULTS[k] for k in ("guide_epochs", "guide_freeze_blocks"))
    assert f"--guide-epochs {epochs} and --guide-freeze-blocks {blocks}" in helps["plain"]
    assert f"braincam run uses {epochs} unless given" in helps["guide_epochs"]
    assert f"braincam run uses {blocks} unless given" in helps["guide_freeze_blocks"]
    assert GUIDE_TRAINING_DEFAULTS["guide_weak_labels"] and "braincam run sets it" in helps[
        "guide_weak_labels"]


def test_run_is_grounded_by_default_and_plain_one_flag_away(phantoms, tmp_path, monkeypatch):
    """Without --plain a run needs --guide, trains the head alone unless --finetune-epochs is
    given, adds the guide views unless --no-guide-views, cuts the guide's probability at
    0.05 unless --guide-cut is given and averages five heads unless --head-average is given;
    --plain passes the options as given. The pipeline itself is stubbed: only the
    TrainConfig that reaches it is checked."""
    import braincam.pipeline as pipeline

    reached = []
    monkeypatch.setattr(pipeline, "run_pipeline",
                        lambda data, options, out, **kw: reached.append(options))
    monkeypatch.setattr(pipeline, "print_summary", lambda *a: None)
    seg = tmp_path / "seg"  # a segment run: it holds a model
    seg.mkdir()
    (seg / "model.safetensors").touch()
    base = [str(phantoms), "--out", str(tmp_path / "r"), "--device", "cpu"]

    missing = invoke(*base)
    assert isinstance(missing.exception, BraincamError)
    assert "--guide SEG" in str(missing.exception) and "--plain" in str(missing.exception)
    both = invoke(*base, "--plain", "--guide", str(seg))
    assert isinstance(both.exception, BraincamError) and "drop --guide or --plain" in str(
        both.exception)
    assert reached == [] and not (tmp_path / "r").exists()

    for args in (["--guide", str(seg)], ["--guide", str(seg), "--finetune-epochs", "2"],
                 ["--plain"], ["--guide", str(seg), "--no-guide-views", "--guide-cut", "0"]):
        result = invoke(*base, *args)
        assert result.exit_code == 0, result.output
    assert "--finetune-epochs 0" in reached[0].command  # the command config.yaml records
    assert "--finetune-epochs 2" in reached[1].command and "--plain" in reached[2].command
    assert "--guide-views" in reached[0].command.split()
    assert "--guide-cut 0.05" in reached[0].command and "--guide-cut 0.0" in reached[3].command
    assert "--no-guide-views" in reached[3].command.split()
    assert "--head-average 5" in reached[0].command and "--head-average 1" in reached[2].command
    grounded, fine_tuned, plain, viewless = (options.train for options in reached)
    assert (grounded.head_average, plain.head_average) == (5, 1)
    assert (grounded.guide, grounded.finetune_epochs, grounded.guide_views) == (str(seg), 0, True)
    assert (viewless.guide, viewless.finetune_epochs, viewless.guide_views) == (str(seg), 0, False)
    assert (grounded.guide_cut, viewless.guide_cut, plain.guide_cut) == (0.05, 0.0, 0.0)
    assert plain.guide_views is False
    assert (fine_tuned.guide, fine_tuned.finetune_epochs) == (str(seg), 2)
    assert plain.guide is None and plain.finetune_epochs == plain.__class__().finetune_epochs > 0
    assert grounded.head_epochs == plain.head_epochs and grounded.split == plain.split == "dedup"
    # a segment run keeps its own settings: no segmenter is trained
    assert (grounded.guide_weak_labels, grounded.guide_epochs, grounded.guide_freeze_blocks) == (
        False, None, 0)


def test_run_trains_the_readme_recipes_guide_on_dataset_folders(phantoms, tmp_path,
                                                                  monkeypatch):
    """--guide naming dataset folders: the segmenter trained on them gets the README recipe's
    --guide-weak-labels --guide-epochs 8 --guide-freeze-blocks 2, each unless given, and the
    command config.yaml records says so."""
    import braincam.pipeline as pipeline

    reached = []
    monkeypatch.setattr(pipeline, "run_pipeline",
                        lambda data, options, out, **kw: reached.append(options))
    monkeypatch.setattr(pipeline, "print_summary", lambda *a: None)
    base = [str(phantoms), "--out", str(tmp_path / "r"), "--device", "cpu", "--guide",
            str(phantoms)]
    for args in ([], ["--no-guide-weak-labels", "--guide-epochs", "3"],
                 ["--guide-freeze-blocks", "0"]):
        result = invoke(*base, *args)
        assert result.exit_code == 0, result.output
    recipe, given, unfrozen = (options.train for options in reached)
    assert {name: getattr(recipe, name) for name in GUIDE_TRAINING_DEFAULTS} == {
        "guide_weak_labels": True, "guide_epochs": 8, "guide_freeze_blocks": 2}
    assert (given.guide_weak_labels, given.guide_epochs, given.guide_freeze_blocks) == (
        False, 3, 2)
    assert (unfrozen.guide_weak_labels, unfrozen.guide_epochs, unfrozen.guide_freeze_blocks) == (
        True, 8, 0)
    command = reached[0].command.split()
    assert "--guide-weak-labels" in command
    assert "--guide-epochs 8" in reached[0].command
    assert "--guide-freeze-blocks 2" in reached[0].command
    assert "--no-guide-weak-labels" in reached[1].command.split()
    assert recipe.head_average == 5 and recipe.guide_cut == 0.05
