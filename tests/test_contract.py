"""The typed output contract (serving/contract.py) and the JSON Schema generated from it."""

from __future__ import annotations

import jsonschema
import pytest

from flockwatch.serving.contract import (
    SCHEMA_VERSION,
    Alert,
    AlertKind,
    DeviceIdentity,
    Finding,
    FindingKind,
    Incident,
    Severity,
    TopFeature,
    json_schema,
)


def _alert(**kw: object) -> Alert:
    base: dict[str, object] = dict(
        kind=AlertKind.ANOMALOUS_WINDOW, severity=Severity.HIGH, device_id="aa:01", mac="aa:01",
        ip="192.168.1.2", device_type=None, category="camera", vendor="Acme",
        start="2026-01-01T00:05:00Z", end="2026-01-01T00:10:00Z", anomaly_score=9.5,
        threshold=1.5, top_features=[TopFeature("log_flows", 4.0, 1.0, 0.6)], message="m")
    base.update(kw)
    return Alert(**base)  # type: ignore[arg-type]


def test_schema_generated_from_the_types() -> None:
    s = json_schema(Alert)
    assert s["required"][:3] == ["kind", "severity", "device_id"]
    assert not {"local_peers", "new_peers", "incident"} & set(s["required"])
    assert s["properties"]["kind"] == {"enum": [k.value for k in AlertKind]}
    assert s["properties"]["severity"] == {"enum": ["low", "medium", "high"]}
    assert s["properties"]["anomaly_score"] == {"type": ["number", "null"]}
    assert s["properties"]["incident"]["minimum"] == 1
    assert s["properties"]["top_features"]["items"]["required"] == [
        "feature", "observed", "expected", "share"]
    inc = json_schema(Incident)
    assert "origin" in inc["required"] and "source" not in inc["properties"]
    assert inc["properties"]["kinds"] == {"type": "object",
                                          "additionalProperties": {"type": "integer"}}
    ident = json_schema(DeviceIdentity)["properties"]
    assert ident["candidates"] == {"type": ["array", "null"], "items": {"type": "string"}}


def test_alert_to_dict_is_what_the_schema_describes() -> None:
    a = _alert(local_peers=["192.168.1.9"]).to_dict()
    assert a["kind"] == "anomalous_window" and a["severity"] == "high"
    assert a["top_features"][0] == {"feature": "log_flows", "observed": 4.0, "expected": 1.0,
                                    "share": 0.6}
    assert "new_peers" not in a and "incident" not in a  # optional, unset
    jsonschema.validate(a, json_schema(Alert))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**a, "severity": "urgent"}, json_schema(Alert))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**a, "start": "yesterday"}, json_schema(Alert))


def test_severity_order_and_mappings() -> None:
    assert max([Severity.LOW, Severity.HIGH, Severity.MEDIUM], key=lambda s: s.rank) is \
        Severity.HIGH
    assert [Severity.of_ratio(r) for r in (1.2, 2.0, 7.0)] == [
        Severity.LOW, Severity.MEDIUM, Severity.HIGH]
    assert (Severity.LOW.cef, Severity.MEDIUM.cef, Severity.HIGH.cef) == (3, 6, 8)
    assert Severity("medium") is Severity.MEDIUM


def test_schema_version_is_in_the_report_schema() -> None:
    from flockwatch.serving.score import SCORE_JSON_SCHEMA

    assert SCORE_JSON_SCHEMA["properties"]["schema_version"] == {"const": SCHEMA_VERSION}
    assert "schema_version" in SCORE_JSON_SCHEMA["required"]
    assert SCORE_JSON_SCHEMA["properties"]["alerts"]["items"] == json_schema(Alert)


def test_finding_schema_and_dict() -> None:
    f = Finding(FindingKind.CLEARTEXT_CREDENTIALS, Severity.HIGH, "aa:01", "aa:01",
                "192.168.1.2", "2026-01-01T00:05:00Z", "2026-01-01T00:06:00Z",
                ["192.168.1.9:40000 -> 192.168.1.2:23/tcp"], "Telnet login in clear text")
    d = f.to_dict()
    assert d["kind"] == "cleartext_credentials" and d["severity"] == "high"
    schema = json_schema(Finding)
    assert schema["required"] == ["kind", "severity", "device_id", "mac", "ip", "first_seen",
                                  "last_seen", "flows", "message"]
    jsonschema.validate(d, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**d, "first_seen": "today"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**d, "kind": "bad_vibes"}, schema)
