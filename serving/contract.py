"""The typed output contract: what ``score``, the sensor, the REST API and the console say
about alerts, incidents and each device's identity.

The JSON Schema of the score report is generated from these types (``json_schema``), so the
document and the code cannot drift apart. ``SCHEMA_VERSION`` numbers the report's shape: it
changes whenever a field is renamed, removed or changes meaning (v1, flockwatch 0.5: alerts'
``score`` became ``anomaly_score`` like the windows', an incident's likely origin
``origin`` instead of ``source``, which everywhere else names the input; v2, flockwatch 0.6:
the report's ``findings`` and ``vulnerabilities``, and the devices' risk columns).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 2


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def cef(self) -> int:
        """CEF severity (0-10)."""
        return {Severity.LOW: 3, Severity.MEDIUM: 6, Severity.HIGH: 8}[self]

    @property
    def syslog(self) -> int:
        """Syslog severity (RFC 5424: 2 critical, 4 warning, 5 notice)."""
        return {Severity.LOW: 5, Severity.MEDIUM: 4, Severity.HIGH: 2}[self]

    @classmethod
    def of_ratio(cls, ratio: float) -> Severity:
        """An anomalous window's severity from its score over its threshold."""
        return cls.HIGH if ratio >= 5 else cls.MEDIUM if ratio >= 2 else cls.LOW


_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2}


class AlertKind(enum.StrEnum):
    ANOMALOUS_WINDOW = "anomalous_window"
    NEW_DEVICE = "new_device"
    NEW_PEER = "new_peer"


@dataclass
class TopFeature:
    """A feature that deviated: observed and expected (reconstructed, within the feature's
    range) values, and its share of the anomaly score. For a person (``features.explain``):
    ``label`` and ``text`` in the feature's units; for a hashed feature the words or
    fingerprints in its bucket in that window (``values``) and those the device never showed
    while learning (``new_values``, when the model can say)."""

    feature: str
    observed: float
    expected: float
    share: float
    label: str | None = field(default=None, metadata={"optional": True})
    text: str | None = field(default=None, metadata={"optional": True})
    values: list[str] | None = field(default=None, metadata={"optional": True})
    new_values: list[str] | None = field(default=None, metadata={"optional": True})


@dataclass
class AlertFlow:
    """A flow behind an alert: one of its device's flows in the alert's window (``src`` is
    the initiator, as in the flow table)."""

    first_seen: str
    last_seen: str
    src_ip: str | None
    src_port: int | None
    dst_ip: str | None
    dst_port: int | None
    protocol: int | None
    application: str | None
    packets: int | None
    bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@dataclass
class Alert:
    """One alert. ``start``/``end`` are its window (ISO-8601 UTC); ``anomaly_score`` and
    ``threshold`` are an anomalous window's; ``local_peers`` (anomalous windows) and
    ``new_peers`` (new-peer alerts, ``ip:port``) are present only for their kind, ``incident``
    once the alert is grouped, ``model_version`` where a registry version scored it, ``flows``
    where the flows of its window were at hand (``serving.score.flows_behind``: a score
    report, the live sensor)."""

    kind: AlertKind
    severity: Severity
    device_id: str
    mac: str | None
    ip: str | None
    device_type: str | None
    category: str | None
    vendor: str | None
    start: str | None
    end: str | None
    anomaly_score: float | None
    threshold: float | None
    top_features: list[TopFeature]
    message: str
    local_peers: list[str] | None = field(default=None, metadata={"optional": True})
    new_peers: list[str] | None = field(default=None, metadata={"optional": True})
    incident: int | None = field(default=None, metadata={"optional": True, "minimum": 1})
    #: the registry version of the model that scored it (the live sensor's alerts)
    model_version: str | None = field(default=None, metadata={"optional": True})
    #: up to ten of its device's flows in its window, those to new peers first, then by bytes
    flows: list[AlertFlow] | None = field(default=None, metadata={"optional": True})

    def to_dict(self) -> dict[str, Any]:
        """The alert as the JSON lines, CEF and the report carry it: enums as their values,
        optional fields only where set."""
        return _to_dict(self)


@dataclass
class Incident:
    """Alerts that tell one story: ``origin`` is its likely origin (an address two or more
    devices met, else the one device alerting), ``alerts`` indexes the report's alerts."""

    id: int = field(metadata={"minimum": 1})
    severity: Severity
    start: str | None
    end: str | None
    origin: str | None
    devices: list[str]
    kinds: dict[str, int]
    alerts: list[int]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@dataclass
class DeviceIdentity:
    """What identification says of a device (``docs``: Identification): the model or
    ``unknown``, the nearest known model, the category and vendor levels, and the prediction
    set."""

    device_type: str | None
    type_confidence: float | None
    unknown: bool | None
    nearest_type: str | None
    category: str | None
    category_confidence: float | None
    vendor: str | None
    vendor_confidence: float | None
    candidates: list[str] | None


