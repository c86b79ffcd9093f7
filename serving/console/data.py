"""Where the console's data comes from, and the queries its pages and the API share.

Two sources give the same ``Snapshot``: a scored capture's JSON report (``flockwatch score
--format json``, the typed output contract of ``serving.contract``) and a running sensor's
SQLite inventory plus JSON-lines alerts. Both are re-read when their files change, so the
console follows a sensor as it writes. Analysts' "expected" decisions live in a small JSON
store next to the data (``Decisions``): the data files themselves are never written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flockwatch.serving.contract import Severity
from flockwatch.serving.findings import is_finding

#: Inventory columns the console sorts by (whitelisted: a sort key is user input).
SORTABLE = ("device_id", "mac", "vendor", "device_type", "category", "type_confidence",
            "baseline", "first_seen", "last_seen", "alerts", "flows", "bytes", "risk_score")


def parse_time(text: str | None) -> dt.datetime | None:
    """An ISO-8601 time as the contract writes it (``...Z``), or None."""
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t


def alert_key(alert: dict[str, Any]) -> str:
    """A stable name for an alert: the same alert read again (a report reloaded, a sensor's
    alert file re-read) gets the same key, whatever its position or incident number."""
    ident = {k: alert.get(k) for k in ("kind", "device_id", "start", "end", "message")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Snapshot:
    """One consistent view of the data: devices, their windows, alerts and incidents.

    ``alerts`` carry ``key`` (``alert_key``) and ``index`` (their position, which incidents'
    ``alerts`` lists refer to); ``devices`` carry ``severity``, the highest severity of their
    alerts (None without alerts)."""

    devices: list[dict[str, Any]]
    windows: dict[str, list[dict[str, Any]]]
    alerts: list[dict[str, Any]]
    incidents: list[dict[str, Any]]
    model: str
    origin: str
    has_windows: bool
    #: risk findings (``serving.contract.Finding``) and known vulnerabilities
    #: (``Vulnerability``) of the devices: a report's lists; a sensor's findings from its
    #: alerts file (it keeps no vulnerability rows, only each device's ``cves``)
    findings: list[dict[str, Any]] = field(default_factory=list)
    vulnerabilities: list[dict[str, Any]] = field(default_factory=list)
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_ip: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {d["device_id"]: d for d in self.devices}
        for d in self.devices:
            for ip in d.get("ips") or []:
                self.by_ip.setdefault(ip, d["device_id"])
        for i, a in enumerate(self.alerts):
            a["index"] = i
            a["key"] = alert_key(a)


class Source(Protocol):
    """Something that gives the console a ``Snapshot`` of the current data."""

    description: str
    decisions_path: Path

    def snapshot(self) -> Snapshot: ...


def _stamp(paths: Iterable[Path]) -> tuple[tuple[float, int], ...]:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((st.st_mtime, st.st_size))
        except OSError:
            out.append((0.0, -1))
    return tuple(out)


class ReportSource:
    """A scored capture's JSON report, re-read when the file changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.description = f"report {self.path.name}"
        self.decisions_path = self.path.with_name(self.path.name + ".expected.json")
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[float, int], ...] | None = None
        self._snap: Snapshot | None = None
        self.snapshot()  # a bad file fails at start, naming it

    def snapshot(self) -> Snapshot:
        with self._lock:
            stamp = _stamp([self.path])
            if self._snap is None or stamp != self._stamp:
                self._snap = load_report(self.path)
                self._stamp = stamp
            return self._snap


