"""The README stays short, links what exists, and its Python example runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 200


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, characters other than word
    characters, hyphens and spaces dropped, spaces made hyphens, ``-1``, ``-2`` for repeats."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#+ (.*)$", re.sub(r"```.*?```", "", markdown, flags=re.S),
                              flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
    return {slug if n == 0 else f"{slug}-{n}" for slug, count in seen.items()
            for n in range(count + 1)}


def local_links(page: Path) -> list[str]:
    """The page's Markdown links that point inside the repository, code blocks left out."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [m for m in re.findall(r"\]\(([^)\s]+)\)", text)
            if not m.startswith(("http://", "https://", "mailto:"))]


def test_readme_is_short_and_links_the_docs():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES
    links = {link.split("#")[0] for link in local_links(README)}
    assert {"docs/results.md", "docs/run-directory.md", "docs/ARCHITECTURE.md",
            "docs/report.png"} <= links
    assert (ROOT / "docs/report.png").stat().st_size < 300_000


def test_every_local_link_and_anchor_of_the_docs_resolves():
    """README.md and docs/**/*.md: each link's file exists, and each ``#anchor`` into a Markdown
    page names one of its headings (results.md is linked by section throughout)."""
    broken = []
    for page in [README, *sorted((ROOT / "docs").rglob("*.md"))]:
        for link in local_links(page):
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists() or anchor and target.suffix == ".md" and \
                    anchor not in github_anchors(target.read_text(encoding="utf-8")):
                broken.append(f"{page.relative_to(ROOT)}: {link}")
    assert broken == []


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


def test_the_library_functions_audit_md_lists_take_the_arguments_it_names():
    """audit.md's "Library" list: every ``name(a, b=...)`` under a ``braincam.x`` module is a
    function of that module whose parameters start with those names, in that order."""
    import importlib
    import inspect

    text = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    section = text.split("## Library", 1)[1].split("\n## ", 1)[0]
    checked = 0
    for item in re.split(r"\n- ", section):
        module = re.match(r"\s*`(braincam(?:\.\w+)+)`", item)
        if module is None:
            continue
        for name, params in re.findall(r"`(\w+)\(([^)]*)\)", item):
            function = getattr(importlib.import_module(module.group(1)), name)
            named = [p.split("=")[0].strip() for p in params.split(",") if p.strip()]
            assert list(inspect.signature(function).parameters)[:len(named)] == named, name
            checked += 1
    assert checked >= 6