@dataclass
class TypeEvidence:
    """One reason for a device's type (a score report's ``type_evidence``): ``evidence``, a
    piece of product evidence and its share of the match with the type's profile, or
    ``behaviour``, a window feature and its contribution to the type's score (log-odds,
    TreeSHAP) averaged over the device's latest windows; ``value`` in the feature's units."""

    kind: str
    name: str
    label: str
    value: str
    weight: float


class FindingKind(enum.StrEnum):
    """Risks that a device's traffic shows (``docs``: Risk findings)."""

    CLEARTEXT_CREDENTIALS = "cleartext_credentials"
    OBSOLETE_TLS = "obsolete_tls"
    BAD_CERTIFICATE = "bad_certificate"
    REMOTE_ACCESS_EXPOSED = "remote_access_exposed"
    INDUSTRIAL_WRITE = "industrial_write"
    INDUSTRIAL_REMOTE = "industrial_remote"


@dataclass
class Finding:
    """A risk seen in a device's traffic, unlike an alert a fact, not a deviation from its
    baseline. ``flows`` names the evidence flows (``src:port -> dst:port/proto``); the
    ``message`` says that a secret was seen, never the secret. ``model_version``: the
    registry version whose learnt masters the live sensor judged it by."""

    kind: FindingKind
    severity: Severity
    device_id: str
    mac: str | None
    ip: str | None
    first_seen: str
    last_seen: str
    flows: list[str]
    message: str
    model_version: str | None = field(default=None, metadata={"optional": True})

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


class CvssSeverity(enum.StrEnum):
    """A CVE's CVSS qualitative rating, as the NVD gives it (v2 has no ``none``/``critical``)."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def severity(self) -> Severity:
        """The alert severity of this rating (``critical`` is ``high``, ``none`` ``low``), for
        sinks such as CEF that know three levels."""
        return {CvssSeverity.CRITICAL: Severity.HIGH, CvssSeverity.HIGH: Severity.HIGH,
                CvssSeverity.MEDIUM: Severity.MEDIUM}.get(self, Severity.LOW)


@dataclass
class Vulnerability:
    """A known CVE that applies to software a device showed (``docs``: vulns): the score of
    the preferred CVSS version (3.1, then 4.0, 3.0, 2.0), whether CISA lists it as exploited
    (``kev``), and what the match was made on: the NVD's CPE criteria and version range
    (``cpe:2.3:a:openbsd:openssh:*:*:*:*:*:*:*:* < 7.4``) against ``product``, the vendor,
    product and version as the device's traffic showed them."""

    cve: str
    cvss: float | None
    cvss_version: str | None
    severity: CvssSeverity | None
    kev: bool
    matched_on: str
    product: str
    device_id: str
    #: the NVD description, cut at 200 characters
    description: str | None = field(default=None, metadata={"optional": True})

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


def _to_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None and f.metadata.get("optional"):
            continue
        out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _to_dict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_TIME_FIELDS = {"start", "end", "first_seen", "last_seen"}
#: ISO-8601 UTC as flockwatch writes it (``2026-01-01T00:05:00Z``, optional fraction)
TIME_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"


def _schema_of_type(tp: Any, name: str = "") -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        s = _schema_of_type(inner[0], name) if len(inner) == 1 else {
            "anyOf": [_schema_of_type(a, name) for a in inner]}
        if type(None) in args:
            if "type" in s:
                t = s["type"]
                s = {**s, "type": [*([t] if isinstance(t, str) else t), "null"]}
            elif "enum" in s:
                s = {**s, "enum": [*s["enum"], None]}
            else:
                s = {"anyOf": [s, {"type": "null"}]}
        return s
    if origin is list:
        return {"type": "array", "items": _schema_of_type(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of_type(args[1])}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return json_schema(tp)
    if tp is str:
        return ({"type": "string", "pattern": TIME_PATTERN} if name in _TIME_FIELDS
                else {"type": "string"})
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is Any:
        return {}
    raise TypeError(f"no JSON Schema for {tp!r}")


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of a contract dataclass, from its type hints: every field without
    ``optional`` metadata is required; ``minimum`` metadata bounds integers."""
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        s = _schema_of_type(hints[f.name], f.name)
        if "minimum" in f.metadata:
            s = {**s, "minimum": f.metadata["minimum"]}
        props[f.name] = s
        if not f.metadata.get("optional"):
            required.append(f.name)
    return {"type": "object", "required": required, "properties": props}


__all__ = ["SCHEMA_VERSION", "TIME_PATTERN", "Alert", "AlertFlow", "AlertKind", "CvssSeverity",
           "DeviceIdentity", "Finding", "FindingKind", "Incident", "Severity", "TopFeature",
           "TypeEvidence", "Vulnerability", "json_schema"]
