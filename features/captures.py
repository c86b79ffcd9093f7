"""Recognising capture files before NFStream sees them.

NFStream (libpcap) reports some broken files clearly and silently accepts others: a pcap cut
in the middle of a record yields the flows before the cut and no word of the loss; one record
longer than 262,144 bytes ends the reading of a pcap there; a pcapng packet on an undeclared
interface, longer than its interface's snaplen or behind a bad block trailer is dropped; a
timestamp past 2038 in a pcap wraps to a negative time that NFStream then keeps for every later
packet. We read the file's framing ourselves (headers only, no packet parsing) so each input
gets an honest verdict, and when libpcap would lose or garble records we write a repaired copy
for it to read (``write_repaired``) and count what was repaired or skipped.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from flockwatch.features.errors import InputError, stat_input
from flockwatch.features.pcapfile import pcap_header, record_header

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp")

#: Link types whose frames NFStream decodes into IP flows.
IP_LINKTYPES: dict[int, str] = {
    0: "NULL",
    1: "ETHERNET",
    9: "PPP",
    12: "RAW",
    14: "RAW",
    101: "RAW",
    104: "C_HDLC",
    105: "IEEE802_11",
    108: "LOOP",
    113: "LINUX_SLL",
    127: "IEEE802_11_RADIOTAP",
    228: "IPV4",
    229: "IPV6",
    276: "LINUX_SLL2",
}
#: Names of common link types that carry no IP NFStream can read (for messages only).
OTHER_LINKTYPES: dict[int, str] = {
    7: "ARCNET",
    147: "USER0",
    148: "USER1",
    165: "BACNET_MS_TP",
    195: "IEEE802_15_4 (ZigBee)",
    215: "IEEE802_15_4_NONASK_PHY",
    230: "IEEE802_15_4_NOFCS",
    250: "USER/vendor",
}

#: Classic pcap magic numbers: (byte order, timestamp fractions per second).
PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e9),  # nanosecond resolution
    b"\xa1\xb2\xc3\xd4": (">", 1e6),
    b"\xa1\xb2\x3c\x4d": (">", 1e9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PCAPNG_BOM = b"\x1a\x2b\x3c\x4d"


#: libpcap's largest snaplen for the IP link types: a longer pcap record ends its reading of
#: the file, a longer pcapng packet is dropped. Repaired copies cut such records to it.
MAX_CAPLEN = 262_144
#: A record more than this many seconds ahead of the capture's clock, followed by one as far
#: behind it, is an odd timestamp: NFStream would stamp every later packet with its time.
JUMP_S = 3600
#: Times past 9999-12-31 cannot be shown as dates; before 1970 NFStream's clock wraps.
MAX_SEC = 253_402_300_799

_CUT = f"longer than {MAX_CAPLEN} bytes cut to that length (caplen above snaplen)"
_LIFT = "read whole though longer than their interface's snaplen (caplen above snaplen)"
_PAST_BLOCK = "cut to the end of the block (caplen past the block)"
_TIME = ("given the previous record's time (timestamp out of range, or more than "
         f"{JUMP_S} s ahead of the records around it)")
_TRAILER = "read by the length in the header (block trailer differs)"
_OPTIONS = "read without its options (malformed or unusable)"
#: libpcap stops at a pcapng block larger than this (16 MiB)
MAX_BLOCK = 16 * 1024 * 1024
_BIG = f"larger than libpcap's {MAX_BLOCK} bytes rewritten (packets) or left out"
_SHORT_IDB = "too short to describe an interface left out (its packets skipped)"
_UNITS = {_TRAILER: "block", _OPTIONS: "interface description", _BIG: "block",
          _SHORT_IDB: "interface description"}

#: Bytes of a mapped capture a walk passes between two releases of its pages (``Trim``).
TRIM_BYTES = 32 * 1024 * 1024
_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)


class Trim:
    """Gives back the pages of a mapped capture that a walk has passed.

    Every walk reads the whole mapping, and the pages it touched stay in the process's
    resident set until the mapping closes: without this, the peak memory of ``extract`` and
    ``score`` grew by the size of the capture (a 680 MB capture, 680 MB), for data read once.
    The page cache keeps the pages either way, so a later pass reads them as fast.
    Walks call it as ``if off >= trim.at: trim(off)``: one comparison a record.
    """

    __slots__ = ("at", "done", "mm")

    def __init__(self, mm: mmap.mmap) -> None:
        self.mm, self.at, self.done = mm, TRIM_BYTES, 0

    def __call__(self, off: int) -> int:
        """Release the pages before ``off`` (records from ``off`` on are still to be read)."""
        upto = off - off % mmap.PAGESIZE
        if upto > self.done and _DONTNEED is not None:
            self.mm.madvise(_DONTNEED, self.done, upto - self.done)
            self.done = upto
        self.at = off + TRIM_BYTES
        return self.at


@dataclass(frozen=True)
class Repair:
    """Records of one kind that libpcap would lose or garble, and what the repaired copy did."""

    what: str
    count: int
    #: byte offset of the first such record
    first_at: int
    #: not in the repaired copy (else kept, changed as ``what`` says)
    skipped: bool = False
    unit: str = "record"

    def __str__(self) -> str:
        return (f"{self.count} {self.unit}{'s' if self.count != 1 else ''} {self.what}; "
                f"first at byte {self.first_at}")


@dataclass(frozen=True)
class CaptureInfo:
    """What the framing of a capture file says."""

    path: str
    format: str  # "pcap" or "pcapng"
    linktypes: tuple[int, ...]
    packets: int  # packet records whose framing is whole (skipped ones included)
    truncated_at: int | None  # byte offset where reading stops, None when the file is whole
    #: why reading stops at ``truncated_at``: "cut" (the record runs past the end of the
    #: file) or "corrupt" (the block there has an impossible length or byte order)
    stop: str = ""
    size: int = 0
    repairs: tuple[Repair, ...] = ()
    #: libpcap needs a repaired copy (``write_repaired``): records to repair, or a pcapng
    #: whose packets are not all on interfaces of its first interface's link type and snaplen
    needs_repair: bool = False
    #: offsets of the records whose time a repaired copy replaces (see ``_Walk.time``)
    odd_times: frozenset[int] = field(default=frozenset(), repr=False)
    #: (seconds, microseconds) of the first usable time, for odd records before it
    first_time: tuple[int, int] = field(default=(0, 0), repr=False)

    @property
    def has_ip_linktype(self) -> bool:
        return any(lt in IP_LINKTYPES for lt in self.linktypes)

    def linktype_names(self) -> str:
        names = [
            f"{lt} ({IP_LINKTYPES.get(lt) or OTHER_LINKTYPES.get(lt) or 'unknown'})"
            for lt in self.linktypes
        ]
        return ", ".join(names) or "none"


def is_capture_name(path: Path) -> bool:
    return path.name.lower().endswith(CAPTURE_SUFFIXES)


def inspect_capture(path: str | os.PathLike[str], *, walk: bool = True) -> CaptureInfo:
    """Read a capture's framing; raise ``InputError`` when it is no usable capture.

    With ``walk=False`` only the file header is read (packets and truncation are not known:
    ``packets`` is -1 and ``truncated_at`` None) for classic pcap; pcapng is always walked
    (its interface blocks carry the link types).
    """
    name = str(path)
    size = stat_input(path).st_size
    if size == 0:
        raise InputError(name, "empty file (0 bytes), expected a pcap or pcapng capture")
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            magic = mm[:4]
            if magic in PCAP_MAGIC:
                return _inspect_pcap(name, mm, magic, walk)
            if magic == _PCAPNG_SHB:
                return _inspect_pcapng(name, mm)
    except PermissionError:
        raise InputError(name, "permission denied") from None
    except OSError as exc:
        raise InputError(name, f"cannot read: {exc.strerror or exc}") from None
    if magic[:2] == b"\x1f\x8b":
        raise InputError(name, "gzip-compressed; decompress it first (gunzip)")
    raise InputError(name, "not a pcap or pcapng capture (unrecognised file header)")


class _Walk:
    """What one pass over a capture's records found: repairs by kind, odd times, the stop."""

    def __init__(self) -> None:
        self.kinds: dict[str, list[int]] = {}  # what -> [count, first offset, skipped]
        self.stop_at: int | None = None
        self.stop = ""
        self.odd: set[int] = set()
        self.clock: int | None = None
        self.cand: tuple[int, int, int] | None = None  # (offset, seconds, microseconds)
        self.first_time: tuple[int, int] | None = None
        self.mixed = False  # pcapng packets on interfaces unlike the first (link type, snaplen)

    def note(self, what: str, at: int, skipped: bool = False) -> None:
        k = self.kinds.get(what)
        if k is None:
            self.kinds[what] = [1, at, skipped]
        else:
            k[0] += 1

    def halt(self, at: int, why: str) -> None:
        self.stop_at, self.stop = at, why

    def time(self, at: int, sec: int, usec: int) -> None:
        """Judge a record's time with one record of look-ahead, the way NFStream's clock
        needs: it never goes back, so one record far ahead would stamp all later packets.
        A record far ahead of the clock is odd when the next one comes back; when the next
        one stays ahead too, the capture really jumped and the clock moves with it."""
        if not 0 <= sec <= MAX_SEC:
            self.odd.add(at)
            return
        cand = self.cand
        if cand is not None:
            self.cand = None
            if sec < cand[1] - JUMP_S:
                self.odd.add(cand[0])
            else:
                self._good(cand[1], cand[2])
        if self.clock is None or sec > self.clock + JUMP_S:
            self.cand = (at, sec, usec)
            return
        self._good(sec, usec)

    def _good(self, sec: int, usec: int) -> None:
        if self.first_time is None:
            self.first_time = (sec, usec)
        if self.clock is None or sec > self.clock:
            self.clock = sec

    def info(self, name: str, fmt: str, linktypes: tuple[int, ...], packets: int,
             size: int) -> CaptureInfo:
        if self.cand is not None:
            self._good(self.cand[1], self.cand[2])
        repairs = [Repair(what, n, at, bool(skipped), _UNITS.get(what, "record"))
                   for what, (n, at, skipped) in self.kinds.items()]
        if self.odd:
            repairs.append(Repair(_TIME, len(self.odd), min(self.odd)))
        return CaptureInfo(name, fmt, linktypes, packets, self.stop_at, self.stop, size,
                           tuple(repairs), bool(repairs) or self.mixed, frozenset(self.odd),
                           self.first_time or (0, 0))