def load_report(path: Path) -> Snapshot:
    """A ``flockwatch score --format json`` report -> a ``Snapshot``; ``ValueError`` naming
    the file when it is not one."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({str(exc).splitlines()[0][:120]})") from None
    need = ("devices", "windows", "alerts", "incidents")
    if not isinstance(doc, dict) or any(not isinstance(doc.get(k), list) for k in need):
        raise ValueError(f"{path}: not a flockwatch score report (expected the JSON of "
                         "`flockwatch score --format json`, with devices, windows, alerts "
                         "and incidents)")
    return snapshot_of(doc, str(path))


def snapshot_of(doc: dict[str, Any], origin: str) -> Snapshot:
    """A score report's JSON document -> a ``Snapshot``."""
    windows: dict[str, list[dict[str, Any]]] = {}
    for w in doc["windows"]:
        windows.setdefault(w["device_id"], []).append(w)
    for ws in windows.values():
        ws.sort(key=lambda w: w["start"] or "")
    snap = Snapshot(devices=list(doc["devices"]), windows=windows, alerts=list(doc["alerts"]),
                    incidents=list(doc["incidents"]), model=str(doc.get("model") or ""),
                    origin=origin, has_windows=True,
                    findings=[f for f in doc.get("findings") or [] if isinstance(f, dict)],
                    vulnerabilities=[v for v in doc.get("vulnerabilities") or []
                                     if isinstance(v, dict)])
    _annotate(snap)
    return snap


class SensorSource:
    """A running sensor's SQLite inventory and JSON-lines alerts, re-read as it writes: the
    inventory when the database (or its write-ahead log) changes, the alerts file from where
    the last read stopped (the sensor only appends)."""

    def __init__(self, inventory_db: str | os.PathLike[str] | None,
                 alerts: str | os.PathLike[str] | None) -> None:
        if inventory_db is None and alerts is None:
            raise ValueError("give --inventory-db, --alerts or both")
        self.db = Path(inventory_db) if inventory_db is not None else None
        self.alerts_path = Path(alerts) if alerts is not None else None
        for p, opt in ((self.db, "--inventory-db"), (self.alerts_path, "--alerts")):
            if p is not None and not p.is_file():
                raise ValueError(f"{opt} {p}: no such file")
        shown = [p.name for p in (self.db, self.alerts_path) if p is not None]
        self.description = "sensor " + " + ".join(shown)
        anchor = self.alerts_path or self.db
        assert anchor is not None
        self.decisions_path = anchor.with_name(anchor.name + ".expected.json")
        self._lock = threading.Lock()
        self._inv_stamp: tuple[tuple[float, int], ...] | None = None
        self._devices: list[dict[str, Any]] = []
        self._alerts: list[dict[str, Any]] = []
        #: the risk findings the sensor wrote to the same file (not shown as alerts)
        self.findings: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""
        self._snap: Snapshot | None = None
        self.snapshot()

    def _read_devices(self) -> bool:
        if self.db is None:
            return False
        stamp = _stamp([self.db, self.db.with_name(self.db.name + "-wal")])
        if stamp == self._inv_stamp:
            return False
        try:
            con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=2.0)
        except sqlite3.Error as exc:
            raise ValueError(f"{self.db}: {exc}") from None
        try:
            con.row_factory = sqlite3.Row
            rows = [dict(r) for r in con.execute("SELECT * FROM devices")]
        except sqlite3.Error as exc:
            raise ValueError(f"{self.db}: not a flockwatch sensor inventory ({exc})") from None
        finally:
            con.close()
        self._devices = [_sensor_device(r) for r in rows]
        self._inv_stamp = stamp
        return True

    def _read_alerts(self) -> bool:
        if self.alerts_path is None:
            return False
        try:
            size = self.alerts_path.stat().st_size
        except OSError:
            return False
        if size < self._offset:  # rotated or truncated: start over
            self._offset, self._partial, self._alerts = 0, b"", []
            self.findings = []
        if size == self._offset:
            return False
        with self.alerts_path.open("rb") as f:
            f.seek(self._offset)
            data = self._partial + f.read(size - self._offset)
        self._offset = size
        lines = data.split(b"\n")
        self._partial = lines.pop()  # a line the sensor is still writing
        for line in lines:
            if not line.strip():
                continue
            try:
                a = json.loads(line)
            except ValueError:
                continue  # not an alert line; the file is the sensor's, not ours to judge
            if isinstance(a, dict) and "kind" in a and "device_id" in a:
                # risk findings share the file (docs/findings.md): they are no alerts
                (self.findings if is_finding(a) else self._alerts).append(a)
        return True

    def snapshot(self) -> Snapshot:
        with self._lock:
            changed = self._read_devices() | self._read_alerts()
            if self._snap is None or changed:
                alerts = [dict(a) for a in self._alerts]
                devices = [dict(d) for d in self._devices]
                devices += _alerting_devices(alerts, {d["device_id"] for d in devices})
                snap = Snapshot(devices=devices, windows={},
                                alerts=alerts, incidents=sensor_incidents(alerts),
                                model="", origin=self.description, has_windows=False,
                                findings=[dict(f) for f in self.findings])
                _annotate(snap)
                self._snap = snap
            return self._snap


