"""``braincam compare``: the table in the terminal, the three files, no silent overwrite."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from braincam.commands import compare
from braincam.errors import BraincamError


def invoke(*args: str):
    app = typer.Typer()
    app.command("compare")(compare.command)
    app.command("unused")(lambda: None)  # keeps "compare" a subcommand, as in braincam.cli
    return CliRunner().invoke(app, ["compare", *args])


def write_run(root, accuracy, audit=None):
    root.mkdir()
    (root / "metrics.json").write_text(json.dumps(
        {"test": {"accuracy": accuracy, "balanced_accuracy": accuracy - 0.1}, "extra": {}}))
    if audit is not None:
        (root / "audit").mkdir()
        (root / "audit" / "audit.json").write_text(json.dumps(audit))
    return root


def test_compare_two_runs(tmp_path):
    base = write_run(tmp_path / "baseline", 0.9,
                     {"datasets": {"sartaj": {
                         "attention": {"background": 0.4},
                         "counterfactual": {"background_only_survival": 0.95}}}})
    masked = write_run(tmp_path / "masked", 0.85)
    out = tmp_path / "cmp"
    result = invoke(str(base), str(masked), "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.output.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 3:
            rows[cells[0]] = cells[1:]
    header = next(line for line in result.output.splitlines() if "baseline" in line)
    assert header.index("baseline") < header.index("masked")
    assert rows["accuracy"] == ["0.900", "0.850"]
    assert rows["balanced accuracy"] == ["0.800", "0.750"]
    assert rows["background share"] == ["0.400", "-"]
    assert rows["background only survival"] == ["0.950", "-"]
    assert {p.name for p in out.iterdir()} == {"compare.csv", "compare.json", "compare.png"}
    doc = json.loads((out / "compare.json").read_text())
    assert [r["run"] for r in doc["runs"]] == ["baseline", "masked"]
    assert doc["runs"][1]["background_share"] is None

    data = tmp_path / "data"
    (data / "tumor").mkdir(parents=True)
    (base / "config.yaml").write_text(f"data: [{data}]\n")
    inside = invoke(str(base), str(masked), "--out", str(data / "tumor" / "cmp"))
    assert f"lies inside the dataset folder {data}" in str(inside.exception)
    assert not (data / "tumor" / "cmp").exists()  # compare.png would be a tumour image

    again = invoke(str(base), "--out", str(out))
    assert isinstance(again.exception, BraincamError) and "--force" in str(again.exception)
    assert invoke(str(base), "--out", str(out), "--force").exit_code == 0
    assert len(json.loads((out / "compare.json").read_text())["runs"]) == 1
