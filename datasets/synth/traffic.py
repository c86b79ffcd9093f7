"""The traffic engine: packets on the site's wire, and when human and machine traffic happens.

:class:`Traffic` turns (time, endpoints, payloads) into Ethernet frames with real TCP state and
L2 addressing through the gateway; :func:`times` and :func:`poisson_times` say when. All draws
come from the one ``rng`` in a fixed order, which is what makes a seed's bytes repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flockwatch.datasets.pcap import (
    BROADCAST_MAC,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    PcapWriter,
    ethernet,
    ipv4,
    multicast_mac,
    tcp,
    udp,
)
from flockwatch.datasets.synth.protocols import (
    dns_query,
    dns_response,
    tls_app_data,
    tls_client_hello,
    tls_server_hello,
)
from flockwatch.datasets.synth.site import BY_IP, GATEWAY, Host


class Traffic:
    """Packet emission with per-endpoint TCP state and L2 addressing through the gateway."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.w = PcapWriter()
        self.ident = 0
        self.port = 40000
        self.dns_id = 0

    def _l2(self, ip: str, hosts_by_ip: dict[str, Host]) -> str:
        if ip in hosts_by_ip:
            return hosts_by_ip[ip].mac
        if ip == "255.255.255.255":
            return BROADCAST_MAC
        if ip.startswith(("224.", "239.")):
            return multicast_mac(ip)
        return GATEWAY.mac  # remote: through the gateway

    def frame(self, ts: float, src: str, dst: str, l4: bytes, proto: int) -> None:
        self.ident += 1
        smac = self._l2(src, BY_IP)
        dmac = self._l2(dst, BY_IP)
        self.w.add(ts, ethernet(smac, dmac, ipv4(src, dst, proto, l4, self.ident)))

    def eph(self) -> int:
        self.port = 40000 + (self.port - 40000 + 1 + int(self.rng.integers(0, 7))) % 20000
        return self.port

    def udp_exchange(self, ts: float, src: str, dst: str, dport: int, req: bytes,
                     resp: bytes | None, sport: int | None = None, rtt: float = 0.004) -> None:
        sport = sport or self.eph()
        self.frame(ts, src, dst, udp(src, dst, sport, dport, req), 17)
        if resp is not None:
            self.frame(ts + rtt, dst, src, udp(dst, src, dport, sport, resp), 17)

    def tcp_session(self, ts: float, client: str, server: str, dport: int,
                    exchanges: Sequence[tuple[bytes, bytes | Sequence[bytes]]],
                    gap: float = 0.05, rtt: float = 0.003, refuse: bool = False,
                    no_answer: bool = False, sport: int | None = None) -> float:
        """A TCP connection; returns the time of its last packet."""
        sport = sport or self.eph()
        cs, ss = int(self.rng.integers(1, 2**31)), int(self.rng.integers(1, 2**31))
        c, s = client, server
        self.frame(ts, c, s, tcp(c, s, sport, dport, cs, 0, TCP_SYN), 6)
        if no_answer:
            return ts
        if refuse:
            self.frame(ts + rtt, s, c, tcp(s, c, dport, sport, 0, cs + 1, TCP_RST | TCP_ACK), 6)
            return ts + rtt
        cs += 1
        self.frame(ts + rtt, s, c, tcp(s, c, dport, sport, ss, cs, TCP_SYN | TCP_ACK), 6)
        ss += 1
        t = ts + 2 * rtt
        self.frame(t, c, s, tcp(c, s, sport, dport, cs, ss, TCP_ACK), 6)
        for req, resp in exchanges:
            t += gap
            if req:
                self.frame(t, c, s, tcp(c, s, sport, dport, cs, ss, TCP_PSH | TCP_ACK, req), 6)
                cs += len(req)
            for part in ([resp] if isinstance(resp, bytes) else resp):
                if not part:
                    continue
                t += rtt
                self.frame(t, s, c, tcp(s, c, dport, sport, ss, cs, TCP_PSH | TCP_ACK, part), 6)
                ss += len(part)
            t += rtt / 2
            self.frame(t, c, s, tcp(c, s, sport, dport, cs, ss, TCP_ACK), 6)
        t += gap
        self.frame(t, c, s, tcp(c, s, sport, dport, cs, ss, TCP_FIN | TCP_ACK), 6)
        self.frame(t + rtt, s, c, tcp(s, c, dport, sport, ss, cs + 1, TCP_FIN | TCP_ACK), 6)
        self.frame(t + 2 * rtt, c, s, tcp(c, s, sport, dport, cs + 1, ss + 1, TCP_ACK), 6)
        return t + 2 * rtt

    def resolve(self, ts: float, who: Host, name: str, ip: str | None) -> None:
        """A DNS lookup through the gateway; transaction ids count up across the capture."""
        self.dns_id = (self.dns_id + 1) & 0xFFFF
        self.udp_exchange(ts, who.ip, GATEWAY.ip, 53, dns_query(self.dns_id, name),
                          dns_response(self.dns_id, name, ip), rtt=0.002)

    def tls(self, ts: float, who: Host, name: str, ip: str, n_up: int, n_down: int,
            size_up: int = 300, size_down: int = 1200, dport: int = 443) -> None:
        """A TLS session: handshake, ``n_up`` records up, then ``n_down`` records down."""
        rng = self.rng
        ex: list[tuple[bytes, bytes | list[bytes]]] = [
            (tls_client_hello(name, rng), tls_server_hello(rng))]
        for _ in range(n_up):
            ex.append((tls_app_data(int(size_up * rng.uniform(0.6, 1.4)), rng), b""))
        if n_down:
            ex.append((b"", [tls_app_data(min(1400, int(size_down * rng.uniform(0.7, 1.1))), rng)
                             for _ in range(n_down)]))
        self.tcp_session(ts, who.ip, ip, dport, ex, gap=0.02)


def activity(ts: float, kind: str) -> float:
    """Relative activity 0..1 by hour of day for human-driven traffic."""
    hour = (ts / 3600.0) % 24
    if kind == "office":
        return 1.0 if 8 <= hour < 18 else 0.08
    if kind == "evening":
        return 1.0 if 18 <= hour < 23 else (0.3 if 12 <= hour < 18 else 0.03)
    return 1.0


def times(rng: np.random.Generator, t0: float, t1: float, period: float,
          jitter: float = 0.05) -> np.ndarray:
    n = int((t1 - t0) / period) + 1
    base = t0 + rng.uniform(0, period) + np.arange(n) * period
    base = base + rng.normal(0, jitter * period, n)
    return np.sort(base[(base >= t0) & (base < t1)])


def poisson_times(rng: np.random.Generator, t0: float, t1: float, rate_per_h: float,
                  kind: str) -> list[float]:
    """Event times with hour-of-day modulated rate (thinning)."""
    n = rng.poisson(rate_per_h * (t1 - t0) / 3600.0)
    cand = np.sort(rng.uniform(t0, t1, n))
    keep = rng.uniform(0, 1, n) < np.array([activity(t, kind) for t in cand])
    return [float(t) for t in cand[keep]]
