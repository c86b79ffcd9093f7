"""Alerts from scored windows, and where they go: JSON lines, CEF over syslog."""

from __future__ import annotations

import datetime as dt
import functools
import json
import socket
from pathlib import Path
from typing import Any

import polars as pl
from flockwatch.features.output import iso_utc, to_json

ALERT_FIELDS = ["kind", "severity", "device_id", "mac", "ip", "device_type", "start", "end",
                "score", "threshold", "top_features", "message"]
_SEVERITY_CEF = {"low": 3, "medium": 6, "high": 8}


def _severity(score: float, threshold: float) -> str:
    ratio = score / threshold if threshold else float("inf")
    return "high" if ratio >= 5 else "medium" if ratio >= 2 else "low"


def _fmt_top(top: list[dict[str, Any]], n: int = 3) -> str:
    return ", ".join(f"{t['feature']} {t['observed']:g} (expected {t['expected']:g})"
                     for t in top[:n])


def _iso(v: Any) -> Any:
    return iso_utc(v) if isinstance(v, dt.datetime) else v


def alerts_from(scored: pl.DataFrame, known_new: set[str] | None = None,
                new_peers: pl.DataFrame | None = None) -> list[dict[str, Any]]:
    """Alerts: one per anomalous window, one per device first seen after learning, one per
    window in which a known device talks to local peers it never talked to while learning."""
    alerts: list[dict[str, Any]] = []
    peer_alerts = _peer_alerts(scored, new_peers)
    seen_new = set(known_new or ())
    for r in scored.sort("start").iter_rows(named=True):
        dtype = r.get("device_type")
        name = f"{r['device_id']}" + (f" ({dtype})" if dtype and dtype != "unknown" else "")
        if r.get("new_device") and r["device_id"] not in seen_new:
            seen_new.add(r["device_id"])
            alerts.append({
                "kind": "new_device", "severity": "medium", "device_id": r["device_id"],
                "mac": r["mac"], "ip": r["ip"], "device_type": dtype, "start": _iso(r["start"]),
                "end": _iso(r["end"]), "score": None, "threshold": None, "top_features": [],
                "message": f"new device {name} at {r['ip'] or '?'}: not seen during learning",
            })
        if r.get("anomalous"):
            top = json.loads(r["top_features"] or "[]")
            sev = _severity(r["anomaly_score"], r["threshold"])
            alerts.append({
                "kind": "anomalous_window", "severity": sev, "device_id": r["device_id"],
                "mac": r["mac"], "ip": r["ip"], "device_type": dtype, "start": _iso(r["start"]),
                "end": _iso(r["end"]), "score": round(r["anomaly_score"], 4),
                "threshold": round(r["threshold"], 4), "top_features": top,
                "message": f"{name} deviates from its baseline (score {r['anomaly_score']:.3g} > "
                           f"{r['threshold']:.3g}): {_fmt_top(top)}",
            })
    alerts.extend(peer_alerts)
    alerts.sort(key=lambda a: (a["start"] or "", a["device_id"]))
    return alerts


def _peer_alerts(scored: pl.DataFrame, new_peers: pl.DataFrame | None) -> list[dict[str, Any]]:
    from flockwatch.models.peers import INDUSTRIAL_PORTS

    if new_peers is None or new_peers.height == 0:
        return []
    info = scored.select("source", "device_id", "mac", "ip", "device_type").unique(
        ["source", "device_id"])
    out = []
    for r in new_peers.join(info, on=["source", "device_id"], how="left").sort(
            "window_start").iter_rows(named=True):
        ics = [INDUSTRIAL_PORTS[p] for p in r["ports"] if p in INDUSTRIAL_PORTS]
        dtype = r.get("device_type")
        name = f"{r['device_id']}" + (f" ({dtype})" if dtype and dtype != "unknown" else "")
        peers = ", ".join(r["new_peers"][:5]) + (" ..." if len(r["new_peers"]) > 5 else "")
        out.append({
            "kind": "new_peer", "severity": "high" if ics else "medium",
            "device_id": r["device_id"], "mac": r["mac"], "ip": r["ip"], "device_type": dtype,
            "start": _iso(r["window_start"]), "end": _iso(r["window_end"]), "score": None,
            "threshold": None, "top_features": [], "new_peers": r["new_peers"],
            "message": f"{name} has local peer(s) never seen while learning (peer:service "
                       f"port): {peers}"
                       + (f" ({', '.join(sorted(set(ics)))})" if ics else ""),
        })
    return out


@functools.lru_cache(maxsize=1)
def product_version() -> str:
    """flockwatch's installed version (the CEF header's device version)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flockwatch")
    except PackageNotFoundError:
        return "unknown"


def cef_line(alert: dict[str, Any], version: str | None = None) -> str:
    """An ArcSight CEF record for an alert (``version``: the product version in the header,
    by default the installed flockwatch's)."""
    version = version or product_version()
    def esc_h(v: object) -> str:
        return str(v).replace("\\", "\\\\").replace("|", "\\|")

    def esc_e(v: object) -> str:
        return str(v).replace("\\", "\\\\").replace("=", "\\=").replace("\n", " ")

    sig = {"anomalous_window": 100, "new_device": 200, "new_peer": 300}.get(alert["kind"], 999)
    ext = {
        "smac": alert.get("mac"), "src": alert.get("ip"), "start": alert.get("start"),
        "end": alert.get("end"), "cs1Label": "deviceType", "cs1": alert.get("device_type"),
        "cfp1Label": "score", "cfp1": alert.get("score"),
        "cfp2Label": "threshold", "cfp2": alert.get("threshold"),
        "cs2Label": "topFeatures", "cs2": ",".join(t["feature"] for t in alert["top_features"]),
        "msg": alert.get("message"),
    }
    ext_s = " ".join(f"{k}={esc_e(v)}" for k, v in ext.items() if v not in (None, ""))
    sev = _SEVERITY_CEF.get(alert["severity"], 5)
    return (f"CEF:0|flockwatch|flockwatch|{version}|{sig}|{esc_h(alert['kind'])}|{sev}|{ext_s}")


class JsonlSink:
    """Appends alerts as JSON lines, flushed per write."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def send(self, alert: dict[str, Any]) -> None:
        self._fh.write(to_json(alert) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class SyslogCefSink:
    """CEF over syslog (RFC 3164 framing), UDP or TCP. Failures are counted, never raised."""

    def __init__(self, target: str, protocol: str = "udp") -> None:
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--syslog {target!r}: expected HOST:PORT")
        self.addr = (host, int(port))
        self.protocol = protocol
        self.failures = 0
        self._sock: socket.socket | None = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            if self.protocol == "tcp":
                self._sock = socket.create_connection(self.addr, timeout=2)
            else:
                self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return self._sock

    def send(self, alert: dict[str, Any]) -> None:
        pri = 8 * 16 + {"high": 2, "medium": 4, "low": 5}.get(alert["severity"], 5)  # local0
        ts = dt.datetime.now(dt.UTC).strftime("%b %d %H:%M:%S")
        msg = f"<{pri}>{ts} {socket.gethostname()} flockwatch: {cef_line(alert)}"
        try:
            s = self._socket()
            if self.protocol == "tcp":
                s.sendall(msg.encode() + b"\n")
            else:
                s.sendto(msg.encode(), self.addr)
        except OSError:
            self.failures += 1
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
