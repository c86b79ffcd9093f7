"""The synthetic IoT/OT site: real pcaps of a small enterprise/industrial network.

Devices: IP cameras (RTSP, cloud TLS), VoIP phones (SIP/RTP), a printer (IPP, mDNS, SNMP), a
smart TV (SSDP, streaming TLS), smart plugs and a thermostat (MQTT/TLS cloud, NTP, DNS), a PLC
polled over Modbus/TCP by an HMI, an S7 controller, and an engineering workstation, behind a
gateway. Human-driven traffic follows the time of day; machine traffic is periodic with jitter.

Attacks (each written to ``attacks.csv`` with device, kind, start and end): ``port_scan``,
``brute_force`` (Mirai-like telnet), ``c2_beacon``, ``exfiltration``, ``dga_dns``,
``modbus_write`` (from a host that never wrote), ``lateral_movement``.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same arguments give the same
bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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

ATTACK_KINDS = (
    "port_scan", "brute_force", "c2_beacon", "exfiltration", "dga_dns", "modbus_write",
    "lateral_movement",
)
DEFAULT_START = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Host:
    name: str
    device_type: str
    category: str
    mac: str
    ip: str


GATEWAY = Host("gateway", "gateway", "network", "00:09:5b:10:00:01", "192.168.1.1")
HOSTS: tuple[Host, ...] = (
    Host("camera-1", "ip_camera", "camera", "00:bc:99:21:00:11", "192.168.1.21"),
    Host("camera-2", "ip_camera", "camera", "00:40:8c:21:00:12", "192.168.1.22"),
    Host("phone-1", "voip_phone", "voip", "00:04:f2:31:00:31", "192.168.1.31"),
    Host("phone-2", "voip_phone", "voip", "00:15:65:31:00:32", "192.168.1.32"),
    Host("printer", "printer", "printer", "00:68:eb:41:00:41", "192.168.1.41"),
    Host("smart-tv", "smart_tv", "media", "00:00:f0:51:00:51", "192.168.1.51"),
    Host("plug-1", "smart_plug", "smart_home", "00:0a:eb:61:00:61", "192.168.1.61"),
    Host("plug-2", "smart_plug", "smart_home", "00:0a:eb:61:00:62", "192.168.1.62"),
    Host("thermostat", "thermostat", "smart_home", "18:b4:30:71:00:71", "192.168.1.71"),
    Host("plc", "plc", "ot", "00:00:54:81:00:81", "192.168.1.81"),
    Host("s7-controller", "plc", "ot", "00:01:e3:82:00:82", "192.168.1.82"),
    Host("hmi", "hmi", "ot", "00:00:bc:91:00:91", "192.168.1.91"),
    Host("workstation", "workstation", "it", "00:06:5b:a1:00:a1", "192.168.1.101"),
    Host("pbx", "voip_server", "voip", "00:04:f2:b1:00:b1", "192.168.1.5"),
)
_BY_NAME = {h.name: h for h in HOSTS}


def host(name: str) -> Host:
    return GATEWAY if name == "gateway" else _BY_NAME[name]


# --- payloads ----------------------------------------------------------------------------

def _dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def dns_query(txid: int, name: str, qtype: int = 1) -> bytes:
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + _dns_name(name) + struct.pack(
        "!HH", qtype, 1)


def dns_response(txid: int, name: str, ip: str | None) -> bytes:
    q = _dns_name(name) + struct.pack("!HH", 1, 1)
    if ip is None:  # NXDOMAIN
        return struct.pack("!HHHHHH", txid, 0x8183, 1, 0, 0, 0) + q
    ans = struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + bytes(int(x) for x in ip.split("."))
    return struct.pack("!HHHHHH", txid, 0x8180, 1, 1, 0, 0) + q + ans


def mdns_announce(hostname: str, service: str) -> bytes:
    rr = _dns_name(service) + struct.pack("!HHIH", 12, 0x8001, 4500, len(_dns_name(hostname)))
    rr += _dns_name(hostname)
    return struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + rr


def dhcp_request(xid: int, mac: str, hostname: str, ciaddr: bytes = b"\0" * 4) -> bytes:
    chaddr = bytes.fromhex(mac.replace(":", "")) + b"\0" * 10
    bootp = struct.pack("!BBBBIHH4s4s4s4s", 1, 1, 6, 0, xid, 0, 0, ciaddr, b"\0" * 4,
                        b"\0" * 4, b"\0" * 4) + chaddr + b"\0" * 192
    opts = b"\x63\x82\x53\x63" + b"\x35\x01\x03" + bytes([12, len(hostname)]) + hostname.encode()
    opts += b"\x37\x04\x01\x03\x06\x0f\xff"
    return bootp + opts


def ntp_packet(mode: int) -> bytes:
    return bytes([0x20 | mode]) + b"\x00\x06\xec" + b"\0" * 44


def tls_client_hello(sni: str, rng: np.random.Generator) -> bytes:
    name = sni.encode()
    sni_ext = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    exts = sni_ext + bytes.fromhex("000a00080006001d00170018" "000b00020100"
                                   "000d000e000c040305030603080408050806"
                                   "002b0003020303")
    ciphers = bytes.fromhex("c02bc02fc02cc030cca9cca8c013c014009c009d002f0035")
    body = (b"\x03\x03" + rng.bytes(32) + b"\x00" + struct.pack("!H", len(ciphers)) + ciphers
            + b"\x01\x00" + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def tls_server_hello(rng: np.random.Generator) -> bytes:
    body = b"\x03\x03" + rng.bytes(32) + b"\x00" + b"\xc0\x2f" + b"\x00" + b"\x00\x00"
    hs = b"\x02" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs


def tls_app_data(n: int, rng: np.random.Generator) -> bytes:
    return b"\x17\x03\x03" + struct.pack("!H", n) + rng.bytes(n)


def mqtt_connect(client_id: str) -> bytes:
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(cid)) + cid
    return b"\x10" + bytes([len(var)]) + var


def mqtt_publish(topic: str, payload: bytes) -> bytes:
    t = topic.encode()
    var = struct.pack("!H", len(t)) + t + payload
    return b"\x30" + bytes([len(var)]) + var


def modbus_read(tid: int, unit: int = 1, addr: int = 0, count: int = 10) -> bytes:
    return struct.pack("!HHHBBHH", tid, 0, 6, unit, 3, addr, count)


def modbus_read_resp(tid: int, rng: np.random.Generator, count: int = 10, unit: int = 1) -> bytes:
    data = rng.integers(0, 65535, count, dtype=np.uint16).astype(">u2").tobytes()
    return struct.pack("!HHHBBB", tid, 0, 3 + len(data), unit, 3, len(data)) + data


def modbus_write(tid: int, addr: int, values: Sequence[int], unit: int = 1) -> bytes:
    data = b"".join(struct.pack("!H", v & 0xFFFF) for v in values)
    pdu = struct.pack("!BHHB", 16, addr, len(values), len(data)) + data
    return struct.pack("!HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def modbus_write_resp(tid: int, addr: int, n: int, unit: int = 1) -> bytes:
    return struct.pack("!HHHBBHH", tid, 0, 6, unit, 16, addr, n)


def _tpkt(payload: bytes) -> bytes:
    return b"\x03\x00" + struct.pack("!H", len(payload) + 4) + payload


S7_COTP_CR = _tpkt(bytes.fromhex("11e00000000100c0010ac1020100c2020102"))
S7_COTP_CC = _tpkt(bytes.fromhex("11d00001000100c0010ac1020100c2020102"))
S7_SETUP = _tpkt(bytes.fromhex("02f080" "32010000000000080000f0000001000101e0"))
S7_SETUP_ACK = _tpkt(bytes.fromhex("02f080" "320300000000000800000000f0000001000100f0"))
S7_READ = _tpkt(bytes.fromhex("02f080" "3201000001000e00000401120a10020001000184000000"))
S7_READ_ACK = _tpkt(bytes.fromhex("02f080" "320300000100000600000401ff040010" "00000000"))


def snmp_get(community: str = "public") -> bytes:
    c = community.encode()
    oid = bytes.fromhex("06082b06010201010100")
    varbind = b"\x30" + bytes([len(oid) + 2]) + oid + b"\x05\x00"
    vbl = b"\x30" + bytes([len(varbind)]) + varbind
    pdu_body = bytes.fromhex("020101" "020100" "020100") + vbl
    pdu = b"\xa0" + bytes([len(pdu_body)]) + pdu_body
    body = b"\x02\x01\x01" + b"\x04" + bytes([len(c)]) + c + pdu
    return b"\x30" + bytes([len(body)]) + body


def snmp_response(community: str = "public") -> bytes:
    q = bytearray(snmp_get(community))
    q[q.index(0xA0)] = 0xA2
    return bytes(q) + b"HP LaserJet"


def sip_register(phone: Host, pbx: Host, cseq: int, ext: int) -> bytes:
    return (
        f"REGISTER sip:{pbx.ip} SIP/2.0\r\nVia: SIP/2.0/UDP {phone.ip}:5060;"
        f"branch=z9hG4bK{cseq:06d}"
        f"\r\nMax-Forwards: 70\r\nFrom: <sip:{ext}@{pbx.ip}>;tag={ext}{cseq}\r\n"
        f"To: <sip:{ext}@{pbx.ip}>\r\nCall-ID: {ext}-{cseq}@{phone.ip}\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{ext}@{phone.ip}:5060>\r\nUser-Agent: Desk Phone\r\nExpires: 300\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def sip_ok(method: str, cseq: int) -> bytes:
    return f"SIP/2.0 200 OK\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n".encode()


def sip_invite(phone: Host, pbx: Host, cseq: int, ext: int, callee: int) -> bytes:
    sdp = (f"v=0\r\no=- {cseq} 1 IN IP4 {phone.ip}\r\ns=call\r\nc=IN IP4 {phone.ip}\r\nt=0 0\r\n"
           "m=audio 16384 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    return (
        f"INVITE sip:{callee}@{pbx.ip} SIP/2.0\r\nVia: SIP/2.0/UDP {phone.ip}:5060;branch=z9hG4bK"
        f"i{cseq}\r\nFrom: <sip:{ext}@{pbx.ip}>;tag=i{cseq}\r\nTo: <sip:{callee}@{pbx.ip}>\r\n"
        f"Call-ID: call-{ext}-{cseq}\r\nCSeq: {cseq} INVITE\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def rtp_packet(seq: int, ts: int, ssrc: int, rng: np.random.Generator) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + rng.bytes(160)


# --- the site ----------------------------------------------------------------------------

class _Traffic:
    """Packet emission with per-endpoint TCP state and L2 addressing through the gateway."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.w = PcapWriter()
        self.ident = 0
        self.port = 40000

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
        smac = self._l2(src, _BY_IP)
        dmac = self._l2(dst, _BY_IP)
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