_SEVERITY_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1}


def device_risks(snap: Snapshot, device_id: str
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A device's risk findings (most severe, then latest, first) and known vulnerabilities
    (exploited ones first, then by CVSS score)."""
    found = sorted((f for f in snap.findings if f.get("device_id") == device_id),
                   key=lambda f: str(f.get("last_seen") or ""), reverse=True)
    found.sort(key=lambda f: -_SEVERITY_RANK.get(str(f.get("severity")), 0))  # stable
    vulns = sorted((v for v in snap.vulnerabilities if v.get("device_id") == device_id),
                   key=lambda v: (not v.get("kev"), -(v.get("cvss") or 0.0), str(v.get("cve"))))
    return found, vulns


def _sensor_device(r: dict[str, Any]) -> dict[str, Any]:
    """A sensor inventory row as a report's device record (the fields the inventory keeps;
    lists it does not keep are empty)."""
    cand = r.get("candidates")
    try:
        candidates = json.loads(cand) if cand else None
    except ValueError:
        candidates = None

    def iso(v: Any) -> Any:
        t = parse_time(v) if isinstance(v, str) else None
        return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else v

    return {
        "device_id": r["device_id"], "mac": r.get("mac"), "vendor": r.get("vendor"),
        "oui_vendor": r.get("oui_vendor"), "ips": [r["ip"]] if r.get("ip") else [],
        "hostnames": [], "server_names": [], "protocols": [], "applications": [],
        "industrial": False, "industrial_protocols": [],
        "first_seen": iso(r.get("first_seen")), "last_seen": iso(r.get("last_seen")),
        "flows": r.get("flows"), "bytes": r.get("bytes"), "packets": None,
        "device_type": r.get("device_type"), "type_confidence": r.get("type_confidence"),
        "unknown": None, "nearest_type": None, "category": r.get("category"),
        "category_confidence": r.get("category_confidence"),
        "vendor_confidence": r.get("vendor_confidence"), "candidates": candidates,
        "baseline": r.get("status"), "windows": None, "anomalous_windows": None,
        "software": _json_list(r.get("software")), "firmware": _json_list(r.get("firmware")),
        "risk_score": r.get("risk_score"), "findings": r.get("findings"),
    }


def _json_list(text: Any) -> list[str]:
    """A JSON list the sensor's inventory keeps (``software``, ``firmware``), or []."""
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _alerting_devices(alerts: list[dict[str, Any]], known: set[str]) -> list[dict[str, Any]]:
    """Devices that alerts name but the inventory does not hold (no ``--inventory-db``, or a
    device the sensor has not written yet): what their alerts say of them."""
    out: dict[str, dict[str, Any]] = {}
    for a in alerts:
        did = a["device_id"]
        if did in known:
            continue
        d = out.setdefault(did, _sensor_device({"device_id": did, "mac": a.get("mac"),
                                                "ip": a.get("ip"), "vendor": a.get("vendor"),
                                                "device_type": a.get("device_type"),
                                                "category": a.get("category")}))
        if a.get("start") and (d["first_seen"] is None or a["start"] < d["first_seen"]):
            d["first_seen"] = a["start"]
        if a.get("end") and (d["last_seen"] is None or a["end"] > d["last_seen"]):
            d["last_seen"] = a["end"]
    return list(out.values())


