"""Payload inspection: one pass over a capture for what flows say in their first packets.

NFStream gives a flow's nDPI application, not the software at either end, the TLS version a
server chose, its certificate, or that a password crossed the wire in clear. Those are in the
first payload packets of a connection, so this pass reads them: the record framing of
``features.captures`` (the walk that writes the repaired copies libpcap reads, so both passes
see the same packets), a few byte offsets per record, and a parse only for TCP and UDP
packets whose server port is registered (``dissectors``). The announcements of
``features.announce`` (DHCP, mDNS, SSDP) come out of the same walk, so a capture is walked
once for both.

Each connection gets a fresh ``Dissector`` from the registry, keyed by (ip protocol, server
port); the server is the endpoint on the registered port. Packets come in capture order,
without TCP reassembly; a dissector that needs more than one segment buffers itself, bounded.
At most ``Dissector.cap`` payload-carrying packets per direction reach it, which keeps the
pass cheap on long connections. Connections are cut into flows as NFStream cuts them (a gap
of ``IDLE_TIMEOUT_S``, a flow older than ``ACTIVE_TIMEOUT_S``: ``features.flows``), so a long
connection's later flows get fresh dissectors, and ``attach_payload`` gives each flow the
results of the piece of connection that overlaps it most in time.

Results are entries ``kind=value`` (``KINDS``), sent by the client or the server, and the
values of flow columns a dissector owns (the industrial ones of ``features.ot``).
"""

from __future__ import annotations

import mmap
import os
import re
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from flockwatch.features.announce import Announcer
from flockwatch.features.captures import (
    _CUT,
    _PCAPNG_SHB,
    JUMP_S,
    MAX_CAPLEN,
    PCAP_MAGIC,
    CaptureInfo,
    Trim,
    _pcap_record_format,
    _pcap_records,
    _pcapng_records,
    _Walk,
    inspect_capture,
)
from flockwatch.features.errors import InputError, stat_input
from flockwatch.features.ot import OT_COLUMNS, OT_DISSECTORS

#: NFStream's flow cuts, used everywhere (``features.flows`` re-exports them): files, live,
#: training and serving, and this pass's cuts of connections into flows, agree.
IDLE_TIMEOUT_S = 120
ACTIVE_TIMEOUT_S = 1800

#: Longest value kept (characters); longer ones are cut.
MAX_VALUE = 200
#: Payload-carrying packets per direction a dissector sees unless it says otherwise.
DEFAULT_CAP = 8
#: Bytes a dissector buffers per direction at most (TLS certificates, split messages).
MAX_BUFFER = 16 * 1024

#: The kinds of entry of the ``payload`` column, in the order docs/flows.md lists them.
KINDS = ("http_server", "http_user_agent", "ssh_banner", "ftp_banner", "telnet_banner",
         "tls_version", "tls_cert", "modbus_identity", "enip_identity", "bacnet_identity",
         "s7_identity", "cleartext_login")
#: The ways of ``cleartext_login=<how>``.
LOGINS = ("ftp", "telnet", "http_basic", "pop3", "imap", "mqtt", "snmp_v1", "snmp_v2c")


class Dissector(Protocol):
    """One flow's parser. A fresh one per flow, from a factory in the registry."""

    #: payload-carrying packets per direction it looks at; None: every one
    cap: int | None

    def packet(self, t_ms: int, payload: bytes, to_server: bool) -> None:
        """One packet's transport payload (never empty), in capture order; never raises."""

    def entries(self) -> Iterable[tuple[bool, str]]:
        """(sent by the server, ``kind=value``) of what it saw; cleaned by the pass."""
        return ()

    def columns(self) -> dict[str, object]:
        """Values of the flow columns it owns (names of ``features.ot.OT_COLUMNS``)."""
        return {}


Factory = Callable[[], Dissector]

TCP, UDP = 6, 17