_BY_IP = {h.ip: h for h in (*HOSTS, GATEWAY)}

CLOUD = {
    "camera-1": ("cloud.hik-connect.example.com", "34.120.10.11"),
    "camera-2": ("video.axis-cloud.example.net", "52.18.22.12"),
    "plug-1": ("use1-api.tplinkra.example.com", "3.208.1.61"),
    "plug-2": ("use1-api.tplinkra.example.com", "3.208.1.61"),
    "thermostat": ("frontdoor.nest.example.com", "35.186.1.71"),
    "smart-tv": ("occ-0-2773.nflxvideo.example.net", "45.57.90.51"),
    "workstation": ("update.microsoft.example.com", "13.107.4.50"),
    "phone-1": ("provisioning.polycom.example.com", "44.230.1.31"),
    "phone-2": ("dm.yealink.example.com", "47.88.1.32"),
}
NTP_SERVER = "162.159.200.1"


def _activity(ts: float, kind: str) -> float:
    """Relative activity 0..1 by hour of day for human-driven traffic."""
    hour = (ts / 3600.0) % 24
    if kind == "office":
        return 1.0 if 8 <= hour < 18 else 0.08
    if kind == "evening":
        return 1.0 if 18 <= hour < 23 else (0.3 if 12 <= hour < 18 else 0.03)
    return 1.0