def sensor_incidents(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Incidents of a sensor's alerts, by the incident numbers the sensor gave them (its
    ``IncidentTracker``); alerts without one are grouped as a report groups them."""
    from flockwatch.serving.alerts import incidents

    numbered: dict[int, list[int]] = {}
    loose: list[int] = []
    for i, a in enumerate(alerts):
        n = a.get("incident")
        if isinstance(n, int):
            numbered.setdefault(n, []).append(i)
        else:
            loose.append(i)
    out: list[dict[str, Any]] = []
    groups = [(n, m) for n, m in sorted(numbered.items())]
    for inc in incidents([alerts[i] for i in loose]):
        groups.append((0, [loose[j] for j in inc["alerts"]]))
    for number, members in groups:
        grp = [alerts[i] for i in members]
        parts = incidents(grp)
        first = parts[0]
        kinds: dict[str, int] = {}
        for a in grp:
            kinds[a["kind"]] = kinds.get(a["kind"], 0) + 1
        devices = sorted({a["device_id"] for a in grp},
                         key=lambda d: (-sum(a["device_id"] == d for a in grp), d))
        severity = max((Severity(a["severity"]) for a in grp), key=lambda s: s.rank)
        out.append({**first, "id": number, "severity": severity.value, "kinds": kinds,
                    "devices": devices, "alerts": members,
                    "start": min((a["start"] for a in grp if a.get("start")), default=None),
                    "end": max((a["end"] for a in grp if a.get("end")), default=None),
                    "message": first["message"] if len(parts) == 1 else
                    f"{len(devices)} device(s): {len(grp)} alert(s)"})
    next_id = max((o["id"] for o in out), default=0) + 1
    for o in out:
        if o["id"] == 0:
            o["id"] = next_id
            next_id += 1
    out.sort(key=lambda o: (o["start"] or "", o["id"]))
    return out


def _annotate(snap: Snapshot) -> None:
    """Per device: alert counts (a sensor inventory keeps none) and the highest severity."""
    counts: dict[str, int] = {}
    worst: dict[str, Severity] = {}
    for a in snap.alerts:
        d = a["device_id"]
        counts[d] = counts.get(d, 0) + 1
        s = Severity(a["severity"])
        if d not in worst or s.rank > worst[d].rank:
            worst[d] = s
    for d in snap.devices:
        if d.get("alerts") is None:
            d["alerts"] = counts.get(d["device_id"], 0)
        d["severity"] = worst[d["device_id"]].value if d["device_id"] in worst else None


class MarkedSource:
    """A source as the analyst sees it: each device's alert count and severity over its
    alerts not marked expected, so that clearing noise also clears the device's colour in the
    inventory, its severity filter and the map. The report's own counts stay in its file."""

    def __init__(self, source: Source, decisions: Decisions) -> None:
        self.source = source
        self.decisions = decisions
        self.description = source.description
        self.decisions_path = source.decisions_path
        self._last: tuple[int, frozenset[str], Snapshot] | None = None

    def snapshot(self) -> Snapshot:
        snap = self.source.snapshot()
        marks = self.decisions.load()
        keys = frozenset(a["key"] for a in snap.alerts if a["key"] in marks)
        if not keys:
            return snap
        last = self._last
        if last is not None and last[0] == id(snap) and last[1] == keys:
            return last[2]
        counts: dict[str, int] = {}
        worst: dict[str, Severity] = {}
        for a in snap.alerts:
            if a["key"] in keys:
                continue
            d = a["device_id"]
            counts[d] = counts.get(d, 0) + 1
            sev = Severity(a["severity"])
            if d not in worst or sev.rank > worst[d].rank:
                worst[d] = sev
        devices = [{**d, "alerts": counts.get(d["device_id"], 0),
                    "severity": worst[d["device_id"]].value if d["device_id"] in worst
                    else None} for d in snap.devices]
        view = Snapshot(devices=devices, windows=snap.windows, alerts=snap.alerts,
                        incidents=snap.incidents, model=snap.model, origin=snap.origin,
                        has_windows=snap.has_windows)
        self._last = (id(snap), keys, view)
        return view


