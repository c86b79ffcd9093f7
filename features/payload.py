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
from typing import Protocol

import polars as pl

from flockwatch.features.announce import Announcer
from flockwatch.features.captures import (
    _PCAPNG_SHB,
    PCAP_MAGIC,
    Trim,
    _pcap_record_format,
    _pcap_records,
    _pcapng_records,
    _Walk,
)
from flockwatch.features.errors import InputError, stat_input
from flockwatch.features.ot import OT_COLUMNS, OT_DISSECTORS

#: Flow timeouts of ``features.flows`` (NFStream's), repeated here so that ``features.flows``
#: can import this module; a test keeps the two equal.
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


#: Rows of ``scan_payload``: one piece of connection (a flow as NFStream cuts it) with
#: results. ``client_entries``/``server_entries`` hold ``kind=value`` sent by either end.
SEGMENT_SCHEMA = pl.Schema({
    "protocol": pl.Int16(), "client_ip": pl.String(), "client_port": pl.Int32(),
    "server_ip": pl.String(), "server_port": pl.Int32(), "first_ms": pl.Int64(),
    "last_ms": pl.Int64(), "client_entries": pl.List(pl.String()),
    "server_entries": pl.List(pl.String()),
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

    __slots__ = ("client", "dis", "done", "first", "last", "n_c", "n_s", "cap")

    def __init__(self, dis: Dissector, t: int) -> None:
        self.dis = dis
        self.first = self.last = t
        self.n_c = self.n_s = 0
        cap = getattr(dis, "cap", DEFAULT_CAP)
        self.cap = cap if cap is not None else -1
        self.done = False


# A connection's key: (ip protocol, client address, client port, server address, server
# port); addresses as raw bytes until the end.
_Key = tuple[int, bytes, int, bytes, int]


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
    name = str(path)
    if stat_input(path).st_size == 0:
        raise InputError(name, "empty file (0 bytes), expected a pcap or pcapng capture")
    reg = {} if not payload else dissectors() if registry is None else registry
    state = _State(reg, announcements, idle_timeout * 1000, active_timeout * 1000)
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            magic = mm[:4]
            if magic in PCAP_MAGIC and len(mm) >= 24:
                records = _pcap_candidates(mm, magic, state.tcp_ports, state.udp_ports)
            elif magic == _PCAPNG_SHB and len(mm) >= 12:
                records = _pcapng_records(mm, _Walk(), [])
            else:
                raise InputError(name, "not a pcap or pcapng capture (unrecognised or cut "
                                       "file header)")
            _scan(mm, records, state)
    except OSError as exc:
        raise InputError(name, f"cannot read: {exc.strerror or exc}") from None
    return Scan(state.announcer.frame(), state.segments())


def _pcap_candidates(mm: mmap.mmap, magic: bytes, tcp_ports: frozenset[int],
                     udp_ports: frozenset[int]) -> Iterator[tuple[int, ...]]:
    """The records of a classic pcap that may matter, framed as ``captures._pcap_records``
    frames them (it stops where it does). Most packets of a capture are untagged IP on
    Ethernet: those that are no TCP or UDP to or from a registered port are dropped here, in
    the framing loop, before their time is even read."""
    bo, div = PCAP_MAGIC[magic]
    linktype = struct.unpack_from(bo + "I", mm, 20)[0] & 0x0FFFFFFF
    if linktype != 1:
        yield from _pcap_records(mm, magic, _Walk())
        return
    nano = div > 1e6
    caplen_at = struct.Struct(bo + "I").unpack_from
    hdr = struct.Struct(bo + _pcap_record_format(bo)).unpack_from
    ports_at = _PORTS_AT
    size = len(mm)
    off = 24
    trim = Trim(mm)
    trim_at = trim.at
    while off + 16 <= size:
        if off >= trim_at:
            trim_at = trim(off)
        caplen = caplen_at(mm, off + 8)[0]
        d = off + 16
        if d + caplen > size:
            return
        rec = off
        off = d + caplen
        if caplen < 42:  # Ethernet, IP and UDP headers
            continue
        e0, e1, ip = mm[d + 12], mm[d + 13], d + 14
        if e0 == 0x81 and e1 == 0:  # one 802.1Q tag
            e0, e1, ip = mm[d + 16], mm[d + 17], d + 18
        if e0 == 8 and e1 == 0:  # IPv4
            proto = mm[ip + 9]
            l4 = ip + (mm[ip] & 0x0F) * 4
        elif e0 == 0x86 and e1 == 0xDD:  # IPv6
            proto = mm[ip + 6]
            l4 = ip + 40
        elif e0 == 8 and e1 == 6:  # ARP
            continue
        else:  # QinQ, anything else: the full look
            proto, l4 = 0, off
        if proto:
            if proto == 6:
                ports = tcp_ports
            elif proto == 17:
                ports = udp_ports
            else:
                continue
            if l4 + 4 <= off:
                sport, dport = ports_at(mm, l4)
                if sport not in ports and dport not in ports:
                    continue
        sec, frac, _, wire = hdr(mm, rec)
        yield rec, sec, frac // 1000 if nano else frac, caplen, wire, d, 1


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

    def close(self, key: _Key, flow: _Flow) -> None:
        """Keep what a finished piece of connection found (nothing when it found nothing)."""
        dis = flow.dis
        client: list[str] = []
        server: list[str] = []
        try:
            for by_server, entry in dis.entries():
                e = clean_entry(entry)
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
                          sorted(set(client)), sorted(set(server)), *values))

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
        return pl.DataFrame(self.rows, schema=SEGMENT_SCHEMA, orient="row")


