"""The console's JSON API under ``/api/``: devices, a device, its windows, alerts, incidents
and the model in use, paginated and filtered. The response models are Pydantic, so the
OpenAPI document (``/api/openapi.json``) describes exactly what is sent."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from flockwatch.serving.console.data import (
    SORTABLE,
    Decisions,
    Filters,
    Source,
    device_risks,
    paginate,
    parse_time,
    peers_of,
    sort_devices,
    visible_alerts,
    visible_incidents,
)
from flockwatch.serving.contract import AlertFlow, AlertKind, Severity, TypeEvidence

T = TypeVar("T")
MAX_LIMIT = 1000


class TopFeatureOut(BaseModel):
    """``serving.contract.TopFeature`` (tests/test_console.py keeps the two alike)."""

    feature: str
    observed: float
    expected: float
    share: float | None = None
    label: str | None = None
    text: str | None = None
    values: list[str] | None = None
    new_values: list[str] | None = None


class DeviceOut(BaseModel):
    """A device of the inventory (a report's device record; a sensor's inventory keeps fewer
    fields, the others are null or empty)."""

    model_config = ConfigDict(extra="allow")

    device_id: str
    mac: str | None = None
    vendor: str | None = None
    oui_vendor: str | None = None
    ips: list[str] = []
    hostnames: list[str] = []
    server_names: list[str] = []
    protocols: list[str] = []
    industrial_protocols: list[str] = []
    first_seen: str | None = None
    last_seen: str | None = None
    flows: int | None = None
    bytes: int | None = None
    device_type: str | None = None
    type_confidence: float | None = None
    unknown: bool | None = None
    nearest_type: str | None = None
    category: str | None = None
    category_confidence: float | None = None
    vendor_confidence: float | None = None
    candidates: list[str] | None = None
    baseline: str | None = None
    alerts: int = 0
    severity: Severity | None = None
    local_peers: list[str] = []
    type_evidence: list[TypeEvidence] = []
    software: list[str] = []
    firmware: list[str] = []
    #: 0-100 from the device's risk findings (docs/findings.md); null where not computed
    risk_score: int | None = None
    findings: int | None = None


class PeerOut(BaseModel):
    ip: str
    device_id: str | None
    how: list[str]


class FindingOut(BaseModel):
    """A risk finding (``serving.contract.Finding``)."""

    model_config = ConfigDict(extra="allow")

    kind: str
    severity: Severity
    device_id: str
    mac: str | None = None
    ip: str | None = None
    first_seen: str | None = None
    last_seen: str | None = None
    flows: list[str] = []
    message: str
    model_version: str | None = None


class VulnerabilityOut(BaseModel):
    """A known CVE of a device's software (``serving.contract.Vulnerability``)."""

    model_config = ConfigDict(extra="allow")

    cve: str
    cvss: float | None = None
    cvss_version: str | None = None
    severity: str | None = None
    kev: bool = False
    matched_on: str
    product: str
    device_id: str
    description: str | None = None


class DeviceDetail(BaseModel):
    device: DeviceOut
    peers: list[PeerOut]
    windows: int
    alerts: int
    #: its risk findings, most severe first, and its software's known vulnerabilities,
    #: exploited ones (CISA KEV) first
    findings: list[FindingOut] = []
    vulnerabilities: list[VulnerabilityOut] = []


class WindowOut(BaseModel):
    """A scored window (``flockwatch score --format json``'s ``windows``)."""

    model_config = ConfigDict(extra="allow")

    device_id: str
    start: str
    end: str
    anomaly_score: float | None = None
    threshold: float | None = None
    anomalous: bool | None = None
    learning: bool | None = None
    device_type: str | None = None
    type_confidence: float | None = None
    top_features: list[TopFeatureOut] | None = None


