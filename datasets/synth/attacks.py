"""The attacks the site can suffer: one function per kind, in :data:`ATTACK_KINDS`.

Each is written to ``attacks.csv`` with device, kind, start and end: ``port_scan``,
``brute_force`` (Mirai-like telnet), ``c2_beacon``, ``exfiltration``, ``dga_dns``,
``modbus_write`` (from a host that never wrote), ``lateral_movement``. :data:`ATTACKERS` says
which device performs each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flockwatch.datasets.synth.protocols import (
    dns_query,
    dns_response,
    modbus_write_resp,
    tls_app_data,
    tls_client_hello,
    tls_server_hello,
)
from flockwatch.datasets.synth.protocols import modbus_write as modbus_write_request
from flockwatch.datasets.synth.site import GATEWAY, HOSTS, Host, host
from flockwatch.datasets.synth.traffic import Traffic


@dataclass(frozen=True)
class Attack:
    kind: str
    device: Host
    start: float
    end: float
    target: str


def _local_targets(a: Attack) -> list[str]:
    return [h.ip for h in HOSTS if h.ip != a.device.ip]


def port_scan(tr: Traffic, a: Attack) -> None:
    """SYNs to 20 common ports on 8 local hosts, all refused."""
    rng, dev = tr.rng, a.device
    ports = [21, 22, 23, 25, 80, 110, 139, 143, 443, 445, 502, 554, 631, 1883, 3389, 5900,
             8080, 8443, 102, 161]
    ts = a.start
    for ip in _local_targets(a)[:8]:
        for port in ports:
            tr.tcp_session(ts, dev.ip, ip, port, [], refuse=True)
            ts += float(rng.uniform(0.05, 0.3))


def brute_force(tr: Traffic, a: Attack) -> None:
    """Mirai-like: unanswered telnet SYNs to random hosts, and logins tried on the workstation."""
    rng, dev = tr.rng, a.device
    local_targets = _local_targets(a)
    ts = a.start
    while ts < a.end:
        if rng.uniform() < 0.3:
            ip = local_targets[int(rng.integers(0, len(local_targets)))]
        else:
            ip = f"{int(rng.integers(11, 220))}.{int(rng.integers(0, 255))}." \
                 f"{int(rng.integers(0, 255))}.{int(rng.integers(1, 254))}"
        port = 23 if rng.uniform() < 0.8 else 2323
        tr.tcp_session(ts, dev.ip, ip, port, [], no_answer=True)
        ts += float(rng.uniform(0.2, 0.8))
    for ts in np.arange(a.start + 5, a.end, 20.0):
        tr.tcp_session(float(ts), dev.ip, "192.168.1.101", 23,
                       [(b"root\r\n", b"Password: "), (b"xc3511\r\n", b"Login incorrect\r\n")])


def c2_beacon(tr: Traffic, a: Attack) -> None:
    """A short TLS session to the command server every 15 s."""
    rng, dev = tr.rng, a.device
    for ts in np.arange(a.start, a.end, 15.0):
        ts = float(ts + rng.normal(0, 0.3))
        tr.tcp_session(ts, dev.ip, "185.220.101.66", 8443,
                       [(tls_client_hello("upd4te-chk.example.xyz", rng),
                         tls_server_hello(rng)),
                        (tls_app_data(120, rng), tls_app_data(64, rng))])


def exfiltration(tr: Traffic, a: Attack) -> None:
    """Back-to-back bulk uploads over TLS to an outside host."""
    rng, dev = tr.rng, a.device
    ts = a.start
    while ts < a.end:
        ex: list[tuple[bytes, bytes | list[bytes]]] = [
            (tls_client_hello("files.transfer-now.example.cc", rng), tls_server_hello(rng))]
        ex += [(tls_app_data(1380, rng), b"") for _ in range(400)]
        ts = tr.tcp_session(ts, dev.ip, "198.51.100.23", 443, ex, gap=0.004) + 1.0


def dga_dns(tr: Traffic, a: Attack) -> None:
    """Lookups of random names every 1.5 s, all NXDOMAIN."""
    rng, dev = tr.rng, a.device
    for i, ts in enumerate(np.arange(a.start, a.end, 1.5)):
        size = int(rng.integers(10, 18))
        letters = "".join(chr(97 + int(c)) for c in rng.integers(0, 26, size))
        name = f"{letters}.{['com', 'net', 'info', 'biz'][i % 4]}"
        tr.udp_exchange(float(ts), dev.ip, GATEWAY.ip, 53, dns_query(i & 0xFFFF, name),
                        dns_response(i & 0xFFFF, name, None), rtt=0.03)


def modbus_write(tr: Traffic, a: Attack) -> None:
    """Writes of random register values to the PLC every 10 s."""
    rng, dev = tr.rng, a.device
    plc = host("plc")
    for i, ts in enumerate(np.arange(a.start, a.end, 10.0)):
        vals = [int(v) for v in rng.integers(0, 65535, 8)]
        tr.tcp_session(float(ts), dev.ip, plc.ip, 502,
                       [(modbus_write_request(i, 100, vals),
                         modbus_write_resp(i, 100, len(vals)))])


def lateral_movement(tr: Traffic, a: Attack) -> None:
    """SMB and SSH sessions to the workstation, alternating, a few seconds apart."""
    rng, dev = tr.rng, a.device
    ws = host("workstation")
    ts = a.start
    while ts < a.end:
        for port, req, resp in ((445, b"\x00\x00\x00\x45\xffSMBr" + rng.bytes(60),
                                 b"\x00\x00\x00\x55\xffSMBr" + rng.bytes(76)),
                                (22, b"SSH-2.0-Go\r\n", b"SSH-2.0-OpenSSH_8.9\r\n")):
            if ts >= a.end:
                break
            tr.tcp_session(ts, dev.ip, ws.ip, port, [(req, resp)] * 4)
            ts += float(rng.uniform(2, 6))


#: Every attack kind, by name, in the order ``synthesize`` injects them by default.
ATTACK_KINDS: dict[str, Callable[[Traffic, Attack], None]] = {
    "port_scan": port_scan,
    "brute_force": brute_force,
    "c2_beacon": c2_beacon,
    "exfiltration": exfiltration,
    "dga_dns": dga_dns,
    "modbus_write": modbus_write,
    "lateral_movement": lateral_movement,
}

#: Which device performs each attack (and what it targets).
ATTACKERS = {
    "port_scan": ("camera-1", "local network"),
    "brute_force": ("plug-1", "telnet on many hosts"),
    "c2_beacon": ("thermostat", "185.220.101.66"),
    "exfiltration": ("camera-2", "198.51.100.23"),
    "dga_dns": ("smart-tv", "gateway DNS"),
    "modbus_write": ("workstation", "plc"),
    "lateral_movement": ("camera-2", "workstation"),
}
