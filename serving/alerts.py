"""Alerts from scored windows, and where they go: JSON lines, CEF over syslog."""

from __future__ import annotations

import collections
import datetime as dt
import functools
import json
import logging
import os
import select
import socket
import time
from pathlib import Path
from typing import Any

import polars as pl

from flockwatch.features.output import iso_utc, to_json
from flockwatch.serving.contract import Alert, AlertKind, Incident, Severity, TopFeature
from flockwatch.serving.findings import FINDING_SIGNATURES
from flockwatch.serving.options import parse_syslog_target

log = logging.getLogger("flockwatch.alerts")


def device_name(device_id: str, r: dict[str, Any]) -> str:
    """A device as an alert names it: ``id (model)``, or where the model is unknown, what
    identification still says (``id (TP-Link smart_plug, model unknown)``)."""
    dtype = r.get("device_type")
    if dtype and dtype != "unknown":
        return f"{device_id} ({dtype})"
    parts = [x for x in (r.get("vendor"), r.get("category")) if x]
    if dtype == "unknown" and parts:
        return f"{device_id} ({' '.join(parts)}, model unknown)"
    return str(device_id)


def _fmt_top(top: list[dict[str, Any]], n: int = 3) -> str:
    """The deviating features as a person reads them (``features.explain``), ``; ``-joined."""
    from flockwatch.features.explain import describe

    return "; ".join(t.get("text") or describe(t["feature"], t["observed"], t["expected"])
                     for t in top[:n])


def _iso(v: Any) -> Any:
    return iso_utc(v) if isinstance(v, dt.datetime) else v


def alerts_from(scored: pl.DataFrame, known_new: set[str] | None = None,
                new_peers: pl.DataFrame | None = None,
                window_peers: pl.DataFrame | None = None) -> list[dict[str, Any]]:
    """Alerts: one per anomalous window, one per device first seen after learning, one per
    window in which a known device talks to local peers it never talked to while learning.
    ``window_peers`` (``serving.score.window_peers``) gives anomalous-window alerts their
    ``local_peers``."""
    alerts: list[dict[str, Any]] = []
    peer_alerts = _peer_alerts(scored, new_peers)
    seen_new = set(known_new or ())
    local: dict[tuple[Any, ...], list[str]] = {} if window_peers is None else {
        (r[0], r[1], r[2]): r[3] for r in window_peers.iter_rows()}
    for r in scored.sort("start").iter_rows(named=True):
        dtype = r.get("device_type")
        name = device_name(r["device_id"], r)
        ident = {"category": r.get("category"), "vendor": r.get("vendor")}
        if r.get("new_device") and r["device_id"] not in seen_new:
            seen_new.add(r["device_id"])
            alerts.append(Alert(
                kind=AlertKind.NEW_DEVICE, severity=Severity.MEDIUM, device_id=r["device_id"],
                mac=r["mac"], ip=r["ip"], device_type=dtype, **ident,
                start=_iso(r["start"]), end=_iso(r["end"]), anomaly_score=None,
                threshold=None, top_features=[],
                message=f"new device {name} at {r['ip'] or '?'}: not seen during learning",
            ).to_dict())
        if r.get("anomalous"):
            top = json.loads(r["top_features"] or "[]")
            ratio = r["anomaly_score"] / r["threshold"] if r["threshold"] else float("inf")
            alerts.append(Alert(
                kind=AlertKind.ANOMALOUS_WINDOW, severity=Severity.of_ratio(ratio),
                device_id=r["device_id"], mac=r["mac"], ip=r["ip"], device_type=dtype, **ident,
                start=_iso(r["start"]), end=_iso(r["end"]),
                anomaly_score=round(r["anomaly_score"], 4),
                threshold=round(r["threshold"], 4),
                top_features=[TopFeature(**t) for t in top],
                local_peers=local.get((r.get("source"), r["device_id"], r["start"]), []),
                message=f"{name} deviates from its baseline (score {r['anomaly_score']:.3g} > "
                        f"{r['threshold']:.3g}): {_fmt_top(top)}",
            ).to_dict())
    alerts.extend(peer_alerts)
    alerts.sort(key=lambda a: (a["start"] or "", a["device_id"]))
    return alerts