class AlertOut(BaseModel):
    """An alert of the typed output contract (``serving.contract.Alert``), with its stable
    ``key`` and whether an analyst marked it ``expected``."""

    key: str
    index: int
    expected: bool
    kind: AlertKind
    severity: Severity
    device_id: str
    mac: str | None = None
    ip: str | None = None
    device_type: str | None = None
    category: str | None = None
    vendor: str | None = None
    start: str | None = None
    end: str | None = None
    anomaly_score: float | None = None
    threshold: float | None = None
    top_features: list[TopFeatureOut] = []
    message: str
    local_peers: list[str] | None = None
    new_peers: list[str] | None = None
    incident: int | None = None
    model_version: str | None = None
    flows: list[AlertFlow] | None = None


class IncidentOut(BaseModel):
    """An incident of the typed output contract (``serving.contract.Incident``); ``alerts``
    are the indexes of its alerts, ``open_alerts`` those not marked expected."""

    id: int
    severity: Severity
    start: str | None
    end: str | None
    origin: str | None
    devices: list[str]
    kinds: dict[str, int]
    alerts: list[int]
    message: str
    open_alerts: int


class IncidentDetail(BaseModel):
    incident: IncidentOut
    alerts: list[AlertOut]


class ModelOut(BaseModel):
    served_model: str | None
    served_model_version: str | None
    feature_set_version: int | str | None
    data_model: str | None
    data_source: str


class Decision(BaseModel):
    key: str
    kind: str
    device_id: str
    start: str | None
    end: str | None
    message: str | None
    note: str
    decided: str


class PageOf(BaseModel, Generic[T]):
    total: int
    offset: int
    limit: int
    items: list[T]