# A record as the walkers give it: (offset, seconds, microseconds, caplen, wire length, data
# offset, link type).
_Record = tuple[int, int, int, int, int, int, int]


def _inspect_pcap(name: str, mm: mmap.mmap, magic: bytes, walk: bool = True) -> CaptureInfo:
    size = len(mm)
    if size < 24:
        raise InputError(name, f"truncated pcap: file header cut at byte {size} of 24")
    bo = PCAP_MAGIC[magic][0]
    linktype = struct.unpack_from(bo + "I", mm, 20)[0] & 0x0FFFFFFF
    if not walk:
        return CaptureInfo(name, "pcap", (linktype,), -1, None, size=size)
    # The framing loop of _pcap_records, inlined: this walk runs on every capture read.
    w = _Walk()
    nano = PCAP_MAGIC[magic][1] > 1e6
    unpack = struct.Struct(bo + _pcap_record_format(bo)).unpack_from
    off, packets = 24, 0
    clock, hi = 0, -1  # seconds up to ``hi`` need no judging: the clock is set, none pending
    trim = Trim(mm)
    trim_at = trim.at
    while off < size:
        if off >= trim_at:
            trim_at = trim(off)
        if off + 16 > size:
            w.halt(off, "cut")
            break
        sec, frac, caplen, _ = unpack(mm, off)
        if off + 16 + caplen > size:
            w.halt(off, "cut")
            break
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
        off += 16 + caplen
        packets += 1
    if hi >= 0:
        w.clock = clock
    return w.info(name, "pcap", (linktype,), packets, size)


