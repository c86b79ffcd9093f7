"""The classic pcap file format, written in one place.

The synthetic site generator, the repair of odd captures, the live sensor's window files and
the extraction benchmark all write classic pcap; they share this module so that a header or a
timestamp rounding cannot drift between them. Reading stays in ``features.captures``, which
has to be defensive about hostile files; writing only ever sees frames we hold.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

PCAP_VERSION = (2, 4)
ETHERNET = 1
_FLUSH_EVERY = 4096


def pcap_header(linktype: int = ETHERNET, snaplen: int = 65535, byte_order: str = "<") -> bytes:
    """The 24-byte global header, microsecond resolution, no time zone correction."""
    return struct.pack(byte_order + "IHHiIII", 0xA1B2C3D4, *PCAP_VERSION, 0, 0, snaplen, linktype)


def record_header(sec: int, usec: int, caplen: int, wire: int | None = None,
                  byte_order: str = "<") -> bytes:
    """The 16-byte record header; ``wire`` (the length on the wire) defaults to ``caplen``."""
    return struct.pack(byte_order + "IIII", sec, usec, caplen, caplen if wire is None else wire)


def split_time(ts: float) -> tuple[int, int]:
    """Seconds and microseconds of a POSIX time, rounded to the nearest microsecond (so that
    ``t`` written and read back is ``t`` to the microsecond, not one below it)."""
    sec = int(ts)
    usec = int(round((ts - sec) * 1e6))
    if usec >= 1_000_000:
        sec, usec = sec + 1, usec - 1_000_000
    return sec, usec


class PcapStream:
    """Appends frames to an open binary file as classic pcap records, buffered.

    Writes the global header at once; ``close`` (or leaving the ``with`` block) flushes what
    is buffered, and does not close the file, which belongs to the caller."""

    def __init__(self, fh: BinaryIO, linktype: int = ETHERNET, snaplen: int = 65535) -> None:
        self._fh = fh
        self._chunks: list[bytes] = []
        self.packets = 0
        fh.write(pcap_header(linktype, snaplen))

    def write(self, ts: float, frame: bytes, wire: int | None = None) -> None:
        sec, usec = split_time(ts)
        self._chunks.append(record_header(sec, usec, len(frame), wire))
        self._chunks.append(frame)
        self.packets += 1
        if len(self._chunks) >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        self._fh.write(b"".join(self._chunks))
        self._chunks.clear()

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> PcapStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