Offset = Annotated[int, Query(ge=0, description="Items to skip.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Text = Annotated[str | None, Query(max_length=200)]


def filters(type: Text = None, category: Text = None, vendor: Text = None,
            severity: Severity | None = None, since: dt.datetime | None = None,
            until: dt.datetime | None = None, q: Text = None, kind: AlertKind | None = None,
            device: Text = None) -> Filters:
    """Query parameters -> ``Filters`` (times without a zone are UTC)."""
    def utc(t: dt.datetime | None) -> dt.datetime | None:
        if t is None:
            return None
        return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t
    return Filters(type=type or None, category=category or None, vendor=vendor or None,
                   severity=severity.value if severity else None, since=utc(since),
                   until=utc(until), q=q or None, kind=kind.value if kind else None,
                   device=device or None)


def router(source: Source, decisions: Decisions, model_info: dict[str, Any]) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["console"])

    def device_or_404(device_id: str) -> dict[str, Any]:
        d = source.snapshot().by_id.get(device_id)
        if d is None:
            raise HTTPException(404, f"no device {device_id!r}")
        return d

    @api.get("/devices", response_model=PageOf[DeviceOut])
    def devices(type: Text = None, category: Text = None, vendor: Text = None,
                severity: Severity | None = None, since: dt.datetime | None = None,
                until: dt.datetime | None = None, q: Text = None,
                sort: Literal[SORTABLE] = "device_id",  # type: ignore[valid-type]
                order: Literal["asc", "desc"] = "asc", offset: Offset = 0,
                limit: Limit = 50) -> Any:
        """The inventory, filtered (type and category ``unknown`` match devices without
        one; vendor matches part of the name; severity: at least this severe an alert)."""
        f = filters(type, category, vendor, severity, since, until, q)
        snap = source.snapshot()
        rows = sort_devices([d for d in snap.devices if f.device_ok(d)], sort, order == "desc")
        return paginate(rows, offset, limit)

    @api.get("/devices/{device_id}", response_model=DeviceDetail)
    def device(device_id: str) -> Any:
        snap = source.snapshot()
        d = device_or_404(device_id)
        found, vulns = device_risks(snap, device_id)
        return {"device": d, "peers": peers_of(snap, d),
                "windows": len(snap.windows.get(device_id, [])),
                "alerts": sum(a["device_id"] == device_id for a in snap.alerts),
                "findings": found, "vulnerabilities": vulns}

    @api.get("/devices/{device_id}/windows", response_model=PageOf[WindowOut])
    def windows(device_id: str, since: dt.datetime | None = None,
                until: dt.datetime | None = None, anomalous: bool | None = None,
                offset: Offset = 0, limit: Limit = 500) -> Any:
        """A device's scored windows in time order (a sensor keeps none: always empty)."""
        device_or_404(device_id)
        f = filters(since=since, until=until)
        rows = [w for w in source.snapshot().windows.get(device_id, [])
                if (anomalous is None or bool(w.get("anomalous")) == anomalous)
                and _window_ok(w, f)]
        return paginate(rows, offset, limit)

    @api.get("/alerts", response_model=PageOf[AlertOut])
    def alerts(type: Text = None, category: Text = None, vendor: Text = None,
               severity: Severity | None = None, since: dt.datetime | None = None,
               until: dt.datetime | None = None, kind: AlertKind | None = None,
               device: Text = None, incident: int | None = None,
               include_expected: bool = False, offset: Offset = 0,
               limit: Limit = 50) -> Any:
        """Alerts in time order; those marked expected only with ``include_expected``."""
        f = filters(type, category, vendor, severity, since, until, kind=kind, device=device)
        rows = visible_alerts(source.snapshot(), decisions.load(), f, include_expected)
        if incident is not None:
            rows = [a for a in rows if a.get("incident") == incident]
        return paginate(rows, offset, limit)

    @api.post("/alerts/{key}/expected", response_model=Decision)
    def mark_expected(key: str, note: str = "") -> Any:
        """Record that this alert is expected: it leaves the lists (``include_expected``
        brings it back). The decision is kept beside the data, not in it."""
        return decisions.mark(alert_or_404(key), note)

    @api.delete("/alerts/{key}/expected")
    def unmark_expected(key: str) -> dict[str, bool]:
        alert_or_404(key)
        return {"removed": decisions.unmark(key)}

    def alert_or_404(key: str) -> dict[str, Any]:
        for a in source.snapshot().alerts:
            if a["key"] == key:
                return a
        raise HTTPException(404, f"no alert {key!r}")

    @api.get("/incidents", response_model=PageOf[IncidentOut])
    def incidents(type: Text = None, category: Text = None, vendor: Text = None,
                  severity: Severity | None = None, since: dt.datetime | None = None,
                  until: dt.datetime | None = None, kind: AlertKind | None = None,
                  device: Text = None, include_expected: bool = False, offset: Offset = 0,
                  limit: Limit = 50) -> Any:
        """Incidents with at least one alert passing the filters and not marked expected."""
        f = filters(type, category, vendor, severity, since, until, kind=kind, device=device)
        rows = visible_incidents(source.snapshot(), decisions.load(), f, include_expected)
        return paginate(rows, offset, limit)

    @api.get("/incidents/{incident_id}", response_model=IncidentDetail)
    def incident(incident_id: int) -> Any:
        snap = source.snapshot()
        marks = decisions.load()
        for inc in snap.incidents:
            if inc["id"] == incident_id:
                members = [{**snap.alerts[i], "expected": snap.alerts[i]["key"] in marks}
                           for i in inc["alerts"]]
                return {"incident": {**inc, "open_alerts": sum(not a["expected"]
                                                               for a in members)},
                        "alerts": members}
        raise HTTPException(404, f"no incident {incident_id}")

    @api.get("/model", response_model=ModelOut)
    def model() -> Any:
        """The model serving ``/invocations`` and the one that scored the data shown."""
        snap = source.snapshot()
        return {**model_info, "data_model": snap.model or None,
                "data_source": source.description}

    return api


def _window_ok(w: dict[str, Any], f: Filters) -> bool:
    if f.since is not None and (parse_time(w.get("end")) or f.since) < f.since:
        return False
    return not (f.until is not None and (parse_time(w.get("start")) or f.until) > f.until)
