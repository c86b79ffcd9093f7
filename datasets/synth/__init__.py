"""The synthetic IoT/OT site: real pcaps of a small enterprise/industrial network.

Devices: IP cameras (RTSP, cloud TLS), VoIP phones (SIP/RTP), a printer (IPP, mDNS, SNMP), a
smart TV (SSDP, streaming TLS), smart plugs and a thermostat (MQTT/TLS cloud, NTP, DNS), a PLC
polled over Modbus/TCP by an HMI, an S7 controller, and an engineering workstation, behind a
gateway. The hosts are data in :mod:`.site`, their normal traffic one function per behaviour in
:mod:`.behaviours`, the attacks one function per kind in :mod:`.attacks`, the payloads in
:mod:`.protocols`, and :mod:`.traffic` turns them into packets.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same arguments give the same
bytes (``tests/test_synth.py`` pins a seed's SHA-256).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flockwatch.datasets.synth.attacks import ATTACK_KINDS, ATTACKERS, Attack
from flockwatch.datasets.synth.behaviours import normal_traffic
from flockwatch.datasets.synth.protocols import (
    dhcp_request,
    dns_query,
    dns_response,
    tls_client_hello,
    tls_server_hello,
)
from flockwatch.datasets.synth.site import GATEWAY, HOSTS, Host, host
from flockwatch.datasets.synth.traffic import Traffic
from flockwatch.features.output import atomic_path

__all__ = [
    "ATTACKERS", "ATTACK_KINDS", "DEFAULT_START", "GATEWAY", "HOSTS", "Attack", "Host",
    "SiteCapture", "dhcp_request", "dns_query", "dns_response", "host", "synthesize",
    "synthesize_capture", "tls_client_hello", "tls_server_hello",
]

DEFAULT_START = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)


@dataclass
class SiteCapture:
    path: Path
    packets: int
    attacks: list[Attack]


def synthesize_capture(path: str | os.PathLike[str], *, hours: float = 1.0, seed: int = 0,
                       start: dt.datetime = DEFAULT_START,
                       attacks: Sequence[str] = (), attack_spacing_s: float = 900.0,
                       attack_duration_s: float = 180.0,
                       first_attack_s: float | None = None) -> SiteCapture:
    """Write one site capture; attacks are spread over its second half, one at a time."""
    unknown = [a for a in attacks if a not in ATTACK_KINDS]
    if unknown:
        raise ValueError(f"unknown attack kind(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(ATTACK_KINDS)}")
    if hours <= 0:
        raise ValueError(f"hours must be > 0, got {hours}")
    rng = np.random.default_rng(seed)
    tr = Traffic(rng)
    t0 = start.timestamp()
    t1 = t0 + hours * 3600.0
    normal_traffic(tr, t0, t1)
    placed: list[Attack] = []
    if attacks:
        first = t0 + (first_attack_s if first_attack_s is not None else
                      max(600.0, (t1 - t0) / 2 - attack_spacing_s * len(attacks) / 2))
        for i, kind in enumerate(attacks):
            a_start = first + i * attack_spacing_s
            if a_start + attack_duration_s > t1:
                raise ValueError(
                    f"{hours} h is too short for {len(attacks)} attacks {attack_spacing_s:.0f} s "
                    "apart; give more --hours")
            name, target = ATTACKERS[kind]
            atk = Attack(kind, host(name), a_start, a_start + attack_duration_s, target)
            ATTACK_KINDS[kind](tr, atk)
            placed.append(atk)
    n = tr.w.write(path)
    return SiteCapture(Path(path), n, placed)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def synthesize(output: str | os.PathLike[str], *, hours: float = 2.0, seed: int = 0,
               attacks: Sequence[str] = tuple(ATTACK_KINDS), learning_hours: float | None = None,
               start: dt.datetime = DEFAULT_START) -> list[SiteCapture]:
    """Write a site dataset to ``output``.

    ``learning.pcap`` (attack-free, ``learning_hours``, default = ``hours``) and, when attacks
    are asked for, ``attacks.pcap`` (``hours`` long, starting where learning ends), plus
    ``labels.csv`` (path, device_type, mac, ...) and ``attacks.csv`` (ground truth).
    """
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    lh = hours if learning_hours is None else learning_hours
    caps = [synthesize_capture(out / "learning.pcap", hours=lh, seed=seed, start=start)]
    if attacks:
        caps.append(synthesize_capture(
            out / "attacks.pcap", hours=hours, seed=seed + 1,
            start=start + dt.timedelta(hours=lh), attacks=list(attacks),
        ))
    _write_csv(out / "labels.csv", ["path", "device_type", "mac", "device_instance", "category",
                                    "ip"],
               [[c.path.name, h.device_type, h.mac, h.name, h.category, h.ip]
                for c in caps for h in HOSTS])
    _write_csv(out / "attacks.csv", ["path", "kind", "device", "mac", "ip", "target", "start",
                                     "end"],
               [[c.path.name, a.kind, a.device.name, a.device.mac, a.device.ip, a.target,
                 _iso(a.start), _iso(a.end)] for c in caps for a in c.attacks])
    return caps


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
