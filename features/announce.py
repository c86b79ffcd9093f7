"""What devices announce about themselves in clear text: product evidence beyond NFStream.

A device's DHCP vendor class (option 60; DHCPv6 option 16), the mDNS service types it
announces or asks for (``_hap._tcp``, ``_googlecast._tcp``) and its SSDP ``SERVER``, ``ST``,
``NT``, ``USN`` and ``USER-AGENT`` strings name its product the same way at every site, so
they carry a device type to a new network. NFStream does not expose them, and an NFStream
plugin would put its meter into per-packet Python mode, so this is a pass of its own over the
capture: the record framing of ``features.captures`` (the same walk that writes the repaired
copies libpcap reads, so both passes see the same packets), then a few byte offsets per
record to find UDP to or from ports 67/68, 546/547, 5353 and 1900. Only those packets are
parsed; a malformed one is skipped, never raised on.

Strings that name a unit rather than a product are left out: an mDNS instance name (only the
service part of a name is kept) and the ``uuid:`` part of an SSDP ``USN``, ``NT`` or ``ST``.
"""

from __future__ import annotations

import mmap
import os
import re
import socket
import struct
from collections.abc import Iterator

import polars as pl

from flockwatch.features.captures import (
    _PCAPNG_SHB,
    PCAP_MAGIC,
    Trim,
    _pcap_records,
    _pcapng_records,
    _Walk,
)
from flockwatch.features.errors import InputError, stat_input

#: The kinds of entry, in the order the flow column documents them.
KINDS = ("dhcp_vendor_class", "dhcpv6_vendor_class", "mdns_service", "ssdp_server",
         "ssdp_st", "ssdp_nt", "ssdp_usn", "ssdp_user_agent")
#: Longest value kept (characters); longer ones are cut.
MAX_VALUE = 200
#: Distinct values kept per sending endpoint (address and port): a chatty responder (a
#: computer announcing dozens of services) costs bounded memory and work.
MAX_PER_ENDPOINT = 50

#: Columns of ``read_announcements``: the packet's endpoints (``src`` sent it) and the entry.
ANNOUNCEMENT_SCHEMA = pl.Schema({
    "src_ip": pl.String(), "src_port": pl.Int32(), "dst_ip": pl.String(),
    "dst_port": pl.Int32(), "entry": pl.String(),
})

_PORTS = frozenset({67, 68, 546, 547, 5353, 1900})
_VLAN = frozenset({0x8100, 0x88A8, 0x9100})
_U16 = struct.Struct("!H").unpack_from
_PORTS_AT = struct.Struct("!HH").unpack_from
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SSDP_KINDS = {b"server": "ssdp_server", b"st": "ssdp_st", b"nt": "ssdp_nt",
               b"usn": "ssdp_usn", b"user-agent": "ssdp_user_agent"}
_DHCP_COOKIE = b"\x63\x82\x53\x63"

# A sender's packet key: (address family, source address, source port, destination address,
# destination port); addresses as raw bytes until the end.
_Key = tuple[int, bytes, int, bytes, int]


def read_announcements(path: str | os.PathLike[str]) -> pl.DataFrame:
    """The distinct announcement entries of a capture, per UDP endpoint pair and sender.

    Returns ``ANNOUNCEMENT_SCHEMA`` rows: ``src_ip``/``src_port`` sent the entry to
    ``dst_ip``/``dst_port``; ``entry`` is ``kind=value`` (``KINDS``). Raises ``InputError``
    when the file is no pcap or pcapng capture; a malformed packet is skipped.

    >>> read_announcements("hue.pcap")["entry"].to_list()  # doctest: +SKIP
    ['ssdp_server=Linux/3.14.0 UPnP/1.0 IpBridge/1.9.0', 'mdns_service=_hap._tcp', ...]
    """
    name = str(path)
    if stat_input(path).st_size == 0:
        raise InputError(name, "empty file (0 bytes), expected a pcap or pcapng capture")
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            magic = mm[:4]
            if magic in PCAP_MAGIC and len(mm) >= 24:
                records = _pcap_candidates(mm, magic)
            elif magic == _PCAPNG_SHB and len(mm) >= 12:
                records = _pcapng_records(mm, _Walk(), [])
            else:
                raise InputError(name, "not a pcap or pcapng capture (unrecognised or cut "
                                       "file header)")
            found = _scan(mm, records)
    except OSError as exc:
        raise InputError(name, f"cannot read: {exc.strerror or exc}") from None
    return _frame(found)


