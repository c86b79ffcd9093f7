"""Hostile inputs for the capture reader and the Zeek reader, and what each must satisfy.

Every input comes with what is known of it: the packets (or log rows) that went in and, where
the mutation allows, how many must be skipped. The checks hold the readers to the project's
promise: no exception but the one-line ``InputError`` (``read_source_file`` turns it into an
``error`` problem), and no silent loss: packets in flows + packets reported skipped = packets
in, log rows kept + rows reported skipped = rows in, and every kept value is one Zeek writes.

Used by ``tests/fuzz`` (a short pass in CI, and the named corpus below) and by
``experiments/fuzz.py`` (the long campaign); nothing here is written outside a temp folder.
"""

from __future__ import annotations

import ipaddress
import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from flockwatch.datasets.pcap import TCP_ACK, TCP_PSH, TCP_SYN, ethernet, ipv4, tcp, udp
from flockwatch.features.flows import read_source_file
from flockwatch.features.zeek import REQUIRED

T0 = 1_700_000_000
_SEVERITIES = {"error", "warning", "notice"}


class Violation(AssertionError):
    """An input broke a promise: a silent loss, or a value that should have been refused."""


# ---------------------------------------------------------------- captures


@dataclass(frozen=True)
class CaptureCase:
    data: bytes
    suffix: str  # ".pcap" or ".pcapng"
    #: packets that went in, as NFStream counts them (valid IPv4 frames); None after byte
    #: mutations, when nothing can be promised but "no traceback"
    packets: int | None
    #: packets the reader must report skipped (None: not predicted)
    skipped: int | None = 0
    note: str = ""


def frame(i: int, size: int = 20) -> bytes:
    """A valid Ethernet/IPv4 frame: UDP or TCP among a few hosts, ``size`` payload bytes."""
    a, b = f"192.168.0.{2 + i % 3}", f"10.0.{i % 2}.9"
    payload = bytes((i + k) % 251 for k in range(size))
    if i % 2:
        l4 = tcp(a, b, 40000 + i % 4, 443, i * 100, 7, TCP_PSH | TCP_ACK if i % 4 else TCP_SYN,
                 payload)
        proto = 6
    else:
        l4, proto = udp(a, b, 5000 + i % 5, 53, payload), 17
    return ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", ipv4(a, b, proto, l4, ident=i))