def _ntop(addr: bytes) -> str:
    # inet_ntop, as NFStream formats addresses, so the two tables join
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


#: Candidate packets between two sweeps of idle connections.
_SWEEP_EVERY = 1 << 16


def _scan(mm: mmap.mmap, records: Iterator[tuple[int, ...]], st: _State) -> None:
    """The hot loop: a few offsets per record, a dissector call only for the first packets
    of a connection on a registered port."""
    u16, ports_at = _U16, _PORTS_AT
    tcp, udp, announce_ports = st.tcp, st.udp, st.announce_ports
    add_announcement = st.announcer.add
    open_ = st.open
    idle_ms, active_ms = st.idle_ms, st.active_ms
    countdown = _SWEEP_EVERY
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
            if version == 4:
                proto = mm[ip + 9]
                if u16(mm, ip + 6)[0] & 0x3FFF:  # a fragment: not parsed
                    continue
                l4 = ip + (mm[ip] & 0x0F) * 4
                stop = min(end, ip + u16(mm, ip + 2)[0])  # Ethernet padding left out
                alen, a = 4, ip + 12
            elif version == 6:
                proto = mm[ip + 6]  # TCP or UDP right after the fixed header
                l4 = ip + 40
                stop = min(end, l4 + u16(mm, ip + 4)[0])
                alen, a = 16, ip + 8
            else:
                continue
            if proto == 6:
                if l4 + 20 > stop:
                    continue
                sport, dport = ports_at(mm, l4)
                reg = tcp
                body = l4 + (mm[l4 + 12] >> 4) * 4
            elif proto == 17:
                if l4 + 8 > stop:
                    continue
                sport, dport = ports_at(mm, l4)
                if sport in announce_ports or dport in announce_ports:
                    add_announcement(
                        socket.AF_INET if alen == 4 else socket.AF_INET6,
                        mm[a:a + alen], sport, mm[a + alen:a + 2 * alen], dport,
                        mm[l4 + 8:min(end, l4 + u16(mm, l4 + 4)[0])])
                reg = udp
                body = l4 + 8
            else:
                continue
            make = reg.get(dport)
            other = reg.get(sport)
            if make is not None and (other is None or dport <= sport):
                to_server = True
            elif other is not None:
                make, to_server = other, False
            else:
                continue
            src, dst = mm[a:a + alen], mm[a + alen:a + 2 * alen]
            t = rec[1] * 1000 + rec[2] // 1000
        except (IndexError, struct.error):  # a record cut inside its headers
            continue
        key = (proto, src, sport, dst, dport) if to_server else (proto, dst, dport, src, sport)
        flow = open_.get(key)
        if flow is None or t - flow.last >= idle_ms or t - flow.first >= active_ms:
            if flow is not None:  # NFStream cuts it here: a new flow, a fresh dissector
                st.close(key, flow)
            try:
                flow = _Flow(make(), t)
            except Exception:  # noqa: BLE001 - a factory's bug: the flow goes unparsed
                continue
            open_[key] = flow
            countdown -= 1
            if countdown <= 0:
                countdown = _SWEEP_EVERY
                st.expire(t)
        else:
            flow.last = t
        if flow.done or body >= stop:
            continue
        if to_server:
            n = flow.n_c = flow.n_c + 1
        else:
            n = flow.n_s = flow.n_s + 1
        cap = flow.cap
        if cap >= 0 and n > cap:
            if flow.n_c >= cap and flow.n_s >= cap:
                flow.done = True
            continue
        try:
            flow.dis.packet(t, mm[body:stop], to_server)
        except Exception:  # noqa: BLE001 - the contract says never; a bug ends this flow only
            flow.done = True


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
        .list.eval(pl.lit(">") + pl.element()).alias("_a"),
        pl.when("_fwd").then(pl.col("server_entries")).otherwise(pl.col("client_entries"))
        .list.eval(pl.lit("<") + pl.element()).alias("_b"),
    ).select("_i", pl.concat_list("_a", "_b").alias("_e")).explode("_e").drop_nulls()
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
           "clean_entry", "dissectors", "scan_capture"]
