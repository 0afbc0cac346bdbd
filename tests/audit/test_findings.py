"""Finding: the record both audits and the report share."""

from __future__ import annotations

import json

import pytest

from braincam.audit.findings import SEVERITIES, Finding, sort_findings


def test_round_trip_through_json():
    f = Finding("critical", "probe.geometry", 0.97, 0.85, "geometry-only probe reaches AUC 0.97")
    data = json.loads(json.dumps(f.to_dict()))
    assert data == {"severity": "critical", "check": "probe.geometry", "value": 0.97,
                    "threshold": 0.85, "message": "geometry-only probe reaches AUC 0.97"}
    assert Finding.from_dict(data) == f
    assert Finding.from_dict({"severity": "info", "check": "x", "message": "m"}).value is None


def test_unknown_severity_is_rejected():
    with pytest.raises(ValueError, match="severity"):
        Finding("fatal", "x", None, None, "m")


def test_sort_puts_most_severe_first_and_is_stable():
    fs = [Finding(s, f"c{i}", None, None, "m") for i, s in
          enumerate(["info", "critical", "warning", "critical", "info"])]
    order = [(f.severity, f.check) for f in sort_findings(fs)]
    assert order == [("critical", "c1"), ("critical", "c3"), ("warning", "c2"),
                     ("info", "c0"), ("info", "c4")]
    assert SEVERITIES == ("info", "warning", "critical")