def dissectors() -> dict[tuple[int, int], Factory]:
    """The registry: (ip protocol, server port) -> a factory of a fresh dissector per flow.
    This module's own, then the industrial ones of ``features.ot`` (which win a tie)."""
    from flockwatch.features import banners, tls

    own: dict[tuple[int, int], Factory] = {}
    for port in banners.HTTP_PORTS:
        own[TCP, port] = banners.Http
    for port in tls.TLS_PORTS:
        own[TCP, port] = tls.Tls
    for port in banners.SSH_PORTS:
        own[TCP, port] = banners.Ssh
    for port in banners.TELNET_PORTS:
        own[TCP, port] = banners.Telnet
    own[TCP, 21] = banners.Ftp
    own[TCP, 110] = banners.Pop3
    own[TCP, 143] = banners.Imap
    own[TCP, 1883] = banners.Mqtt
    for port in banners.SNMP_PORTS:
        own[UDP, port] = banners.Snmp
    own.update(OT_DISSECTORS)
    return own


#: Rows of ``scan_capture``: one piece of connection (a flow as NFStream cuts it) with
#: results. ``client_entries``/``server_entries`` hold the ``kind=value`` entries sent by
#: either end, sorted, one a line (null when none).
SEGMENT_SCHEMA = pl.Schema({
    "protocol": pl.Int16(), "client_ip": pl.String(), "client_port": pl.Int32(),
    "server_ip": pl.String(), "server_port": pl.Int32(), "first_ms": pl.Int64(),
    "last_ms": pl.Int64(), "client_entries": pl.String(), "server_entries": pl.String(),
    **{name: dtype for name, (dtype, _) in OT_COLUMNS.items()},
})


@dataclass
class Scan:
    """What one walk over a capture found: announcements and payload results."""

    announcements: pl.DataFrame  # features.announce.ANNOUNCEMENT_SCHEMA
    segments: pl.DataFrame  # SEGMENT_SCHEMA


_VLAN = frozenset({0x8100, 0x88A8, 0x9100})
_U16 = struct.Struct("!H").unpack_from
_PORTS_AT = struct.Struct("!HH").unpack_from
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class _Flow:
    """One piece of connection: its dissector, times and packet counts per direction."""

    __slots__ = ("cap", "dis", "done", "first", "last", "n_c", "n_s")

    def __init__(self, dis: Dissector, t: int) -> None:
        self.dis = dis
        self.first = self.last = t
        self.n_c = self.n_s = 0
        cap = getattr(dis, "cap", DEFAULT_CAP)
        self.cap = cap if cap is not None else -1
        self.done = False




def scan_capture(path: str | os.PathLike[str], *,
                 registry: dict[tuple[int, int], Factory] | None = None,
                 announcements: bool = True,
                 payload: bool = True,
                 idle_timeout: int = IDLE_TIMEOUT_S,
                 active_timeout: int = ACTIVE_TIMEOUT_S) -> Scan:
    """Walk a capture once: its announcements (``features.announce``) and the results of the
    registered dissectors per flow (``SEGMENT_SCHEMA``).

    Without ``announcements`` or ``payload`` that part is left out (empty). Raises
    ``InputError`` when the file is no pcap or pcapng capture; a malformed packet is skipped,
    and a dissector's failure ends that dissector, never the pass.
    """
    return _walk(path, registry, announcements, payload, idle_timeout, active_timeout)[1]


def inspect_and_scan(path: str | os.PathLike[str], **kwargs: Any
                     ) -> tuple[CaptureInfo, Scan]:
    """``captures.inspect_capture(path)`` and ``scan_capture(path, **kwargs)`` in one walk
    of a classic pcap (the common case: the capture is walked once, not twice); other
    files are inspected, then scanned. ``read_capture`` runs it while NFStream meters."""
    try:
        info, scan = _walk(path, kwargs.pop("registry", None), **kwargs)
    except InputError:
        inspect_capture(path)  # its words for what is wrong with the file
        raise
    if info is None:
        info = inspect_capture(path)
    return info, scan


def inspect_and_scan_portable(path: str, kwargs: dict[str, Any]
                              ) -> tuple[CaptureInfo, Scan] | tuple[str, str]:
    """``inspect_and_scan`` for another process (``read_capture`` runs large captures' pass
    in one, off the reader's GIL): its result, or (source, problem) of the ``InputError``
    it raised (an ``InputError`` does not survive pickling)."""
    try:
        return inspect_and_scan(path, **kwargs)
    except InputError as exc:
        return exc.source, exc.problem