def _times(rng: np.random.Generator, t0: float, t1: float, period: float,
           jitter: float = 0.05) -> np.ndarray:
    n = int((t1 - t0) / period) + 1
    base = t0 + rng.uniform(0, period) + np.arange(n) * period
    base = base + rng.normal(0, jitter * period, n)
    return np.sort(base[(base >= t0) & (base < t1)])


def _poisson_times(rng: np.random.Generator, t0: float, t1: float, rate_per_h: float,
                   kind: str) -> list[float]:
    """Event times with hour-of-day modulated rate (thinning)."""
    n = rng.poisson(rate_per_h * (t1 - t0) / 3600.0)
    cand = np.sort(rng.uniform(t0, t1, n))
    keep = rng.uniform(0, 1, n) < np.array([_activity(t, kind) for t in cand])
    return [float(t) for t in cand[keep]]


@dataclass(frozen=True)
class Attack:
    kind: str
    device: Host
    start: float
    end: float
    target: str


def _normal_traffic(tr: _Traffic, t0: float, t1: float) -> None:
    rng = tr.rng
    gw = GATEWAY.ip
    dns_id = [0]

    def resolve(ts: float, who: Host, name: str, ip: str | None) -> None:
        dns_id[0] = (dns_id[0] + 1) & 0xFFFF
        tr.udp_exchange(ts, who.ip, gw, 53, dns_query(dns_id[0], name),
                        dns_response(dns_id[0], name, ip), rtt=0.002)

    def tls(ts: float, who: Host, name: str, ip: str, n_up: int, n_down: int,
            size_up: int = 300, size_down: int = 1200, dport: int = 443) -> None:
        ex: list[tuple[bytes, bytes | list[bytes]]] = [
            (tls_client_hello(name, rng), tls_server_hello(rng))]
        for _ in range(n_up):
            ex.append((tls_app_data(int(size_up * rng.uniform(0.6, 1.4)), rng), b""))
        if n_down:
            ex.append((b"", [tls_app_data(min(1400, int(size_down * rng.uniform(0.7, 1.1))), rng)
                             for _ in range(n_down)]))
        tr.tcp_session(ts, who.ip, ip, dport, ex, gap=0.02)

    # DHCP at start, NTP every 15 min, cloud heartbeats: every IoT device.
    for h in HOSTS:
        # DHCP lease renewals (unicast REQUEST carrying the host name) every 30 min.
        for ts in _times(rng, t0, t1, 1800.0, 0.02):
            tr.udp_exchange(float(ts), h.ip, gw, 67,
                            dhcp_request(int(rng.integers(0, 2**31)), h.mac, h.name),
                            dhcp_request(int(rng.integers(0, 2**31)), h.mac, h.name)[:240]
                            + b"\x63\x82\x53\x63\x35\x01\x05\xff", sport=68)
        if h.name in ("plc", "s7-controller", "hmi", "pbx"):
            continue
        for ts in _times(rng, t0, t1, 900.0):
            resolve(ts, h, "pool.ntp.org", NTP_SERVER)
            tr.udp_exchange(ts + 0.01, h.ip, NTP_SERVER, 123, ntp_packet(3), ntp_packet(4),
                            sport=123, rtt=0.02)

    # Cameras: cloud keep-alive TLS every 60 s, clip uploads, RTSP views by the workstation.
    for name in ("camera-1", "camera-2"):
        h = host(name)
        sni, cip = CLOUD[name]
        for ts in _times(rng, t0, t1, 60.0):
            tls(ts, h, sni, cip, n_up=2, n_down=1, size_up=200, size_down=300)
        for ts in _poisson_times(rng, t0, t1, 6, "office"):
            resolve(ts - 0.05, h, sni, cip)
            tls(ts, h, sni, cip, n_up=int(rng.integers(40, 120)), n_down=1, size_up=1300)
        for ts in _poisson_times(rng, t0, t1, 2, "office"):
            ws = host("workstation")
            opts = f"OPTIONS rtsp://{h.ip}/stream1 RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode()
            ok = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: DESCRIBE, SETUP, PLAY\r\n\r\n"
            play = f"PLAY rtsp://{h.ip}/stream1 RTSP/1.0\r\nCSeq: 2\r\n\r\n".encode()
            frames = [b"$\x00" + rng.bytes(1300) for _ in range(int(rng.integers(30, 80)))]
            tr.tcp_session(ts, ws.ip, h.ip, 554, [(opts, ok), (play, frames)], gap=0.1)

    # Phones: SIP REGISTER every 300 s to the PBX, calls in office hours with RTP.
    for i, name in enumerate(("phone-1", "phone-2")):
        h, pbx = host(name), host("pbx")
        ext = 101 + i
        for k, ts in enumerate(_times(rng, t0, t1, 300.0, 0.01)):
            tr.udp_exchange(ts, h.ip, pbx.ip, 5060, sip_register(h, pbx, k + 1, ext),
                            sip_ok("REGISTER", k + 1), sport=5060)
        for k, ts in enumerate(_poisson_times(rng, t0, t1, 3, "office")):
            tr.udp_exchange(ts, h.ip, pbx.ip, 5060, sip_invite(h, pbx, 1000 + k, ext, 200),
                            sip_ok("INVITE", 1000 + k), sport=5060)
            dur = float(rng.uniform(20, 90))
            ssrc = int(rng.integers(1, 2**31))
            for j, tt in enumerate(np.arange(ts + 0.5, ts + 0.5 + dur, 0.06)):
                tr.frame(float(tt), h.ip, pbx.ip, udp(h.ip, pbx.ip, 16384, 10000 + 2 * i,
                                                      rtp_packet(j, j * 160, ssrc, rng)), 17)
                tr.frame(float(tt) + 0.01, pbx.ip, h.ip,
                         udp(pbx.ip, h.ip, 10000 + 2 * i, 16384,
                             rtp_packet(j, j * 160, ssrc + 1, rng)), 17)
        sni, cip = CLOUD[name]
        for ts in _times(rng, t0, t1, 3600.0):
            resolve(ts, h, sni, cip)
            tls(ts + 0.05, h, sni, cip, n_up=1, n_down=3)

    # Printer: mDNS announcements, SNMP polled by the workstation, IPP jobs in office hours.
    pr, ws = host("printer"), host("workstation")
    for ts in _times(rng, t0, t1, 120.0):
        tr.udp_exchange(ts, pr.ip, "224.0.0.251", 5353,
                        mdns_announce("HP-LaserJet-4.local", "_ipp._tcp.local"), None, sport=5353)
    for ts in _times(rng, t0, t1, 300.0, 0.01):
        tr.udp_exchange(ts, ws.ip, pr.ip, 161, snmp_get(), snmp_response())
    for ts in _poisson_times(rng, t0, t1, 4, "office"):
        body = rng.bytes(int(rng.integers(2000, 30000)))
        req = (f"POST /ipp/print HTTP/1.1\r\nHost: {pr.ip}:631\r\nContent-Type: application/ipp"
               f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        chunks = [req] + [body[i:i + 1400] for i in range(0, len(body), 1400)]
        ex: list[tuple[bytes, bytes | list[bytes]]] = [(c, b"") for c in chunks[:-1]]
        ex.append((chunks[-1], b"HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\n\r\n"))
        tr.tcp_session(ts, ws.ip, pr.ip, 631, ex, gap=0.01)

    # Smart TV: SSDP NOTIFY, streaming in the evening (and some at midday).
    tv = host("smart-tv")
    notify = (f"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800"
              f"\r\nLOCATION: http://{tv.ip}:9197/dmr\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive"
              "\r\nSERVER: Tizen/4.0 UPnP/1.0\r\nUSN: uuid:tv-51::upnp:rootdevice\r\n\r\n").encode()
    for ts in _times(rng, t0, t1, 180.0):
        tr.udp_exchange(ts, tv.ip, "239.255.255.250", 1900, notify, None, sport=1900)
    sni, cip = CLOUD["smart-tv"]
    for ts in _times(rng, t0, t1, 30.0):
        if rng.uniform() < _activity(ts, "evening"):
            tls(ts, tv, sni, cip, n_up=1, n_down=int(rng.integers(60, 140)), size_down=1400)
    for ts in _times(rng, t0, t1, 1800.0):
        resolve(ts, tv, sni, cip)

    # Smart plugs and thermostat: MQTT over TLS (8883) heartbeats, telemetry publishes.
    for name, period in (("plug-1", 60.0), ("plug-2", 60.0), ("thermostat", 30.0)):
        h = host(name)
        sni, cip = CLOUD[name]
        for ts in _times(rng, t0, t1, period, 0.02):
            tls(ts, h, sni, cip, n_up=1, n_down=1, size_up=90, size_down=60, dport=8883)
        for ts in _times(rng, t0, t1, 1800.0):
            resolve(ts, h, sni, cip)
    th = host("thermostat")
    for ts in _times(rng, t0, t1, 600.0):
        tr.tcp_session(ts, th.ip, "35.186.1.72", 1883,
                       [(mqtt_connect("nest-therm-71"), b"\x20\x02\x00\x00"),
                        (mqtt_publish("home/thermostat/temp", b"21.5"), b"")])

    # OT: HMI polls the PLC over Modbus/TCP every 2 s on connections renewed every 10 min,
    # and the S7 controller every 5 s.
    hmi, plc, s7 = host("hmi"), host("plc"), host("s7-controller")
    t = t0 + float(rng.uniform(0, 2))
    tid = 0
    while t < t1:
        seg_end = min(t1, t + 600.0)
        polls: list[tuple[bytes, bytes | Sequence[bytes]]] = []
        n = int((seg_end - t) / 2.0)
        for _ in range(max(1, n)):
            tid = (tid + 1) & 0xFFFF
            polls.append((modbus_read(tid), modbus_read_resp(tid, rng)))
        tr.tcp_session(t, hmi.ip, plc.ip, 502, polls, gap=2.0, rtt=0.002, sport=tr.eph())
        t = seg_end + float(rng.uniform(0.5, 1.5))
    t = t0 + float(rng.uniform(0, 5))
    while t < t1:
        seg_end = min(t1, t + 900.0)
        n = int((seg_end - t) / 5.0)
        s7x: list[tuple[bytes, bytes | Sequence[bytes]]] = [(S7_COTP_CR, S7_COTP_CC),
                                                             (S7_SETUP, S7_SETUP_ACK)]
        s7x += [(S7_READ, S7_READ_ACK)] * max(1, n)
        tr.tcp_session(t, hmi.ip, s7.ip, 102, s7x, gap=5.0, rtt=0.003)
        t = seg_end + float(rng.uniform(0.5, 1.5))

    # Workstation: web and updates in office hours.
    for ts in _poisson_times(rng, t0, t1, 40, "office"):
        sni = f"www.site{int(rng.integers(0, 30))}.example.org"
        ip = f"93.184.{int(rng.integers(1, 250))}.{int(rng.integers(1, 250))}"
        resolve(ts - 0.03, ws, sni, ip)
        tls(ts, ws, sni, ip, n_up=int(rng.integers(1, 5)), n_down=int(rng.integers(5, 60)))
    sni, cip = CLOUD["workstation"]
    for ts in _times(rng, t0, t1, 3600.0):
        resolve(ts, ws, sni, cip)
        tls(ts + 0.03, ws, sni, cip, n_up=2, n_down=20)


def _attack_traffic(tr: _Traffic, attack: Attack) -> None:
    rng, a = tr.rng, attack
    dev = a.device
    local_targets = [h.ip for h in HOSTS if h.ip != dev.ip]
    if a.kind == "port_scan":
        ports = [21, 22, 23, 25, 80, 110, 139, 143, 443, 445, 502, 554, 631, 1883, 3389, 5900,
                 8080, 8443, 102, 161]
        ts = a.start
        for ip in local_targets[:8]:
            for port in ports:
                tr.tcp_session(ts, dev.ip, ip, port, [], refuse=True)
                ts += float(rng.uniform(0.05, 0.3))
    elif a.kind == "brute_force":
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
    elif a.kind == "c2_beacon":
        for ts in np.arange(a.start, a.end, 15.0):
            ts = float(ts + rng.normal(0, 0.3))
            tr.tcp_session(ts, dev.ip, "185.220.101.66", 8443,
                           [(tls_client_hello("upd4te-chk.example.xyz", rng),
                             tls_server_hello(rng)),
                            (tls_app_data(120, rng), tls_app_data(64, rng))])
    elif a.kind == "exfiltration":
        ts = a.start
        while ts < a.end:
            ex: list[tuple[bytes, bytes | list[bytes]]] = [
                (tls_client_hello("files.transfer-now.example.cc", rng), tls_server_hello(rng))]
            ex += [(tls_app_data(1380, rng), b"") for _ in range(400)]
            ts = tr.tcp_session(ts, dev.ip, "198.51.100.23", 443, ex, gap=0.004) + 1.0
    elif a.kind == "dga_dns":
        for i, ts in enumerate(np.arange(a.start, a.end, 1.5)):
            size = int(rng.integers(10, 18))
            letters = "".join(chr(97 + int(c)) for c in rng.integers(0, 26, size))
            name = f"{letters}.{['com', 'net', 'info', 'biz'][i % 4]}"
            tr.udp_exchange(float(ts), dev.ip, GATEWAY.ip, 53, dns_query(i & 0xFFFF, name),
                            dns_response(i & 0xFFFF, name, None), rtt=0.03)
    elif a.kind == "modbus_write":
        plc = host("plc")
        for i, ts in enumerate(np.arange(a.start, a.end, 10.0)):
            vals = [int(v) for v in rng.integers(0, 65535, 8)]
            tr.tcp_session(float(ts), dev.ip, plc.ip, 502,
                           [(modbus_write(i, 100, vals), modbus_write_resp(i, 100, len(vals)))])
    elif a.kind == "lateral_movement":
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
    else:  # pragma: no cover - guarded by synthesize()
        raise ValueError(a.kind)


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
    tr = _Traffic(rng)
    t0 = start.timestamp()
    t1 = t0 + hours * 3600.0
    _normal_traffic(tr, t0, t1)
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
            _attack_traffic(tr, atk)
            placed.append(atk)
    n = tr.w.write(path)
    return SiteCapture(Path(path), n, placed)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def synthesize(output: str | os.PathLike[str], *, hours: float = 2.0, seed: int = 0,
               attacks: Sequence[str] = ATTACK_KINDS, learning_hours: float | None = None,
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
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)
