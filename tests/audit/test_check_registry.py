"""Checks describe themselves; report, compare and audit.json's layout derive from the registry."""

from __future__ import annotations

import dataclasses

import numpy as np

from braincam.audit.data.rules import DATA_CHECKS
from braincam.audit.findings import Finding
from braincam.audit.model import CHECKS, AuditBatch, Check, CheckOutput
from braincam.audit.model.run import block_json
from braincam.report.model_audit import ModelAuditSection, collect_model_audit
from braincam.runs import RunDir, atomic_write_json


def test_every_model_check_describes_itself():
    assert set(CHECKS) == {"attention", "localization", "faithfulness", "sanity", "counterfactual"}
    for name, check in CHECKS.items():
        assert check.name == name
        assert check.title and check.description.endswith(".")
        assert check.higher_is_better, name
        assert all(isinstance(v, bool) for v in check.higher_is_better.values())
    assert [n for n, c in CHECKS.items() if not c.per_method] == ["counterfactual"]
    assert CHECKS["attention"].higher_is_better["background"] is False
    assert CHECKS["counterfactual"].higher_is_better["tumor_removal_flip_rate"] is True


def test_data_checks_have_the_same_shape():
    assert list(DATA_CHECKS) == ["probe", "duplicates", "property", "clusters", "files"]
    for name, check in DATA_CHECKS.items():
        assert check.name == name and check.title and check.description.endswith(".")


class _Count(Check):
    """A made-up per-method check, registered only inside one test."""

    name = "count"
    title = "Pixel count"
    description = "Bright pixels per image."
    per_method = True
    higher_is_better = {"bright": False}

    def evaluate(self, batch):
        return {m: {"bright": (maps > 0.5).mean(axis=(1, 2))} for m, maps in batch.maps.items()}

    def summarise(self, batch, per_image):
        return ({m: _CountSummary(float(c["bright"].mean())) for m, c in per_image.items()},
                [Finding("info", "count.bright", 0.0, None, "counted")])


@dataclasses.dataclass
class _CountSummary:
    bright: float


def test_a_new_registered_check_reaches_audit_json_and_the_report(tmp_path, monkeypatch):
    """Adding a check is one class: its per-method block and its report section follow."""
    import braincam.audit.model.base as base

    monkeypatch.setitem(base.CHECKS, "count", _Count)
    n, s = 3, 8
    maps = np.zeros((n, s, s), np.float32)
    maps[0] = 1.0
    batch = AuditBatch(np.zeros((n, s, s), np.uint8), np.ones((n, s, s), bool),
                       np.array([0, 1, 0]), ("no_tumor", "tumor"),
                       np.array([[0.9, 0.1]] * n), maps={"gradcam": maps, "ig": maps * 0})
    results: dict[str, CheckOutput] = {"count": _Count()(batch)}
    block = block_json("d", batch, ["gradcam", "ig"], results)
    assert block["count"]["method"] == "gradcam"
    assert block["count"]["bright"] == 1 / 3
    assert block["count"]["by_method"]["ig"] == {"bright": 0.0}

    run = RunDir(tmp_path)
    atomic_write_json(run.audit_json, {"datasets": {"d": block}, "findings": []})
    section: ModelAuditSection = collect_model_audit(run)
    count = next(c for c in section.checks if c.key == "count")
    assert count.title == "Pixel count"
    assert count.about == "Bright pixels per image. (bright: lower is better.)"
    assert ("bright", 1 / 3) in count.results[0].rows
