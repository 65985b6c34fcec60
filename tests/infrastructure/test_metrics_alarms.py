"""Every alarm and dashboard widget reads a series the code writes: the CloudFormation
template's metrics (namespace, name, dimension names) against ``adapters.aws.metrics``,
whose ``emf`` is the only writer the functions use (tests/integration checks each line
they print carries exactly those dimensions)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from infaas.adapters.aws.metrics import DIMENSIONS, NAMESPACE


def _joined(value) -> str:
    """A DashboardBody: a string, or Fn::Join of strings and references (rendered as placeholders)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_joined(p) for p in parts)
    return "REF"


def test_every_alarm_reads_a_series_the_code_writes(synthesized):
    alarms = synthesized.resources("AWS::CloudWatch::Alarm")
    ours = [a["Properties"] for a in alarms.values() if a["Properties"].get("Namespace") == NAMESPACE]
    assert ours, "no alarm on the service's own metrics"
    for props in ours:
        name = props["MetricName"]
        assert name in DIMENSIONS, f"alarm on {name}, which nothing writes"
        dims = tuple(sorted(d["Name"] for d in props.get("Dimensions", [])))
        assert dims == tuple(sorted(DIMENSIONS[name])), f"alarm on {name}{dims}; written with {DIMENSIONS[name]}"


def test_every_dashboard_widget_reads_a_series_the_code_writes(synthesized):
    for dash in synthesized.resources("AWS::CloudWatch::Dashboard").values():
        body = json.loads(re.sub(r"REF", "x", _joined(dash["Properties"]["DashboardBody"])))
        seen = 0
        for widget in body["widgets"]:
            for metric in widget.get("properties", {}).get("metrics", []):
                if not metric or metric[0] != NAMESPACE:
                    continue
                name, rest = metric[1], [m for m in metric[2:] if isinstance(m, str)]
                dims = tuple(sorted(rest[0::2]))  # name, value, name, value, ...
                assert name in DIMENSIONS, f"widget on {name}, which nothing writes"
                assert dims == tuple(sorted(DIMENSIONS[name])), f"widget on {name}{dims}; written with {DIMENSIONS[name]}"
                seen += 1
        assert seen, "the dashboard shows none of the service's metrics"


def test_the_tier_is_alarmed_on_the_errors_and_throttles_the_selector_writes(synthesized):
    from infaas.adapters.aws.metrics import FUNCTION_ERRORS, FUNCTION_THROTTLES

    alarms = [a["Properties"] for a in synthesized.resources("AWS::CloudWatch::Alarm").values()]
    ours = {a["MetricName"] for a in alarms if a.get("Namespace") == NAMESPACE}
    assert {FUNCTION_ERRORS, FUNCTION_THROTTLES} <= ours
    selector = (Path(__file__).resolve().parents[2] / "functions" / "selector" / "handler.py").read_text()
    for name in ("FUNCTION_ERRORS", "FUNCTION_THROTTLES", "FUNCTION_INVOCATIONS", "FUNCTION_COLD_STARTS",
                 "FUNCTION_DURATION"):
        assert f"names.{name}" in selector, name  # the selector writes each (through emf)
