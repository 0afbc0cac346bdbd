"""The README stays short, links what exists, and its Python example runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 200
LATER = {"docs/segment.md", "docs/masks.md", "docs/grounded.md", "docs/predict.md",
         "docs/api.md", "docs/serve.md", "docs/foreign-models.md", "docs/radiomics.md"}
"""Feature docs written on other branches: linked before they land."""


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_is_short_and_its_local_links_resolve():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES
    links = {m.split("#")[0] for m in re.findall(r"\]\(([^)\s]+)\)", text)
             if not m.startswith(("http://", "https://"))}
    assert {"docs/results.md", "docs/run-directory.md", "docs/ARCHITECTURE.md",
            "docs/report.png"} <= links
    missing = [link for link in links - LATER if not (ROOT / link).exists()]
    assert missing == []
    assert (ROOT / "docs/report.png").stat().st_size < 300_000


def test_the_python_example_runs_and_finds_the_marker(tmp_path, monkeypatch, capsys):
    """The README's one Python block, executed verbatim in an empty folder: a run directory
    with metrics, a report that opens with the verdict, and the printed accuracy."""
    (block,) = python_blocks(README.read_text(encoding="utf-8"))
    assert len(block.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRAINCAM_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    run = namespace["run"]
    assert run.run_dir.resolve() == (tmp_path / "runs/example/run").resolve()
    accuracy = run.metrics["test"]["accuracy"]
    assert 0 <= accuracy <= 1
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith(str(accuracy))
    assert 'id="verdict"' in run.report.read_text(encoding="utf-8")


def test_the_recommended_recipe_is_braincam_runs_grounded_default():
    """The README's recommended `braincam train` command sets each option of braincam run's
    grounded recipe (RECIPE_DEFAULTS, and GUIDE_TRAINING_DEFAULTS: its --guide names dataset
    folders) to the recipe's value, so the two cannot drift apart."""
    from braincam.pipeline.options import GUIDE_TRAINING_DEFAULTS, RECIPE_DEFAULTS

    text = README.read_text(encoding="utf-8")
    section = text.split("## Recommended recipe")[1]
    command = " ".join(re.search(r"```bash\n(.*?)```", section, flags=re.S)[1]
                       .replace("\\\n", " ").split())
    assert command.count("braincam train") == 1 and "--guide " in command
    for name, value in (RECIPE_DEFAULTS | GUIDE_TRAINING_DEFAULTS).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            assert (f"{flag} " in command + " ") is value, flag
        else:
            assert f"{flag} {value} " in command + " ", flag