def _peer_alerts(scored: pl.DataFrame, new_peers: pl.DataFrame | None) -> list[dict[str, Any]]:
    from flockwatch.features.industrial import INDUSTRIAL_PORTS

    if new_peers is None or new_peers.height == 0:
        return []
    cols = [c for c in ("category", "vendor") if c in scored.columns]
    info = scored.select("source", "device_id", "mac", "ip", "device_type", *cols).unique(
        ["source", "device_id"])
    out = []
    for r in new_peers.join(info, on=["source", "device_id"], how="left").sort(
            "start").iter_rows(named=True):
        ics = [INDUSTRIAL_PORTS[p] for p in r["ports"] if p in INDUSTRIAL_PORTS]
        dtype = r.get("device_type")
        name = device_name(r["device_id"], r)
        peers = ", ".join(r["new_peers"][:5]) + (" ..." if len(r["new_peers"]) > 5 else "")
        out.append(Alert(
            kind=AlertKind.NEW_PEER, severity=Severity.HIGH if ics else Severity.MEDIUM,
            device_id=r["device_id"], mac=r["mac"], ip=r["ip"], device_type=dtype,
            category=r.get("category"), vendor=r.get("vendor"),
            start=_iso(r["start"]), end=_iso(r["end"]), anomaly_score=None,
            threshold=None, top_features=[], new_peers=list(r["new_peers"]),
            message=f"{name} has local peer(s) never seen while learning (peer:service "
                    f"port): {peers}" + (f" ({', '.join(sorted(set(ics)))})" if ics else ""),
        ).to_dict())
    return out




def _peer_addresses(alert: dict[str, Any], field: str) -> list[str]:
    """The addresses in an alert's ``new_peers`` (``ip:port``) or ``local_peers`` (ip)."""
    peers = alert.get(field) or ()
    return [p.rpartition(":")[0] for p in peers] if field == "new_peers" else list(peers)


def _name(grp: list[dict[str, Any]], who: str | None) -> str:
    """A device as the alerts know it: ``id (type, ip)``; an address as itself."""
    a = next((a for a in grp if a["device_id"] == who), None)
    if a is None:
        return str(who)
    extra = [x for x in (a.get("device_type"), a.get("ip")) if x and x != "unknown"]
    return f"{who} ({', '.join(extra)})" if extra else str(who)


def _likely_source(grp: list[dict[str, Any]], devices: list[str]) -> tuple[str | None, int]:
    """(origin, how many other devices of the incident talked to it): first an address that
    two or more devices met as a new peer, then one that two or more alerting devices had as
    a local peer while deviating, else the one device alerting. An address that is one of the
    incident's devices is given as that device."""
    device_of = {a["ip"]: a["device_id"] for a in grp if a.get("ip")}
    for field in ("new_peers", "local_peers"):
        new = field == "new_peers"
        met: dict[str, set[str]] = {}
        for a in grp:
            for ip in _peer_addresses(a, field):
                if device_of.get(ip) != a["device_id"]:
                    met.setdefault(ip, set()).add(a["device_id"])
        # A local peer counts only when it alerts too (every device talks to its gateway).
        ranked = sorted((ip for ip, devs in met.items() if len(devs) >= 2
                         and (new or ip in device_of)), key=lambda ip: (-len(met[ip]), ip))
        if ranked:
            return device_of.get(ranked[0], ranked[0]), len(met[ranked[0]])
    return (devices[0] if len(devices) == 1 else None), 0


