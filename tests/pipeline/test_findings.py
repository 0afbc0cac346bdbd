"""``collect_findings``: both audits' findings, each once, most severe first."""

from __future__ import annotations

import json

from braincam.pipeline.run import collect_findings
from braincam.runs import RunDir


def finding(severity, check, message="m"):
    return {"severity": severity, "check": check, "value": 1.0, "threshold": 0.5,
            "message": message}


def test_findings_of_both_audits_each_once(tmp_path):
    run = RunDir(tmp_path)
    run.data_audit.mkdir()
    (run.data_audit / "data_audit.json").write_text(json.dumps({"findings": [
        finding("info", "clusters"), finding("critical", "probe.background"),
        {"severity": "dreadful", "check": "x"},  # malformed: left out
    ]}))
    run.audit.mkdir()
    block = {"attention": {}, "findings": [finding("warning", "attention.outside_brain")]}
    (run.audit / "audit.json").write_text(json.dumps({
        "datasets": {"a": block, "b": {"attention": {}, "findings": []}},
        "findings": [finding("warning", "attention.outside_brain", "[a] m")],
    }))
    data, model = collect_findings(run)
    assert [f.check for f in data] == ["probe.background", "clusters"]
    assert [(f.check, f.message) for f in model] == [("attention.outside_brain", "[a] m")]

    # the top-level list is the model audit's list (every dataset's, prefixed)
    (run.audit / "audit.json").write_text(json.dumps({"datasets": {"a": block}}))
    assert collect_findings(run)[1] == []


def test_no_audits_no_findings(tmp_path):
    assert collect_findings(RunDir(tmp_path)) == ([], [])