def _walk(path: str | os.PathLike[str], registry: dict[tuple[int, int], Factory] | None,
          announcements: bool = True, payload: bool = True, idle_timeout: int = IDLE_TIMEOUT_S,
          active_timeout: int = ACTIVE_TIMEOUT_S) -> tuple[CaptureInfo | None, Scan]:
    """The scan, and the framing verdict where the walk gave it (classic pcap)."""
    name = str(path)
    if stat_input(path).st_size == 0:
        raise InputError(name, "empty file (0 bytes), expected a pcap or pcapng capture")
    reg = {} if not payload else dissectors() if registry is None else registry
    state = _State(reg, announcements, idle_timeout * 1000, active_timeout * 1000)
    info: CaptureInfo | None = None
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            magic = mm[:4]
            if magic in PCAP_MAGIC and len(mm) >= 24:
                info = _scan_ethernet_pcap(mm, magic, state, name)
                if info.linktypes != (1,):  # the walk framed it; now the full look
                    _scan(mm, _pcap_records(mm, magic, _Walk()), state)
            elif magic == _PCAPNG_SHB and len(mm) >= 12:
                _scan(mm, _pcapng_records(mm, _Walk(), []), state)
            else:
                raise InputError(name, "not a pcap or pcapng capture (unrecognised or cut "
                                       "file header)")
    except OSError as exc:
        raise InputError(name, f"cannot read: {exc.strerror or exc}") from None
    return info, Scan(state.announcer.frame(), state.segments())


# A connection's key: (ip protocol, client address, client port, server address, server
# port); an IPv4 address as an int, an IPv6 one as its 16 bytes, until the end.
_Key = tuple[int, int | bytes, int, int | bytes, int]


class _State:
    """The pass's state: the registry split by protocol, the open connections, the results."""

    def __init__(self, reg: dict[tuple[int, int], Factory], announcements: bool,
                 idle_ms: int, active_ms: int) -> None:
        self.tcp = {port: f for (proto, port), f in reg.items() if proto == TCP}
        self.udp = {port: f for (proto, port), f in reg.items() if proto == UDP}
        self.announcer = Announcer()
        self.announce_ports = Announcer.PORTS if announcements else frozenset()
        self.tcp_ports = frozenset(self.tcp)
        self.udp_ports = frozenset(self.udp) | self.announce_ports
        self.idle_ms, self.active_ms = idle_ms, active_ms
        self.open: dict[_Key, _Flow] = {}
        self.rows: list[tuple[object, ...]] = []
        self.columns = list(OT_COLUMNS)
        self.countdown = _SWEEP_EVERY
        self.cleaned: dict[str, str | None] = {}  # entry -> clean_entry(entry): they repeat

    def packet(self, reg: dict[int, Factory], proto: int, src: int | bytes, sport: int,
               dst: int | bytes, dport: int, t: int, data: bytes) -> None:
        """One payload-carrying TCP or UDP packet to or from a registered port (or not).

        Only such packets are looked at: a connection is cut where NFStream would cut it
        seen from them alone (a gap of the idle timeout between two of them, or the active
        timeout since the first), so every cut of NFStream's is one here too, and a cut
        NFStream does not make (a gap filled only by bare acknowledgements) costs nothing,
        for ``attach_payload`` gives each piece to the flow it overlaps most."""
        make = reg.get(dport)
        if make is not None and (dport <= sport or sport not in reg):
            to_server = True
            key: _Key = (proto, src, sport, dst, dport)
        else:
            make = reg.get(sport)
            if make is None:
                return
            to_server = False
            key = (proto, dst, dport, src, sport)
        flow = self.open.get(key)
        if flow is None or t - flow.last >= self.idle_ms or t - flow.first >= self.active_ms:
            if flow is not None:  # NFStream cuts it here: a new flow, a fresh dissector
                self.close(key, flow)
            try:
                flow = _Flow(make(), t)
            except Exception:  # noqa: BLE001 - a factory's bug: the flow goes unparsed
                return
            self.open[key] = flow
            self.countdown -= 1
            if self.countdown <= 0:
                self.countdown = _SWEEP_EVERY
                self.expire(t)
        else:
            flow.last = t
            if flow.done:
                return
        if to_server:
            n = flow.n_c = flow.n_c + 1
        else:
            n = flow.n_s = flow.n_s + 1
        cap = flow.cap
        if cap >= 0 and n > cap:
            if flow.n_c >= cap and flow.n_s >= cap:
                flow.done = True
            return
        try:
            flow.dis.packet(t, data, to_server)
        except Exception:  # noqa: BLE001 - the contract says never; a bug ends this flow only
            flow.done = True

    def close(self, key: _Key, flow: _Flow) -> None:
        """Keep what a finished piece of connection found (nothing when it found nothing)."""
        dis = flow.dis
        client: list[str] = []
        server: list[str] = []
        cleaned = self.cleaned
        try:
            for by_server, entry in dis.entries():
                e = cleaned.get(entry, "")
                if e == "":
                    if len(cleaned) > 4096:
                        cleaned.clear()
                    e = cleaned[entry] = clean_entry(entry)
                if e:
                    (server if by_server else client).append(e)
            cols = dis.columns()
        except Exception:  # noqa: BLE001 - a dissector's bug ends its flow's results only
            cols = {}
        values = [cols.get(c) for c in self.columns]
        if not client and not server and all(v is None for v in values):
            return
        proto, cip, cport, sip, sport = key
        self.rows.append((proto, _ntop(cip), cport, _ntop(sip), sport, flow.first, flow.last,
                          "\n".join(sorted(set(client))) or None,
                          "\n".join(sorted(set(server))) or None, *values))

    def expire(self, now: int) -> None:
        """Close the connections idle for longer than the idle timeout (bounded memory)."""
        idle = self.idle_ms
        gone = [k for k, f in self.open.items() if now - f.last >= idle]
        for k in gone:
            self.close(k, self.open.pop(k))

    def segments(self) -> pl.DataFrame:
        for k, f in self.open.items():
            self.close(k, f)
        self.open.clear()
        columns = list(zip(*self.rows, strict=True)) if self.rows else [()] * len(SEGMENT_SCHEMA)
        return pl.DataFrame({name: pl.Series(name, list(values), dtype=dtype)
                             for (name, dtype), values in zip(SEGMENT_SCHEMA.items(), columns,
                                                              strict=True)})