def _ntop(family: int, addr: bytes) -> str:
    # inet_ntop, as NFStream formats addresses, so the two tables join
    return socket.inet_ntop(family, addr)


def _pcap_candidates(mm: mmap.mmap, magic: bytes) -> Iterator[tuple[int, ...]]:
    """The records of a classic pcap that may be announcements, framed as
    ``captures._pcap_records`` frames them (it stops where it does). Most packets of a capture
    are untagged IPv4 on Ethernet: those that are not UDP to or from an announcing port are
    dropped here, in the framing loop, which makes the pass about twice as fast."""
    bo = PCAP_MAGIC[magic][0]
    linktype = struct.unpack_from(bo + "I", mm, 20)[0] & 0x0FFFFFFF
    if linktype != 1:
        yield from _pcap_records(mm, magic, _Walk())
        return
    caplen_at = struct.Struct(bo + "I").unpack_from
    ports_at, ports = _PORTS_AT, _PORTS
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
        off = d + caplen
        if caplen < 42:  # Ethernet, IP and UDP headers
            continue
        e0, e1, ip = mm[d + 12], mm[d + 13], d + 14
        if e0 == 0x81 and e1 == 0:  # one 802.1Q tag
            e0, e1, ip = mm[d + 16], mm[d + 17], d + 18
        if e0 == 8 and e1 == 0:  # IPv4
            if mm[ip + 9] != 17:
                continue
            udp = ip + (mm[ip] & 0x0F) * 4
        elif e0 == 0x86 and e1 == 0xDD:  # IPv6
            if mm[ip + 6] != 17:
                continue
            udp = ip + 40
        elif e0 == 8 and e1 == 6:  # ARP
            continue
        else:  # QinQ, anything else: the full look
            udp = off
        if udp + 4 <= off:
            sport, dport = ports_at(mm, udp)
            if sport not in ports and dport not in ports:
                continue
        yield off, 0, 0, caplen, caplen, d, 1


def _scan(mm: mmap.mmap, records: Iterator[tuple[int, ...]]) -> dict[_Key, set[str]]:
    """The hot loop: a few offsets per record, a parse only for the announcing ports."""
    announcer = Announcer()
    add = announcer.add
    u16, ports_at, ports = _U16, _PORTS_AT, _PORTS
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
                if mm[ip + 9] != 17 or u16(mm, ip + 6)[0] & 0x3FFF:  # UDP, no fragment
                    continue
                udp = ip + (mm[ip] & 0x0F) * 4
                family, alen, a = socket.AF_INET, 4, ip + 12
            elif version == 6:
                if mm[ip + 6] != 17:  # UDP right after the fixed header
                    continue
                udp = ip + 40
                family, alen, a = socket.AF_INET6, 16, ip + 8
            else:
                continue
            if udp + 8 > end:
                continue
            sport, dport = ports_at(mm, udp)
            if sport not in ports and dport not in ports:
                continue
            payload = mm[udp + 8:min(end, udp + u16(mm, udp + 4)[0])]
            sip, dip = mm[a:a + alen], mm[a + alen:a + 2 * alen]
            if len(dip) != alen:
                continue
        except (IndexError, struct.error):  # a record cut inside its headers
            continue
        add(family, sip, sport, dip, dport, payload)
    return announcer.found()


class Announcer:
    """The entries of announcing UDP packets, per sender key, bounded per endpoint: the part
    of the pass after the framing, shared with the payload pass (``features.payload``), which
    walks a capture once for both."""

    __slots__ = ("_found", "_parsed", "_per_sender")

    #: UDP ports whose packets are announcements (either end).
    PORTS = _PORTS

    def __init__(self) -> None:
        self._found: dict[_Key, set[str]] = {}
        self._per_sender: dict[tuple[bytes, int], set[str]] = {}
        self._parsed: dict[bytes, list[str]] = {}  # payload -> entries: they repeat verbatim

    def add(self, family: int, sip: bytes, sport: int, dip: bytes, dport: int,
            payload: bytes) -> None:
        """One UDP packet to or from an announcing port."""
        parsed = self._parsed
        entries = parsed.get(payload)
        if entries is None:
            entries = _parse(sport, dport, payload)
            if len(parsed) > 4096:
                parsed.clear()
            parsed[payload] = entries
        if not entries:
            return
        mine = self._per_sender.setdefault((sip, sport), set())
        kept = self._found.setdefault((family, sip, sport, dip, dport), set())
        for e in entries:
            if e in mine:
                kept.add(e)
            elif len(mine) < MAX_PER_ENDPOINT:
                mine.add(e)
                kept.add(e)

    def found(self) -> dict[_Key, set[str]]:
        return {k: v for k, v in self._found.items() if v}

    def frame(self) -> pl.DataFrame:
        """``ANNOUNCEMENT_SCHEMA`` rows of what was found."""
        return _frame(self.found())