def incidents(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts that tell one story, grouped: two alerts belong together when their windows
    overlap or touch in time and they are on the same device, or one names the other's device
    as a new peer or as a local peer while deviating. A scan is one incident (the scanner's
    anomalous windows, each victim's new-peer alert naming it, the victims' own anomalous
    windows), and so is a device deviating over consecutive windows. ``source`` is the
    likely origin (``_likely_source``): a device of the incident, or an address.
    Chronological, numbered from 1; ``alerts`` indexes into the list given."""
    n = len(alerts)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = sorted(range(n), key=lambda i: (alerts[i]["start"] or "", alerts[i]["end"] or ""))
    ips = [set(_peer_addresses(a, "new_peers")) | set(_peer_addresses(a, "local_peers"))
           for a in alerts]
    # Sweep in start order, linear in alerts and peers rather than pairwise. For a device or
    # an address, the earlier alert with the latest end stands for all earlier ones: if any
    # is still open at this alert's start, that one is. Alerts naming an address as a peer
    # are kept in a list per address until an alert of that address joins them all, which
    # leaves them one group, so the list shrinks to its latest-ending member.
    latest: dict[tuple[str, str], tuple[str, int]] = {}
    refs: dict[str, list[tuple[str, int]]] = {}
    for i in order:
        a = alerts[i]
        start, end = a["start"] or "", a["end"] or ""
        mine = [("dev", a["device_id"])] + ([("ip", a["ip"])] if a.get("ip") else [])
        for key in [mine[0], *(("ip", x) for x in ips[i])]:
            hit = latest.get(key)
            if hit is not None and hit[0] >= start:
                parent[find(i)] = find(hit[1])
        if a.get("ip") and a["ip"] in refs:
            still = [(e, j) for e, j in refs[a["ip"]] if e >= start]
            for _, j in still:
                parent[find(j)] = find(i)
            refs[a["ip"]] = [max(still)] if still else []
        for key in mine:
            if key not in latest or latest[key][0] < end:
                latest[key] = (end, i)
        for x in ips[i]:
            refs.setdefault(x, []).append((end, i))
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(find(i), []).append(i)
    found: list[tuple[str, str, Incident]] = []
    for members in groups.values():
        grp = [alerts[i] for i in members]
        counts: dict[str, int] = {}
        for a in grp:
            counts[a["device_id"]] = counts.get(a["device_id"], 0) + 1
        devices = sorted(counts, key=lambda d: (-counts[d], d))
        source, met_by = _likely_source(grp, devices)
        kinds: dict[str, int] = {}
        for a in grp:
            kinds[a["kind"]] = kinds.get(a["kind"], 0) + 1
        severity = max((Severity(a["severity"]) for a in grp), key=lambda x: x.rank)
        start = min((a["start"] for a in grp if a["start"]), default=None)
        end = max((a["end"] for a in grp if a["end"]), default=None)
        what = ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items()))
        who = f"{len(devices)} devices" if len(devices) > 1 else devices[0]
        origin = f"; {met_by} other devices talked to {_name(grp, source)}" if met_by else ""
        found.append((start or "", end or "", Incident(
            id=0, severity=severity, start=start, end=end, origin=source, devices=devices,
            kinds=kinds, alerts=sorted(members),
            message=f"{who}: {len(grp)} alert(s) ({what}){origin}")))
    found.sort(key=lambda x: (x[0], x[1]))
    out = []
    for k, (_, _, inc) in enumerate(found, start=1):
        inc.id = k
        out.append(inc.to_dict())
    return out


class IncidentTracker:
    """Incident numbers for alerts that arrive batch by batch (the live sensor): each alert
    gets ``incident``, shared with the earlier alerts it groups with (``incidents``) among
    those still recent (ending at most ``horizon_s`` before the batch's first start), or a
    new number. An alert joining two earlier incidents takes the lower number."""

    def __init__(self, horizon_s: float) -> None:
        self.horizon_s = horizon_s
        self._recent: list[dict[str, Any]] = []
        self._next = 1

    def assign(self, alerts: list[dict[str, Any]]) -> None:
        if not alerts:
            return
        first = min((a["start"] for a in alerts if a["start"]), default=None)
        if first is not None:
            cut = iso_utc(dt.datetime.fromisoformat(first.replace("Z", "+00:00"))
                          - dt.timedelta(seconds=self.horizon_s))
            self._recent = [a for a in self._recent if (a["end"] or "") >= cut]
        old = len(self._recent)
        both = self._recent + alerts
        for inc in incidents(both):
            ids = [both[i]["incident"] for i in inc["alerts"] if i < old]
            number = min(ids) if ids else self._next
            if not ids:
                self._next += 1
            for i in inc["alerts"]:
                if i >= old:
                    both[i]["incident"] = number
        self._recent = both


@functools.lru_cache(maxsize=1)
def product_version() -> str:
    """flockwatch's installed version (the CEF header's device version)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flockwatch")
    except PackageNotFoundError:
        return "unknown"


def cef_line(alert: dict[str, Any], version: str | None = None) -> str:
    """An ArcSight CEF record for an alert or a finding (``version``: the product version in
    the header, by default the installed flockwatch's)."""
    version = version or product_version()
    def esc_h(v: object) -> str:
        return str(v).replace("\\", "\\\\").replace("|", "\\|")

    def esc_e(v: object) -> str:
        return str(v).replace("\\", "\\\\").replace("=", "\\=").replace("\n", " ")

    if alert.get("kind") in FINDING_SIGNATURES:
        return _finding_cef(alert, version, esc_h, esc_e)
    sig = {"anomalous_window": 100, "new_device": 200, "new_peer": 300}.get(alert["kind"], 999)
    ext = {
        "smac": alert.get("mac"), "src": alert.get("ip"), "start": alert.get("start"),
        "end": alert.get("end"), "cs1Label": "deviceType", "cs1": alert.get("device_type"),
        "cs3Label": "deviceCategory" if alert.get("category") else None,
        "cs3": alert.get("category"),
        "cs4Label": "deviceVendor" if alert.get("vendor") else None, "cs4": alert.get("vendor"),
        "cfp1Label": "anomalyScore", "cfp1": alert.get("anomaly_score"),
        "cfp2Label": "threshold", "cfp2": alert.get("threshold"),
        "cs2Label": "topFeatures", "cs2": ",".join(t["feature"] for t in alert["top_features"]),
        "cn1Label": "incident" if alert.get("incident") else None, "cn1": alert.get("incident"),
        "cs5Label": "modelVersion" if alert.get("model_version") else None,
        "cs5": alert.get("model_version"),
        "msg": alert.get("message"),
    }
    ext_s = " ".join(f"{k}={esc_e(v)}" for k, v in ext.items() if v not in (None, ""))
    sev = Severity(alert["severity"]).cef
    return (f"CEF:0|flockwatch|flockwatch|{version}|{sig}|{esc_h(alert['kind'])}|{sev}|{ext_s}")


def _finding_cef(finding: dict[str, Any], version: str, esc_h: Any, esc_e: Any) -> str:
    """A finding's CEF record: its own signature ID (``FINDING_SIGNATURES``), the device as
    the source, the first evidence flow and how many there are."""
    flows = finding.get("flows") or []
    ext = {
        "smac": finding.get("mac"), "src": finding.get("ip"),
        "start": finding.get("first_seen"), "end": finding.get("last_seen"),
        "cs1Label": "findingKind", "cs1": finding["kind"],
        "cs2Label": "evidenceFlow" if flows else None, "cs2": flows[0] if flows else None,
        "cn2Label": "evidenceFlows", "cn2": len(flows),
        "cs5Label": "modelVersion" if finding.get("model_version") else None,
        "cs5": finding.get("model_version"),
        "msg": finding.get("message"),
    }
    ext_s = " ".join(f"{k}={esc_e(v)}" for k, v in ext.items() if v not in (None, ""))
    sig = FINDING_SIGNATURES[finding["kind"]]
    sev = Severity(finding["severity"]).cef
    return f"CEF:0|flockwatch|flockwatch|{version}|{sig}|{esc_h(finding['kind'])}|{sev}|{ext_s}"


class JsonlSink:
    """Appends alerts as JSON lines, flushed per write; ``sync`` makes them durable (the
    sensor calls it once per window, so a crash or power cut loses at most the open one)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def send(self, alert: dict[str, Any]) -> None:
        self._fh.write(to_json(alert) + "\n")
        self._fh.flush()

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self.sync()
        self._fh.close()


#: alerts a TCP syslog sink holds while its collector is unreachable
SYSLOG_BUFFER = 10_000


class SyslogCefSink:
    """CEF over syslog (RFC 3164 framing), UDP or TCP. Failures are counted, never raised.

    Over TCP, an alert that cannot be delivered is kept, up to ``buffer`` alerts (then the
    oldest are dropped and counted in ``overflow``), and everything kept is sent, in order,
    once the collector answers again; reconnects back off from 1 s to 30 s, so an
    unreachable collector does not slow scoring. Over UDP nothing can tell a lost datagram,
    so nothing is kept. Syslog collectors never write back: a readable socket means that the
    collector closed it, and the alert goes over a new connection instead of into a socket
    that would drop it."""

    def __init__(self, target: str, protocol: str = "udp", buffer: int = SYSLOG_BUFFER) -> None:
        # Checked here, at start: a bad port must not surface at the first alert.
        t = parse_syslog_target(target, protocol)
        self.target = t
        self.addr = (t.host, t.port)
        self.protocol = t.protocol.value
        self.failures = 0  # alerts that could not be delivered when sent
        self.overflow = 0  # alerts dropped from a full buffer
        self._sock: socket.socket | None = None
        self._pending: collections.deque[bytes] = collections.deque()
        self._buffer = max(1, buffer)
        self._retry_at = 0.0
        self._backoff = 0.0

    @property
    def pending(self) -> int:
        """Alerts waiting for the collector."""
        return len(self._pending)

    def _socket(self) -> socket.socket:
        if self._sock is None:
            if self.protocol == "tcp":
                self._sock = socket.create_connection(self.addr, timeout=2)
            else:
                # Resolved per (re)connect, IPv4 or IPv6 as the name or address says.
                family, kind, proto, _, addr = socket.getaddrinfo(
                    self.addr[0], self.addr[1], type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(family, kind, proto)
                try:
                    sock.connect(addr)
                except OSError:
                    sock.close()
                    raise
                self._sock = sock
        elif self.protocol == "tcp" and select.select([self._sock], [], [], 0)[0]:
            self._drop_socket()  # closed by the collector (EOF or reset)
            return self._socket()
        return self._sock

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, alert: dict[str, Any]) -> None:
        pri = 8 * 16 + Severity(alert["severity"]).syslog  # local0
        ts = dt.datetime.now(dt.UTC).strftime("%b %d %H:%M:%S")
        msg = f"<{pri}>{ts} {socket.gethostname()} flockwatch: {cef_line(alert)}"
        try:
            data = msg.encode()
        except UnicodeError:
            self.failures += 1
            return
        if self.protocol == "tcp":
            if len(self._pending) >= self._buffer:
                self._pending.popleft()
                self.overflow += 1
                if self.overflow in (1, 10, 100) or self.overflow % 1000 == 0:
                    log.warning("syslog %s:%s unreachable: %d alert(s) dropped from a full "
                                "buffer of %d", *self.addr, self.overflow, self._buffer)
            self._pending.append(data + b"\n")
            if not self.flush():
                self.failures += 1
            return
        try:
            self._socket().send(data)
        except OSError:  # gaierror is an OSError
            self.failures += 1
            self._drop_socket()

    def flush(self) -> bool:
        """Send what the TCP buffer holds; True when it is empty. Waits for no collector: a
        reconnect is tried at most once per back-off period."""
        if not self._pending:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            sock = self._socket()
            while self._pending:
                sock.sendall(self._pending[0])
                self._pending.popleft()
        except (OSError, UnicodeError):  # IDNA failures of the host name are not OSErrors
            self._drop_socket()
            self._backoff = min(30.0, max(1.0, 2 * self._backoff))
            self._retry_at = time.monotonic() + self._backoff
            return False
        if self._backoff:
            log.info("syslog %s:%s reachable again; buffered alerts sent", *self.addr)
        self._backoff = 0.0
        return True

    def close(self) -> None:
        self._retry_at = 0.0
        self.flush()  # a last try; what is left is counted by the caller
        if self._sock is not None:
            self._sock.close()