def _ntop(addr: int | bytes) -> str:
    # inet_ntop, as NFStream formats addresses, so the two tables join
    if isinstance(addr, int):
        return socket.inet_ntoa(addr.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, addr)


#: New connections between two sweeps of idle ones.
_SWEEP_EVERY = 1 << 14
_ADDRS = struct.Struct("!II").unpack_from


def _scan_ethernet_pcap(mm: mmap.mmap, magic: bytes, st: _State, name: str) -> CaptureInfo:
    """The hot loop for the common case, a classic pcap of Ethernet frames: the walk of
    ``captures.inspect_capture`` (its verdict on the framing and the times, returned) and the
    few offsets that pick the packets that matter, fused, so that ``read_capture`` walks such
    a file once. Packets that are no TCP or UDP to or from a registered port, and TCP packets
    without payload, are dropped after a few byte reads. Other frames (QinQ, odd EtherTypes)
    take ``_scan``'s full look."""
    bo, div = PCAP_MAGIC[magic]
    nano = div > 1e6
    linktype = struct.unpack_from(bo + "I", mm, 20)[0] & 0x0FFFFFFF
    hdr = struct.Struct(bo + _pcap_record_format(bo)).unpack_from
    u16, ports_at, addrs = _U16, _PORTS_AT, _ADDRS
    tcp, udp = st.tcp, st.udp
    tcp_ports, udp_ports, announce_ports = st.tcp_ports, st.udp_ports, st.announce_ports
    add_announcement, packet = st.announcer.add, st.packet
    w = _Walk()
    size = len(mm)
    off, packets = 24, 0
    clock, hi = 0, -1  # seconds up to ``hi`` need no judging (``captures._inspect_pcap``)
    trim = Trim(mm)
    trim_at = trim.at
    while off < size:
        if off >= trim_at:
            trim_at = trim(off)
        if off + 16 > size:
            w.halt(off, "cut")
            break
        sec, frac, caplen, wire = hdr(mm, off)
        d = off + 16
        if d + caplen > size:
            w.halt(off, "cut")
            break
        # the walk's bookkeeping, as captures._inspect_pcap keeps it
        if caplen > MAX_CAPLEN:
            w.note(_CUT, off)
        if 0 <= sec <= hi:
            if sec > clock:
                clock, hi = sec, sec + JUMP_S
        else:
            if hi >= 0:
                w.clock = clock
            w.time(off, sec, frac // 1000 if nano else frac)
            clock = w.clock or 0
            hi = clock + JUMP_S if w.cand is None and w.clock is not None else -1
        packets += 1
        rec = off
        off = d + caplen
        if caplen < 42 or linktype != 1:  # Ethernet, IP and UDP headers
            continue
        e0, e1, ip = mm[d + 12], mm[d + 13], d + 14
        if e0 == 0x81 and e1 == 0:  # one 802.1Q tag
            e0, e1, ip = mm[d + 16], mm[d + 17], d + 18
        try:
            if e0 == 8 and e1 == 0:  # IPv4
                b0 = mm[ip]
                proto = mm[ip + 9]
                l4 = ip + (b0 & 0x0F) * 4
                if proto == 6:  # most packets: TCP, its own shortest way
                    sport, dport = ports_at(mm, l4)
                    if sport not in tcp_ports and dport not in tcp_ports:
                        continue
                    stop = ip + u16(mm, ip + 2)[0]  # Ethernet padding left out
                    if stop > off or stop < l4:  # a length of 0 (offloaded) or past the end
                        stop = off
                    body = l4 + (mm[l4 + 12] >> 4) * 4
                    if body >= stop or b0 >> 4 != 4 or u16(mm, ip + 6)[0] & 0x3FFF:
                        continue  # no payload (most acknowledgements), not v4, a fragment
                    src, dst = addrs(mm, ip + 12)
                    packet(tcp, 6, src, sport, dst, dport,
                           sec * 1000 + (frac // 1_000_000 if nano else frac // 1000),
                           mm[body:stop])
                    continue
                if proto != 17:
                    continue
                ports = udp_ports
                sport, dport = ports_at(mm, l4)
                if sport not in ports and dport not in ports:
                    continue
                if b0 >> 4 != 4 or u16(mm, ip + 6)[0] & 0x3FFF:  # not v4, a fragment
                    continue
                stop = ip + u16(mm, ip + 2)[0]  # Ethernet padding left out
                if stop > off or stop < l4:  # a length of 0 (offloaded) or past the end
                    stop = off
                src, dst = addrs(mm, ip + 12)
                family, alen, a = socket.AF_INET, 4, ip + 12
            elif e0 == 0x86 and e1 == 0xDD:  # IPv6: TCP or UDP right after the fixed header
                proto = mm[ip + 6]
                l4 = ip + 40
                if proto == 6:
                    ports = tcp_ports
                elif proto == 17:
                    ports = udp_ports
                else:
                    continue
                sport, dport = ports_at(mm, l4)
                if sport not in ports and dport not in ports:
                    continue
                stop = l4 + u16(mm, ip + 4)[0]
                if stop > off or stop == l4:  # a length of 0 (jumbogram, offloaded)
                    stop = off
                src, dst = mm[ip + 8:ip + 24], mm[ip + 24:ip + 40]
                family, alen, a = socket.AF_INET6, 16, ip + 8
            elif e0 == 8 and e1 == 6:  # ARP
                continue
            else:  # QinQ, anything else: the full look
                _scan(mm, iter([(rec, sec, frac // 1000 if nano else frac, caplen, wire, d, 1)]),
                      st)
                continue
            if proto == 6:
                if l4 + 20 > stop:
                    continue
                body = l4 + (mm[l4 + 12] >> 4) * 4
                if body >= stop:  # no payload (most acknowledgements)
                    continue
                reg = tcp
            else:
                if l4 + 8 > off:
                    continue
                if sport in announce_ports or dport in announce_ports:
                    add_announcement(family, mm[a:a + alen], sport, mm[a + alen:a + 2 * alen],
                                     dport, mm[l4 + 8:min(off, l4 + u16(mm, l4 + 4)[0])])
                body = l4 + 8
                if body >= stop or (sport not in udp and dport not in udp):
                    continue
                reg = udp
        except (IndexError, struct.error):  # a record cut inside its headers
            continue
        packet(reg, proto, src, sport, dst, dport,
               sec * 1000 + (frac // 1_000_000 if nano else frac // 1000), mm[body:stop])
    if hi >= 0:
        w.clock = clock
    return w.info(name, "pcap", (linktype,), packets, size)


def _scan(mm: mmap.mmap, records: Iterator[tuple[int, ...]], st: _State) -> None:
    """Records of any link type and format (``_Record`` of ``features.captures``): a few
    offsets per record, then ``_State.packet`` for payload-carrying TCP and UDP packets."""
    u16, ports_at, addrs = _U16, _PORTS_AT, _ADDRS
    tcp, udp, announce_ports = st.tcp, st.udp, st.announce_ports
    add_announcement, packet = st.announcer.add, st.packet
    for rec in records:
        caplen, d, linktype = rec[3], rec[5], rec[6] & 0x0FFFFFFF
        end = d + caplen
        try:
            # the link layer: where the IP header starts
            if linktype == 1:  # Ethernet, VLAN tags (802.1Q, QinQ) skipped
                ip = d + 14
                etype = u16(mm, d + 12)[0]
                while etype in _VLAN:
                    etype = u16(mm, ip + 2)[0]
                    ip += 4
                if etype != 0x0800 and etype != 0x86DD:
                    continue
            elif linktype in (12, 14, 101, 228, 229):  # raw IP
                ip = d
            elif linktype == 113:  # Linux cooked (SLL)
                ip = d + 16
            elif linktype == 276:  # Linux cooked v2 (SLL2)
                ip = d + 20
            elif linktype in (0, 108):  # BSD loopback: a 4-byte address family
                ip = d + 4
            else:
                continue
            if ip >= end:
                continue
            version = mm[ip] >> 4
            src: int | bytes
            dst: int | bytes
            if version == 4:
                proto = mm[ip + 9]
                if u16(mm, ip + 6)[0] & 0x3FFF:  # a fragment: not parsed
                    continue
                l4 = ip + (mm[ip] & 0x0F) * 4
                stop = ip + u16(mm, ip + 2)[0]  # Ethernet padding left out
                if stop > end or stop < l4:  # a length of 0 (offloaded) or past the end
                    stop = end
                family, alen, a = socket.AF_INET, 4, ip + 12
                src, dst = addrs(mm, a)
            elif version == 6:
                proto = mm[ip + 6]  # TCP or UDP right after the fixed header
                l4 = ip + 40
                stop = l4 + u16(mm, ip + 4)[0]
                if stop > end or stop == l4:  # a length of 0 (jumbogram, offloaded)
                    stop = end
                family, alen, a = socket.AF_INET6, 16, ip + 8
                src, dst = mm[a:a + 16], mm[a + 16:a + 32]
                if len(dst) != 16:
                    continue
            else:
                continue
            if proto == 6:
                if l4 + 20 > stop:
                    continue
                sport, dport = ports_at(mm, l4)
                reg = tcp
                body = l4 + (mm[l4 + 12] >> 4) * 4
            elif proto == 17:
                if l4 + 8 > end:
                    continue
                sport, dport = ports_at(mm, l4)
                if sport in announce_ports or dport in announce_ports:
                    add_announcement(family, mm[a:a + alen], sport, mm[a + alen:a + 2 * alen],
                                     dport, mm[l4 + 8:min(end, l4 + u16(mm, l4 + 4)[0])])
                reg = udp
                body = l4 + 8
            else:
                continue
            if body >= stop:
                continue
        except (IndexError, struct.error):  # a record cut inside its headers
            continue
        packet(reg, proto, src, sport, dst, dport, rec[1] * 1000 + rec[2] // 1000,
               mm[body:stop])


def clean_entry(entry: str) -> str | None:
    """``kind=value`` with control characters removed and the value cut at ``MAX_VALUE``;
    None when the value is empty."""
    kind, eq, value = entry.partition("=")
    if not eq:
        return None
    value = _CONTROL.sub("", value).strip()[:MAX_VALUE].strip()
    return f"{kind}={value}" if value else None


def attach_payload(flows: pl.DataFrame, segments: pl.DataFrame) -> pl.DataFrame:
    """``flows`` with the ``payload`` column (and the industrial columns) filled from
    ``scan_capture``'s segments.

    A segment belongs to the TCP or UDP flow of the same endpoints (either orientation) whose
    time overlaps it most (or is nearest to it: a flow's times and the pass's can differ by a
    repaired record); a flow gets the entries of all its segments, ``>kind=value`` when its
    ``src`` sent it, ``<kind=value`` when its ``dst`` did, sorted, distinct, one a line, and
    the industrial column values of the segment that overlaps it most. Flows without keep
    nulls.
    """
    if flows.height == 0 or segments.height == 0:
        return flows
    keys = ["protocol", "src_ip", "src_port", "dst_ip", "dst_port"]
    f = flows.with_row_index("_i").filter(pl.col("protocol").is_in([TCP, UDP])).select(
        "_i", pl.col("protocol").cast(pl.Int16), "src_ip", pl.col("src_port").cast(pl.Int32),
        "dst_ip", pl.col("dst_port").cast(pl.Int32),
        pl.col("first_seen").dt.epoch("ms").alias("_f"),
        pl.col("last_seen").dt.epoch("ms").alias("_l"))
    seg = segments.with_row_index("_s")
    fwd = f.join(seg, left_on=keys, right_on=["protocol", "client_ip", "client_port",
                                              "server_ip", "server_port"]
                 ).with_columns(pl.lit(True).alias("_fwd"))
    rev = f.join(seg, left_on=keys, right_on=["protocol", "server_ip", "server_port",
                                              "client_ip", "client_port"]
                 ).with_columns(pl.lit(False).alias("_fwd"))
    both = pl.concat([fwd.select(sorted(fwd.columns)), rev.select(sorted(rev.columns))])
    if both.height == 0:
        return flows
    best = (both.with_columns(
        (pl.min_horizontal("_l", "last_ms") - pl.max_horizontal("_f", "first_ms"))
        .alias("_o"))
        .sort(["_s", "_o", "_f"], descending=[False, True, False])
        .unique("_s", keep="first", maintain_order=True))
    ent = best.select(
        "_i",
        pl.when("_fwd").then(pl.col("client_entries")).otherwise(pl.col("server_entries"))
        .str.split("\n").list.eval(pl.lit(">") + pl.element()).alias("_a"),
        pl.when("_fwd").then(pl.col("server_entries")).otherwise(pl.col("client_entries"))
        .str.split("\n").list.eval(pl.lit("<") + pl.element()).alias("_b"),
    ).select("_i", pl.concat_list(pl.col("_a").fill_null([]), pl.col("_b").fill_null([]))
             .alias("_e")).explode("_e").drop_nulls()
    per_flow = ent.group_by("_i").agg(pl.col("_e").unique().sort().str.join("\n")
                                      .alias("_payload"))
    ot = [c for c in OT_COLUMNS if c in flows.columns]
    if ot:
        cols = (best.sort(["_i", "_o"], descending=[False, True])
                .unique("_i", keep="first", maintain_order=True)
                .select("_i", *[pl.col(c).alias(f"_ot_{c}") for c in ot]))
        per_flow = per_flow.join(cols, on="_i", how="full", coalesce=True)
    out = flows.with_row_index("_i").join(per_flow, on="_i", how="left", maintain_order="left")
    return out.with_columns(
        pl.col("_payload").alias("payload"),
        *[pl.coalesce(f"_ot_{c}", c).cast(flows.schema[c]).alias(c) for c in ot],
    ).select(flows.columns)


__all__ = ["ACTIVE_TIMEOUT_S", "DEFAULT_CAP", "IDLE_TIMEOUT_S", "KINDS", "LOGINS",
           "MAX_BUFFER", "MAX_VALUE", "SEGMENT_SCHEMA", "Dissector", "Scan", "attach_payload",
           "clean_entry", "dissectors", "inspect_and_scan", "scan_capture"]