def _frame(found: dict[_Key, set[str]]) -> pl.DataFrame:
    rows = [(_ntop(fam, sip), sport, _ntop(fam, dip), dport, entry)
            for (fam, sip, sport, dip, dport), entries in found.items() for entry in entries]
    return pl.DataFrame(rows, schema=ANNOUNCEMENT_SCHEMA, orient="row")


def _parse(sport: int, dport: int, payload: bytes) -> list[str]:
    """The entries of one UDP payload by its ports; malformed data gives what parsed."""
    try:
        if sport == 5353 or dport == 5353:
            return _mdns(payload)
        if sport == 1900 or dport == 1900:
            return _ssdp(payload)
        if sport in (67, 68) or dport in (67, 68):
            return _dhcp(payload)
        return _dhcpv6(payload)
    except (IndexError, struct.error, ValueError):  # a guard; the parsers check bounds
        return []


def _clean(value: str) -> str:
    return _CONTROL.sub("", value).strip()[:MAX_VALUE].strip()


def _entry(kind: str, raw: bytes | str) -> str | None:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    value = _clean(text)
    return f"{kind}={value}" if value else None


def _dhcp(p: bytes) -> list[str]:
    """DHCPv4/BOOTP: option 60 (vendor class identifier), after the magic cookie."""
    if len(p) < 240 or p[236:240] != _DHCP_COOKIE:
        return []
    out = []
    i, n = 240, len(p)
    while i < n:
        code = p[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= n:
            break
        length = p[i + 1]
        if code == 60:
            e = _entry("dhcp_vendor_class", p[i + 2:i + 2 + length])
            if e:
                out.append(e)
        i += 2 + length
    return out


def _dhcpv6(p: bytes) -> list[str]:
    """DHCPv6 client/server messages (not relayed ones): option 16 (vendor class), as
    ``enterprise-number:data[,data...]``."""
    if len(p) < 4 or p[0] in (12, 13):
        return []
    out = []
    i, n = 4, len(p)
    while i + 4 <= n:
        code, length = struct.unpack_from("!HH", p, i)
        body = p[i + 4:i + 4 + length]
        if code == 16 and len(body) >= 4:
            ent = struct.unpack_from("!I", body)[0]
            parts, j = [], 4
            while j + 2 <= len(body):
                k = struct.unpack_from("!H", body, j)[0]
                parts.append(body[j + 2:j + 2 + k].decode("utf-8", "replace"))
                j += 2 + k
            e = _entry("dhcpv6_vendor_class", f"{ent}:{','.join(parts)}")
            if e:
                out.append(e)
        i += 4 + length
    return out


def _ssdp(p: bytes) -> list[str]:
    """SSDP (HTTP over UDP): the product headers, ``uuid:`` unit parts removed."""
    lines = p.split(b"\n")
    first = lines[0].lstrip().upper()
    if not (first.startswith((b"NOTIFY", b"M-SEARCH", b"HTTP/"))):
        return []
    out = []
    for line in lines[1:50]:
        head, colon, value = line.partition(b":")
        if not colon:
            continue
        kind = _SSDP_KINDS.get(head.strip().lower())
        if kind is None:
            continue
        text = value.decode("utf-8", "replace").strip()
        if kind != "ssdp_server" and kind != "ssdp_user_agent":
            text = _no_uuid(text)
        e = _entry(kind, text)
        if e:
            out.append(e)
    return out


def _no_uuid(value: str) -> str:
    """``uuid:<unit>::urn:...`` -> ``urn:...``; a bare ``uuid:<unit>`` -> empty."""
    if value[:5].lower() != "uuid:":
        return value
    _, sep, rest = value.partition("::")
    return rest if sep else ""


def _mdns(p: bytes) -> list[str]:
    """mDNS/DNS-SD: the service part (``_hap._tcp``) of every question and record name and
    of PTR data; instance names (``Kitchen Light._hap._tcp``) name a unit, never kept."""
    n = len(p)
    if n < 12:
        return []
    qd, an, ns, ar = struct.unpack_from("!HHHH", p, 4)
    services: set[str] = set()
    i = 12
    for _ in range(min(qd, 256)):
        name, i = _name(p, i)
        if name is None or i + 4 > n:
            break
        _service(name, services)
        i += 4
    for _ in range(min(an + ns + ar, 512)):
        name, i = _name(p, i)
        if name is None or i + 10 > n:
            break
        rtype = struct.unpack_from("!H", p, i)[0]
        rdlen = struct.unpack_from("!H", p, i + 8)[0]
        rdata = i + 10
        _service(name, services)
        if rtype == 12:  # PTR: a service type (service enumeration) or an instance name
            target, _ = _name(p, rdata)
            if target is not None:
                _service(target, services)
        i = rdata + rdlen
        if i > n:
            break
    return [f"mdns_service={s}" for s in sorted(services)]


def _service(labels: list[bytes], out: set[str]) -> None:
    """Add the ``_service._proto`` of a name, if it has one: the last such pair, so a subtype
    ``_printer._sub._http._tcp`` gives ``_http._tcp``. The enumeration name
    ``_services._dns-sd._udp`` is no service of the device's and is left out."""
    for k in range(len(labels) - 1, 0, -1):
        proto = labels[k].lower()
        if proto in (b"_tcp", b"_udp") and labels[k - 1].startswith(b"_"):
            svc = labels[k - 1].lower()
            if svc == b"_dns-sd" and proto == b"_udp":
                return
            text = _clean(f"{svc.decode('utf-8', 'replace')}.{proto.decode()}")
            if text:
                out.add(text)
            return


def _name(p: bytes, i: int) -> tuple[list[bytes] | None, int]:
    """A DNS name at ``i`` (compression pointers followed, at most 32 jumps) and the offset
    after it in the message; ``None`` when malformed."""
    labels: list[bytes] = []
    n = len(p)
    after = -1
    for _ in range(160):
        if i >= n:
            return None, i
        length = p[i]
        if length == 0:
            return labels, (after if after >= 0 else i + 1)
        if length >= 0xC0:
            if i + 1 >= n:
                return None, i
            if after < 0:
                after = i + 2
            i = ((length & 0x3F) << 8) | p[i + 1]
            continue
        if length > 63 or i + 1 + length > n:
            return None, i
        labels.append(p[i + 1:i + 1 + length])
        i += 1 + length
    return None, i


def attach_announcements(flows: pl.DataFrame, ann: pl.DataFrame) -> pl.DataFrame:
    """``flows`` with its ``announcements`` column filled from ``read_announcements``.

    A UDP flow gets every entry sent between its two endpoints, in either direction:
    ``>kind=value`` when its ``src`` endpoint sent it, ``<kind=value`` when its ``dst`` did;
    entries sorted, distinct, one a line. Flows without any keep a null. Matching is by
    endpoints, not time: repeated flows of one endpoint pair all get its entries.
    """
    if flows.height == 0 or ann.height == 0:
        return flows
    keys = ["src_ip", "src_port", "dst_ip", "dst_port"]
    f = flows.with_row_index("_i").filter(pl.col("protocol") == 17).select(
        "_i", *[pl.col(c).cast(ANNOUNCEMENT_SCHEMA[c]) for c in keys])
    ann = ann.select(*keys, "entry").unique()
    sent = f.join(ann, on=keys).select("_i", pl.lit(">").add(pl.col("entry")).alias("_e"))
    reversed_ = ann.rename({"src_ip": "dst_ip", "dst_ip": "src_ip", "src_port": "dst_port",
                            "dst_port": "src_port"})
    got = f.join(reversed_, on=keys).select("_i", pl.lit("<").add(pl.col("entry")).alias("_e"))
    per_flow = pl.concat([sent, got]).group_by("_i").agg(
        pl.col("_e").unique().sort().str.join("\n").alias("_a"))
    out = flows.with_row_index("_i").join(per_flow, on="_i", how="left", maintain_order="left")
    return out.with_columns(pl.col("_a").alias("announcements")).select(flows.columns)


__all__ = ["ANNOUNCEMENT_SCHEMA", "KINDS", "Announcer", "attach_announcements",
           "read_announcements"]