def _pcap_record_format(bo: str) -> str:
    """A record header as libpcap reads it: the seconds of a file in the host's byte order
    are signed (past 2038 they wrap to before 1970), those of a byte-swapped file unsigned."""
    return "iIII" if bo == ("<" if sys.byteorder == "little" else ">") else "IIII"


def _pcap_records(mm: mmap.mmap, magic: bytes, w: _Walk) -> Iterator[_Record]:
    bo, div = PCAP_MAGIC[magic]
    nano = div > 1e6
    linktype = struct.unpack_from(bo + "I", mm, 20)[0]
    hdr = struct.Struct(bo + _pcap_record_format(bo))
    size = len(mm)
    off = 24
    trim = Trim(mm)
    while off < size:
        if off >= trim.at:
            trim(off)
        if off + 16 > size:
            return w.halt(off, "cut")
        sec, frac, caplen, wire = hdr.unpack_from(mm, off)
        if off + 16 + caplen > size:
            return w.halt(off, "cut")
        yield off, sec, frac // 1000 if nano else frac, caplen, wire, off + 16, linktype
        off += 16 + caplen


def _inspect_pcapng(name: str, mm: mmap.mmap) -> CaptureInfo:
    size = len(mm)
    if size < 12:
        raise InputError(name, f"truncated pcapng: section header cut at byte {size}")
    if _section_order(mm, 0) is None:
        raise InputError(name, "not a pcapng capture (bad byte-order magic)")
    w = _Walk()
    packets = 0
    linktypes: list[int] = []
    for at, sec, usec, caplen, _, _, _ in _pcapng_records(mm, w, linktypes):
        if caplen > MAX_CAPLEN:
            w.note(_CUT, at)
        w.time(at, sec, usec)
        packets += 1
    packets += sum(n for n, _, skipped in w.kinds.values() if skipped)
    return w.info(name, "pcapng", tuple(dict.fromkeys(linktypes)), packets, size)


