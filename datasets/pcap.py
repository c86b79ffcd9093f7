"""A minimal pcap writer and packet builders (Ethernet / IPv4 / UDP / TCP).

Enough to write real, replayable captures that NFStream and nDPI read like live traffic;
used by the synthetic site generator and by tests that need small captures of their own.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from flockwatch.features.captures import PCAP_MAGIC
from flockwatch.features.output import atomic_path
from flockwatch.features.pcapfile import PcapStream

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def ip_bytes(ip: str) -> bytes:
    return bytes(int(x) for x in ip.split("."))


def multicast_mac(ip: str) -> str:
    o = [int(x) for x in ip.split(".")]
    return f"01:00:5e:{o[1] & 0x7F:02x}:{o[2]:02x}:{o[3]:02x}"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ethernet(src_mac: str, dst_mac: str, payload: bytes, ethertype: int = 0x0800) -> bytes:
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ethertype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0, ttl: int = 64) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, ttl,
                      proto, 0, ip_bytes(src), ip_bytes(dst))
    hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
    return hdr + payload


def _l4_checksum(src: str, dst: str, proto: int, segment: bytes) -> int:
    pseudo = ip_bytes(src) + ip_bytes(dst) + struct.pack("!BBH", 0, proto, len(segment))
    return _checksum(pseudo + segment)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    csum = _l4_checksum(src, dst, 17, seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", csum) + seg[8:]


TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def tcp(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
        payload: bytes = b"", window: int = 64240) -> bytes:
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50,
                      flags, window, 0, 0) + payload
    csum = _l4_checksum(src, dst, 6, seg)
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


class PcapWriter:
    """Collects (timestamp, frame) pairs and writes them as a time-ordered pcap."""

    def __init__(self, snaplen: int = 65535, linktype: int = 1) -> None:
        self.snaplen = snaplen
        self.linktype = linktype
        self.packets: list[tuple[float, bytes]] = []

    def add(self, ts: float, frame: bytes) -> None:
        self.packets.append((ts, frame))

    def write(self, path: str | os.PathLike[str]) -> int:
        """Write atomically; returns the number of packets."""
        self.packets.sort(key=lambda p: p[0])
        with atomic_path(path) as tmp, tmp.open("wb") as fh, \
                PcapStream(fh, self.linktype, self.snaplen) as out:
            for ts, frame in self.packets:
                out.write(ts, frame)
        return len(self.packets)


def read_pcap(path: str | os.PathLike[str]) -> tuple[int, list[tuple[float, bytes]]]:
    """(link type, [(timestamp, frame)]) of a classic pcap file; stops at a truncated record."""
    data = Path(path).read_bytes()
    if len(data) < 24 or data[:4] not in PCAP_MAGIC:
        raise ValueError(f"{path}: not a classic pcap file")
    bo, div = PCAP_MAGIC[data[:4]]
    linktype = struct.unpack_from(bo + "I", data, 20)[0]
    rec = struct.Struct(bo + "IIII")
    out, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = rec.unpack_from(data, off)
        if off + 16 + incl > len(data):
            break
        out.append((sec + frac / div, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return linktype, out
