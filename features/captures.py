"""Recognising capture files before NFStream sees them.

NFStream (libpcap) reports some broken files clearly and silently accepts others: a pcap cut
in the middle of a record yields the flows before the cut and no word of the loss. We read the
file's framing ourselves (headers only, no packet parsing) so each input gets an honest verdict.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from flockwatch.features.errors import InputError

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


@dataclass(frozen=True)
class CaptureInfo:
    """What the framing of a capture file says."""

    path: str
    format: str  # "pcap" or "pcapng"
    linktypes: tuple[int, ...]
    packets: int
    truncated_at: int | None  # byte offset of the cut, None when the file is whole

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
    p = Path(path)
    name = str(path)
    if not p.exists():
        raise InputError(name, "no such file")
    if p.is_dir():
        raise InputError(name, "is a folder, expected a capture file")
    try:
        size = p.stat().st_size
        if size == 0:
            raise InputError(name, "empty file (0 bytes), expected a pcap or pcapng capture")
        with p.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            magic = mm[:4]
            if magic in PCAP_MAGIC:
                return _inspect_pcap(name, mm, PCAP_MAGIC[magic][0], walk)
            if magic == _PCAPNG_SHB:
                return _inspect_pcapng(name, mm)
    except PermissionError:
        raise InputError(name, "permission denied") from None
    except OSError as exc:
        raise InputError(name, f"cannot read: {exc.strerror or exc}") from None
    if magic[:2] == b"\x1f\x8b":
        raise InputError(name, "gzip-compressed; decompress it first (gunzip)")
    raise InputError(name, "not a pcap or pcapng capture (unrecognised file header)")


def _inspect_pcap(name: str, mm: mmap.mmap, bo: str, walk: bool = True) -> CaptureInfo:
    size = len(mm)
    if size < 24:
        raise InputError(name, f"truncated pcap: file header cut at byte {size} of 24")
    linktype = struct.unpack_from(bo + "I", mm, 20)[0] & 0x0FFFFFFF
    if not walk:
        return CaptureInfo(name, "pcap", (linktype,), -1, None)
    hdr = struct.Struct(bo + "IIII")
    off, packets = 24, 0
    while off < size:
        if off + 16 > size:
            return CaptureInfo(name, "pcap", (linktype,), packets, off)
        incl = hdr.unpack_from(mm, off)[2]
        if off + 16 + incl > size:
            return CaptureInfo(name, "pcap", (linktype,), packets, off)
        off += 16 + incl
        packets += 1
    return CaptureInfo(name, "pcap", (linktype,), packets, None)


def _inspect_pcapng(name: str, mm: mmap.mmap) -> CaptureInfo:
    size = len(mm)
    if size < 12:
        raise InputError(name, f"truncated pcapng: section header cut at byte {size}")
    bom = mm[8:12]
    if bom == _PCAPNG_BOM[::-1]:
        bo = "<"
    elif bom == _PCAPNG_BOM:
        bo = ">"
    else:
        raise InputError(name, "not a pcapng capture (bad byte-order magic)")
    u32 = struct.Struct(bo + "I")
    off, packets = 0, 0
    linktypes: list[int] = []
    while off < size:
        if off + 12 > size:
            return CaptureInfo(name, "pcapng", tuple(linktypes), packets, off)
        btype = u32.unpack_from(mm, off)[0]
        blen = u32.unpack_from(mm, off + 4)[0]
        if blen < 12 or blen % 4 or off + blen > size:
            return CaptureInfo(name, "pcapng", tuple(linktypes), packets, off)
        if btype == 1:  # interface description block
            linktypes.append(struct.unpack_from(bo + "H", mm, off + 8)[0])
        elif btype in (3, 6):  # simple / enhanced packet block
            packets += 1
        off += blen
    return CaptureInfo(name, "pcapng", tuple(dict.fromkeys(linktypes)), packets, None)