def _section_order(mm: mmap.mmap, off: int) -> str | None:
    bom = mm[off + 8:off + 12]
    return "<" if bom == _PCAPNG_BOM[::-1] else ">" if bom == _PCAPNG_BOM else None


@dataclass
class _Iface:
    linktype: int
    snaplen: int
    limit: int  # longest packet libpcap reads on it
    units: int  # timestamp units per second
    offset: int  # seconds added to its timestamps


def _snaplen(snaplen: int) -> int:
    """libpcap's limit for an interface's snaplen: 0 or a negative int32 means none."""
    return snaplen if 0 < snaplen < 2**31 else MAX_CAPLEN


def _pcapng_records(mm: mmap.mmap, w: _Walk, linktypes: list[int]) -> Iterator[_Record]:
    """Every packet libpcap can be given (skipped ones are noted in ``w``, not yielded).

    libpcap drops a packet on an interface no block describes, one longer than the snaplen of
    its interface (or of the first interface), one whose caplen runs past its block, or one
    whose block trailer disagrees with its header; a repaired copy keeps all but the first.
    """
    size = len(mm)
    off = 0
    bo = "<"
    ifaces: list[_Iface | None] = []
    first: _Iface | None = None
    trim = Trim(mm)
    while off < size:
        if off >= trim.at:
            trim(off)
        if off + 12 > size:
            return w.halt(off, "cut")
        if mm[off:off + 4] == _PCAPNG_SHB:  # a new section: its own byte order, interfaces
            order = _section_order(mm, off)
            if order is None:
                return w.halt(off, "corrupt")
            bo, ifaces = order, []
        btype, blen = struct.unpack_from(bo + "II", mm, off)
        if blen < 12 or blen % 4:
            return w.halt(off, "corrupt")
        if off + blen > size:
            return w.halt(off, "cut")
        if struct.unpack_from(bo + "I", mm, off + blen - 4)[0] != blen:
            w.note(_TRAILER, off)
        if blen > MAX_BLOCK:
            w.note(_BIG, off)
        if btype == 1:  # interface description block
            iface = _read_idb(mm, off, blen, bo, w)
            ifaces.append(iface)
            if iface is not None:
                linktypes.append(iface.linktype)
                first = first or iface
        elif btype in (2, 3, 6):  # obsolete, simple, enhanced packet block
            rec = _packet(mm, off, btype, blen, bo, ifaces, w)
            if rec is not None:
                iface = ifaces[0 if btype == 3 else rec[6]]
                assert iface is not None and first is not None
                if btype != 3 and MAX_CAPLEN >= rec[3] > min(iface.limit, first.limit):
                    w.note(_LIFT, off)
                # libpcap drops a packet on an interface whose link type or snaplen is not
                # the first interface's; the repaired copy has one interface
                if (iface.linktype, iface.snaplen) != (first.linktype, first.snaplen):
                    w.mixed = True
                yield rec[:6] + (iface.linktype,)
        off += blen


def _read_idb(mm: mmap.mmap, off: int, blen: int, bo: str, w: _Walk) -> _Iface | None:
    if blen < 20:  # libpcap refuses the whole file; the repaired copy goes without it
        w.note(_SHORT_IDB, off)
        return None
    linktype, _, snaplen = struct.unpack_from(bo + "HHI", mm, off + 8)
    units, offset = 10**6, 0
    p, end = off + 16, off + blen - 4
    seen: set[int] = set()
    while p + 4 <= end:
        code, olen = struct.unpack_from(bo + "HH", mm, p)
        if code == 0:
            break
        if (p + 4 + olen > end or (code == 9 and olen != 1) or (code == 14 and olen != 8)
                or (code in (9, 14) and code in seen)):
            w.note(_OPTIONS, off)
            return _Iface(linktype, snaplen, _snaplen(snaplen), 10**6, 0)
        seen.add(code)
        if code == 9:
            res = mm[p + 4]
            # libpcap refuses the whole file for finer resolutions than these
            if (res & 0x80 and res & 0x7F > 63) or (not res & 0x80 and res > 19):
                w.note(_OPTIONS, off)
                return _Iface(linktype, snaplen, _snaplen(snaplen), 10**6, 0)
            units = 2 ** (res & 0x7F) if res & 0x80 else 10**res
        elif code == 14:
            offset = struct.unpack_from(bo + "q", mm, p + 4)[0]
        p += 4 + ((olen + 3) & ~3)
    return _Iface(linktype, snaplen, _snaplen(snaplen), units, offset)