class Decisions:
    """Alerts an analyst marked as expected, in a JSON file next to the data (written
    atomically; a missing file is an empty store)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: tuple[tuple[tuple[float, int], ...], dict[str, dict[str, Any]]] | None = None

    def load(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._load())

    def _load(self) -> dict[str, dict[str, Any]]:
        stamp = _stamp([self.path])
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            marks = {d["key"]: d for d in doc.get("expected", []) if isinstance(d, dict)
                     and isinstance(d.get("key"), str)}
        except (OSError, ValueError, AttributeError):
            marks = {}
        self._cache = (stamp, marks)
        return marks

    def mark(self, alert: dict[str, Any], note: str = "") -> dict[str, Any]:
        """Record ``alert`` as expected; returns the decision."""
        from flockwatch.features.output import atomic_path

        rec = {"key": alert["key"], "kind": alert["kind"], "device_id": alert["device_id"],
               "start": alert.get("start"), "end": alert.get("end"),
               "message": alert.get("message"), "note": note[:500],
               "decided": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        with self._lock:
            marks = dict(self._load())
            marks[rec["key"]] = rec
            self._write(marks, atomic_path)
        return rec

    def unmark(self, key: str) -> bool:
        from flockwatch.features.output import atomic_path

        with self._lock:
            marks = dict(self._load())
            if marks.pop(key, None) is None:
                return False
            self._write(marks, atomic_path)
        return True

    def _write(self, marks: dict[str, dict[str, Any]], atomic_path: Callable[..., Any]) -> None:
        text = json.dumps({"expected": sorted(marks.values(), key=lambda d: d["decided"])},
                          indent=2) + "\n"
        with atomic_path(self.path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        self._cache = None


# -- queries --------------------------------------------------------------------------------

@dataclass
class Filters:
    """What the inventory, alert and incident lists are filtered by; every field optional."""

    type: str | None = None
    category: str | None = None
    vendor: str | None = None
    severity: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    q: str | None = None
    kind: str | None = None
    device: str | None = None

    def device_ok(self, d: dict[str, Any]) -> bool:
        if self.type and (d.get("device_type") or "unknown") != self.type:
            return False
        if self.category and (d.get("category") or "unknown") != self.category:
            return False
        if self.vendor and self.vendor.lower() not in (d.get("vendor") or "").lower():
            return False
        if self.severity and not _at_least(d.get("severity"), self.severity):
            return False
        if not _overlaps(d.get("first_seen"), d.get("last_seen"), self.since, self.until):
            return False
        if self.q:
            q = self.q.lower()
            hay = [d.get("device_id"), d.get("mac"), d.get("vendor"), d.get("device_type"),
                   *(d.get("ips") or []), *(d.get("hostnames") or [])]
            if not any(q in str(h).lower() for h in hay if h):
                return False
        return True

    def alert_ok(self, a: dict[str, Any], snap: Snapshot) -> bool:
        if self.kind and a["kind"] != self.kind:
            return False
        if self.device and a["device_id"] != self.device:
            return False
        if self.severity and not _at_least(a["severity"], self.severity):
            return False
        if not _overlaps(a.get("start"), a.get("end"), self.since, self.until):
            return False
        dev = snap.by_id.get(a["device_id"], a)
        if self.type and (dev.get("device_type") or "unknown") != self.type:
            return False
        if self.category and (dev.get("category") or "unknown") != self.category:
            return False
        return not (self.vendor and self.vendor.lower() not in (
            dev.get("vendor") or "").lower())


def _at_least(value: str | None, wanted: str) -> bool:
    if value is None:
        return False
    return Severity(value).rank >= Severity(wanted).rank


def _overlaps(start: str | None, end: str | None, since: dt.datetime | None,
              until: dt.datetime | None) -> bool:
    if since is not None:
        e = parse_time(end) or parse_time(start)
        if e is None or e < since:
            return False
    if until is not None:
        s = parse_time(start) or parse_time(end)
        if s is None or s > until:
            return False
    return True


def sort_devices(devices: list[dict[str, Any]], key: str, descending: bool
                 ) -> list[dict[str, Any]]:
    """Devices by ``key`` (one of ``SORTABLE``), missing values last either way."""
    if key not in SORTABLE:
        key = "device_id"
    present = [d for d in devices if d.get(key) is not None]
    missing = [d for d in devices if d.get(key) is None]
    present.sort(key=lambda d: (d[key], d["device_id"]), reverse=descending)
    return present + missing


@dataclass
class Page:
    total: int
    offset: int
    limit: int
    items: list[dict[str, Any]]


def paginate(items: list[dict[str, Any]], offset: int, limit: int) -> Page:
    return Page(len(items), offset, limit, items[offset:offset + limit])


def visible_alerts(snap: Snapshot, expected: dict[str, dict[str, Any]], f: Filters,
                   include_expected: bool = False) -> list[dict[str, Any]]:
    """Alerts passing ``f``, each with ``expected`` set; those marked expected only when
    asked for."""
    out = []
    for a in snap.alerts:
        if not f.alert_ok(a, snap):
            continue
        marked = a["key"] in expected
        if marked and not include_expected:
            continue
        out.append({**a, "expected": marked})
    return out


def visible_incidents(snap: Snapshot, expected: dict[str, dict[str, Any]], f: Filters,
                      include_expected: bool = False) -> list[dict[str, Any]]:
    """Incidents with at least one alert passing ``f`` and not marked expected (unless asked
    for), each with ``open_alerts`` counted."""
    ok = {a["index"] for a in visible_alerts(snap, expected, f, include_expected=True)}
    out = []
    for inc in snap.incidents:
        mine = [i for i in inc["alerts"] if i in ok]
        if not mine:
            continue
        open_ = [i for i in mine if snap.alerts[i]["key"] not in expected]
        if not open_ and not include_expected:
            continue
        if f.severity and not _at_least(inc["severity"], f.severity):
            continue
        out.append({**inc, "open_alerts": len(open_)})
    return out


def peers_of(snap: Snapshot, device: dict[str, Any]) -> list[dict[str, Any]]:
    """A device's local peers, as far as the data says: the report's ``local_peers`` of the
    device when it has them, and the peers its alerts name (both directions)."""
    found: dict[str, set[str]] = {}

    def add(ip: str, how: str) -> None:
        found.setdefault(ip, set()).add(how)

    for ip in device.get("local_peers") or []:
        add(ip, "traffic")
    me = device["device_id"]
    my_ips = set(device.get("ips") or [])
    for a in snap.alerts:
        if a["device_id"] == me:
            for ip in a.get("local_peers") or []:
                add(ip, "alert")
            for p in a.get("new_peers") or []:
                add(p.rsplit(":", 1)[0] if p.count(":") == 1 else p, "new peer")
        else:
            named = set(a.get("local_peers") or []) | {
                p.rsplit(":", 1)[0] if p.count(":") == 1 else p for p in a.get("new_peers") or []}
            if named & my_ips:
                other = snap.by_id.get(a["device_id"])
                for ip in (other or {}).get("ips") or ([a["ip"]] if a.get("ip") else []):
                    add(ip, "alert")
    out = []
    for ip in sorted(found):
        if ip in my_ips:
            continue
        dev = snap.by_ip.get(ip)
        out.append({"ip": ip, "device_id": dev, "how": sorted(found[ip])})
    return out