def pcap_bytes(records: list[tuple[int, int, bytes]], *, snaplen: int = 65535,
               order: str = "<", nano: bool = False, linktype: int = 1) -> bytes:
    """A classic pcap of (seconds, fraction, frame) records, caplen = wire length."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for sec, frac, data in records:
        out.append(struct.pack(order + "IIII", sec, frac, len(data), len(data)) + data)
    return b"".join(out)


def _block(btype: int, body: bytes, order: str = "<", trailer: int | None = None) -> bytes:
    n = 12 + len(body)
    return (struct.pack(order + "II", btype, n) + body
            + struct.pack(order + "I", n if trailer is None else trailer))


def shb(order: str = "<", major: int = 1, minor: int = 0, short: bool = False) -> bytes:
    body = struct.pack(order + "I", 0x1A2B3C4D) if short else struct.pack(
        order + "IHHq", 0x1A2B3C4D, major, minor, -1)
    return _block(0x0A0D0D0A, body, order)


def idb(order: str = "<", *, linktype: int = 1, snaplen: int = 65535,
        tsresol: int | None = None, tsoffset: int | None = None,
        options: tuple[tuple[int, bytes], ...] = ()) -> bytes:
    """An interface description; ``options`` (code, value) come as given, even malformed."""
    opts = b""
    if tsresol is not None:
        opts += struct.pack(order + "HHB3x", 9, 1, tsresol)
    if tsoffset is not None:
        opts += struct.pack(order + "HHq", 14, 8, tsoffset)
    for code, value in options:
        opts += struct.pack(order + "HH", code, len(value)) + value + bytes(-len(value) % 4)
    if opts:
        opts += struct.pack(order + "HH", 0, 0)
    return _block(1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts, order)


def epb(iface: int, ts: int, data: bytes, order: str = "<", *, caplen: int | None = None,
        trailer: int | None = None, obsolete: bool = False, options: bytes = b"") -> bytes:
    pad = bytes(-len(data) % 4) + options
    cap = len(data) if caplen is None else caplen
    if obsolete:
        head = struct.pack(order + "HHIIII", iface, 0, ts >> 32, ts & 0xFFFFFFFF, cap, len(data))
        return _block(2, head + data + pad, order, trailer)
    head = struct.pack(order + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, cap, len(data))
    return _block(6, head + data + pad, order, trailer)


def spb(data: bytes, order: str = "<") -> bytes:
    return _block(3, struct.pack(order + "I", len(data)) + data + bytes(-len(data) % 4), order)


_U32 = st.integers(0, 2**32 - 1)
_U64 = st.integers(0, 2**64 - 1)
_HUGE = st.sampled_from([262_144, 262_145, 262_146, 262_200, 300_000])


@st.composite
def pcap_cases(draw: st.DrawFn) -> CaptureCase:
    """Classic pcap: header variants; records too long for libpcap, times out of range."""
    n = draw(st.integers(1, 16))
    sizes = draw(st.lists(st.integers(0, 1400), min_size=n, max_size=n))
    steps = draw(st.lists(st.integers(0, 5_000_000), min_size=n, max_size=n))
    nano = draw(st.booleans())
    div = 10**9 if nano else 10**6
    t, records = T0 * div, []
    for i in range(n):
        t += steps[i] * (div // 10**6)
        records.append([t // div, t % div, frame(i, sizes[i])])
    for _ in range(draw(st.integers(0, 3))):
        k = draw(st.integers(0, n - 1))
        kind = draw(st.sampled_from(["huge", "sec", "frac"]))
        if kind == "huge":
            records[k][2] = records[k][2] + bytes(max(0, draw(_HUGE) - len(records[k][2])))
        elif kind == "sec":
            records[k][0] = draw(_U32)
        else:
            records[k][1] = draw(_U32)
    data = pcap_bytes([(s, f, d) for s, f, d in records], order=draw(st.sampled_from("<>")),
                      nano=nano, snaplen=draw(st.sampled_from([0, 96, 65535, 262144, 2**32 - 1])))
    return _cut_or_mutate(draw, CaptureCase(data, ".pcap", n), _pcap_ends(records))


def _pcap_ends(records: list[list[Any]]) -> list[int]:
    ends, off = [], 24
    for r in records:
        off += 16 + len(r[2])
        ends.append(off)
    return ends


@st.composite
def pcapng_cases(draw: st.DrawFn) -> CaptureCase:
    """pcapng: interfaces with odd snaplens and time options, packets on undeclared
    interfaces, caplens past their block, bad trailers, simple and obsolete packet blocks,
    sections without interfaces, unknown blocks, either byte order."""
    order = draw(st.sampled_from("<>"))
    blocks, ends = [shb(order)], []
    packets = skipped = 0
    n_if = 0
    bad_if: set[int] = set()  # interfaces whose description is too short
    for step in range(draw(st.integers(1, 20))):
        kind = draw(st.sampled_from(
            ["idb", "epb", "epb", "epb", "epb", "opb", "spb", "section", "unknown"]
            if step else ["idb", "idb", "idb", "spb", "epb"]))
        if kind == "idb":
            if draw(st.integers(0, 9)) == 0:  # too short to describe anything
                blocks.append(_block(1, bytes(4 * draw(st.integers(0, 1))), order))
                bad_if.add(n_if)
            else:
                blocks.append(idb(
                    order, snaplen=draw(st.sampled_from([0, 40, 100, 65535, 262144, 300000,
                                                         2**31, 2**32 - 1])),
                    tsresol=draw(st.none() | st.integers(0, 255)),
                    tsoffset=draw(st.none() | st.integers(-(2**40), 2**40)),
                    options=tuple(draw(st.lists(st.tuples(
                        st.sampled_from([2, 3, 9, 13, 14, 0x8001]), st.binary(max_size=10)),
                        max_size=2)))))
            n_if += 1
            continue
        if kind == "section":
            order = draw(st.sampled_from("<>"))
            blocks.append(shb(order, major=draw(st.sampled_from([1, 1, 2])),
                              minor=draw(st.integers(0, 9)), short=draw(st.booleans())))
            n_if, bad_if = 0, set()
            continue
        if kind == "unknown":
            body = bytes(4 * draw(st.integers(0, 4)))
            blocks.append(_block(draw(st.sampled_from([4, 5, 7, 0x80000001, 0xBAD])), body,
                                 order))
            continue
        data = frame(step, draw(st.integers(0, 1400)))
        if draw(st.integers(0, 9)) == 0:
            data += bytes(draw(_HUGE) - len(data))
        packets += 1
        if kind == "spb":
            blocks.append(spb(data, order))
            skipped += n_if == 0 or 0 in bad_if
        else:
            iface = draw(st.integers(0, max(n_if - 1, 0)))
            if draw(st.integers(0, 7)) == 0:
                iface = draw(st.integers(n_if, 2**16 - 1 if kind == "opb" else 2**32 - 1))
            skipped += iface >= n_if or iface in bad_if
            ts = (T0 + step) * 10**6 if draw(st.integers(0, 5)) else draw(_U64)
            caplen = (draw(st.integers(len(data) + 4, 2**32 - 1))
                      if draw(st.integers(0, 9)) == 0 else None)
            trailer = draw(_U32) if draw(st.integers(0, 9)) == 0 else None
            options = (draw(st.binary(max_size=6).map(lambda b: b + bytes(-len(b) % 4)))
                       if draw(st.integers(0, 7)) == 0 else b"")
            blocks.append(epb(iface, ts, data, order, caplen=caplen, trailer=trailer,
                              obsolete=kind == "opb", options=options))
        ends.append(sum(map(len, blocks)))
    data = b"".join(blocks)
    case = CaptureCase(data, ".pcapng", packets, skipped)
    return _cut_or_mutate(draw, case, ends)


def _cut_or_mutate(draw: st.DrawFn, case: CaptureCase, ends: list[int]) -> CaptureCase:
    """Leave whole, cut at a byte (the packets before the cut must still add up), or
    overwrite bytes (then only "no traceback" is promised)."""
    how = draw(st.sampled_from(["whole", "whole", "cut", "bytes"]))
    data = case.data
    if how == "cut" and len(data) > 1:
        at = draw(st.integers(1, len(data) - 1))
        # Packets whose records end before the cut; a skipped one among them is not known.
        kept = sum(1 for e in ends if e <= at)
        return CaptureCase(data[:at], case.suffix, kept, None, "cut")
    if how == "bytes":
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(buf) - 1))
            buf[at] = draw(st.integers(0, 255))
        return CaptureCase(bytes(buf), case.suffix, None, None, "bytes")
    return case


def capture_cases() -> st.SearchStrategy[CaptureCase]:
    return st.one_of(pcap_cases(), pcapng_cases(), st.builds(
        lambda b, s: CaptureCase(b, s, None, None, "random"), st.binary(max_size=512),
        st.sampled_from([".pcap", ".pcapng"])))


def check_capture(case: CaptureCase, folder: Path) -> None:
    """Read ``case`` as a capture file; raise ``Violation`` for a broken promise (any other
    exception out of the reader is a crash)."""
    path = folder / f"input{case.suffix}"
    path.write_bytes(case.data)
    flows, problems = read_source_file(str(path))
    _check_problems(problems)
    if case.packets is None:
        return
    errors = [p for p in problems if p.severity == "error"]
    got = int(flows["packets"].sum() or 0)
    skipped = sum(p.skipped for p in problems)
    if errors:
        if case.packets:
            raise Violation(f"{case.packets} packets in, but an error: {errors[0]}")
        return
    if got + skipped != case.packets:
        raise Violation(f"{case.packets} packets in, {got} in flows + {skipped} reported "
                        f"skipped ({'; '.join(map(str, problems)) or 'no problems'})")
    if case.skipped is not None and skipped != case.skipped:
        raise Violation(f"{skipped} packets reported skipped, {case.skipped} expected")


def _check_problems(problems: list[Any]) -> None:
    for p in problems:
        if "\n" in str(p) or p.severity not in _SEVERITIES:
            raise Violation(f"a problem that is not one line of a known severity: {p!r}")


def _hostile_pcap(n: int = 40, **changes: Callable[[list[list[Any]]], None]) -> bytes:
    records = [[T0 + i, 0, frame(i)] for i in range(n)]
    for change in changes.values():
        change(records)
    return pcap_bytes([(s, f, d) for s, f, d in records])


def _pad(k: int, size: int) -> Callable[[list[list[Any]]], None]:
    def change(records: list[list[Any]]) -> None:
        records[k][2] += bytes(size - len(records[k][2]))
    return change


def _sec(k: int, value: int) -> Callable[[list[list[Any]]], None]:
    def change(records: list[list[Any]]) -> None:
        records[k][0] = value
    return change


def _ng(*packets: bytes, head: bytes | None = None) -> bytes:
    return shb() + (idb() if head is None else head) + b"".join(packets)


def _epbs(n: int = 20, **at: dict[str, Any]) -> list[bytes]:
    """n EPBs; ``at={"5": {...}}`` gives packet 5 other epb() arguments."""
    out = []
    for i in range(n):
        kw: dict[str, Any] = {"iface": 0, "ts": (T0 + i) * 10**6, "data": frame(i)}
        kw.update(at.get(str(i), {}))
        out.append(epb(**kw))
    return out


_HOOK_HDR = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
_HOOK_FRAME = (bytes(12) + b"\x08\x00" + bytes.fromhex("450000280001000040110000c0a80001c0a80002")
               + bytes(8))


def _hook_rec(ts: int) -> bytes:
    return struct.pack("<IIII", ts, 0, len(_HOOK_FRAME), len(_HOOK_FRAME)) + _HOOK_FRAME


#: The hostile captures of issue 18 and of the before-stop hook, by name: each builds its
#: bytes deterministically (no capture is stored in the repository).
CAPTURE_CORPUS: dict[str, Callable[[], CaptureCase]] = {
    "pcap caplen 262145 (libpcap stops)": lambda: CaptureCase(
        _hostile_pcap(huge=_pad(3, 262_145)), ".pcap", 40),
    "pcap caplen 262144 (the limit, read)": lambda: CaptureCase(
        _hostile_pcap(huge=_pad(3, 262_144)), ".pcap", 40),
    "pcap 11th record seconds 0xFFFFFFFF": lambda: CaptureCase(
        _hostile_pcap(jump=_sec(10, 0xFFFFFFFF)), ".pcap", 40),
    "pcap first record seconds 0xFFFFFFFF": lambda: CaptureCase(
        _hostile_pcap(jump=_sec(0, 0xFFFFFFFF)), ".pcap", 40),
    "pcap one record in 2038": lambda: CaptureCase(
        _hostile_pcap(jump=_sec(10, 2**31 - 1)), ".pcap", 40),
    "pcap cut in the last record": lambda: CaptureCase(_hostile_pcap()[:-10], ".pcap", 39, None),
    "hook truncated": lambda: CaptureCase(_HOOK_HDR + _hook_rec(1) + _hook_rec(2)[:20], ".pcap",
                                          None),
    "hook ts_jump": lambda: CaptureCase(
        _HOOK_HDR + _hook_rec(1) + _hook_rec(0xFFFFFFFF) + _hook_rec(3), ".pcap", None),
    "hook random": lambda: CaptureCase(random.Random(18).randbytes(4096), ".pcap", None),
    "pcapng EPB caplen 262145": lambda: CaptureCase(_ng(*_epbs(
        **{"5": {"data": frame(5) + bytes(262_145 - len(frame(5)))}})), ".pcapng", 20),
    "pcapng EPB caplen past its block": lambda: CaptureCase(_ng(*_epbs(
        **{"5": {"caplen": 0xFFFFFFF0}})), ".pcapng", 20),
    "pcapng EPB on unknown interface 7": lambda: CaptureCase(_ng(*_epbs(
        **{"5": {"iface": 7}})), ".pcapng", 20, 1),
    "pcapng EPB bad trailer": lambda: CaptureCase(_ng(*_epbs(
        **{"5": {"trailer": 4}})), ".pcapng", 20),
    "pcapng EPB time 2^64-1": lambda: CaptureCase(_ng(*_epbs(
        **{"5": {"ts": 2**64 - 1}})), ".pcapng", 20),
    "pcapng interface snaplen 40": lambda: CaptureCase(_ng(*_epbs(), head=idb(snaplen=40)),
                                                       ".pcapng", 20),
    "pcapng first interface snaplen 100, packets on the second": lambda: CaptureCase(
        _ng(*_epbs(**{str(i): {"iface": 1, "data": frame(i, 200)} for i in range(20)}),
            head=idb(snaplen=100) + idb()), ".pcapng", 20),
    "pcapng simple packet block before any interface": lambda: CaptureCase(
        shb() + spb(frame(0)) + idb() + b"".join(_epbs()), ".pcapng", 21, 1),
    "pcapng second section without interfaces": lambda: CaptureCase(
        shb() + idb() + b"".join(_epbs()[:10]) + shb() + b"".join(_epbs()[10:]), ".pcapng",
        20, 10),
    "pcapng interface with malformed options": lambda: CaptureCase(
        _ng(*_epbs(), head=_block(1, struct.pack("<HHI", 1, 0, 65535)
                                   + struct.pack("<HH", 9, 200))), ".pcapng", 20),
    "pcapng interface time resolution 10^-100": lambda: CaptureCase(
        _ng(*_epbs(), head=idb(tsresol=100)), ".pcapng", 20),
    "pcapng simple packet block, interface time offset -290 s (found by the long run)":
        lambda: CaptureCase(shb(">") + idb(">", tsoffset=-290) + spb(frame(0), ">")
                            + b"".join(epb(0, (T0 + i) * 10**6, frame(i), ">")
                                       for i in range(1, 5)), ".pcapng", 5),
    "pcapng packet on an interface of another snaplen (found by the long run)":
        lambda: CaptureCase(_ng(*_epbs(**{"5": {"iface": 1}}),
                                head=idb(snaplen=65535) + idb(snaplen=262144)), ".pcapng", 20),
    "pcapng first interface description too short": lambda: CaptureCase(
        _ng(*_epbs(**{str(i): {"iface": 1} for i in range(20)}),
            head=_block(1, struct.pack("<I", 1)) + idb()), ".pcapng", 20),
    "pcapng interface with two time resolutions": lambda: CaptureCase(
        _ng(*_epbs(), head=_block(1, struct.pack("<HHI", 1, 0, 65535)
                                   + struct.pack("<HHB3xHHB3xHH", 9, 1, 6, 9, 1, 9, 0, 0))),
        ".pcapng", 20),
    "pcapng unknown block of 17 MiB": lambda: CaptureCase(
        shb() + idb() + b"".join(_epbs()[:10]) + _block(0x999, bytes(17 * 2**20))
        + b"".join(_epbs()[10:]), ".pcapng", 20),
    "pcapng second interface of another link type": lambda: CaptureCase(
        _ng(*_epbs(**{"5": {"iface": 1}}), head=idb() + idb(linktype=113)), ".pcapng", None),
}


# ---------------------------------------------------------------- Zeek logs


@dataclass(frozen=True)
class ZeekCase:
    data: bytes
    #: data rows that went in (None after byte mutations)
    rows: int | None
    #: rows whose every value is valid: the rows that must come out (None: not predicted)
    kept: int | None
    #: the header is hostile: an error naming the line is the only right answer
    error: bool = False
    note: str = ""


OPTIONAL = ("uid", "service", "duration", "orig_bytes", "resp_bytes", "conn_state", "history",
            "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "orig_l2_addr",
            "resp_l2_addr", "vlan", "tunnel_parents", "missed_bytes")
_COUNTS = {"orig_bytes", "resp_bytes", "orig_pkts", "orig_ip_bytes", "resp_pkts",
           "resp_ip_bytes", "missed_bytes"}
_UNSET = object()  # the field is unset: "-" in TSV, null in JSON
_MISSING = object()  # JSON only: the key is absent

_mac = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(
    lambda b: ":".join(f"{x:02x}" for x in b))


def _valid(field: str) -> st.SearchStrategy[Any]:
    if field == "ts":
        return st.floats(0, 2e9).map(lambda x: round(x, 6))
    if field in ("id.orig_h", "id.resp_h"):
        return st.ip_addresses().map(str)
    if field in ("id.orig_p", "id.resp_p"):
        return st.integers(0, 65535)
    if field == "proto":
        return st.sampled_from(["tcp", "udp", "icmp", "TCP", "sctp", "SCTP", "unknown_transport",
                                "icmp6", "gre", "6", "17", "132", "0", "255"])
    unset = st.just(_UNSET)
    if field in _COUNTS:
        return st.integers(0, 10**15 - 1) | unset
    if field == "duration":
        return st.floats(0, 1e6).map(lambda x: round(x, 6)) | unset
    if field in ("orig_l2_addr", "resp_l2_addr"):
        return _mac | unset
    if field == "vlan":
        return st.integers(0, 4095) | unset
    if field == "history":
        return st.text("ShADadFfRrTtCcIiQqWw^", min_size=1, max_size=8) | unset
    if field == "service":
        return st.sampled_from(["dns", "http", "ssl", "modbus", "ftp-data"]) | unset
    if field == "conn_state":
        return st.sampled_from(["SF", "S0", "REJ", "OTH"])
    if field == "uid":
        return st.text("ABCDEFGHJKabcdefghjk0123456789", min_size=1, max_size=18).map(
            lambda s: "C" + s)
    return unset  # tunnel_parents


_BAD: dict[str, list[Any]] = {
    "ts": ["x", "nan", "inf", "-5", "1e400", "3e11", "2023-13-45T99:00:00Z", _UNSET],
    "id.orig_h": ["not-an-ip", "999.1.1.1", "1.2.3", "::g", "01.2.3.4", "1.2.3.4.5", _UNSET],
    "id.orig_p": ["x", "-5", "99999999999", "65536", "1.5", "0x50", _UNSET],
    "proto": ["foo", "256", "-1", "tcpx", "sctp6", _UNSET],
    "duration": ["-1.5", "nan", "inf", "x", "1e10", "-0.000001"],
    "orig_pkts": [str(2**64), "-1", "x", "1.5", str(10**15), "1e3"],
    "orig_l2_addr": ["zz:00:00:00:00:00", "00:11", "0:1:2:3:4:5"],
    "vlan": ["4096", "-1", "x"],
}
_BAD["id.resp_h"] = _BAD["id.orig_h"]
_BAD["id.resp_p"] = _BAD["id.orig_p"]
_BAD["resp_l2_addr"] = _BAD["orig_l2_addr"]
for _c in _COUNTS - {"orig_pkts"}:
    _BAD[_c] = _BAD["orig_pkts"]

_HEADER_ATTACKS = {
    "zeek": ["sep \\x", "sep \\u00e9", "sep ab", "sep \\xe9", "sep \\x0a", "sep empty",
             "no #fields", "duplicate field", "empty field name", "row too long",
             "row too short", "drop required"],
    "tsv": ["duplicate field", "row too long", "row too short", "drop required", "no header"],
    "json": ["deep", "not an object", "broken", "drop required"],
}


def _tsv_value(v: Any) -> str:
    if v is _UNSET or v is _MISSING:
        return "-"
    return f"{v:.6f}" if isinstance(v, float) else str(v)


def _json_value(v: Any) -> Any:
    return None if v is _UNSET else v


@st.composite
def zeek_cases(draw: st.DrawFn) -> ZeekCase:
    form = draw(st.sampled_from(["zeek", "tsv", "csv", "json", "json"]))
    scope = draw(st.sampled_from([".", "_"]))
    fields = draw(st.permutations(list(REQUIRED) + draw(st.lists(
        st.sampled_from(OPTIONAL), unique=True, max_size=6))))
    n = draw(st.integers(0, 8))
    rows, kept = [], 0
    for _ in range(n):
        row = {f: draw(_valid(f)) for f in fields}
        bad = [f for f in fields if f in _BAD] if draw(st.integers(0, 2)) == 0 else []
        hit = draw(st.lists(st.sampled_from(bad), max_size=2, unique=True)) if bad else []
        for f in hit:
            pool = _BAD[f] + ([_MISSING] if form == "json" and f in REQUIRED else [])
            row[f] = draw(st.sampled_from(pool))
        kept += not hit
        rows.append(row)
    attack = None
    if draw(st.integers(0, 3)) == 0:
        attack = draw(st.sampled_from(_HEADER_ATTACKS["json" if form == "json" else
                                                       "zeek" if form == "zeek" else "tsv"]))
    text = _render(form, scope, fields, rows, attack)
    error = attack is not None and not (attack in ("row too long", "row too short") and not n)
    case = ZeekCase(text.encode(), n, kept, error, f"{form} {attack or ''}".strip())
    if draw(st.integers(0, 4)) == 0:  # bytes overwritten: only "no traceback" is promised
        buf = bytearray(case.data or b"\n")
        for _ in range(draw(st.integers(1, 6))):
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.sampled_from(
                b"\t\n,#{}[]\\\"-x0.:\x00\xff\xe9 "))
        return ZeekCase(bytes(buf), None, None, False, "bytes")
    return case


def _render(form: str, scope: str, fields: list[str], rows: list[dict[str, Any]],
            attack: str | None) -> str:
    def name(f: str) -> str:
        return f.replace("id.", "id_") if scope == "_" else f

    names = [name(f) for f in fields]
    if attack == "drop required":
        drop = next(f for f in fields if f in REQUIRED)
        keep = [i for i, f in enumerate(fields) if f != drop]
        names = [names[i] for i in keep]
        fields = [fields[i] for i in keep]
    if form == "json":
        lines = []
        for r in rows:
            obj = {name(f): _json_value(r[f]) for f in fields if r[f] is not _MISSING}
            lines.append(json.dumps(obj))
        if attack == "deep":
            lines.append('{"ts": 1, "id.orig_h": "1.1.1.1", "x": ' + "[" * 50_000
                         + "]" * 50_000 + "}")
        elif attack == "not an object":
            lines.append("[1, 2, 3]")
        elif attack == "broken":
            lines.append('{"ts": 1, "id.orig_h": ')
        return "\n".join(lines) + ("\n" if lines else "")
    sep = "," if form == "csv" else "\t"
    body = [sep.join(_tsv_value(r[f]) for f in fields) for r in rows]
    if attack in ("row too long", "row too short") and body:
        body[-1] = body[-1] + sep + "x" if attack == "row too long" else body[-1].rsplit(sep, 1)[0]
    if attack == "duplicate field":
        names = names + [names[0]]
        body = [b + sep + b.split(sep)[0] for b in body]
    if attack == "empty field name":
        names = names + [""]
        body = [b + sep + "x" for b in body]
    if form != "zeek":
        header = [] if attack == "no header" else [sep.join(names)]
        return "\n".join(header + body) + "\n"
    separator = {"sep \\x": "\\x", "sep \\u00e9": "\\u00e9", "sep ab": "ab", "sep \\xe9": "\\xe9",
                 "sep \\x0a": "\\x0a", "sep empty": ""}.get(attack or "", "\\x09")
    head = [f"#separator {separator}", "#set_separator\t,", "#empty_field\t(empty)",
            "#unset_field\t-", "#path\tconn", "#open\t2024-01-01-00-00-00"]
    if attack != "no #fields":
        head.append("#fields\t" + "\t".join(names))
    return "\n".join(head + body + ["#close\t2024-01-01-00-00-01"]) + "\n"


def check_zeek(case: ZeekCase, folder: Path) -> None:
    """Read ``case`` as a Zeek log; raise ``Violation`` for a broken promise."""
    path = folder / "conn.log"
    path.write_bytes(case.data)
    flows, problems = read_source_file(str(path))
    _check_problems(problems)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        if case.rows is not None and not case.error and case.kept:
            raise Violation(f"{case.kept} valid rows in, but an error: {errors[0]}")
        return
    if case.error:
        raise Violation(f"a hostile header ({case.note}) was accepted")
    _check_values(flows)
    skipped = sum(p.skipped for p in problems)
    if case.rows is not None and flows.height + skipped != case.rows:
        raise Violation(f"{case.rows} rows in, {flows.height} kept + {skipped} reported skipped")
    if case.kept is not None and flows.height != case.kept:
        raise Violation(f"{case.kept} valid rows in, {flows.height} kept")


def _check_values(flows: Any) -> None:
    """Every kept value is one Zeek writes: the checks the reader promises, done again."""
    import polars as pl

    if flows.height == 0:
        return
    bad = flows.filter(
        ~pl.col("src_port").is_between(0, 65535).fill_null(False)
        | ~pl.col("dst_port").is_between(0, 65535).fill_null(False)
        | ~pl.col("protocol").is_between(0, 255).fill_null(False)
        | pl.col("first_seen").is_null()
        | (pl.col("duration_ms") < 0).fill_null(False)
        | (pl.col("packets") < 0).fill_null(False)
        | (pl.col("bytes") < 0).fill_null(False)
    )
    if bad.height:
        raise Violation(f"invalid values kept: {bad.row(0, named=True)}")
    for ip in flows["src_ip"].to_list() + flows["dst_ip"].to_list():
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise Violation(f"not an IP address kept: {ip!r}") from None


_CONN = ("#separator \\x09\n#fields\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\t"
         "orig_pkts\tresp_pkts\tduration\n")
_ROW = "1700000000.5\t10.0.0.1\t1234\t10.0.0.2\t80\ttcp\t3\t4\t1.5\n"


def _z(text: str, rows: int | None, kept: int | None, error: bool = False) -> ZeekCase:
    return ZeekCase(text.encode(), rows, kept, error)


#: The hostile Zeek logs of issue 18, by name.
ZEEK_CORPUS: dict[str, Callable[[], ZeekCase]] = {
    "#separator \\x": lambda: _z("#separator \\x\n#fields\tts\n1\n", None, None, True),
    "#separator \\u00e9": lambda: _z("#separator \\u00e9\n#fields\u00e9ts\u00e9id.orig_h\n"
                                     "1\u00e910.0.0.1\n", None, None, True),
    "multi-character separator": lambda: _z("#separator ab\n#fieldsabtsabid.orig_h\n", None,
                                            None, True),
    "header without #fields": lambda: _z("#separator \\x09\n#types\ttime\n" + _ROW, None, None,
                                         True),
    "duplicate field": lambda: _z(
        "#separator \\x09\n#fields\tts\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\n"
        "1\t1\t10.0.0.1\t1\t10.0.0.2\t2\ttcp\n", None, None, True),
    "JSON nested 50,000 deep": lambda: _z(
        '{"ts": 1, "id.orig_h": "1.1.1.1", "x": ' + "[" * 50_000 + "]" * 50_000 + "}\n", None,
        None, True),
    "port x": lambda: _z(_CONN + _ROW + _ROW.replace("\t1234\t", "\tx\t"), 2, 1),
    "port -5": lambda: _z(_CONN + _ROW + _ROW.replace("\t1234\t", "\t-5\t"), 2, 1),
    "port 99999999999": lambda: _z(_CONN + _ROW + _ROW.replace("\t80\t", "\t99999999999\t"),
                                   2, 1),
    "id.orig_h not-an-ip": lambda: _z(_CONN + _ROW + _ROW.replace("10.0.0.1", "not-an-ip"),
                                      2, 1),
    "orig_pkts 2^64": lambda: _z(_CONN + _ROW + _ROW.replace("\t3\t4\t", f"\t{2**64}\t4\t"),
                                 2, 1),
    "negative duration": lambda: _z(_CONN + _ROW + _ROW.replace("\t1.5\n", "\t-1.5\n"), 2, 1),
    "proto SCTP": lambda: _z(_CONN + _ROW.replace("\ttcp\t", "\tSCTP\t"), 1, 1),
    "_ scope separator (id_orig_h)": lambda: _z(_CONN.replace("id.", "id_") + _ROW, 1, 1),
    "zeek-cut subset without id.orig_h": lambda: _z(
        "ts\tuid\tproto\n1700000000.5\tC1\ttcp\n", None, None, True),
    "zeek-cut output without header": lambda: _z(_ROW + _ROW, None, None, True),
}