def _packet(mm: mmap.mmap, off: int, btype: int, blen: int, bo: str,
            ifaces: list[_Iface | None], w: _Walk) -> _Record | None:
    if btype == 3:  # simple packet block: interface 0, no time of its own
        iface0 = ifaces[0] if ifaces else None
        if blen < 16 or iface0 is None:
            w.note("skipped (simple packet block before any interface description, "
                   "or too short)", off, skipped=True)
            return None
        wire = struct.unpack_from(bo + "I", mm, off + 8)[0]
        # libpcap gives it time 0 plus the interface's offset: a negative offset wraps
        return off, iface0.offset, 0, min(wire, blen - 16), wire, off + 12, 0
    if blen < 32:
        w.note("skipped (packet block too short to hold its header)", off, skipped=True)
        return None
    if btype == 2:
        ifid, _, hi, lo, caplen, wire = struct.unpack_from(bo + "HHIIII", mm, off + 8)
    else:
        ifid, hi, lo, caplen, wire = struct.unpack_from(bo + "IIIII", mm, off + 8)
    if ifid >= len(ifaces) or ifaces[ifid] is None:
        w.note("skipped (packet on an interface no valid description block declares)", off,
               skipped=True)
        return None
    iface = ifaces[ifid]
    assert iface is not None
    if caplen > blen - 32:
        w.note(_PAST_BLOCK, off)
        caplen = blen - 32
    ts = (hi << 32) | lo
    sec, frac = divmod(ts, iface.units)
    return off, sec + iface.offset, frac * 10**6 // iface.units, caplen, wire, off + 28, ifid


@dataclass(frozen=True)
class RepairedPart:
    """One file of a repaired copy: the packets of one link type."""

    path: Path
    linktype: int
    packets: int


def write_repaired(path: str | os.PathLike[str], info: CaptureInfo,
                   folder: str | os.PathLike[str]) -> list[RepairedPart]:
    """Write what libpcap can read of ``path`` into ``folder``, one file per link type.

    Records are cut to ``MAX_CAPLEN``, odd times replaced by the previous record's, pcapng
    packets on undeclared interfaces left out, the rest rewritten with whole framing (one
    interface, no options). Parts come in the order of their link types' first packets.
    """
    parts: dict[int, tuple[Path, BinaryIO, list[bytes]]] = {}
    counts: dict[int, int] = {}
    last = info.first_time
    pcap = info.format == "pcap"
    w = _Walk()
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        bo = PCAP_MAGIC[mm[:4]][0] if pcap else "<"
        records = _pcap_records(mm, mm[:4], w) if pcap else _pcapng_records(mm, w, [])
        try:
            for at, sec, usec, caplen, wire, data, linktype in records:
                if at not in info.odd_times:
                    last = (sec, usec)
                caplen = min(caplen, MAX_CAPLEN)
                part = parts.get(linktype)
                if part is None:
                    target = Path(folder) / f"{len(parts)}.{info.format}"
                    part = parts[linktype] = (target, target.open("wb"), [])
                    part[1].write(pcap_header(linktype, MAX_CAPLEN, bo) if pcap
                                  else _pcapng_header(linktype))
                    counts[linktype] = 0
                counts[linktype] += 1
                payload = mm[data:data + caplen]
                wire = max(wire, caplen)
                if pcap:
                    part[2].append(record_header(last[0] % 2**32, last[1], caplen, wire, bo)
                                   + payload)
                else:
                    ts = last[0] * 10**6 + last[1]
                    blen = 32 + caplen + (-caplen % 4)
                    part[2].append(struct.pack("<IIIIIII", 6, blen, 0, ts >> 32, ts & 0xFFFFFFFF,
                                               caplen, wire) + payload + bytes(-caplen % 4)
                                   + struct.pack("<I", blen))
                if len(part[2]) >= 4096:
                    part[1].write(b"".join(part[2]))
                    part[2].clear()
            for _, out, chunks in parts.values():
                out.write(b"".join(chunks))
        finally:
            for _, out, _ in parts.values():
                out.close()
    return [RepairedPart(target, lt & 0x0FFFFFFF, counts[lt])
            for lt, (target, _, _) in parts.items()]


def _pcapng_header(linktype: int) -> bytes:
    shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    idb = struct.pack("<IIHHII", 1, 20, linktype & 0xFFFF, 0, 0, 20)
    return shb + idb
